//! The Keras losses on the GPU: cortex-wgpu's fused kernels give the mean loss and its
//! gradient in one pass (mean squared error composes from ops), recorded like the CPU's fused
//! losses so backward scales the saved gradient by the upstream one.

use cortex_wgpu::{CrossEntropyInput, GpuTensor};

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
