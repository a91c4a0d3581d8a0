//! Gradients with respect to a model's inputs or to one layer's activations, and what is made
//! of them: saliency maps, integrated gradients (Sundararajan et al. 2017), Grad-CAM (Selvaraju
//! et al. 2017) and L∞ adversarial examples (FGSM, Goodfellow et al. 2015; PGD, Madry et al.
//! 2018; FGSM with a random start, Wong, Rice and Kolter 2020). The weights are read as
//! constants here, so a backward pass computes input gradients only.

use super::model::{Batch, Model};
use super::param::with_frozen_params;
use crate::rng::Rng;
use crate::{backprop, ops, Error, Result, Tensor};

/// What to differentiate.
pub enum Objective {
    /// The compiled loss (summed over outputs with their weights) against these targets.
    Loss(Vec<Tensor>),
    /// `sum_i output[i, classes[i]]`: the score of one class per sample, of output `output`.
    Class { output: usize, classes: Vec<usize> },
}

/// An L∞ attack: `steps` signed-gradient steps of `step_size`, kept within `epsilon` of the
/// input and within `clip`.
#[derive(Clone, Debug, PartialEq)]
pub struct Attack {
    /// Radius of the L∞ ball.
    pub epsilon: f32,
    /// Size of each step.
    pub step_size: f32,
    /// Number of steps (1 with `step_size = epsilon` is FGSM).
    pub steps: usize,
    /// Start from a uniform random point of the ball (PGD, FGSM-RS).
    pub random_start: bool,
    /// Valid input range, e.g. `[0, 1]` for images.
    pub clip: Option<(f32, f32)>,
    /// Samples per gradient pass.
    pub batch_size: usize,
}

impl Attack {
    /// Checks the numbers.
    pub fn validate(&self) -> Result<()> {
        let ok = self.epsilon.is_finite()
            && self.epsilon >= 0.0
            && self.step_size.is_finite()
            && self.step_size >= 0.0
            && self.steps > 0
            && self.batch_size > 0
            && self
                .clip
                .is_none_or(|(lo, hi)| lo.is_finite() && hi.is_finite() && lo < hi);
        if ok {
            Ok(())
        } else {
            Err(Error::Invalid(format!(
                "attack: epsilon and stepSize must be non-negative, steps and batchSize positive, clip [lo, hi] with lo < hi; got {self:?}"
            )))
        }
    }
}

fn leaf(x: &Tensor) -> Result<Tensor> {
    Tensor::variable(x.to_vec(), x.shape())
}

/// `sum_i out[i, classes[i]]` as a scalar with its graph, and the per-sample scores.
fn class_score(out: &Tensor, classes: &[usize]) -> Result<(Tensor, Vec<f32>)> {
    let rows = out.shape().first().copied().unwrap_or(0);
    if out.rank() != 2 || classes.len() != rows {
        return Err(Error::Invalid(format!(
            "explain: needs a [batch, classes] output and one target class per sample; got output {:?} and {} classes",
            out.shape(),
            classes.len()
        )));
    }
    let k = out.shape()[1];
    if let Some(&c) = classes.iter().find(|&&c| c >= k) {
        return Err(Error::Invalid(format!(
            "explain: target class {c} is out of range [0, {k})"
        )));
    }
    let mut mask = vec![0.0; out.len()];
    let mut values = Vec::with_capacity(rows);
    for (i, &c) in classes.iter().enumerate() {
        mask[i * k + c] = 1.0;
        values.push(out.data()[i * k + c]);
    }
    let picked = ops::mul(out, &Tensor::new(mask, out.shape())?.to(out.device())?)?;
    Ok((ops::sum(&picked)?, values))
}

impl Model {
    /// The objective's value and its gradient with respect to each input (inference mode).
    pub fn input_gradients(&self, xs: &[Tensor], objective: &Objective) -> Result<(Vec<Tensor>, Vec<f32>)> {
        self.check_inputs(xs)?;
        with_frozen_params(|| {
            let leaves = xs.iter().map(leaf).collect::<Result<Vec<_>>>()?;
            let outs = self.run(&leaves, &[], false, &mut Rng::new(0))?;
            let (root, values) = self.objective(&outs, &leaves, objective)?;
            let mut grads = backprop::backward(&root)?;
            drop((root, outs));
            let grads = leaves
                .iter()
                .map(|l| match grads.remove(l) {
                    Some(g) => Tensor::new(g, l.shape()),
                    None => Ok(Tensor::zeros(l.shape())),
                })
                .collect::<Result<_>>()?;
            Ok((grads, values))
        })
    }

