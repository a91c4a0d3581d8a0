//! GPU kernel tests against plain f64 CPU references.
//!
//! These tests need a wgpu adapter (on a machine without a GPU, Mesa's lavapipe works:
//! `apt install mesa-vulkan-drivers`). They fail when no adapter can be opened, so a broken
//! driver setup is never mistaken for a pass; set `CORTEX_SKIP_GPU_TESTS=1` to skip them
//! explicitly (the shader validation tests still run).

mod attention;
mod batchnorm;
mod common;
mod conv;
mod conv_kernels;
mod elementwise;
mod fixtures;
mod gru;
mod layout;
mod limits;
mod losses;
mod matmul;
mod matmul_kernels;
mod optim;
mod pool2d;
mod pooling_alloc;
mod recording;
mod reduce_softmax;
mod rnn;
mod rnn_mask;
mod shaders;
mod spatial;
mod units;
