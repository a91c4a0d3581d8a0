//! Helpers shared by the fixture suites: running one layer on the GPU backend.
#![allow(dead_code)]

use cortex_core::nn::gpu_model::GpuModel;
use cortex_core::nn::loss::Loss;
use cortex_core::nn::model::Model;
use cortex_core::nn::optim::Optimizer;
use cortex_core::Tensor;
use serde_json::{json, Value};

/// True when GPU tests are skipped (`cortex_wgpu::gpu_test_skip_reason`).
pub fn skip_gpu() -> bool {
    cortex_wgpu::gpu_test_skip_reason().is_some()
}

/// Layer `class` with `config`, as a one-layer functional model compiled for the GPU with
/// `weights` (in the layer's parameter order) and the model input passed `arity` times (2 for
/// self-attention's `[query, value]`), run on `x` through the code GPU models train with:
/// returns the output, the input gradient and the weight gradients for the output cotangent `dy`.
pub fn layer_on_gpu_with_arity(
    class: &str,
    config: &Value,
    x: &Tensor,
    weights: &[Vec<f32>],
    dy: &Tensor,
    arity: usize,
) -> (Tensor, Option<Tensor>, Vec<Option<Tensor>>) {
    let model_config = json!({
        "className": "Functional",
        "inputs": [&x.shape()[1..]],
        "layers": [{"className": class, "config": config}],
        "nodes": [{"layer": 0, "inputs": vec![json!([-1, 0]); arity]}],
        "outputs": [[0, 0]],
    });
    let model = Model::from_config(&model_config, 0).unwrap();
    model.set_weights(weights).unwrap();
    let sgd = Optimizer::parse(&json!("sgd")).unwrap();
    let mut gpu = GpuModel::new(&model, &Loss::MeanSquaredError, &sgd, &|_| true).unwrap();
    gpu.output_and_gradients(&model, x, dy).unwrap()
}

/// [`layer_on_gpu_with_arity`] for a one-input layer.
pub fn layer_on_gpu(
    class: &str,
    config: &Value,
    x: &Tensor,
    weights: &[Vec<f32>],
    dy: &Tensor,
) -> (Tensor, Option<Tensor>, Vec<Option<Tensor>>) {
    layer_on_gpu_with_arity(class, config, x, weights, dy, 1)
}

// Some suites load fixture_support themselves too; the helpers are plain functions, so a
// second copy in this module is harmless.
#[allow(clippy::duplicate_mod)]
#[path = "../fixture_support/mod.rs"]
mod fixture_support;

/// A fixture layer case as a one-layer model planned for the GPU ([`layer_on_gpu`]): checks
/// its output, its input gradient and the gradient of each weight named in `keys` (in the
/// layer's parameter order) against the case.
pub fn check_planner_case(case: &Value, class: &str, config: &Value, keys: &[String]) {
    use fixture_support::{assert_close, data_of, shape_of};
    let name = format!("{} (planner)", case["name"].as_str().unwrap());
    let tensor = |v: &Value| Tensor::new(data_of(v), &shape_of(v)).unwrap();
    let x = tensor(&case["inputs"]["x"]);
    let dy = Tensor::new(data_of(&case["cotangents"]["y"]), &shape_of(&case["outputs"]["y"])).unwrap();
    let weights: Vec<Vec<f32>> = keys.iter().map(|k| data_of(&case["params"][k.as_str()])).collect();
    let (y, dx, grads) = layer_on_gpu(class, config, &x, &weights, &dy);
    assert_eq!(y.shape(), dy.shape(), "{name}: output shape");
    assert_close(&format!("{name} y"), y.data(), &data_of(&case["outputs"]["y"]));
    assert_close(&format!("{name} dx"), dx.unwrap().data(), &data_of(&case["grads"]["x"]));
    assert_eq!(grads.len(), keys.len(), "{name}: weight gradients");
    for (key, grad) in keys.iter().zip(&grads) {
        let want = data_of(&case["grads"][key.as_str()]);
        assert_close(&format!("{name} d{key}"), grad.as_ref().unwrap().data(), &want);
    }
}
