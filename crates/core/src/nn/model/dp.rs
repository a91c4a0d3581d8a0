//! DP-SGD (Abadi et al. 2016) without per-sample gradients in memory: a first forward and
//! backward of the whole batch reads, at every trainable Dense and Conv2D op, the layer's input
//! activations `a` and the gradient `g` of its pre-activation output (an observer in the
//! backward walk, the same cost as an identity "tap" op whose vjp copies `g`); each sample's
//! squared gradient norm follows from `(a_i, g_i)` (for Dense `||a_i||² ||g_i||²`, Goodfellow
//! 2015; Conv2D by a batch-1 filter gradient per sample). The second forward and backward
//! weights each sample's loss by `c_i = min(1, C / ||grad_i||)` ("ghost clipping", Li et al. 2021;
//! Bu et al. 2022), which gives `Σ c_i grad_i` directly; Gaussian noise `N(0, (σC)²)` is added to
//! every coordinate and the sum divided by the expected batch size before the optimizer update.

use std::collections::HashMap;

use super::*;
use crate::backprop::{self, Op};
use crate::cpu::conv::{conv2d_backward_filter, Conv2dGeometry};
use crate::tensor::TensorId;
use rayon::prelude::*;

/// `fit`'s `dp` option.
#[derive(Clone, Debug, PartialEq)]
pub struct DpConfig {
    /// C: each sample's gradient is scaled to at most this L2 norm.
    pub l2_norm_clip: f32,
    /// σ: the noise standard deviation is σC (f64: the accountant must see the value given).
    pub noise_multiplier: f64,
    /// δ of the reported (ε, δ).
    pub delta: f64,
    /// Stop before a step would take ε past this.
    pub target_epsilon: Option<f64>,
}

impl DpConfig {
    /// Checks the numbers.
    pub fn validate(&self) -> Result<()> {
        let ok = self.l2_norm_clip.is_finite()
            && self.l2_norm_clip > 0.0
            && self.noise_multiplier.is_finite()
            && self.noise_multiplier >= 0.0
            && self.delta > 0.0
            && self.delta < 1.0
            && self.target_epsilon.is_none_or(|e| e.is_finite() && e > 0.0);
        if ok {
            Ok(())
        } else {
            Err(invalid(format!(
                "fit: dp needs l2NormClip > 0, noiseMultiplier >= 0, delta in (0, 1) and a positive targetEpsilon; got {self:?}"
            )))
        }
    }
}

/// What the backward walk saw at one trainable layer.
enum Tap {
    /// `x[rows, din] · w + b`.
    Dense {
        x: Tensor,
        g: Vec<f32>,
        din: usize,
        dout: usize,
        bias: bool,
    },
    /// A 2-D convolution over the batch.
    Conv {
        x: Tensor,
        g: Vec<f32>,
        geom: Conv2dGeometry,
        bias: bool,
    },
}

impl Tap {
    /// Each sample's squared gradient norm (of this batch-mean gradient) for this layer's weights.
    fn squared_norms(&self, batch: usize) -> Result<Vec<f64>> {
        Ok(match self {
            Tap::Dense { x, g, din, dout, bias } => {
                let (x, din, dout) = (x.host_values()?, *din, *dout);
                let steps = x.len() / din / batch.max(1);
                (0..batch)
                    .into_par_iter()
                    .map(|i| {
                        let a = &x[i * steps * din..(i + 1) * steps * din];
                        let gi = &g[i * steps * dout..(i + 1) * steps * dout];
                        // ||Σ_t a_t^T g_t||² = Σ_{t,s} (a_t·a_s)(g_t·g_s): T²(din + dout) work.
                        let mut sq = 0.0f64;
                        for t in 0..steps {
                            for s in 0..steps {
                                let aa = dot(&a[t * din..][..din], &a[s * din..][..din]);
                                let gg = dot(&gi[t * dout..][..dout], &gi[s * dout..][..dout]);
                                sq += aa * gg;
                            }
                        }
                        if *bias {
                            let mut sum = vec![0.0f64; dout];
                            for t in 0..steps {
                                for (s, v) in sum.iter_mut().zip(&gi[t * dout..][..dout]) {
                                    *s += *v as f64;
                                }
                            }
                            sq += sum.iter().map(|v| v * v).sum::<f64>();
                        }
                        sq
                    })
                    .collect()
            }
            Tap::Conv { x, g, geom, bias } => {
                let mut one = geom.clone();
                one.batch = 1;
                let in_len = geom.in_h * geom.in_w * geom.in_c;
                let out_len = geom.out_h * geom.out_w * geom.out_c;
                let x = x.host_values()?;
                (0..batch)
                    .into_par_iter()
                    .map(|i| {
                        let gi = &g[i * out_len..(i + 1) * out_len];
                        let dk = conv2d_backward_filter(&x[i * in_len..(i + 1) * in_len], gi, &one);
                        let mut sq: f64 = dk.iter().map(|v| (*v as f64) * (*v as f64)).sum();
                        if *bias {
                            let mut sum = vec![0.0f64; geom.out_c];
                            for row in gi.chunks(geom.out_c) {
                                for (s, v) in sum.iter_mut().zip(row) {
                                    *s += *v as f64;
                                }
                            }
                            sq += sum.iter().map(|v| v * v).sum::<f64>();
                        }
                        sq
                    })
                    .collect()
            }
        })
    }
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (*x as f64) * (*y as f64)).sum()
}

