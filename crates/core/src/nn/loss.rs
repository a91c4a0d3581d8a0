//! Keras losses, each fused into one op that returns the batch mean and its exact gradient
//! (computed in f64, so float32 training matches the float64 references).

use serde_json::{json, Value};

use super::options::Options;
use crate::backprop::Op;
use crate::{Error, Result, Tensor};

pub(crate) const EPSILON: f64 = 1e-7;

/// A loss function; the reduction is the mean over the batch.
#[derive(Clone, Debug, PartialEq)]
pub enum Loss {
    /// Targets are one-hot (or soft) distributions with the prediction's shape.
    CategoricalCrossentropy {
        /// Predictions are logits rather than probabilities.
        from_logits: bool,
    },
    /// Targets are class indices: `[batch]` or `[batch, 1]`.
    SparseCategoricalCrossentropy {
        /// Predictions are logits rather than probabilities.
        from_logits: bool,
    },
    /// Targets are 0/1 (or in between) with the prediction's shape.
    BinaryCrossentropy {
        /// Predictions are logits rather than probabilities.
        from_logits: bool,
    },
    /// Mean of squared differences.
    MeanSquaredError,
    /// Mean of absolute differences.
    MeanAbsoluteError,
}

impl Loss {
    /// Parses `"sparseCategoricalCrossentropy"` (or snake_case) or
    /// `{ "name": "binaryCrossentropy", "fromLogits": true }`.
    pub fn parse(v: &Value) -> Result<Loss> {
        let (name, opts) = match v {
            Value::String(s) => (s.clone(), Value::Null),
            Value::Object(m) => {
                let mut rest = m.clone();
                match rest.remove("name") {
                    Some(Value::String(n)) => (n, Value::Object(rest)),
                    _ => return Err(Error::Invalid(format!("loss object needs a 'name', got {v}"))),
                }
            }
            _ => return Err(Error::Invalid(format!("loss must be a name or an object, got {v}"))),
        };
        let mut o = Options::new(&format!("loss '{name}'"), &opts)?;
        let loss = match name.as_str() {
            "categoricalCrossentropy" | "categorical_crossentropy" => Loss::CategoricalCrossentropy {
                from_logits: o.bool("fromLogits")?.unwrap_or(false),
            },
            "sparseCategoricalCrossentropy" | "sparse_categorical_crossentropy" => {
                Loss::SparseCategoricalCrossentropy {
                    from_logits: o.bool("fromLogits")?.unwrap_or(false),
                }
            }
            "binaryCrossentropy" | "binary_crossentropy" => Loss::BinaryCrossentropy {
                from_logits: o.bool("fromLogits")?.unwrap_or(false),
            },
            "meanSquaredError" | "mean_squared_error" | "mse" => Loss::MeanSquaredError,
            "meanAbsoluteError" | "mean_absolute_error" | "mae" => Loss::MeanAbsoluteError,
            other => {
                return Err(Error::Invalid(format!(
                    "unknown loss '{other}'; expected one of: categoricalCrossentropy, sparseCategoricalCrossentropy, \
                     binaryCrossentropy, meanSquaredError, meanAbsoluteError"
                )))
            }
        };
        o.finish()?;
        Ok(loss)
    }

    /// The config written to model files.
    pub fn to_json(&self) -> Value {
        match self {
            Loss::CategoricalCrossentropy { from_logits } => {
                json!({"name": "categoricalCrossentropy", "fromLogits": from_logits})
            }
            Loss::SparseCategoricalCrossentropy { from_logits } => {
                json!({"name": "sparseCategoricalCrossentropy", "fromLogits": from_logits})
            }
            Loss::BinaryCrossentropy { from_logits } => {
                json!({"name": "binaryCrossentropy", "fromLogits": from_logits})
            }
            Loss::MeanSquaredError => json!("meanSquaredError"),
            Loss::MeanAbsoluteError => json!("meanAbsoluteError"),
        }
    }

    /// Checks that `target` fits `pred` for this loss (shapes, label range, finiteness).
    pub fn check_targets(&self, pred_shape: &[usize], target: &Tensor) -> Result<()> {
        target.check_finite("targets")?;
        match self {
            Loss::SparseCategoricalCrossentropy { .. } => {
                let batch = pred_shape.first().copied().unwrap_or(0);
                let classes = pred_shape.last().copied().unwrap_or(0);
                let ok = target.len()
                    == batch
                        * pred_shape[1..pred_shape.len().saturating_sub(1)]
                            .iter()
                            .product::<usize>();
                if !ok || target.shape().first() != Some(&batch) {
                    return Err(Error::shape(
                        "sparseCategoricalCrossentropy targets",
                        format!("class indices of shape [{batch}] or [{batch}, 1]"),
                        target.shape(),
                    ));
                }
                if let Some((i, v)) = target
                    .data()
                    .iter()
                    .enumerate()
                    .find(|(_, &v)| v < 0.0 || v.fract() != 0.0 || v as usize >= classes)
                {
                    return Err(Error::Invalid(format!(
                        "sparseCategoricalCrossentropy: label {v} at index {i} is out of range; expected an integer in [0, {classes})"
                    )));
                }
                Ok(())
            }
            _ => {
                if target.shape() != pred_shape {
                    return Err(Error::shape(
                        &format!("{} targets", self.name()),
                        pred_shape,
                        target.shape(),
                    ));
                }
                Ok(())
            }
        }
    }

