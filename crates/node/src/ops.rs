//! Eager tensor ops and process-wide settings.

use napi::bindgen_prelude::Float32Array;
use napi_derive::napi;

use crate::guarded;
use crate::tensor::{to_tensor, TensorData};

/// Matrix product of `a` (`[m, k]`) and `b` (`[k, n]`) on the cortex-nn thread pool.
#[napi]
pub fn mat_mul(a: Float32Array, a_shape: Vec<u32>, b: Float32Array, b_shape: Vec<u32>) -> napi::Result<TensorData> {
    let a = to_tensor("matMul lhs", &a, &a_shape)?;
    let b = to_tensor("matMul rhs", &b, &b_shape)?;
    guarded("matMul", || {
        cortex_core::threads::run(|| cortex_core::ops::matmul(&a, &b))
    })
    .map(TensorData::from_tensor)
}

/// Sets the number of threads kernels use (default: `CORTEX_NUM_THREADS` or all cores).
#[napi]
pub fn set_num_threads(n: u32) -> napi::Result<()> {
    guarded("setNumThreads", || cortex_core::threads::set_num_threads(n as usize))
}

/// Number of threads kernels use.
#[napi]
pub fn get_num_threads() -> u32 {
    cortex_core::threads::num_threads() as u32
}

/// Caps the weights of any model built or loaded afterwards (default 16 GiB, or
/// `CORTEX_MAX_MODEL_BYTES`); larger ones are refused with an Error before allocating.
#[napi]
pub fn set_max_model_bytes(bytes: f64) -> napi::Result<()> {
    if !(bytes.is_finite() && bytes >= 1.0 && bytes.fract() == 0.0) {
        return Err(napi::Error::new(
            napi::Status::InvalidArg,
            format!("setMaxModelBytes: expected a positive integer, got {bytes}"),
        ));
    }
    guarded("setMaxModelBytes", || {
        cortex_core::alloc::set_max_model_bytes(bytes as u64)
    })
}

/// The current cap on a model's weights, in bytes.
#[napi]
pub fn get_max_model_bytes() -> f64 {
    cortex_core::alloc::max_model_bytes() as f64
}

/// A GPU (or software) adapter wgpu can use.
#[napi(object)]
pub struct DeviceInfo {
    /// Adapter name, e.g. "NVIDIA H200" or "llvmpipe (LLVM 15.0.6, 256 bits)".
    pub name: String,
    /// Graphics API, e.g. "Vulkan".
    pub backend: String,
    /// "DiscreteGpu", "IntegratedGpu", "Cpu" (a software rasteriser), ...
    pub device_type: String,
    /// Whether the adapter offers 16-bit floats in shaders.
    pub shader_f16: bool,
    /// Whether the adapter offers subgroup operations.
    pub subgroups: bool,
}

/// For test suites: why GPU tests should be skipped in this process, or null to run them
/// (`CORTEX_SKIP_GPU_TESTS=1`; no adapter unless `CORTEX_REQUIRE_GPU=1`). The Rust suites follow
/// the same rule; the reason is printed to stderr once.
#[napi]
pub fn gpu_test_skip_reason() -> Option<String> {
    cortex_core::nn::gpu_model::gpu_test_skip_reason().map(str::to_string)
}

/// Lists the adapters `compile({ device: 'gpu' })` can use (the best one is picked).
#[napi]
pub fn devices() -> Vec<DeviceInfo> {
    cortex_core::nn::gpu_model::devices()
        .into_iter()
        .map(|a| DeviceInfo {
            name: a.name,
            backend: a.backend,
            device_type: a.device_type,
            shader_f16: a.shader_f16,
            subgroups: a.subgroup,
        })
        .collect()
}
