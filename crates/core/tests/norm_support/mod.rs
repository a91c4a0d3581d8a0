//! Helpers shared by fixtures_attention.rs and fixtures_batchnorm.rs.
#![allow(dead_code)]

use cortex_core::backprop::backward_with_seed;
use cortex_core::nn::layers::{self, ForwardCtx, Layer};
use cortex_core::rng::Rng;
use cortex_core::{ops, Tensor};
use serde_json::Value;

pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../test/fixtures/fixtures.json");

pub fn shape_of(v: &Value) -> Vec<usize> {
    v["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect()
}

pub fn data_of(v: &Value) -> Vec<f32> {
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_f64().unwrap() as f32)
        .collect()
}

pub fn check_norm_case(case: &Value, class: &str, config: Value) {
    let name = case["name"].as_str().unwrap();
    let mut l = layer(class, config);
    let x = var_of(&case["inputs"]["x"]);
    l.build(&x.shape()[1..], &mut Rng::new(0)).unwrap();
    let params = l.params();
    for p in params.iter().filter(|p| p.trainable) {
        let key = p.name.rsplit('/').next().unwrap();
        p.set(data_of(&case["params"][key])).unwrap();
    }
    let y = l
        .forward(
            &x,
            &mut ForwardCtx::new(case["attrs"]["training"] == true, &mut Rng::new(0)),
        )
        .unwrap();
    assert_close(&format!("{name} y"), y.data(), &data_of(&case["outputs"]["y"]));
    let leaves: Vec<Tensor> = params.iter().map(|p| p.get()).collect();
    let grads = backward_with_seed(&y, data_of(&case["cotangents"]["y"])).unwrap();
    assert_close(
        &format!("{name} dx"),
        grads.get(&x).unwrap(),
        &data_of(&case["grads"]["x"]),
    );
    for (p, leaf) in params.iter().zip(&leaves).filter(|(p, _)| p.trainable) {
        let key = p.name.rsplit('/').next().unwrap();
        assert_close(
            &format!("{name} d{key}"),
            grads.get(leaf).unwrap(),
            &data_of(&case["grads"][key]),
        );
    }
}

/// Deterministic values in [-1, 1).
pub fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| rng.uniform() * 2.0 - 1.0).collect()
}

pub fn cases(op: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(FIXTURES).expect("fixtures.json is readable");
    let v: Value = serde_json::from_str(&text).expect("fixtures.json parses");
    v["cases"]
        .as_array()
        .expect("cases array")
        .iter()
        .filter(|c| c["op"] == op)
        .cloned()
        .collect()
}

pub fn var_of(v: &Value) -> Tensor {
    Tensor::variable(data_of(v), &shape_of(v)).unwrap()
}

/// |got - want| <= 1e-5 + 1e-4 |want| for every element.
pub fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_close_tol(what, got, want, 1e-5, 1e-4);
}

pub fn assert_close_tol(what: &str, got: &[f32], want: &[f32], abs: f32, rel: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= abs + rel * w.abs(), "{what}[{i}]: got {g}, want {w}");
    }
}

pub fn layer(class: &str, config: Value) -> Box<dyn Layer> {
    layers::from_config(class, &config).unwrap().0
}

/// `sum(outputs[i] * cotangents[i])` as one scalar.
pub fn weighted_sum(outputs: &[Tensor], cotangents: &[Vec<f32>]) -> Tensor {
    let mut total: Option<Tensor> = None;
    for (y, c) in outputs.iter().zip(cotangents) {
        let s = ops::sum(&ops::mul(y, &Tensor::new(c.clone(), y.shape()).unwrap()).unwrap());
        total = Some(match total {
            None => s,
            Some(t) => ops::add(&t, &s).unwrap(),
        });
    }
    total.unwrap()
}

pub fn ctx_with_masks(training: bool, rng: &mut Rng, masks: Vec<Option<Tensor>>) -> ForwardCtx<'_> {
    let mut ctx = ForwardCtx::new(training, rng);
    ctx.input_masks = masks;
    ctx
}
