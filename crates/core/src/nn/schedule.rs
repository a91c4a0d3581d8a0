//! Learning-rate schedules evaluated per optimizer step, as Keras's
//! `keras.optimizers.schedules`: an optimizer's `learningRate` may be a number or one of
//! `{ name: "cosineDecay", initialLearningRate, decaySteps, alpha?, warmupTarget?, warmupSteps? }`
//! and `{ name: "exponentialDecay", initialLearningRate, decaySteps, decayRate, staircase? }`.

use serde_json::{json, Value};

use crate::nn::options::Options;
use crate::{Error, Result};

/// A learning rate as a function of the optimizer's step (0 for the first update).
#[derive(Clone, Debug, PartialEq)]
pub enum LrSchedule {
    /// Optional linear warm-up from `initial` to `warmup_target` over `warmup_steps`, then a
    /// cosine from the peak down to `alpha * peak` over `decay_steps`, flat afterwards.
    CosineDecay {
        /// Rate at step 0.
        initial: f32,
        /// Length of the cosine part.
        decay_steps: u64,
        /// Final rate as a fraction of the peak.
        alpha: f32,
        /// Peak reached after the warm-up (None: no warm-up, the peak is `initial`).
        warmup_target: Option<f32>,
        /// Length of the warm-up.
        warmup_steps: u64,
    },
    /// `initial * decay_rate^(step / decay_steps)` (the exponent floored with `staircase`).
    ExponentialDecay {
        /// Rate at step 0.
        initial: f32,
        /// Steps per factor of `decay_rate`.
        decay_steps: u64,
        /// Factor per `decay_steps`.
        decay_rate: f32,
        /// Decay in whole steps of `decay_steps`.
        staircase: bool,
    },
}

impl LrSchedule {
    /// Parses a schedule object; `what` names the optimizer in error messages.
    pub fn parse(what: &str, v: &Value) -> Result<LrSchedule> {
        let mut rest = v.as_object().cloned().ok_or_else(|| {
            Error::Invalid(format!(
                "{what}: learningRate must be a number or a schedule object, got {v}"
            ))
        })?;
        let name = match rest.remove("name") {
            Some(Value::String(n)) => n,
            _ => {
                return Err(Error::Invalid(format!(
                    "{what}: a learning-rate schedule needs a 'name', got {v}"
                )))
            }
        };
        let mut o = Options::new(&format!("{what} schedule '{name}'"), &Value::Object(rest))?;
        let initial = o
            .f32("initialLearningRate")?
            .ok_or_else(|| Error::Invalid(format!("{what} schedule '{name}': 'initialLearningRate' is required")))?;
        let decay_steps = o.usize("decaySteps")?.ok_or_else(|| {
            Error::Invalid(format!(
                "{what} schedule '{name}': 'decaySteps' (a positive integer) is required"
            ))
        })? as u64;
        let schedule = match name.as_str() {
            "cosineDecay" | "CosineDecay" => LrSchedule::CosineDecay {
                initial,
                decay_steps,
                alpha: o.f32("alpha")?.unwrap_or(0.0),
                warmup_target: o.f32("warmupTarget")?,
                warmup_steps: o.usize("warmupSteps")?.unwrap_or(0) as u64,
            },
            "exponentialDecay" | "ExponentialDecay" => LrSchedule::ExponentialDecay {
                initial,
                decay_steps,
                decay_rate: o
                    .f32("decayRate")?
                    .ok_or_else(|| Error::Invalid(format!("{what} schedule '{name}': 'decayRate' is required")))?,
                staircase: o.bool("staircase")?.unwrap_or(false),
            },
            other => {
                return Err(Error::Invalid(format!(
                    "{what}: unknown learning-rate schedule '{other}'; expected cosineDecay or exponentialDecay"
                )))
            }
        };
        o.finish()?;
        if initial.is_nan() || initial <= 0.0 || decay_steps == 0 {
            return Err(Error::Invalid(format!(
                "{what} schedule '{name}': initialLearningRate must be positive and decaySteps at least 1, \
                 got {initial} and {decay_steps}"
            )));
        }
        Ok(schedule)
    }

