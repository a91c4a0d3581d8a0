//! cortex-wgpu: the GPU backend of cortex-nn, WGSL compute kernels on [wgpu].
//!
//! A [`Gpu`] owns one wgpu device and queue, a cache of compiled compute pipelines and a
//! pool of storage buffers. Tensors live on the device as [`GpuTensor`]s (row-major f32,
//! NHWC for images); every kernel takes `&GpuTensor`s and returns new ones, so work stays
//! on the GPU until [`Gpu::download`], the only readback path.
//!
//! Kernel families (one Rust module and one WGSL file each):
//! - [`kernels::matmul`]: batched, optionally transposed GEMM (128x128 tiles with 8x8 register
//!   blocks when the layout allows vec4 loads, 64x64 tiles otherwise; see [`MatmulKernel`]),
//!   and an opt-in mixed-precision (f16) variant on devices with `SHADER_F16`;
//! - [`kernels::elementwise`]: bias add, activations forward/backward, add/sub/mul/scale;
//! - [`kernels::reduce`]: column sums (bias gradient), full sum and mean;
//! - [`kernels::softmax`]: softmax and sparse categorical cross-entropy (loss + gradient);
//! - [`kernels::conv`]: NHWC conv2d forward / backward-input / backward-filter as implicit GEMM;
//! - [`kernels::pool2d`]: 2-D max pooling forward (with argmax) and backward, average and
//!   global average pooling forward and backward;
//! - [`kernels::spatial`]: zero padding and nearest upsampling of images, forward and backward;
//! - [`kernels::losses`]: binary / categorical cross-entropy and mean absolute error against
//!   dense targets (loss + gradient);
//! - [`kernels::optim`]: in-place SGD (momentum, Nesterov), Adam and RMSprop updates;
//! - [`kernels::rnn`]: LSTM recurrence forward / backward through time (one dispatch each);
//! - [`kernels::gru`], [`kernels::simple_rnn`]: the same for GRU (Keras 3 `resetAfter`) and SimpleRNN;
//! - [`kernels::embedding`]: embedding lookup and its scatter-add gradient.
//!
//! Optional device features: with `SUBGROUP`, the row reductions (softmax, cross-entropy,
//! layer norm, full sums) run on subgroup operations ([`Gpu::set_subgroups`]); with
//! `SHADER_F16`, [`MatmulKernel::Tile128F16`] is available. Every kernel has an f32 path
//! that needs neither.
//!
//! Environment variables:
//! - `WGPU_BACKEND` (e.g. `vulkan`) restricts the backends [`Gpu::new`] and [`adapters`] search;
//! - `CORTEX_WGPU_ADAPTER=<substring>` picks an adapter by name instead of the best-ranked one;
//! - `CORTEX_MATMUL_KERNEL` / `CORTEX_CONV_KERNEL` (`tile64`, `tile128_bk8`, `tile128_bk16`,
//!   `tile128_f16`, `auto`) force the GEMM / implicit-GEMM conv tiling ([`MatmulKernel`]);
//!   `tile128_f16` makes every vec4-shaped GEMM of the process mixed precision;
//! - `CORTEX_WGPU_CHECKS=full|bounds|none` sets the run-time checks compiled into the shaders
//!   ([`pipelines::ShaderChecks`]; default `bounds`: clamped indices, no hidden loop counter);
//! - `CORTEX_WGPU_SUBGROUPS=0` keeps the row reductions on workgroup memory;
//! - `CORTEX_SKIP_GPU_TESTS=1` skips the project's GPU tests; without an adapter they skip too,
//!   with a printed reason, unless `CORTEX_REQUIRE_GPU=1` ([`gpu_test_skip_reason`]). On a
//!   machine without a GPU, Mesa's software Vulkan driver (lavapipe, Debian package
//!   `mesa-vulkan-drivers`) runs them.

#![warn(missing_docs)]

