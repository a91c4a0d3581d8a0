//! cortex-core: the engine of cortex-nn.
//!
//! - [`Tensor`]: an immutable f32 array with a shape and, when it takes part in training, the
//!   [`Op`](backprop::Op) that made it. Reverse-mode autograd ([`backprop`]) walks those ops.
//! - [`cpu`]: the CPU kernels (gemm-backed matmul, im2col convolution, pooling, elementwise),
//!   parallel with rayon on the pool managed by [`threads`].
//! - [`nn`]: Keras-style layers, losses, optimizers, metrics, the `fit` loop and model files.

pub mod alloc;
pub mod backprop;
pub mod cpu;
pub mod device;
mod error;
pub mod nn;
pub mod ops;
pub mod rng;
pub mod tensor;
pub mod threads;

pub use device::Device;
pub use error::{Error, Result};
pub use tensor::Tensor;
