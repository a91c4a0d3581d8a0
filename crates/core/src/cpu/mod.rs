//! CPU kernels: plain functions over row-major `f32` slices, parallel with rayon.
//! One file per op family; the autograd layer (`crate::ops`) calls these.

#[cfg(target_arch = "x86_64")]
pub(crate) mod amx;
pub mod attention;
pub mod attention_fused;
mod attention_mask;
pub mod bf16;
pub mod conv;
pub mod conv_direct;
pub mod conv_transpose;
pub mod conv_winograd;
pub mod elementwise;
pub mod gemv;
pub mod int8;
pub mod matmul;
pub mod norm;
pub mod pool;
pub mod rnn;
pub(crate) mod simd;
pub mod softmax;
pub mod spatial;