impl Model {
    /// Refuses a model with a trainable layer whose per-sample gradient norms DP-SGD cannot
    /// compute (only Dense and Conv2D are supported; weightless or frozen layers are fine).
    pub fn check_dp_layers(&self) -> Result<()> {
        for cell in self.layers() {
            let layer = cell.read();
            if let Some(inner) = layer.as_model() {
                inner.check_dp_layers()?;
                continue;
            }
            let trains = cell.trainable() && layer.params().iter().any(|p| p.trainable);
            if trains && !matches!(layer.class_name(), "Dense" | "Conv2D") {
                return Err(invalid(format!(
                    "fit: dp (DP-SGD) does not support the trainable layer '{}' ({}); it computes per-sample \
                     gradients of Dense and Conv2D layers only: freeze the layer (trainable = false) or remove it",
                    layer.name(),
                    layer.class_name()
                )));
            }
        }
        Ok(())
    }

    /// The trainable weights' tensors, in `visit_params` order (`None` for the others).
    fn trainable_leaves(&self) -> Result<Vec<Option<Tensor>>> {
        let c = self.compiled_ref()?;
        let mut out = Vec::new();
        self.visit_params(&mut |_, p, _| {
            out.push(
                c.trainable
                    .contains(&crate::nn::param::param_address(p))
                    .then(|| p.get()),
            );
        });
        Ok(out)
    }

