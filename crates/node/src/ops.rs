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
    .map(|t| TensorData::from_tensor(&t))
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
