//! Device memory of the layer path: a steady GPU training loop allocates no new device buffers
//! once warm. Its own test binary: the buffer pool is process-wide, and tests running beside it
//! would allocate too. Skipped with a printed reason without an adapter.

mod fixture_support;

use cortex_core::{Device, Tensor};
use fixture_support::values;

/// A steady training loop with its weights on the GPU allocates no new device buffers once
/// warm: every step's activations, gradients and optimizer temporaries go back to the pool.
#[test]
fn gpu_training_reuses_device_memory() {
    if cortex_wgpu::gpu_test_skip_reason().is_some() {
        return;
    }
    use cortex_core::nn::model::Model;
    let config = serde_json::json!({"className": "Sequential", "inputShape": [8, 8, 1], "layers": [
        {"className": "Conv2D", "config": {"filters": 4, "kernelSize": 3, "activation": "relu"}},
        {"className": "MaxPooling2D", "config": {"poolSize": 2}},
        {"className": "Flatten", "config": {}},
        {"className": "Dense", "config": {"units": 3, "activation": "softmax"}}
    ]});
    let mut model = Model::from_config(&config, 3).unwrap();
    model
        .compile(&serde_json::json!({"optimizer": "adam", "loss": "sparseCategoricalCrossentropy"}))
        .unwrap();
    model.to_device(Device::Gpu).unwrap();
    let x = Tensor::new(values(16 * 64, 110), &[16, 8, 8, 1]).unwrap();
    let y = Tensor::new((0..16).map(|i| (i % 3) as f32).collect(), &[16]).unwrap();
    let gpu = cortex_core::device::shared_gpu().unwrap();
    for _ in 0..5 {
        model.train_on_batch(&x, &y).unwrap();
    }
    let warm = gpu.pool_stats().allocations;
    for _ in 0..30 {
        model.train_on_batch(&x, &y).unwrap();
        model.predict(&x, 16).unwrap();
    }
    let after = gpu.pool_stats().allocations;
    assert!(
        after <= warm + 4,
        "device buffers allocated: {warm} after warm-up, {after} after 30 more steps"
    );
}
