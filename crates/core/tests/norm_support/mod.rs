//! Helpers shared by fixtures_attention.rs and fixtures_batchnorm.rs (fixture reading and
//! comparison come from fixture_support).
#![allow(dead_code)]

use cortex_core::backprop::backward_with_seed;
use cortex_core::nn::layers::{self, ForwardCtx, Layer};
use cortex_core::rng::Rng;
use cortex_core::{ops, Device, Tensor};
use serde_json::Value;

#[path = "../fixture_support/mod.rs"]
mod fixture_support;
pub use fixture_support::*;

/// Checks a normalisation fixture case through the layer code on the CPU and, unless GPU
/// tests are skipped, again with the weights and input on the GPU.
pub fn check_norm_case(case: &Value, class: &str, config: Value) {
    check_norm_case_on(case, class, config.clone(), Device::Cpu);
    if cortex_wgpu::gpu_test_skip_reason().is_none() {
        check_norm_case_on(case, class, config, Device::Gpu);
    }
}

fn check_norm_case_on(case: &Value, class: &str, config: Value, device: Device) {
    let name = format!("{} ({})", case["name"].as_str().unwrap(), device.name());
    let mut l = layer(class, config);
    let x = var_of(&case["inputs"]["x"])
        .to(device)
        .unwrap()
        .with_requires_grad(true);
    l.build(&x.shape()[1..], &mut Rng::new(0)).unwrap();
    let params = l.params();
    for p in params.iter().filter(|p| p.trainable) {
        let key = p.name.rsplit('/').next().unwrap();
        p.set(data_of(&case["params"][key])).unwrap();
    }
    for p in &params {
        p.to_device(device).unwrap();
    }
    let y = l
        .forward(
            &x,
            &mut ForwardCtx::new(case["attrs"]["training"] == true, &mut Rng::new(0)),
        )
        .unwrap();
    assert_eq!(y.device(), device, "{name}: the output stays on the device");
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

pub fn var_of(v: &Value) -> Tensor {
    Tensor::variable(data_of(v), &shape_of(v)).unwrap()
}

pub fn layer(class: &str, config: Value) -> Box<dyn Layer> {
    layers::from_config(class, &config).unwrap().0
}

/// `sum(outputs[i] * cotangents[i])` as one scalar, on the outputs' device.
pub fn weighted_sum(outputs: &[Tensor], cotangents: &[Vec<f32>]) -> Tensor {
    let mut total: Option<Tensor> = None;
    for (y, c) in outputs.iter().zip(cotangents) {
        let c = Tensor::new(c.clone(), y.shape()).unwrap().to(y.device()).unwrap();
        let s = ops::sum(&ops::mul(y, &c).unwrap()).unwrap();
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
