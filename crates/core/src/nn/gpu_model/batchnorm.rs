//! BatchNormalization of a GPU model, on cortex-wgpu's batch-norm kernels; it follows the CPU
//! layer ([`crate::nn::layers`] `BatchNormalization`) exactly:
//!
//! * the last axis holds the channels (the CPU layer accepts no other axis); the statistics
//!   run over every other axis (batch and, for NHWC images, height and width);
//! * a gradient-taking pass (a training step, or [`super::GpuModel::output_and_gradients`])
//!   normalises with the batch mean and biased variance, and a training step also moves the
//!   moving statistics, `moving = moving * momentum + batch * (1 - momentum)` with the biased
//!   batch variance, in place on the device (the model syncs them to the host with the
//!   trained weights);
//! * inference (predict, evaluate) and a frozen layer (`trainable: false`, as in Keras, even
//!   while fitting) normalise with the moving statistics, which then stay constant and receive
//!   no gradient;
//! * `center: false` / `scale: false` drop beta / gamma (beta 0, gamma 1).
//!
//! The moving statistics are non-trainable weights: the optimizer never touches them.

use cortex_wgpu::{Gpu, GpuTensor};
use serde_json::Value;

use super::gpu_err;
use super::steps::accumulate;
use crate::{Error, Result};

/// A planned BatchNormalization layer; the indices are the model's device weights.
#[derive(Clone, Debug)]
pub(super) struct BatchNormPlan {
    pub gamma: Option<usize>,
    pub beta: Option<usize>,
    pub moving_mean: usize,
    pub moving_var: usize,
    pub eps: f32,
    pub momentum: f32,
    /// `trainable: false`: always the moving statistics, never updated.
    pub frozen: bool,
}

/// What backward needs: the input and the statistics it was normalised with.
pub(super) struct BatchNormTape {
    x: GpuTensor,
    mean: GpuTensor,
    var: GpuTensor,
    /// The statistics were the batch's own (they depend on x).
    batch: bool,
}

/// Plans layer `name` from its config as the CPU layer writes it; its weights (gamma if
/// `scale`, beta if `center`, moving mean, moving variance) start at `first` and number `count`.
pub(super) fn plan(name: &str, config: &Value, first: usize, count: usize) -> Result<BatchNormPlan> {
    let flag = |k: &str| config.get(k).and_then(Value::as_bool).unwrap_or(true);
    let (scale, center) = (flag("scale"), flag("center"));
    let want = 2 + scale as usize + center as usize;
    if count != want {
        return Err(Error::Invalid(format!(
            "gpu: BatchNormalization '{name}' has {count} weights, expected {want}"
        )));
    }
    let number = |k: &str, default: f64| config.get(k).and_then(Value::as_f64).unwrap_or(default) as f32;
    let mut next = first;
    let mut take = |on: bool| {
        on.then(|| {
            next += 1;
            next - 1
        })
    };
    let gamma = take(scale);
    let beta = take(center);
    Ok(BatchNormPlan {
        gamma,
        beta,
        moving_mean: next,
        moving_var: next + 1,
        eps: number("epsilon", 1e-3),
        momentum: number("momentum", 0.99),
        frozen: !flag("trainable"),
    })
}

impl BatchNormPlan {
    /// The weights the forward pass of a training step changes on the device.
    pub fn state_weights(&self) -> Vec<usize> {
        if self.frozen {
            Vec::new()
        } else {
            vec![self.moving_mean, self.moving_var]
        }
    }

    /// Normalises `x`: with the batch statistics when `grad` (a gradient will be taken) and the
    /// layer is not frozen, moving them too when `training`; otherwise with the moving ones.
    /// Returns the output and, with `keep`, the tape.
    pub fn forward(
        &self,
        g: &Gpu,
        w: &[GpuTensor],
        x: GpuTensor,
        grad: bool,
        training: bool,
        keep: bool,
    ) -> Result<(GpuTensor, Option<BatchNormTape>)> {
        let (gamma, beta) = (self.gamma.map(|i| &w[i]), self.beta.map(|i| &w[i]));
        let batch = grad && !self.frozen;
        let (mean, var) = if batch {
            let stats = g.batch_norm_stats(&x).map_err(gpu_err)?;
            if training {
                g.batch_norm_update_moving(&w[self.moving_mean], &w[self.moving_var], &stats, self.momentum)
                    .map_err(gpu_err)?;
            }
            (stats.mean, stats.var)
        } else {
            (w[self.moving_mean].clone(), w[self.moving_var].clone())
        };
        let y = g.batch_norm(&x, &mean, &var, gamma, beta, self.eps).map_err(gpu_err)?;
        let tape = keep.then_some(BatchNormTape { x, mean, var, batch });
        Ok((y, tape))
    }

    /// The input gradient (when `need_dx`), adding gamma's and beta's gradients into `grads`.
    pub fn backward(
        &self,
        g: &Gpu,
        w: &[GpuTensor],
        tape: BatchNormTape,
        dy: GpuTensor,
        need_dx: bool,
        grads: &mut [Option<GpuTensor>],
    ) -> Result<Option<GpuTensor>> {
        let out = g
            .batch_norm_backward(
                &tape.x,
                &dy,
                &tape.mean,
                &tape.var,
                self.gamma.map(|i| &w[i]),
                self.eps,
                tape.batch,
                need_dx,
            )
            .map_err(gpu_err)?;
        if let Some(i) = self.gamma {
            accumulate(g, &mut grads[i], out.dgamma)?;
        }
        if let Some(i) = self.beta {
            accumulate(g, &mut grads[i], out.dbeta)?;
        }
        Ok(out.dx)
    }
}