    fn objective(&self, outs: &[Tensor], xs: &[Tensor], objective: &Objective) -> Result<(Tensor, Vec<f32>)> {
        match objective {
            Objective::Class { output, classes } => {
                let out = outs.get(*output).ok_or_else(|| {
                    Error::Invalid(format!(
                        "explain: output {output} does not exist ({} outputs)",
                        outs.len()
                    ))
                })?;
                class_score(out, classes)
            }
            Objective::Loss(targets) => {
                let batch = Batch {
                    xs: xs.to_vec(),
                    ys: targets.clone(),
                    sample_weight: None,
                };
                self.check_batch(&batch)?;
                let scored = self.score(outs, &batch)?;
                let value = scored.total.item()?;
                Ok((scored.total, vec![value]))
            }
        }
    }

    /// The activations of layer `layer` (its first output, at its first call) and the
    /// gradient of the class scores with respect to them.
    pub fn layer_gradients(
        &self,
        xs: &[Tensor],
        layer: &str,
        output: usize,
        classes: &[usize],
    ) -> Result<(Tensor, Tensor)> {
        self.check_inputs(xs)?;
        let node = self
            .nodes()
            .iter()
            .position(|n| self.layers()[n.layer].read().name() == layer)
            .ok_or_else(|| {
                let names: Vec<String> = self.layers().iter().map(|l| l.read().name().to_string()).collect();
                Error::Invalid(format!(
                    "explain: no layer '{layer}' in this model; its layers: {}",
                    names.join(", ")
                ))
            })?;
        with_frozen_params(|| {
            let (outs, tapped) = self.run_tapped(xs, &[], false, &mut Rng::new(0), Some(node))?;
            let activations = tapped.ok_or_else(|| Error::Invalid(format!("explain: layer '{layer}' was not run")))?;
            let out = outs
                .get(output)
                .ok_or_else(|| Error::Invalid(format!("explain: output {output} does not exist")))?;
            let (root, _) = class_score(out, classes)?;
            let mut grads = backprop::backward(&root)?;
            drop(root);
            let g = match grads.remove(&activations) {
                Some(g) => Tensor::new(g, activations.shape())?,
                None => Tensor::zeros(activations.shape()),
            };
            Ok((activations.with_requires_grad(false), g))
        })
    }

    /// Grad-CAM: `relu(sum_c alpha_c A_c)` with `alpha_c` the mean gradient of the class score
    /// over the positions of channel `c` of layer `layer`'s activations `A` (`[batch, ...,
    /// channels]`); returns `[batch, ...positions]` (e.g. `[batch, h, w]` for a conv layer).
    pub fn grad_cam(&self, xs: &[Tensor], layer: &str, output: usize, classes: &[usize]) -> Result<Tensor> {
        let (a, g) = self.layer_gradients(xs, layer, output, classes)?;
        if a.rank() < 3 {
            return Err(Error::Invalid(format!(
                "gradCam: layer '{layer}' outputs {:?}; it needs positions and channels (a conv or sequence layer)",
                a.shape()
            )));
        }
        let shape = a.shape();
        let (b, c) = (shape[0], shape[shape.len() - 1]);
        let positions = a.len() / (b * c);
        let mut cam = vec![0.0f32; b * positions];
        for i in 0..b {
            let (ai, gi) = (
                &a.data()[i * positions * c..][..positions * c],
                &g.data()[i * positions * c..][..positions * c],
            );
            let mut alpha = vec![0.0f64; c];
            for p in 0..positions {
                for (k, al) in alpha.iter_mut().enumerate() {
                    *al += gi[p * c + k] as f64;
                }
            }
            for p in 0..positions {
                let v: f64 = (0..c).map(|k| alpha[k] / positions as f64 * ai[p * c + k] as f64).sum();
                cam[i * positions + p] = v.max(0.0) as f32;
            }
        }
        Tensor::new(cam, &shape[..shape.len() - 1])
    }