    /// Each sample's L2 norm of the gradient of its own (weighted) loss with respect to the
    /// trainable weights, from one forward and backward of the whole batch, with the batch's
    /// logs. `rng` drives the forward (dropout), so a second pass with the same state sees the
    /// same masks.
    pub fn per_sample_grad_norms(&self, batch: &Batch, rng: &mut Rng) -> Result<(Vec<f32>, Logs)> {
        self.compiled_ref()?;
        self.check_dp_layers()?;
        if self.compiled.as_ref().is_some_and(|c| c.gpu.is_some()) {
            return Err(invalid(
                "fit: dp (DP-SGD) runs through the layers' own ops; a planned GPU model must leave its plan first",
            ));
        }
        let rows = batch.rows();
        let leaves = self.trainable_leaves()?;
        let mut watched: HashMap<TensorId, usize> = HashMap::new();
        for (i, l) in leaves.iter().enumerate() {
            if let Some(l) = l {
                watched.insert(l.id(), i);
            }
        }
        let preds = self.run(&batch.xs, &[], true, rng)?;
        let scored = self.score(&preds, batch)?;
        let logs = scored.logs(self);
        let mut taps = Vec::new();
        let mut seen = vec![0usize; leaves.len()];
        // On the GPU the taps read the layer's gradient and input back: the norms are computed
        // on the host, from the same arithmetic as on the CPU.
        let mut observe = |op: &Op, g: backprop::ObservedGrad<'_>| -> Result<()> {
            let (w, b, tap) = match op {
                Op::Linear { x, w, b } if watched.contains_key(&w.id()) => {
                    let (din, dout) = (w.shape()[0], w.shape()[1]);
                    let tap = Tap::Dense {
                        x: x.clone(),
                        g: g.to_vec()?,
                        din,
                        dout,
                        bias: b.as_ref().is_some_and(|b| watched.contains_key(&b.id())),
                    };
                    (w, b, tap)
                }
                Op::Conv2d { x, w, b, geom } if watched.contains_key(&w.id()) => {
                    let tap = Tap::Conv {
                        x: x.clone(),
                        g: g.to_vec()?,
                        geom: geom.clone(),
                        bias: b.as_ref().is_some_and(|b| watched.contains_key(&b.id())),
                    };
                    (w, b, tap)
                }
                _ => return Ok(()),
            };
            for t in std::iter::once(w).chain(b.iter()) {
                if let Some(&i) = watched.get(&t.id()) {
                    seen[i] += 1;
                }
            }
            taps.push(tap);
            Ok(())
        };
        let grads = backprop::backward_observing(&scored.total, &mut observe)?;
        drop((grads, scored, preds));
        let mut names = Vec::new();
        self.visit_params(&mut |name, _, _| names.push(name.to_string()));
        for (i, l) in leaves.iter().enumerate() {
            if l.is_some() && seen[i] != 1 {
                return Err(invalid(format!(
                    "fit: dp (DP-SGD) needs each trainable weight used by exactly one Dense or Conv2D call; \
                     weight '{}' is used {} times",
                    names[i], seen[i]
                )));
            }
        }
        let mut sq = vec![0.0f64; rows];
        for tap in &taps {
            for (s, v) in sq.iter_mut().zip(tap.squared_norms(rows)?) {
                *s += v;
            }
        }
        // The loss is the batch mean: each sample's own gradient is `rows` times its share.
        let norms = sq.iter().map(|s| (s.sqrt() * rows as f64) as f32).collect();
        Ok((norms, logs))
    }

    /// One DP-SGD step on a (Poisson-sampled) batch: clip each sample's gradient to
    /// `l2_norm_clip`, sum, add `N(0, (σC)²)` noise, divide by `expected_batch` and update.
    /// Returns the batch's logs (empty for an empty batch, which still takes a noise step).
    /// With the weights on the GPU both passes, the noise and the update run there (the noise
    /// is drawn on the host, from the same generator as on the CPU).
    pub fn dp_train_step(&mut self, batch: &Batch, dp: &DpConfig, expected_batch: f64) -> Result<Logs> {
        dp.validate()?;
        self.leave_plan_for_dp()?;
        let rng = self.rng.fork();
        let mut noise_rng = self.rng.fork();
        let leaves = self.trainable_leaves()?;
        let rows = batch.rows();
        let zeros = |t: &Tensor| Tensor::new(vec![0.0; t.len()], t.shape()).and_then(|z| z.to(t.device()));
        let (grads, logs): (Vec<Option<Tensor>>, Logs) = if rows == 0 {
            self.check_dp_layers()?;
            let grads = leaves.iter().map(|l| l.as_ref().map(zeros).transpose());
            (grads.collect::<Result<_>>()?, Vec::new())
        } else {
            let (norms, logs) = self.per_sample_grad_norms(batch, &mut rng.clone())?;
            if !logs[0].1.is_finite() {
                return Ok(logs);
            }
            let weights: Vec<f32> = norms
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    let c = (dp.l2_norm_clip / (n + 1e-6)).min(1.0);
                    // `rows` undoes the loss's batch mean: the gradient is Σ c_i grad_i.
                    c * rows as f32 * batch.sample_weight.as_ref().map_or(1.0, |w| w[i])
                })
                .collect();
            let weighted = Batch {
                xs: batch.xs.clone(),
                ys: batch.ys.clone(),
                sample_weight: Some(weights),
            };
            let preds = self.run(&weighted.xs, &[], true, &mut rng.clone())?;
            let scored = self.score(&preds, &weighted)?;
            let all = backprop::backward(&scored.total)?;
            drop((scored, preds));
            let grads = leaves
                .iter()
                .map(|l| {
                    l.as_ref()
                        .map(|t| all.tensor(t).unwrap_or_else(|| zeros(t)))
                        .transpose()
                })
                .collect::<Result<_>>()?;
            (grads, logs)
        };
        drop(leaves);
        let std = dp.noise_multiplier as f32 * dp.l2_norm_clip;
        let scale = 1.0 / expected_batch.max(1e-12) as f32;
        let mut noisy = Vec::with_capacity(grads.len());
        for g in grads {
            noisy.push(
                g.map(|g| {
                    let g = if std > 0.0 {
                        let noise = (0..g.len()).map(|_| std * noise_rng.normal()).collect();
                        crate::ops::add(&g, &Tensor::new(noise, g.shape())?.to(g.device())?)?
                    } else {
                        g
                    };
                    crate::ops::scale(&g, scale)
                })
                .transpose()?,
            );
        }
        let noisy = self.clip_device_gradients(noisy)?;
        self.apply_device_gradients(noisy)?;
        Ok(logs)
    }

    /// DP-SGD runs through the layers' own ops: a model planned onto the GPU leaves its plan
    /// (its trained weights are copied back first) and keeps its weights on the GPU, where
    /// the layers run them. The planned optimizer's moments stay with the plan: the host
    /// optimizer, which the plan never stepped, takes over.
    fn leave_plan_for_dp(&mut self) -> Result<()> {
        if self.compiled.as_ref().is_none_or(|c| c.gpu.is_none()) {
            return Ok(());
        }
        self.sync_from_device()?;
        self.compiled()?.gpu = None;
        self.run_layers_on_gpu()?;
        self.compiled()?.layers_on_gpu = true;
        Ok(())
    }
}

#[cfg(test)]
#[path = "dp_tests.rs"]
mod tests;