    /// The rate for the update at `step` (0-based).
    pub fn at(&self, step: u64) -> f32 {
        match *self {
            LrSchedule::CosineDecay {
                initial,
                decay_steps,
                alpha,
                warmup_target,
                warmup_steps,
            } => {
                let peak = warmup_target.unwrap_or(initial);
                if warmup_target.is_some() && step < warmup_steps {
                    return initial + (peak - initial) * step as f32 / warmup_steps as f32;
                }
                let done = (step - if warmup_target.is_some() { warmup_steps } else { 0 }).min(decay_steps);
                let cosine = 0.5 * (1.0 + (std::f64::consts::PI * done as f64 / decay_steps as f64).cos());
                peak * ((1.0 - alpha) * cosine as f32 + alpha)
            }
            LrSchedule::ExponentialDecay {
                initial,
                decay_steps,
                decay_rate,
                staircase,
            } => {
                let mut p = step as f64 / decay_steps as f64;
                if staircase {
                    p = p.floor();
                }
                initial * (decay_rate as f64).powf(p) as f32
            }
        }
    }

    /// The object this was parsed from.
    pub fn to_json(&self) -> Value {
        match *self {
            LrSchedule::CosineDecay {
                initial,
                decay_steps,
                alpha,
                warmup_target,
                warmup_steps,
            } => {
                let mut v = json!({"name": "cosineDecay", "initialLearningRate": initial, "decaySteps": decay_steps, "alpha": alpha});
                if let Some(t) = warmup_target {
                    v["warmupTarget"] = json!(t);
                    v["warmupSteps"] = json!(warmup_steps);
                }
                v
            }
            LrSchedule::ExponentialDecay {
                initial,
                decay_steps,
                decay_rate,
                staircase,
            } => json!({"name": "exponentialDecay", "initialLearningRate": initial, "decaySteps": decay_steps,
                        "decayRate": decay_rate, "staircase": staircase}),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_decay_matches_keras() {
        let s = LrSchedule::parse(
            "adam",
            &json!({"name": "cosineDecay", "initialLearningRate": 0.1, "decaySteps": 10}),
        )
        .unwrap();
        assert!((s.at(0) - 0.1).abs() < 1e-7);
        assert!((s.at(5) - 0.05).abs() < 1e-7);
        assert!(s.at(10).abs() < 1e-7);
        assert!(s.at(50).abs() < 1e-7);
        let warm = LrSchedule::parse(
            "adam",
            &json!({"name": "cosineDecay", "initialLearningRate": 0.0, "decaySteps": 10, "warmupTarget": 1.0,
                    "warmupSteps": 4, "alpha": 0.1}),
        );
        // initialLearningRate 0 is rejected: Keras allows it with a warm-up, we ask for a positive start.
        assert!(warm.is_err());
        let warm = LrSchedule::parse(
            "adam",
            &json!({"name": "cosineDecay", "initialLearningRate": 0.1, "decaySteps": 10, "warmupTarget": 1.0,
                    "warmupSteps": 4, "alpha": 0.1}),
        )
        .unwrap();
        assert!((warm.at(2) - 0.55).abs() < 1e-6);
        assert!((warm.at(4) - 1.0).abs() < 1e-6);
        assert!((warm.at(14) - 0.1).abs() < 1e-6);
        assert_eq!(LrSchedule::parse("adam", &warm.to_json()).unwrap(), warm);
    }

    #[test]
    fn exponential_decay_and_bad_specs() {
        let s = LrSchedule::parse(
            "sgd",
            &json!({"name": "exponentialDecay", "initialLearningRate": 1.0, "decaySteps": 2, "decayRate": 0.5, "staircase": true}),
        )
        .unwrap();
        assert_eq!((s.at(0), s.at(1), s.at(2), s.at(5)), (1.0, 1.0, 0.5, 0.25));
        let e = LrSchedule::parse("sgd", &json!({"name": "cosineDecay", "initialLearningRate": 1.0})).unwrap_err();
        assert!(e.to_string().contains("decaySteps"), "{e}");
        let e = LrSchedule::parse(
            "sgd",
            &json!({"name": "linear", "initialLearningRate": 1.0, "decaySteps": 3}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown learning-rate schedule 'linear'"), "{e}");
        let e = LrSchedule::parse(
            "sgd",
            &json!({"name": "cosineDecay", "initialLearningRate": 1.0, "decaySteps": 3, "alhpa": 0.1}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("alhpa"), "{e}");
    }
}
