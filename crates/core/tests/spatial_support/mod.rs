//! Helpers shared by fixtures_spatial.rs and fixtures_embedding.rs (fixture reading and
//! comparison come from fixture_support).
#![allow(dead_code)]

use cortex_core::backprop::backward_with_seed;
use cortex_core::nn::layers::{self, ForwardCtx, Layer};
use cortex_core::rng::Rng;
use cortex_core::Tensor;
use serde_json::{json, Value};

#[path = "../fixture_support/mod.rs"]
mod fixture_support;
pub use fixture_support::*;

pub fn layer(class: &str, mut config: Value, input_shape: &[usize]) -> Box<dyn Layer> {
    config["name"] = json!("layer");
    let (mut l, _) = layers::from_config(class, &config).unwrap();
    l.build(input_shape, &mut Rng::new(0)).unwrap();
    l
}

pub fn forward(l: &dyn Layer, x: &Tensor) -> Tensor {
    l.forward(x, &mut ForwardCtx::new(false, &mut Rng::new(0))).unwrap()
}

/// Finite-difference check of d sum(f(x) * g) / dx against the autograd gradient.
pub fn check_fd(what: &str, x0: &[f32], shape: &[usize], f: &dyn Fn(&Tensor) -> Tensor) {
    let x = Tensor::variable(x0.to_vec(), shape).unwrap();
    let y = f(&x);
    let g = values(y.len(), 99);
    let grads = backward_with_seed(&y, g.clone()).unwrap();
    let got = grads.get(&x).unwrap().to_vec();
    let loss = |data: Vec<f32>| -> f64 {
        let y = f(&Tensor::new(data, shape).unwrap());
        y.data().iter().zip(&g).map(|(a, b)| *a as f64 * *b as f64).sum()
    };
    let eps = 1e-2;
    for i in 0..x0.len() {
        let (mut p, mut m) = (x0.to_vec(), x0.to_vec());
        p[i] += eps;
        m[i] -= eps;
        let fd = ((loss(p) - loss(m)) / (2.0 * eps as f64)) as f32;
        assert!(
            (fd - got[i]).abs() < 2e-3 * (1.0 + fd.abs()),
            "{what}[{i}]: fd {fd} vs autograd {}",
            got[i]
        );
    }
}
