//! Metrics: `accuracy`, resolved to the categorical, sparse or binary form as Keras does.

use serde_json::Value;

use super::loss::Loss;
use crate::{Error, Result};

/// A metric reported next to the loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// argmax(pred) == argmax(target).
    CategoricalAccuracy,
    /// argmax(pred) == label.
    SparseCategoricalAccuracy,
    /// (pred > threshold) == (target > 0.5); the threshold is 0 for logits, 0.5 otherwise.
    BinaryAccuracy { logits: bool },
}

impl Metric {
    /// Parses a metric name; `accuracy`/`acc` picks the variant that fits `loss`.
    pub fn parse(v: &Value, loss: &Loss) -> Result<Metric> {
        let name = v
            .as_str()
            .ok_or_else(|| Error::Invalid(format!("a metric must be a name, got {v}")))?;
        Ok(match name {
            "accuracy" | "acc" => match loss {
                Loss::SparseCategoricalCrossentropy { .. } => Metric::SparseCategoricalAccuracy,
                Loss::BinaryCrossentropy { from_logits } => Metric::BinaryAccuracy { logits: *from_logits },
                _ => Metric::CategoricalAccuracy,
            },
            "categoricalAccuracy" | "categorical_accuracy" => Metric::CategoricalAccuracy,
            "sparseCategoricalAccuracy" | "sparse_categorical_accuracy" => Metric::SparseCategoricalAccuracy,
            "binaryAccuracy" | "binary_accuracy" => Metric::BinaryAccuracy {
                logits: matches!(loss, Loss::BinaryCrossentropy { from_logits: true }),
            },
            other => {
                return Err(Error::Invalid(format!(
                    "unknown metric '{other}'; expected one of: accuracy, categoricalAccuracy, \
                     sparseCategoricalAccuracy, binaryAccuracy"
                )))
            }
        })
    }

    /// The key under which it is logged (Keras logs `accuracy` for all three).
    pub fn key(&self) -> &'static str {
        "accuracy"
    }

    /// (correct, counted) over one batch.
    pub fn count(&self, pred: &[f32], pred_shape: &[usize], target: &[f32]) -> (f64, f64) {
        let classes = pred_shape.last().copied().unwrap_or(1).max(1);
        let argmax = |row: &[f32]| {
            row.iter()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |best, (i, &v)| if v > best.1 { (i, v) } else { best },
                )
                .0
        };
        match *self {
            Metric::CategoricalAccuracy => {
                let rows = pred.chunks_exact(classes).zip(target.chunks_exact(classes));
                let correct = rows.filter(|(p, t)| argmax(p) == argmax(t)).count();
                (correct as f64, (pred.len() / classes) as f64)
            }
            Metric::SparseCategoricalAccuracy => {
                let correct = pred
                    .chunks_exact(classes)
                    .zip(target)
                    .filter(|(p, &t)| argmax(p) == t as usize)
                    .count();
                (correct as f64, (pred.len() / classes) as f64)
            }
            Metric::BinaryAccuracy { logits } => {
                let threshold = if logits { 0.0 } else { 0.5 };
                let correct = pred
                    .iter()
                    .zip(target)
                    .filter(|(&p, &t)| (p > threshold) == (t > 0.5))
                    .count();
                (correct as f64, pred.len() as f64)
            }
        }
    }
}
