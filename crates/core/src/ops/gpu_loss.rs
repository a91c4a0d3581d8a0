//! The Keras losses on the GPU: cortex-wgpu's fused kernels give the mean loss and its
//! gradient in one pass (mean squared error composes from ops), recorded like the CPU's fused
//! losses so backward scales the saved gradient by the upstream one.

use cortex_wgpu::{Activation as GpuAct, CrossEntropyInput, GpuTensor};

use super::gpu::{buf, fill, grad, run};
use crate::backprop::{GpuCustomOp, Op};
use crate::device::gpu_err;
use crate::nn::loss::Loss;
use crate::{Result, Tensor};

/// `loss(pred, target)` for tensors on the GPU (`check_targets` has run).
pub(crate) fn compute(loss: &Loss, pred: &Tensor, target: &Tensor) -> Result<Tensor> {
    let input = |from_logits: bool| match from_logits {
        true => CrossEntropyInput::Logits,
        false => CrossEntropyInput::Probabilities,
    };
    let (x, t) = (buf(pred)?, buf(target)?);
    let (value, gradient) = match *loss {
        Loss::MeanSquaredError => {
            let d = super::sub(pred, target)?;
            return super::mean(&super::mul(&d, &d)?);
        }
        Loss::MeanAbsoluteError => run(|gpu| gpu.mean_absolute_error(&x, &t)).map(|o| (o.loss, o.grad))?,
        Loss::BinaryCrossentropy { from_logits } => {
            run(|gpu| gpu.binary_crossentropy(&x, &t, input(from_logits))).map(|o| (o.loss, o.grad))?
        }
        Loss::CategoricalCrossentropy { from_logits } => {
            run(|gpu| gpu.categorical_crossentropy(&x, &t, input(from_logits))).map(|o| (o.loss, o.grad))?
        }
        Loss::SparseCategoricalCrossentropy { from_logits } => {
            let rows = t.len();
            let labels = t.reshape(&[rows]).map_err(gpu_err)?;
            run(|gpu| gpu.sparse_categorical_crossentropy(&x, &labels, input(from_logits))).map(|o| (o.loss, o.grad))?
        }
    };
    let value = value.reshape(&[]).map_err(gpu_err)?;
    Ok(Tensor::from_gpu_op(
        value,
        vec![],
        |_| {
            Op::GpuCustom(Box::new(LossBackward {
                x: pred.clone(),
                grad: gradient,
            }))
        },
        &[pred],
    ))
}

/// `loss(pred, target)` with one weight per sample (`classWeight` / `sampleWeight`), composed
/// from ops on the device: each element's term times its sample's weight, summed and divided
/// as Keras' `sum_over_batch_size` does (the CPU's fused losses compute the same).
pub(crate) fn compute_weighted(loss: &Loss, pred: &Tensor, target: &Tensor, weights: &[f32]) -> Result<Tensor> {
    use super::{activation, add, log_softmax, mul, scale, sub, sum};
    use crate::cpu::elementwise::Activation::{Relu, Softplus};
    let n = pred.len();
    let per_sample = (n / weights.len().max(1)).max(1);
    let expanded: Vec<f32> = (0..n).map(|i| weights[i / per_sample]).collect();
    let w = Tensor::new(expanded, pred.shape())?.to(pred.device())?;
    let weighted_mean = |terms: &Tensor, count: usize| scale(&sum(&mul(terms, &w)?)?, 1.0 / count.max(1) as f32);
    match *loss {
        Loss::MeanSquaredError => {
            let d = sub(pred, target)?;
            weighted_mean(&mul(&d, &d)?, n)
        }
        Loss::MeanAbsoluteError => {
            // |d| as relu(d) + relu(-d): no gradient where they are equal, as on the CPU.
            let d = sub(pred, target)?;
            weighted_mean(&add(&activation(&d, Relu)?, &activation(&scale(&d, -1.0)?, Relu)?)?, n)
        }
        Loss::BinaryCrossentropy { from_logits: true } => {
            weighted_mean(&sub(&activation(pred, Softplus)?, &mul(pred, target)?)?, n)
        }
        Loss::BinaryCrossentropy { from_logits: false } => {
            // -(y ln c + (1 - y) ln(1 - c)) with c the clipped probability; ln(1 - c) is the
            // clipped log of 1 - p (the same clip, mirrored).
            // Ones made on the device (0 * zeros + 1), not uploaded every step.
            let ones = Tensor::from_gpu(run(|gpu| gpu.scale(&gpu.zeros(pred.shape())?, 0.0, 1.0))?);
            let (log_p, log_q) = (log_clipped(pred)?, log_clipped(&sub(&ones, pred)?)?);
            let terms = add(&mul(target, &log_p)?, &mul(&sub(&ones, target)?, &log_q)?)?;
            scale(&weighted_mean(&terms, n)?, -1.0)
        }
        Loss::CategoricalCrossentropy { from_logits } | Loss::SparseCategoricalCrossentropy { from_logits } => {
            let classes = *pred.shape().last().unwrap_or(&1);
            let targets = match loss {
                // Labels as one-hot rows (read back: one value per row).
                Loss::SparseCategoricalCrossentropy { .. } => {
                    let mut onehot = vec![0.0; n];
                    for (r, &label) in target.host_values()?.iter().enumerate() {
                        onehot[r * classes + label as usize] = 1.0;
                    }
                    Tensor::new(onehot, pred.shape())?.to(pred.device())?
                }
                _ => target.clone(),
            };
            let log_p = match from_logits {
                true => log_softmax(pred)?,
                false => log_clipped(pred)?,
            };
            let terms = mul(&log_p, &targets)?;
            scale(&weighted_mean(&terms, n / classes.max(1))?, -1.0)
        }
    }
}

/// `ln(clamp(p, eps, 1 - eps))` with Keras' epsilon, differentiable (zero gradient where the
/// clip bites, as the CPU's cross-entropies).
fn log_clipped(p: &Tensor) -> Result<Tensor> {
    let act = GpuAct::LogClipped(crate::nn::loss::EPSILON as f32);
    let gp = buf(p)?;
    let out = run(|gpu| gpu.activation(act, &gp))?;
    Ok(Tensor::from_gpu_op(
        out,
        p.shape().to_vec(),
        |_| Op::GpuCustom(Box::new(LogClippedBackward { p: p.clone(), act })),
        &[p],
    ))
}

struct LogClippedBackward {
    p: Tensor,
    act: GpuAct,
}

impl GpuCustomOp for LogClippedBackward {
    fn name(&self) -> &'static str {
        "clipped log"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.p]
    }
    fn vjp(&self, dy: &GpuTensor) -> Result<Vec<(Tensor, Tensor)>> {
        let gp = buf(&self.p)?;
        let gx = run(|gpu| gpu.activation_backward(self.act, &gp, dy))?;
        Ok(vec![(self.p.clone(), grad(gx))])
    }
}

/// A fused loss's backward: the saved gradient times the upstream scalar.
struct LossBackward {
    x: Tensor,
    grad: GpuTensor,
}

impl GpuCustomOp for LossBackward {
    fn name(&self) -> &'static str {
        "loss"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.x]
    }
    fn vjp(&self, dy: &GpuTensor) -> Result<Vec<(Tensor, Tensor)>> {
        let saved = &self.grad;
        let gx = run(|gpu| {
            let scale = fill(gpu, dy, saved.shape(), 1.0)?;
            gpu.mul(saved, &scale)
        })?;
        Ok(vec![(
            self.x.clone(),
            grad(gx.reshape(self.x.shape()).map_err(gpu_err)?),
        )])
    }
}
