//! The loss of a GPU model: which kernel computes it (planned from the compiled [`Loss`] and
//! the output layer) and the loss value and output gradient of one batch.

use cortex_wgpu::{BinaryOp, CrossEntropyInput, Gpu, GpuTensor};

use super::{gpu_err, unsupported};
use crate::nn::loss::Loss;
use crate::{Result, Tensor};

/// A loss as the GPU computes it; every one is the batch mean, as on the CPU.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum GpuLoss {
    /// Sparse categorical cross-entropy; `fused_softmax`: the last layer's softmax is folded in.
    SparseCe {
        input: CrossEntropyInput,
        fused_softmax: bool,
    },
    /// Categorical cross-entropy against one-hot or soft targets; `fused_softmax` as above.
    Ce {
        input: CrossEntropyInput,
        fused_softmax: bool,
    },
    /// Binary cross-entropy (a sigmoid output stays a layer: the loss clips probabilities as
    /// the CPU does).
    Bce {
        input: CrossEntropyInput,
    },
    Mse,
    Mae,
}

impl GpuLoss {
    /// The GPU form of `loss` for a model whose output layer is (`ends_in_softmax`) or is not a
    /// softmax. A softmax output runs only fused into a cross-entropy from probabilities: the
    /// loss then starts from the logits, which is the same gradient (and the same loss up to
    /// the probability clipping) without the softmax's backward pass.
    pub(super) fn plan(loss: &Loss, ends_in_softmax: bool) -> Result<GpuLoss> {
        let ce = |from_logits: bool| match (from_logits, ends_in_softmax) {
            (false, true) => Some((CrossEntropyInput::Logits, true)),
            (false, false) => Some((CrossEntropyInput::Probabilities, false)),
            (true, false) => Some((CrossEntropyInput::Logits, false)),
            (true, true) => None,
        };
        let planned = match *loss {
            Loss::SparseCategoricalCrossentropy { from_logits } => {
                ce(from_logits).map(|(input, fused_softmax)| GpuLoss::SparseCe { input, fused_softmax })
            }
            Loss::CategoricalCrossentropy { from_logits } => {
                ce(from_logits).map(|(input, fused_softmax)| GpuLoss::Ce { input, fused_softmax })
            }
            _ if ends_in_softmax => None,
            Loss::BinaryCrossentropy { from_logits } => Some(GpuLoss::Bce {
                input: if from_logits {
                    CrossEntropyInput::Logits
                } else {
                    CrossEntropyInput::Probabilities
                },
            }),
            Loss::MeanSquaredError => Some(GpuLoss::Mse),
            Loss::MeanAbsoluteError => Some(GpuLoss::Mae),
        };
        planned.ok_or_else(|| unsupported(&format!("the loss {loss:?} with this output layer")))
    }

    /// Whether the model's final softmax is left to this loss.
    pub(super) fn fuses_softmax(&self) -> bool {
        matches!(
            self,
            GpuLoss::SparseCe {
                fused_softmax: true,
                ..
            } | GpuLoss::Ce {
                fused_softmax: true,
                ..
            }
        )
    }

    /// The loss of `out` against the host targets `y` (a `[1]` tensor) and its gradient with
    /// respect to `out`. `loss` is the compiled loss, for its target checks.
    pub(super) fn compute(&self, g: &Gpu, loss: &Loss, out: &GpuTensor, y: &Tensor) -> Result<(GpuTensor, GpuTensor)> {
        let dense_target = || -> Result<GpuTensor> {
            // The prediction's shape (and finite values), as the CPU loss checks.
            loss.check_targets(out.shape(), y)?;
            g.upload(y.data(), out.shape()).map_err(gpu_err)
        };
        let done = match *self {
            GpuLoss::SparseCe { input, .. } => {
                let labels = g.upload(y.data(), &[y.len()]).map_err(gpu_err)?;
                let ce = g
                    .sparse_categorical_crossentropy(out, &labels, input)
                    .map_err(gpu_err)?;
                return Ok((ce.loss, ce.grad));
            }
            GpuLoss::Mse => {
                let diff = g.binary(BinaryOp::Sub, out, &dense_target()?).map_err(gpu_err)?;
                let value = g.mean(&g.mul(&diff, &diff).map_err(gpu_err)?).map_err(gpu_err)?;
                let grad = g.scale(&diff, 2.0 / out.len().max(1) as f32, 0.0).map_err(gpu_err)?;
                return Ok((value, grad));
            }
            GpuLoss::Ce { input, .. } => g.categorical_crossentropy(out, &dense_target()?, input),
            GpuLoss::Bce { input } => g.binary_crossentropy(out, &dense_target()?, input),
            GpuLoss::Mae => g.mean_absolute_error(out, &dense_target()?),
        };
        let done = done.map_err(gpu_err)?;
        Ok((done.loss, done.grad))
    }
}
