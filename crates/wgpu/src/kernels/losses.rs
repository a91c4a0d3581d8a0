//! Losses against dense targets (shader `losses`): binary and categorical cross-entropy
//! (probabilities or logits) and mean absolute error, each the Keras mean loss and its exact
//! gradient. Sparse categorical cross-entropy lives with the softmax kernels.

use super::{expect_len, u32_of};
use crate::context::grid;
use crate::{CrossEntropyInput, DType, Gpu, GpuError, GpuTensor, Result};

/// Probability clip of the cross-entropies (Keras `epsilon()`).
const EPSILON: f32 = 1e-7;

/// A mean loss and its gradient.
#[derive(Debug)]
pub struct LossOutput {
    /// Mean loss, shape `[1]`.
    pub loss: GpuTensor,
    /// Gradient of the mean loss wrt the prediction, the prediction's shape.
    pub grad: GpuTensor,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    rows: u32,
    cols: u32,
    pad: u32,
    grad_scale: f32,
    eps: f32,
    pad1: [f32; 2],
}

/// How the per-element (or per-row) terms of a loss become its mean.
enum Layout {
    /// One thread per element; the mean divides the sum of the terms by `divisor`.
    Elementwise { divisor: usize },
    /// One workgroup per row of the last axis; one term per row, the mean is over rows.
    Rows,
}

impl Gpu {
    /// Binary cross-entropy of `x` against `target` (same number of elements, values in
    /// [0, 1]), averaged over every element as Keras does: from probabilities (clipped to
    /// `[1e-7, 1 - 1e-7]`, no gradient where clipped) or from logits.
    pub fn binary_crossentropy(
        &self,
        x: &GpuTensor,
        target: &GpuTensor,
        input: CrossEntropyInput,
    ) -> Result<LossOutput> {
        let entry = match input {
            CrossEntropyInput::Logits => "bce_logits",
            CrossEntropyInput::Probabilities => "bce_probs",
        };
        let divisor = x.len();
        self.dense_loss("binary_crossentropy", entry, x, target, Layout::Elementwise { divisor })
    }

    /// Categorical cross-entropy of `x` (`[..batch, classes]`) against one-hot or soft
    /// `target` distributions of the same shape, averaged over the rows: from probabilities
    /// (clipped to `[1e-7, 1 - 1e-7]`, no gradient where clipped) or from logits (a stable
    /// log-softmax; the gradient is `softmax(x) * sum(t) - t` per row, over the rows).
    pub fn categorical_crossentropy(
        &self,
        x: &GpuTensor,
        target: &GpuTensor,
        input: CrossEntropyInput,
    ) -> Result<LossOutput> {
        let op = "categorical_crossentropy";
        match input {
            CrossEntropyInput::Logits => self.dense_loss(op, "cce_logits", x, target, Layout::Rows),
            CrossEntropyInput::Probabilities => {
                let divisor = rows_cols(op, x)?.0;
                self.dense_loss(op, "cce_probs", x, target, Layout::Elementwise { divisor })
            }
        }
    }

    /// Mean absolute error of `x` against `target` (same number of elements), averaged over
    /// every element; the gradient is `sign(x - t) / n` (0 where they are equal).
    pub fn mean_absolute_error(&self, x: &GpuTensor, target: &GpuTensor) -> Result<LossOutput> {
        let divisor = x.len();
        self.dense_loss("mean_absolute_error", "mae", x, target, Layout::Elementwise { divisor })
    }

    fn dense_loss(
        &self,
        op: &'static str,
        entry: &str,
        x: &GpuTensor,
        target: &GpuTensor,
        layout: Layout,
    ) -> Result<LossOutput> {
        x.expect_f32(op)?;
        target.expect_f32(op)?;
        expect_len(op, "targets (one per element of x)", target, x.len())?;
        let (rows, cols) = rows_cols(op, x)?;
        if rows == 0 || cols == 0 {
            return Err(GpuError::Invalid {
                op,
                message: format!("empty input {:?}", x.shape()),
            });
        }
        let (divisor, terms) = match layout {
            Layout::Elementwise { divisor } => (divisor, x.len()),
            Layout::Rows => (rows, rows),
        };
        let grad = self.empty(x.shape(), DType::F32)?;
        let term = self.empty(&[terms], DType::F32)?;
        let loss = self.empty(&[1], DType::F32)?;
        let p = Params {
            n: u32_of("elements", x.len())?,
            rows: u32_of("rows", rows)?,
            cols: u32_of("cols", cols)?,
            pad: 0,
            grad_scale: 1.0 / divisor as f32,
            eps: EPSILON,
            pad1: [0.0; 2],
        };
        let groups = match layout {
            Layout::Elementwise { .. } => p.n.div_ceil(256),
            Layout::Rows => p.rows,
        };
        let (gx, gy) = grid(groups);
        let mut batch = self.batch();
        let bufs = [
            (1, x.buffer()),
            (2, target.buffer()),
            (3, grad.buffer()),
            (4, term.buffer()),
        ];
        batch.dispatch("losses", entry, &p, &bufs, (gx, gy, 1))?;
        self.record_sum(&mut batch, term.buffer(), terms, 1.0 / divisor as f32, loss.buffer())?;
        batch.hold(term);
        batch.submit()?;
        Ok(LossOutput { loss, grad })
    }
}

/// `x` as `[rows, cols]` over its last axis.
fn rows_cols(op: &'static str, x: &GpuTensor) -> Result<(usize, usize)> {
    let cols = *x.shape().last().ok_or_else(|| GpuError::Shape {
        op,
        expected: "rank >= 1".into(),
        got: "a scalar".into(),
    })?;
    Ok((x.len().checked_div(cols).unwrap_or(0), cols))
}
