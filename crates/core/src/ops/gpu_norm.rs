//! Layer and batch normalisation on the GPU: cortex-wgpu's kernels behind `cpu::norm`'s entry
//! points, with their backward passes on the device.

use cortex_wgpu::{BatchNormStats, GpuTensor};

use super::gpu::{buf, grad, run};
use crate::backprop::{GpuCustomOp, Op};
use crate::cpu::norm::BatchStats;
use crate::{Result, Tensor};

/// `gamma` on the device, or ones when the layer has no scale (`scale: false`).
fn gamma_or_ones(gamma: Option<&Tensor>, c: usize) -> Result<GpuTensor> {
    match gamma {
        Some(g) => buf(g),
        None => run(|gpu| gpu.upload(&vec![1.0; c], &[c])),
    }
}

pub(crate) fn layer_norm(x: &Tensor, gamma: Option<&Tensor>, beta: Option<&Tensor>, eps: f32) -> Result<Tensor> {
    let c = *x.shape().last().expect("checked by the caller");
    let (gx, gg) = (buf(x)?, gamma_or_ones(gamma, c)?);
    let gb = match beta {
        Some(b) => buf(b)?,
        None => run(|gpu| gpu.zeros(&[c]))?,
    };
    let out = run(|gpu| gpu.layer_norm(&gx, &gg, &gb, eps))?;
    let mut inputs = vec![x];
    inputs.extend(gamma);
    inputs.extend(beta);
    Ok(Tensor::from_gpu_op(
        out.y,
        x.shape().to_vec(),
        |_| {
            Op::GpuCustom(Box::new(LayerNormBackward {
                operands: Affine::new(x, gamma, beta),
                gamma_buf: gg,
                mean: out.mean,
                rstd: out.rstd,
            }))
        },
        &inputs,
    ))
}

/// A normalisation's differentiable operands: the input and the optional scale and offset.
struct Affine {
    x: Tensor,
    gamma: Option<Tensor>,
    beta: Option<Tensor>,
}

impl Affine {
    fn new(x: &Tensor, gamma: Option<&Tensor>, beta: Option<&Tensor>) -> Affine {
        Affine {
            x: x.clone(),
            gamma: gamma.cloned(),
            beta: beta.cloned(),
        }
    }

    fn inputs(&self) -> Vec<&Tensor> {
        let mut v = vec![&self.x];
        v.extend(self.gamma.iter());
        v.extend(self.beta.iter());
        v
    }

    /// The gradients of the operands that have one.
    fn grads(&self, dx: Option<GpuTensor>, dgamma: GpuTensor, dbeta: GpuTensor) -> Vec<(Tensor, Tensor)> {
        let mut v = Vec::with_capacity(3);
        if let Some(dx) = dx {
            v.push((self.x.clone(), grad(dx)));
        }
        if let Some(t) = &self.gamma {
            v.push((t.clone(), grad(dgamma)));
        }
        if let Some(t) = &self.beta {
            v.push((t.clone(), grad(dbeta)));
        }
        v
    }
}

struct LayerNormBackward {
    operands: Affine,
    gamma_buf: GpuTensor,
    mean: GpuTensor,
    rstd: GpuTensor,
}

impl GpuCustomOp for LayerNormBackward {
    fn name(&self) -> &'static str {
        "layerNormalization"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        self.operands.inputs()
    }
    fn vjp(&self, dy: &GpuTensor) -> Result<Vec<(Tensor, Tensor)>> {
        let gx = buf(&self.operands.x)?;
        let g = run(|gpu| gpu.layer_norm_backward(&gx, &self.gamma_buf, &self.mean, &self.rstd, dy))?;
        Ok(self.operands.grads(Some(g.dx), g.dgamma, g.dbeta))
    }
}

