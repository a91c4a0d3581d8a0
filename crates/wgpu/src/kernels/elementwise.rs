//! Elementwise kernels (shader `elementwise`): bias add, activations, binary ops, scale.

use super::{expect_len, u32_of};
use crate::context::grid;
use crate::{DType, Gpu, GpuError, GpuTensor, Result};

/// An activation function.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    /// Identity.
    Linear,
    /// `max(x, 0)`.
    Relu,
    /// `1 / (1 + exp(-x))`.
    Sigmoid,
    /// `tanh(x)`.
    Tanh,
    /// `x` for `x > 0`, else `slope * x`.
    LeakyRelu(f32),
    /// GELU, tanh approximation: `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`
    /// (Keras' `gelu(approximate=True)`; differs from the erf form by < 1e-3).
    Gelu,
    /// GELU, exact form `0.5 x (1 + erf(x / sqrt(2)))` (Keras' default `gelu`), with erf
    /// approximated to < 1.5e-7 absolute.
    GeluErf,
    /// `x` for `x > 0`, else `alpha * (e^x - 1)`.
    Elu(f32),
    /// Scaled ELU with the self-normalising constants.
    Selu,
    /// `x * sigmoid(x)` (SiLU).
    Swish,
    /// `ln(1 + e^x)`.
    Softplus,
    /// `ln(clamp(x, eps, 1 - eps))`, gradient `1 / x` inside the clip and 0 outside: the log of a
    /// probability in the cross-entropies (Keras clips to its epsilon). Not a layer activation.
    LogClipped(f32),
}

impl Activation {
    /// The shader's activation code (`act` in activation_math.wgsl) and its alpha.
    pub(crate) fn code(self) -> (u32, f32) {
        match self {
            Activation::Linear => (0, 0.0),
            Activation::Relu => (1, 0.0),
            Activation::Sigmoid => (2, 0.0),
            Activation::Tanh => (3, 0.0),
            Activation::LeakyRelu(s) => (4, s),
            Activation::Gelu => (5, 0.0),
            Activation::GeluErf => (6, 0.0),
            Activation::Elu(a) => (7, a),
            Activation::Selu => (8, 0.0),
            Activation::Swish => (9, 0.0),
            Activation::Softplus => (10, 0.0),
            Activation::LogClipped(eps) => (11, eps),
        }
    }
}

/// A binary elementwise operation on equal-shaped tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    /// `a + b`.
    Add,
    /// `a - b`.
    Sub,
    /// `a * b`.
    Mul,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    c: u32,
    code: u32,
    /// Dropout's drop threshold (rate * 2^32).
    threshold: u32,
    alpha: f32,
    beta: f32,
    pad1: [f32; 2],
}

impl Gpu {
    fn elementwise(
        &self,
        entry: &str,
        x: &GpuTensor,
        y: Option<&GpuTensor>,
        c: usize,
        code: u32,
        alpha: f32,
        beta: f32,
    ) -> Result<GpuTensor> {
        x.expect_f32(entry_op(entry))?;
        let out = self.empty(x.shape(), DType::F32)?;
        let n = u32_of("elements", x.len())?;
        let p = Params {
            n,
            c: u32_of("bias length", c)?,
            code,
            threshold: 0,
            alpha,
            beta,
            pad1: [0.0; 2],
        };
        let (gx, gy) = grid(n.div_ceil(256));
        let mut bufs = vec![(1, x.buffer()), (3, out.buffer())];
        if let Some(y) = y {
            y.expect_f32(entry_op(entry))?;
            bufs.push((2, y.buffer()));
        }
        if n > 0 {
            let mut batch = self.batch();
            batch.dispatch("elementwise", entry, &p, &bufs, (gx, gy, 1))?;
            batch.submit()?;
        }
        Ok(out)
    }

    /// `x + bias`, with `bias` broadcast over the last axis of `x`.
    pub fn bias_add(&self, x: &GpuTensor, bias: &GpuTensor) -> Result<GpuTensor> {
        let c = *x.shape().last().unwrap_or(&1);
        expect_len("bias_add", "bias (last axis of x)", bias, c)?;
        if c == 0 {
            return self.empty(x.shape(), DType::F32);
        }
        self.elementwise("bias_add", x, Some(bias), c, 0, 0.0, 0.0)
    }

    /// `act(x)`.
    pub fn activation(&self, act: Activation, x: &GpuTensor) -> Result<GpuTensor> {
        let (code, alpha) = act.code();
        self.elementwise("activation", x, None, 1, code, alpha, 0.0)
    }

