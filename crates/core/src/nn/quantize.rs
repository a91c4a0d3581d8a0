//! Opt-in reduced-precision inference (`model.quantize({ mode: 'int8' })`): Dense and Conv2D
//! layers compute their inference forward passes with the int8 kernels of
//! [`crate::cpu::int8`]. Weights are quantized and packed once, at the first call after a
//! change, and repacked when training or `setWeights` changes them (the parameter's version
//! counter tells). Training, and any pass that records gradients (attacks, explanations,
//! `valueAndGrads`), keeps the f32 path: int8 has no useful gradient.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::layers::ForwardCtx;
use super::param::Param;
use crate::cpu::int8::PackedInt8;
use crate::{Error, Result, Tensor};

/// The arithmetic of inference forward passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    /// Plain f32 (the default).
    Float32,
    /// Dynamic int8: per-column weight scales, per-sample activation scales, i32 sums.
    Int8,
}

impl Precision {
    /// Parses `'int8'` or `'float32'`.
    pub fn parse(mode: &str) -> Result<Precision> {
        match mode {
            "int8" => Ok(Precision::Int8),
            "float32" | "fp32" | "none" => Ok(Precision::Float32),
            other => Err(Error::Invalid(format!(
                "quantize: unknown mode '{other}'; expected 'int8' or 'float32'"
            ))),
        }
    }
}

/// Shortest reduction that runs in int8. A first convolution on raw pixels (`3 x 3 x 1`: 9
/// values) has too little arithmetic per output to repay quantizing, unpacking and dequantizing
/// every value: it stays f32 (where the direct kernel fuses bias and activation), as most int8
/// deployments keep the first layer.
pub const MIN_DEPTH: usize = 32;

/// A layer kernel's int8 form: whether it is on, and the packed copy with the parameter
/// version it was packed from.
#[derive(Default)]
pub struct Int8Weights {
    enabled: AtomicBool,
    packed: Mutex<Option<(u64, Arc<PackedInt8>)>>,
}

impl Int8Weights {
    /// Turns int8 inference on or off; off drops the packed copy.
    pub fn set(&self, precision: Precision) {
        let on = precision == Precision::Int8;
        self.enabled.store(on, Ordering::Release);
        if !on {
            *self.packed.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }

    /// Whether int8 inference is on.
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Acquire)
    }

    /// The packed `k x n` kernel when this call runs in int8: the layer is quantized, the pass
    /// is inference and records nothing for `x` or the weights. `None` means the f32 path.
    pub fn for_call(
        &self,
        kernel: &Param,
        kernel_value: &Tensor,
        x: &Tensor,
        ctx: &ForwardCtx,
        k: usize,
        n: usize,
    ) -> Result<Option<Arc<PackedInt8>>> {
        if !self.enabled() || k < MIN_DEPTH || ctx.training || Tensor::records(&[x, kernel_value]) {
            return Ok(None);
        }
        // Read the version before the value: a change in between only costs one more repack.
        let version = kernel.version();
        let mut slot = self.packed.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((v, p)) = slot.as_ref() {
            if *v == version {
                return Ok(Some(p.clone()));
            }
        }
        let packed = Arc::new(PackedInt8::new(kernel_value.data(), k, n)?);
        *slot = Some((version, packed.clone()));
        Ok(Some(packed))
    }
}