    /// Short name for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Loss::CategoricalCrossentropy { .. } => "categoricalCrossentropy",
            Loss::SparseCategoricalCrossentropy { .. } => "sparseCategoricalCrossentropy",
            Loss::BinaryCrossentropy { .. } => "binaryCrossentropy",
            Loss::MeanSquaredError => "meanSquaredError",
            Loss::MeanAbsoluteError => "meanAbsoluteError",
        }
    }

    /// The mean loss over the batch as a scalar tensor whose op carries d loss / d pred.
    pub fn compute(&self, pred: &Tensor, target: &Tensor) -> Result<Tensor> {
        self.compute_weighted(pred, target, None)
    }

    /// Like [`Self::compute`] with one weight per sample (`classWeight` / `sampleWeight`): each
    /// sample's loss is multiplied by its weight and the sum is still divided by the sample
    /// count, as Keras' `sum_over_batch_size` reduction does.
    pub fn compute_weighted(&self, pred: &Tensor, target: &Tensor, weights: Option<&[f32]>) -> Result<Tensor> {
        self.check_targets(pred.shape(), target)?;
        if crate::ops::gpu::on_gpu("loss", &[pred, target])? {
            return match weights {
                None => crate::ops::loss_on_gpu(self, pred, target),
                Some(w) => {
                    check_sample_weights(w, pred.shape().first().copied().unwrap_or(1).max(1))?;
                    crate::ops::weighted_loss_on_gpu(self, pred, target, w)
                }
            };
        }
        let p = pred.data();
        let t = target.data();
        let batch = pred.shape().first().copied().unwrap_or(1).max(1) as f64;
        if let Some(w) = weights {
            check_sample_weights(w, batch as usize)?;
        }
        // The weight of value `i` of `len` values (samples are contiguous blocks of rows).
        let per_sample = (p.len() / batch as usize).max(1);
        let weight_of = |i: usize| weights.map_or(1.0, |w| w[i / per_sample] as f64);
        let mut grad = vec![0.0f32; p.len()];
        let total: f64 = match *self {
            Loss::CategoricalCrossentropy { from_logits } | Loss::SparseCategoricalCrossentropy { from_logits } => {
                let classes = *pred.shape().last().unwrap_or(&1);
                let sparse = matches!(self, Loss::SparseCategoricalCrossentropy { .. });
                // Keras averages over every prediction row: samples, and time steps of sequences.
                let rows = (p.len() / classes.max(1)).max(1) as f64;
                let mut total = 0.0;
                for (r, (prow, grow)) in p.chunks_exact(classes).zip(grad.chunks_exact_mut(classes)).enumerate() {
                    let w = weight_of(r * classes);
                    let target_of = |c: usize| -> f64 {
                        if sparse {
                            (t[r] as usize == c) as u8 as f64
                        } else {
                            t[r * classes + c] as f64
                        }
                    };
                    total += if from_logits {
                        let max = prow.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
                        let z: f64 = prow.iter().map(|&v| (v as f64 - max).exp()).sum();
                        let lse = max + z.ln();
                        let tsum: f64 = (0..classes).map(target_of).sum();
                        let mut l = 0.0;
                        for c in 0..classes {
                            let tc = target_of(c);
                            l -= tc * (prow[c] as f64 - lse);
                            grow[c] = (w * ((prow[c] as f64 - lse).exp() * tsum - tc) / rows) as f32;
                        }
                        w * l
                    } else {
                        let mut l = 0.0;
                        for c in 0..classes {
                            let tc = target_of(c);
                            if tc == 0.0 {
                                continue;
                            }
                            let raw = prow[c] as f64;
                            let clipped = raw.clamp(EPSILON, 1.0 - EPSILON);
                            l -= tc * clipped.ln();
                            if raw == clipped {
                                grow[c] = (-w * tc / clipped / rows) as f32;
                            }
                        }
                        w * l
                    };
                }
                // The value below is divided by the batch; sequences average over their steps too.
                if rows == batch {
                    total
                } else {
                    total * batch / rows
                }
            }
            Loss::BinaryCrossentropy { from_logits } => {
                // Keras averages over the last axis, then over the batch: a mean over all values.
                let n = p.len().max(1) as f64;
                let mut total = 0.0;
                for i in 0..p.len() {
                    let (x, y, w) = (p[i] as f64, t[i] as f64, weight_of(i));
                    if from_logits {
                        total += w * (x.max(0.0) - x * y + (-x.abs()).exp().ln_1p());
                        grad[i] = (w * (1.0 / (1.0 + (-x).exp()) - y) / n) as f32;
                    } else {
                        let c = x.clamp(EPSILON, 1.0 - EPSILON);
                        total -= w * (y * c.ln() + (1.0 - y) * (1.0 - c).ln());
                        if x == c {
                            grad[i] = (w * (c - y) / (c * (1.0 - c)) / n) as f32;
                        }
                    }
                }
                total * batch / n
            }
            Loss::MeanSquaredError | Loss::MeanAbsoluteError => {
                let n = p.len().max(1) as f64;
                let square = *self == Loss::MeanSquaredError;
                let mut total = 0.0;
                for i in 0..p.len() {
                    let (d, w) = (p[i] as f64 - t[i] as f64, weight_of(i));
                    total += w * if square { d * d } else { d.abs() };
                    grad[i] = (w * if square {
                        2.0 * d
                    } else {
                        d.signum() * (d != 0.0) as u8 as f64
                    } / n) as f32;
                }
                total * batch / n
            }
        };
        let value = (total / batch) as f32;
        Ok(Tensor::from_op(
            vec![value],
            vec![],
            |_| Op::Precomputed { x: pred.clone(), grad },
            &[pred],
        ))
    }
}