use thiserror::Error;

pub mod context;
pub mod kernels;
pub mod pipelines;
pub mod pool;
pub mod recording;
pub mod source;
pub mod tensor;
mod test_gate;

pub use context::{adapters, AdapterSummary, Gpu};
pub use kernels::attention::{AttentionGrads, AttentionOutput};
pub use kernels::batchnorm::{BatchNormGrads, BatchNormStats};
pub use kernels::conv::Conv2dSpec;
pub use kernels::elementwise::{Activation, BinaryOp};
pub use kernels::gru::{GruBackward, GruForward, GruGrads, GruSaved};
pub use kernels::layernorm::{LayerNormGrads, LayerNormOutput};
pub use kernels::losses::LossOutput;
pub use kernels::matmul::{MatmulDesc, MatmulKernel};
pub use kernels::optim::{AdamParams, LambParams, LionParams, RmsPropParams, SgdParams};
pub use kernels::pool2d::{MaxPool2dOutput, Pool2dSpec};
pub use kernels::rnn::{LstmBackward, LstmForward, LstmGrads, LstmSaved, RnnActivations, RnnMask};
pub use kernels::simple_rnn::{SimpleRnnBackward, SimpleRnnForward, SimpleRnnGrads, SimpleRnnSaved};
pub use kernels::softmax::{CrossEntropyInput, CrossEntropyOutput};
pub use pipelines::ShaderChecks;
pub use pool::PoolStats;
pub use tensor::{DType, GpuTensor};
pub use test_gate::gpu_test_skip_reason;

/// Errors of the GPU backend.
#[derive(Debug, Error)]
pub enum GpuError {
    /// No wgpu adapter (GPU or software rasteriser) was found.
    #[error("no GPU adapter found (wgpu saw none for backends {backends}); install a Vulkan/Metal/DX12 driver, or Mesa's lavapipe for a software device")]
    NoAdapter {
        /// The backends that were searched.
        backends: String,
    },
    /// The adapter refused to create a device.
    #[error("could not create a device on adapter '{adapter}': {message}")]
    RequestDevice {
        /// Adapter name.
        adapter: String,
        /// wgpu's message.
        message: String,
    },
    /// A shader name or entry point is not registered.
    #[error("unknown shader '{0}' (not in the shader registry)")]
    UnknownShader(String),
    /// Pipeline creation (WGSL compile or validation) failed.
    #[error("compiling shader '{shader}' entry point '{entry}' failed: {message}")]
    Shader {
        /// Shader name.
        shader: String,
        /// Entry point.
        entry: String,
        /// Compiler / validation message.
        message: String,
    },
    /// Tensor shapes do not fit the operation.
    #[error("{op}: shape mismatch: expected {expected}, got {got}")]
    Shape {
        /// Operation name.
        op: &'static str,
        /// What the operation needed.
        expected: String,
        /// What it was given.
        got: String,
    },
    /// A tensor had the wrong element type.
    #[error("{op}: dtype mismatch: expected {expected:?}, got {got:?}")]
    DType {
        /// Operation name.
        op: &'static str,
        /// Needed element type.
        expected: DType,
        /// Given element type.
        got: DType,
    },
    /// An argument was out of range.
    #[error("{op}: invalid argument: {message}")]
    Invalid {
        /// Operation name.
        op: &'static str,
        /// What was wrong.
        message: String,
    },
    /// A size exceeds a device limit (buffer binding size, workgroup count).
    #[error("{what}: {got} exceeds the device limit {limit}")]
    Limit {
        /// What was too large.
        what: &'static str,
        /// Requested amount.
        got: u64,
        /// Device limit.
        limit: u64,
    },
    /// Mapping a buffer for readback or waiting for the device failed.
    #[error("readback failed: {0}")]
    Readback(String),
}

/// Result alias of this crate.
pub type Result<T, E = GpuError> = std::result::Result<T, E>;
