//! Softmax over the last axis and sparse categorical cross-entropy (shader `softmax`).

use super::{expect_len, u32_of};
use crate::context::grid;
use crate::{DType, Gpu, GpuError, GpuTensor, Result};

/// What the cross-entropy input holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrossEntropyInput {
    /// Unnormalised scores; the gradient is wrt the logits.
    Logits,
    /// Probabilities (e.g. a softmax output), clipped to `[1e-7, 1 - 1e-7]` as Keras does;
    /// the gradient is wrt the probabilities.
    Probabilities,
}

/// Loss and gradient of [`Gpu::sparse_categorical_crossentropy`].
#[derive(Debug)]
pub struct CrossEntropyOutput {
    /// Mean loss over the batch, shape `[1]`.
    pub loss: GpuTensor,
    /// Gradient of the mean loss wrt the input, same shape as the input.
    pub grad: GpuTensor,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    nan_bits: u32,
    pad: u32,
    grad_scale: f32,
    eps: f32,
    pad1: [f32; 2],
}

fn rows_cols(op: &'static str, x: &GpuTensor) -> Result<(usize, usize)> {
    let cols = *x.shape().last().ok_or_else(|| GpuError::Shape {
        op,
        expected: "rank >= 1".into(),
        got: "a scalar".into(),
    })?;
    Ok((x.len().checked_div(cols).unwrap_or(0), cols))
}

impl Gpu {
    /// Softmax along the last axis.
    pub fn softmax(&self, x: &GpuTensor) -> Result<GpuTensor> {
        self.row_kernel("softmax", x, None)
    }

    /// Log-softmax along the last axis.
    pub fn log_softmax(&self, x: &GpuTensor) -> Result<GpuTensor> {
        self.row_kernel("log_softmax", x, None)
    }

    /// The gradient wrt softmax's input, from its output `y` and the upstream gradient `dy`.
    pub fn softmax_backward(&self, y: &GpuTensor, dy: &GpuTensor) -> Result<GpuTensor> {
        self.row_kernel("softmax_grad", y, Some(dy))
    }

    /// The gradient wrt log-softmax's input, from its output `y` and the upstream gradient `dy`.
    pub fn log_softmax_backward(&self, y: &GpuTensor, dy: &GpuTensor) -> Result<GpuTensor> {
        self.row_kernel("log_softmax_grad", y, Some(dy))
    }

    /// One workgroup per row of `x` (and of `second`, same shape) running `entry`.
    fn row_kernel(&self, entry: &'static str, x: &GpuTensor, second: Option<&GpuTensor>) -> Result<GpuTensor> {
        x.expect_f32(entry)?;
        let (rows, cols) = rows_cols(entry, x)?;
        let out = self.empty(x.shape(), DType::F32)?;
        let p = Params {
            rows: u32_of("rows", rows)?,
            cols: u32_of("cols", cols)?,
            nan_bits: f32::NAN.to_bits(),
            pad: 0,
            grad_scale: 1.0,
            eps: 0.0,
            pad1: [0.0; 2],
        };
        let mut bufs = vec![(1, x.buffer()), (3, out.buffer())];
        if let Some(dy) = second {
            dy.expect_f32(entry)?;
            expect_len(entry, "dy (same size as y)", dy, x.len())?;
            bufs.push((2, dy.buffer()));
        }
        if rows > 0 {
            let (gx, gy) = grid(p.rows);
            let mut batch = self.batch();
            batch.dispatch("softmax", entry, &p, &bufs, (gx, gy, 1))?;
            batch.submit()?;
        }
        Ok(out)
    }

    /// Sparse categorical cross-entropy of `x` (`[..batch, classes]`) against integer class
    /// `labels` (`[..batch]`, f32 holding exact integers): the mean loss and its gradient.
    ///
    /// A label outside `0..classes` makes that row's loss (and so the mean) NaN.
    pub fn sparse_categorical_crossentropy(
        &self,
        x: &GpuTensor,
        labels: &GpuTensor,
        input: CrossEntropyInput,
    ) -> Result<CrossEntropyOutput> {
        x.expect_f32("sparse_categorical_crossentropy")?;
        labels.expect_f32("sparse_categorical_crossentropy")?;
        let (rows, cols) = rows_cols("sparse_categorical_crossentropy", x)?;
        expect_len(
            "sparse_categorical_crossentropy",
            "labels (one per row of x)",
            labels,
            rows,
        )?;
        if rows == 0 || cols == 0 {
            return Err(GpuError::Invalid {
                op: "sparse_categorical_crossentropy",
                message: format!("empty input {:?}", x.shape()),
            });
        }
        let grad = self.empty(x.shape(), DType::F32)?;
        let row_loss = self.empty(&[rows], DType::F32)?;
        let loss = self.empty(&[1], DType::F32)?;
        let p = Params {
            rows: u32_of("rows", rows)?,
            cols: u32_of("cols", cols)?,
            nan_bits: f32::NAN.to_bits(),
            pad: 0,
            grad_scale: 1.0 / rows as f32,
            eps: 1e-7,
            pad1: [0.0; 2],
        };
        let entry = match input {
            CrossEntropyInput::Logits => "sce_logits",
            CrossEntropyInput::Probabilities => "sce_probs",
        };
        let (gx, gy) = grid(p.rows);
        let mut batch = self.batch();
        let bufs = [
            (1, x.buffer()),
            (2, labels.buffer()),
            (3, grad.buffer()),
            (4, row_loss.buffer()),
        ];
        batch.dispatch("softmax", entry, &p, &bufs, (gx, gy, 1))?;
        self.record_sum(&mut batch, row_loss.buffer(), rows, 1.0 / rows as f32, loss.buffer())?;
        batch.submit()?;
        Ok(CrossEntropyOutput { loss, grad })
    }
}