/// Batch normalisation with the batch's statistics (`stats: None`, returned for the moving
/// averages) or given ones (constants).
pub(crate) fn batch_norm(
    x: &Tensor,
    gamma: Option<&Tensor>,
    beta: Option<&Tensor>,
    stats: Option<&BatchStats>,
    eps: f32,
) -> Result<(Tensor, BatchStats)> {
    let c = *x.shape().last().expect("checked by the caller");
    let moving = match stats {
        Some(s) => Some(run(|gpu| Ok((gpu.upload(&s.mean, &[c])?, gpu.upload(&s.var, &[c])?)))?),
        None => None,
    };
    let (y, batch) = batch_norm_on_device(x, gamma, beta, moving, eps)?;
    // This entry point's statistics are host values: the batch's come back (2 x c floats).
    let host = match (stats, batch) {
        (Some(s), _) => s.clone(),
        (None, Some(b)) => run(|gpu| {
            Ok(BatchStats {
                mean: gpu.download(&b.mean)?,
                var: gpu.download(&b.var)?,
            })
        })?,
        (None, None) => unreachable!("batch statistics are computed when none are given"),
    };
    Ok((y, host))
}

/// Batch normalization whose statistics stay on the device: normalizes with `moving` (mean,
/// variance) when given (inference), else with the batch's, which are returned for the
/// layer to blend into its moving averages on the device.
pub(crate) fn batch_norm_on_device(
    x: &Tensor,
    gamma: Option<&Tensor>,
    beta: Option<&Tensor>,
    moving: Option<(GpuTensor, GpuTensor)>,
    eps: f32,
) -> Result<(Tensor, Option<BatchNormStats>)> {
    let gx = buf(x)?;
    let (gg, gb) = (gamma.map(buf).transpose()?, beta.map(buf).transpose()?);
    let batch_stats = moving.is_none();
    let (mean, var) = match moving {
        Some(m) => m,
        None => run(|gpu| gpu.batch_norm_stats(&gx)).map(|s| (s.mean, s.var))?,
    };
    let y = run(|gpu| gpu.batch_norm(&gx, &mean, &var, gg.as_ref(), gb.as_ref(), eps))?;
    let batch = batch_stats.then(|| BatchNormStats {
        mean: mean.clone(),
        var: var.clone(),
    });
    let mut inputs = vec![x];
    inputs.extend(gamma);
    inputs.extend(beta);
    let y = Tensor::from_gpu_op(
        y,
        x.shape().to_vec(),
        |_| {
            Op::GpuCustom(Box::new(BatchNormBackward {
                operands: Affine::new(x, gamma, beta),
                mean,
                var,
                eps,
                batch_stats,
            }))
        },
        &inputs,
    );
    Ok((y, batch))
}

/// `moving = moving * momentum + batch * (1 - momentum)` for a layer's two moving averages,
/// in place on the device.
pub(crate) fn update_moving(mean: &GpuTensor, var: &GpuTensor, batch: &BatchNormStats, momentum: f32) -> Result<()> {
    run(|gpu| gpu.batch_norm_update_moving(mean, var, batch, momentum))
}

struct BatchNormBackward {
    operands: Affine,
    mean: GpuTensor,
    var: GpuTensor,
    eps: f32,
    batch_stats: bool,
}

impl GpuCustomOp for BatchNormBackward {
    fn name(&self) -> &'static str {
        "batchNormalization"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        self.operands.inputs()
    }
    fn vjp(&self, dy: &GpuTensor) -> Result<Vec<(Tensor, Tensor)>> {
        let a = &self.operands;
        let gx = buf(&a.x)?;
        let gg = a.gamma.as_ref().map(buf).transpose()?;
        let g = run(|gpu| {
            gpu.batch_norm_backward(
                &gx,
                dy,
                &self.mean,
                &self.var,
                gg.as_ref(),
                self.eps,
                self.batch_stats,
                a.x.tracks(),
            )
        })?;
        Ok(a.grads(g.dx, g.dgamma, g.dbeta))
    }
}