    /// Integrated gradients of class `classes[i]` for each sample of `x` (one input) from
    /// `baseline` (same shape as one sample, or as `x`), with `steps` trapezoid intervals.
    /// Returns the attributions (shaped like `x`) and, per sample, `f(x) - f(baseline)`, which
    /// they sum to up to the quadrature error (completeness).
    pub fn integrated_gradients(
        &self,
        x: &Tensor,
        baseline: &Tensor,
        output: usize,
        classes: &[usize],
        steps: usize,
        batch_size: usize,
    ) -> Result<(Tensor, Vec<f32>)> {
        self.check_inputs(std::slice::from_ref(x))?;
        let n = x.shape()[0];
        let row = x.len() / n.max(1);
        if baseline.len() != row && baseline.len() != x.len() {
            return Err(Error::Invalid(format!(
                "integratedGradients: the baseline must be one sample ({row} values) or one per sample, got {:?}",
                baseline.shape()
            )));
        }
        if steps == 0 || classes.len() != n {
            return Err(Error::Invalid(format!(
                "integratedGradients: steps must be positive and one target class given per sample ({n}); got steps {steps}, {} classes",
                classes.len()
            )));
        }
        let base_of = |i: usize| -> &[f32] {
            if baseline.len() == row {
                baseline.data()
            } else {
                &baseline.data()[i * row..(i + 1) * row]
            }
        };
        let mut attributions = vec![0.0f32; x.len()];
        let mut deltas = Vec::with_capacity(n);
        let points = steps + 1;
        let chunk = batch_size.max(1);
        for i in 0..n {
            let xi = &x.data()[i * row..(i + 1) * row];
            let bi = base_of(i);
            let mut sum = vec![0.0f64; row];
            let (mut f_x, mut f_base) = (0.0, 0.0);
            for start in (0..points).step_by(chunk) {
                let end = (start + chunk).min(points);
                let mut data = Vec::with_capacity((end - start) * row);
                for k in start..end {
                    let t = k as f32 / steps as f32;
                    data.extend(bi.iter().zip(xi).map(|(&b, &v)| b + t * (v - b)));
                }
                let mut shape = x.shape().to_vec();
                shape[0] = end - start;
                let batch = Tensor::new(data, &shape)?;
                let objective = Objective::Class {
                    output,
                    classes: vec![classes[i]; end - start],
                };
                let (grads, values) = self.input_gradients(std::slice::from_ref(&batch), &objective)?;
                for (j, k) in (start..end).enumerate() {
                    // Trapezoid rule: the two ends count half.
                    let w = if k == 0 || k == steps { 0.5 } else { 1.0 };
                    for (s, &g) in sum.iter_mut().zip(&grads[0].data()[j * row..(j + 1) * row]) {
                        *s += w * g as f64;
                    }
                    if k == 0 {
                        f_base = values[j];
                    }
                    if k == steps {
                        f_x = values[j];
                    }
                }
            }
            for (d, ((s, &v), &b)) in attributions[i * row..(i + 1) * row]
                .iter_mut()
                .zip(sum.iter().zip(xi).zip(bi))
            {
                *d = ((v - b) as f64 * s / steps as f64) as f32;
            }
            deltas.push(f_x - f_base);
        }
        Ok((Tensor::new(attributions, x.shape())?, deltas))
    }

    /// Adversarial examples for `x` (one input) against the compiled loss with targets `ys`.
    pub fn adversarial(&self, x: &Tensor, ys: &[Tensor], attack: &Attack, rng: &mut Rng) -> Result<Tensor> {
        attack.validate()?;
        let n = x.shape().first().copied().unwrap_or(0);
        let row = x.len() / n.max(1);
        let clip = |v: f32| attack.clip.map_or(v, |(lo, hi)| v.clamp(lo, hi));
        let mut out = Vec::with_capacity(x.len());
        for start in (0..n).step_by(attack.batch_size) {
            let end = (start + attack.batch_size).min(n);
            let x0 = &x.data()[start * row..end * row];
            let mut adv: Vec<f32> = if attack.random_start {
                x0.iter()
                    .map(|&v| clip(v + attack.epsilon * (2.0 * rng.uniform() - 1.0)))
                    .collect()
            } else {
                x0.to_vec()
            };
            let targets: Vec<Tensor> = ys.iter().map(|y| super::model::slice_rows(y, start, end)).collect();
            let mut shape = x.shape().to_vec();
            shape[0] = end - start;
            for _ in 0..attack.steps {
                let xt = Tensor::new(adv.clone(), &shape)?;
                let (g, _) = self.input_gradients(&[xt], &Objective::Loss(targets.clone()))?;
                for ((a, &o), &gv) in adv.iter_mut().zip(x0).zip(g[0].data()) {
                    let stepped = *a + attack.step_size * gv.signum() * (gv != 0.0) as u8 as f32;
                    *a = clip(stepped.clamp(o - attack.epsilon, o + attack.epsilon));
                }
            }
            out.extend_from_slice(&adv);
        }
        Tensor::new(out, x.shape())
    }
}