/// One finite, non-negative weight per sample.
fn check_sample_weights(w: &[f32], batch: usize) -> Result<()> {
    if w.len() != batch {
        return Err(Error::shape("sample weights", batch, w.len()));
    }
    if let Some(bad) = w.iter().find(|v| !v.is_finite() || **v < 0.0) {
        return Err(Error::Invalid(format!(
            "sample weights must be finite and non-negative, got {bad}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backprop::backward;

    /// Every loss with sample weights (class weights reach the loss the same way): the
    /// gradient equals a central difference of the value. A weighted binary cross-entropy from
    /// logits once had `y * w` where `y` belonged.
    #[test]
    fn weighted_gradients_match_finite_differences() {
        let w = [0.5, 2.0, 0.0, 1.5];
        let p: Vec<f32> = (0..12).map(|i| ((i * 7 % 11) as f32 / 11.0) * 0.8 + 0.1).collect();
        let soft: Vec<f32> = (0..12).map(|i| ((i * 5 % 7) as f32) / 7.0).collect();
        let onehot: Vec<f32> = (0..12).map(|i| (i % 3 == (i / 3) % 3) as u8 as f32).collect();
        for (spec, target) in [
            (json!("meanSquaredError"), Tensor::new(soft.clone(), &[4, 3]).unwrap()),
            (json!("meanAbsoluteError"), Tensor::new(soft.clone(), &[4, 3]).unwrap()),
            (
                json!({"name": "binaryCrossentropy", "fromLogits": true}),
                Tensor::new(soft.clone(), &[4, 3]).unwrap(),
            ),
            (json!("binaryCrossentropy"), Tensor::new(soft.clone(), &[4, 3]).unwrap()),
            (
                json!({"name": "categoricalCrossentropy", "fromLogits": true}),
                Tensor::new(onehot.clone(), &[4, 3]).unwrap(),
            ),
            (
                json!("categoricalCrossentropy"),
                Tensor::new(onehot.clone(), &[4, 3]).unwrap(),
            ),
            (
                json!({"name": "sparseCategoricalCrossentropy", "fromLogits": true}),
                Tensor::new(vec![2.0, 0.0, 1.0, 2.0], &[4]).unwrap(),
            ),
        ] {
            let loss = Loss::parse(&spec).unwrap();
            let value = |p: Vec<f32>| {
                let x = Tensor::new(p, &[4, 3]).unwrap();
                loss.compute_weighted(&x, &target, Some(&w)).unwrap().item().unwrap() as f64
            };
            let x = Tensor::variable(p.clone(), &[4, 3]).unwrap();
            let grads = backward(&loss.compute_weighted(&x, &target, Some(&w)).unwrap()).unwrap();
            let g = grads.get(&x).unwrap();
            for i in 0..12 {
                let h = 1e-3;
                let (mut plus, mut minus) = (p.clone(), p.clone());
                plus[i] += h;
                minus[i] -= h;
                let fd = (value(plus) - value(minus)) / (2.0 * h as f64);
                assert!(
                    (fd - g[i] as f64).abs() < 2e-3 * (1.0 + fd.abs()),
                    "{spec} [{i}]: {} vs {fd}",
                    g[i]
                );
            }
        }
    }
}