    /// Inverted dropout of `x`: each element is zeroed with probability `rate` and the rest are
    /// scaled by `1 / (1 - rate)`. The mask is a hash of `(seed, element index)`, generated on
    /// the device; the same call on the upstream gradient with the same seed is the backward
    /// pass, so no mask is stored.
    pub fn dropout(&self, x: &GpuTensor, rate: f32, seed: u64) -> Result<GpuTensor> {
        if !(0.0..1.0).contains(&rate) {
            return Err(GpuError::Invalid {
                op: "dropout",
                message: format!("rate must be in [0, 1), got {rate}"),
            });
        }
        x.expect_f32("dropout")?;
        let out = self.empty(x.shape(), DType::F32)?;
        let n = u32_of("elements", x.len())?;
        let p = Params {
            n,
            c: seed as u32,
            code: (seed >> 32) as u32,
            threshold: (f64::from(rate) * 4_294_967_296.0).min(u32::MAX as f64) as u32,
            alpha: 1.0 / (1.0 - rate),
            beta: 0.0,
            pad1: [0.0; 2],
        };
        if n > 0 {
            let (gx, gy) = grid(n.div_ceil(256));
            let mut batch = self.batch();
            batch.dispatch(
                "elementwise",
                "dropout",
                &p,
                &[(1, x.buffer()), (3, out.buffer())],
                (gx, gy, 1),
            )?;
            batch.submit()?;
        }
        Ok(out)
    }

    /// `dy * act'(x)`: the gradient wrt the activation's input `x`, given the upstream gradient `dy`.
    pub fn activation_backward(&self, act: Activation, x: &GpuTensor, dy: &GpuTensor) -> Result<GpuTensor> {
        expect_len("activation_backward", "dy (same size as x)", dy, x.len())?;
        let (code, alpha) = act.code();
        self.elementwise("activation_grad", x, Some(dy), 1, code, alpha, 0.0)
    }

    /// `a op b` for equal-sized tensors (the result takes `a`'s shape).
    pub fn binary(&self, op: BinaryOp, a: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
        if a.shape() != b.shape() {
            return Err(GpuError::Shape {
                op: "binary",
                expected: format!("{:?} (same as a)", a.shape()),
                got: format!("{:?}", b.shape()),
            });
        }
        let code = match op {
            BinaryOp::Add => 0,
            BinaryOp::Sub => 1,
            BinaryOp::Mul => 2,
        };
        self.elementwise("binary", a, Some(b), 1, code, 0.0, 0.0)
    }

    /// `a + b` (equal shapes).
    pub fn add(&self, a: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
        self.binary(BinaryOp::Add, a, b)
    }

    /// `a * b` elementwise (equal shapes).
    pub fn mul(&self, a: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
        self.binary(BinaryOp::Mul, a, b)
    }

    /// `alpha * x + beta`.
    pub fn scale(&self, x: &GpuTensor, alpha: f32, beta: f32) -> Result<GpuTensor> {
        self.elementwise("scale", x, None, 1, 0, alpha, beta)
    }

    /// `x` clamped to `[-limit, limit]` (Keras' `clipvalue`; NaN stays NaN).
    pub fn clip_value(&self, x: &GpuTensor, limit: f32) -> Result<GpuTensor> {
        self.elementwise("clip_value", x, None, 1, 0, limit, 0.0)
    }

    /// `x * limit / norm` when `norm = sqrt(sum_sq[0])` exceeds `limit`, else `x` (Keras'
    /// `clipnorm`, or with `global` its `globalClipnorm`, `sum_sq` then summed over every
    /// gradient). The norm stays on the device: nothing waits for the host.
    pub fn clip_by_norm(&self, x: &GpuTensor, sum_sq: &GpuTensor, limit: f32, global: bool) -> Result<GpuTensor> {
        expect_len("clip_by_norm", "sum of squares [1]", sum_sq, 1)?;
        self.elementwise("clip_by_norm", x, Some(sum_sq), 1, global as u32, limit, 0.0)
    }

    /// The sum of squares of `x`, as a `[1]` tensor.
    pub fn sum_of_squares(&self, x: &GpuTensor) -> Result<GpuTensor> {
        let flat = x.clone().reshape(&[x.len()])?;
        self.sum(&self.mul(&flat, &flat)?)
    }

    /// 1 where `x != 0`, else 0, in `x`'s shape: the Keras mask of `Embedding(maskZero)`
    /// token ids.
    pub fn nonzero_mask(&self, x: &GpuTensor) -> Result<GpuTensor> {
        self.elementwise("nonzero", x, None, 1, 0, 0.0, 0.0)
    }
}

fn entry_op(entry: &str) -> &'static str {
    match entry {
        "bias_add" => "bias_add",
        "activation" => "activation",
        "activation_grad" => "activation_backward",
        "binary" => "binary",
        "nonzero" => "nonzero_mask",
        "clip_value" => "clip_value",
        "clip_by_norm" => "clip_by_norm",
        _ => "scale",
    }
}
