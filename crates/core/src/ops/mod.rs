//! Differentiable tensor ops: each computes its value with a kernel on its inputs' device (the
//! CPU kernels, or the GPU ones in [`gpu`]) and records the [`Op`](crate::backprop::Op) its
//! gradient needs. Inputs on two devices, or a GPU input to an op with no GPU kernel yet, are
//! an Error: nothing moves between devices unless `Tensor::to` asks for it.

mod arith;
pub(crate) mod gpu;
pub(crate) mod gpu_attention;
pub(crate) mod gpu_layout;
mod gpu_loss;
pub(crate) mod gpu_norm;
pub(crate) mod gpu_rnn;
mod gpu_spatial;
mod nn;

pub use arith::*;
pub use gpu::gpu_activation;
pub(crate) use gpu::{no_gpu_kernel, on_gpu};
pub(crate) use gpu_loss::{compute as loss_on_gpu, compute_weighted as weighted_loss_on_gpu};
pub(crate) use gpu_spatial::{
    conv2d as conv2d_on_gpu, conv2d_transpose as conv2d_transpose_on_gpu, pad2d as pad2d_on_gpu,
    upsample2d as upsample2d_on_gpu,
};
pub use nn::*;
