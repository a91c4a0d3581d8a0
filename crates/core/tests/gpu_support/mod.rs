//! Helpers shared by the GPU model test files (gpu_model.rs, gpu_model_options.rs, gpu_merge.rs,
//! gpu_bidirectional.rs, gpu_masking.rs).
#![allow(dead_code)]

use cortex_core::nn::model::{Logs, Model};
use cortex_core::Tensor;
use serde_json::{json, Value};

pub fn skip() -> bool {
    cortex_wgpu::gpu_test_skip_reason().is_some()
}

pub fn convnet() -> Value {
    json!({"className": "Sequential", "inputShape": [12, 12, 2], "layers": [
        {"className": "Conv2D", "config": {"filters": 8, "kernelSize": [3, 3], "padding": "same", "activation": "relu"}},
        {"className": "MaxPooling2D", "config": {"poolSize": [2, 2]}},
        {"className": "Conv2D", "config": {"filters": 6, "kernelSize": [3, 3], "strides": [2, 2], "activation": "tanh"}},
        {"className": "Flatten", "config": {}},
        {"className": "Dense", "config": {"units": 16, "activation": "relu"}},
        {"className": "Dropout", "config": {"rate": 0.0}},
        {"className": "Dense", "config": {"units": 5, "activation": "softmax"}}
    ]})
}

pub fn mlp() -> Value {
    json!({"className": "Sequential", "inputShape": [7], "layers": [
        {"className": "Dense", "config": {"units": 11, "activation": "sigmoid"}},
        {"className": "Dense", "config": {"units": 3}}
    ]})
}

pub fn data(shape: &[usize], salt: f32) -> Tensor {
    let n: usize = shape.iter().product();
    Tensor::new((0..n).map(|i| ((i as f32) * 0.37 + salt).sin()).collect(), shape).unwrap()
}

pub fn pair(config: &Value, compile: Value) -> (Model, Model) {
    let mut cpu = Model::from_config(config, 11).unwrap();
    let mut gpu = Model::from_config(config, 11).unwrap();
    cpu.compile(&compile).unwrap();
    let mut on_gpu = compile.clone();
    on_gpu["device"] = json!("gpu!");
    gpu.compile(&on_gpu).unwrap();
    assert!(gpu.device_name().is_some(), "the model should be on the GPU");
    assert!(cpu.device_name().is_none());
    (cpu, gpu)
}

pub fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / (1e-3 + x.abs()))
        .fold(0.0, f32::max)
}

pub fn assert_same_weights(cpu: &Model, gpu: &Model, tol: f32) {
    let (a, b) = (cpu.get_weights().unwrap(), gpu.get_weights().unwrap());
    assert_eq!(a.len(), b.len());
    for ((name, shape, x), (_, shape2, y)) in a.iter().zip(&b) {
        assert_eq!(shape, shape2);
        let d = max_rel_diff(x, y);
        assert!(d < tol, "{name}: relative difference {d}");
    }
}

/// `model` compiled with `device: "gpu!"` fails with an error naming `want`; compiled with
/// `"gpu"` it falls back to the CPU with a warning naming it too. Returns the strict error.
pub fn assert_gpu_refuses(model: &mut Model, optimizer: &str, want: &str) -> String {
    let compile = |device: &str| json!({"optimizer": optimizer, "loss": "meanSquaredError", "device": device});
    let err = model.compile(&compile("gpu!")).unwrap_err().to_string();
    assert!(err.contains(want), "expected '{want}' in: {err}");
    model.compile(&compile("gpu")).unwrap();
    assert!(model.device_name().is_none(), "'{want}' should fall back to the CPU");
    let warning = model.compiled_ref().unwrap().device_warning.clone().unwrap();
    assert!(warning.contains(want), "{warning}");
    err
}

/// A layer spec for model configs.
pub fn layer(class: &str, config: Value) -> Value {
    json!({"className": class, "config": config})
}

/// Predictions of both models on `x` agree within `tol` (relative).
pub fn assert_same_predictions(cpu: &mut Model, gpu: &mut Model, x: &Tensor, tol: f32, what: &str) {
    let (pa, pb) = (cpu.predict(x, 4).unwrap(), gpu.predict(x, 4).unwrap());
    assert_eq!(pa.shape(), pb.shape(), "{what}: prediction shape");
    let d = max_rel_diff(pa.data(), pb.data());
    assert!(d < tol, "{what}: predictions differ by {d}");
}

/// One training step of both models on `(x, y)` whose losses agree within 1e-4 (relative);
/// returns both steps' logs (the loss first, then the metrics).
pub fn train_step_alike(cpu: &mut Model, gpu: &mut Model, x: &Tensor, y: &Tensor, what: &str) -> (Logs, Logs) {
    let (a, b) = (cpu.train_on_batch(x, y).unwrap(), gpu.train_on_batch(x, y).unwrap());
    let rel = ((a[0].1 - b[0].1) / a[0].1).abs();
    assert!(rel < 1e-4, "{what}: loss {} vs {}", a[0].1, b[0].1);
    (a, b)
}
