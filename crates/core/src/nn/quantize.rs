//! Opt-in reduced-precision inference (`model.quantize({ mode: 'int8' | 'bf16' })`): Dense and
//! Conv2D layers compute their inference forward passes with the kernels of
//! [`crate::cpu::int8`] or [`crate::cpu::bf16`]. Weights are converted and packed once, at the
//! first call after a change, and repacked when training or `setWeights` changes them (the
//! parameter's version counter tells). Training, and any pass that records gradients (attacks,
//! explanations, `valueAndGrads`), keeps the f32 path.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use super::layers::ForwardCtx;
use super::param::Param;
use crate::cpu::bf16::{conv2d_bf16, conv2d_bf16_max_pool, linear_bf16, Bf16Kernel, PackedBf16};
use crate::cpu::conv::Conv2dGeometry;
use crate::cpu::elementwise::Activation;
use crate::cpu::int8::{conv2d_int8, conv2d_int8_max_pool, linear_int8, Int8Kernel, PackedInt8};
use crate::{Error, Result, Tensor};

/// The arithmetic of inference forward passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    /// Plain f32 (the default).
    Float32,
    /// Dynamic int8: per-column weight scales, per-sample activation scales, i32 sums.
    Int8,
    /// bf16 weights and activations, f32 sums (AMX-BF16 CPUs).
    Bf16,
}

impl Precision {
    /// Parses `'int8'`, `'bf16'` or `'float32'`.
    pub fn parse(mode: &str) -> Result<Precision> {
        match mode {
            "int8" => Ok(Precision::Int8),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            "float32" | "fp32" | "none" => Ok(Precision::Float32),
            other => Err(Error::Invalid(format!(
                "quantize: unknown mode '{other}'; expected 'int8', 'bf16' or 'float32'"
            ))),
        }
    }

    /// Checks that this CPU runs the precision (bf16 needs AMX-BF16).
    pub fn check_supported(self) -> Result<()> {
        if self == Precision::Bf16 {
            Bf16Kernel::require()?;
        }
        Ok(())
    }

    fn code(self) -> u8 {
        self as u8
    }

    fn from_code(code: u8) -> Precision {
        match code {
            1 => Precision::Int8,
            2 => Precision::Bf16,
            _ => Precision::Float32,
        }
    }
}

/// A layer kernel packed for a reduced-precision forward pass.
#[derive(Clone)]
pub enum Packed {
    /// int8, per-column scales.
    Int8(Arc<PackedInt8>),
    /// bf16.
    Bf16(Arc<PackedBf16>),
}

impl Packed {
    fn new(precision: Precision, w: &[f32], k: usize, n: usize) -> Result<Packed> {
        Ok(match precision {
            Precision::Bf16 => Packed::Bf16(Arc::new(PackedBf16::new(w, k, n)?)),
            _ => Packed::Int8(Arc::new(PackedInt8::new(w, k, n)?)),
        })
    }

    /// `act(x · W + bias)` for `rows` rows of `x`.
    pub fn linear(&self, x: &[f32], rows: usize, bias: Option<&[f32]>, act: Activation) -> Result<Vec<f32>> {
        match self {
            Packed::Int8(w) => linear_int8(x, rows, w, bias, act, Int8Kernel::detect()),
            Packed::Bf16(w) => linear_bf16(x, rows, w, bias, act, Bf16Kernel::require()?),
        }
    }

    /// `act(conv2d(x, W) + bias)`.
    pub fn conv2d(&self, x: &[f32], g: &Conv2dGeometry, bias: Option<&[f32]>, act: Activation) -> Result<Vec<f32>> {
        match self {
            Packed::Int8(w) => conv2d_int8(x, g, w, bias, act, Int8Kernel::detect()),
            Packed::Bf16(w) => conv2d_bf16(x, g, w, bias, act, Bf16Kernel::require()?),
        }
    }

    /// `act(conv2d(x, W) + bias)` max-pooled over non-overlapping `pool` windows ('valid'), in
    /// one pass.
    pub fn conv2d_max_pool(
        &self,
        x: &[f32],
        g: &Conv2dGeometry,
        bias: Option<&[f32]>,
        act: Activation,
        pool: [usize; 2],
    ) -> Result<Vec<f32>> {
        match self {
            Packed::Int8(w) => conv2d_int8_max_pool(x, g, w, bias, act, pool, Int8Kernel::detect()),
            Packed::Bf16(w) => conv2d_bf16_max_pool(x, g, w, bias, act, pool, Bf16Kernel::require()?),
        }
    }
}

/// Shortest reduction that runs in reduced precision. A first convolution on raw pixels
/// (`3 x 3 x 1`: 9 values) has too little arithmetic per output to repay converting, unpacking
/// and dequantizing every value (and bf16 tiles would pad it to 32): it stays f32 (where the direct kernel fuses bias and activation), as most int8
/// deployments keep the first layer.
pub const MIN_DEPTH: usize = 32;

/// A layer kernel's reduced-precision form: the precision, and the packed copy with the
/// parameter version it was packed from.
#[derive(Default)]
pub struct QuantizedWeights {
    precision: AtomicU8,
    packed: Mutex<Option<(u64, Packed)>>,
}

impl QuantizedWeights {
    /// Sets the inference precision; any change drops the packed copy.
    pub fn set(&self, precision: Precision) {
        let old = self.precision.swap(precision.code(), Ordering::AcqRel);
        if old != precision.code() {
            *self.packed.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }

    /// The inference precision.
    pub fn precision(&self) -> Precision {
        Precision::from_code(self.precision.load(Ordering::Acquire))
    }

    /// The packed `k x n` kernel when this call runs in reduced precision: the layer is
    /// quantized, the pass is inference and records nothing for `x` or the weights. `None`
    /// means the f32 path.
    pub fn for_call(
        &self,
        kernel: &Param,
        kernel_value: &Tensor,
        x: &Tensor,
        ctx: &ForwardCtx,
        k: usize,
        n: usize,
    ) -> Result<Option<Packed>> {
        let precision = self.precision();
        if precision == Precision::Float32 || k < MIN_DEPTH || ctx.training || Tensor::records(&[x, kernel_value]) {
            return Ok(None);
        }
        if x.device() != crate::Device::Cpu || kernel_value.device() != crate::Device::Cpu {
            return Err(crate::ops::no_gpu_kernel(&format!("{precision:?} inference")));
        }
        // Read the version before the value: a change in between only costs one more repack.
        let version = kernel.version();
        let mut slot = self.packed.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((v, p)) = slot.as_ref() {
            if *v == version {
                return Ok(Some(p.clone()));
            }
        }
        let packed = Packed::new(precision, kernel_value.data(), k, n)?;
        *slot = Some((version, packed.clone()));
        Ok(Some(packed))
    }
}
