//! Helpers shared by the fixture suites: running one layer on the GPU backend.

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
