//! Keras weight initializers.

use serde_json::Value;

use super::options::Options;
use crate::alloc::{self, WeightFill};
use crate::rng::Rng;
use crate::{Error, Result};

/// A weight initializer.
#[derive(Clone, Debug, PartialEq)]
pub enum Initializer {
    /// All zeros.
    Zeros,
    /// All ones.
    Ones,
    /// U(-l, l), l = sqrt(6 / (fan_in + fan_out)).
    GlorotUniform,
    /// Truncated normal, stddev sqrt(2 / (fan_in + fan_out)).
    GlorotNormal,
    /// Truncated normal, stddev sqrt(2 / fan_in).
    HeNormal,
    /// U(-l, l), l = sqrt(6 / fan_in).
    HeUniform,
    /// Truncated normal, stddev sqrt(1 / fan_in).
    LecunNormal,
    /// Normal(mean, stddev).
    RandomNormal { mean: f32, stddev: f32 },
    /// U(min, max).
    RandomUniform { min: f32, max: f32 },
}

/// Keras scales truncated normals so the truncated distribution has the requested stddev.
const TRUNCATION_CORRECTION: f32 = 0.879_625_6;

impl Initializer {
    /// Parses `"heNormal"`, `"he_normal"` or `{ "name": "randomNormal", "mean": 0, "stddev": 0.1 }`.
    pub fn parse(v: &Value) -> Result<Initializer> {
        let (name, opts) = match v {
            Value::String(s) => (s.clone(), Value::Null),
            Value::Object(m) => match m.get("name").and_then(Value::as_str) {
                Some(n) => {
                    let mut rest = m.clone();
                    rest.remove("name");
                    (n.to_string(), Value::Object(rest))
                }
                None => return Err(Error::Invalid(format!("initializer object needs a 'name', got {v}"))),
            },
            _ => {
                return Err(Error::Invalid(format!(
                    "initializer must be a name or an object, got {v}"
                )))
            }
        };
        let mut o = Options::new(&format!("initializer '{name}'"), &opts)?;
        let init = match name.as_str() {
            "zeros" => Initializer::Zeros,
            "ones" => Initializer::Ones,
            "glorotUniform" | "glorot_uniform" => Initializer::GlorotUniform,
            "glorotNormal" | "glorot_normal" => Initializer::GlorotNormal,
            "heNormal" | "he_normal" => Initializer::HeNormal,
            "heUniform" | "he_uniform" => Initializer::HeUniform,
            "lecunNormal" | "lecun_normal" => Initializer::LecunNormal,
            "randomNormal" | "random_normal" => Initializer::RandomNormal {
                mean: o.f32("mean")?.unwrap_or(0.0),
                stddev: o.f32("stddev")?.unwrap_or(0.05),
            },
            "randomUniform" | "random_uniform" => Initializer::RandomUniform {
                min: o.f32("minval")?.unwrap_or(-0.05),
                max: o.f32("maxval")?.unwrap_or(0.05),
            },
            other => {
                return Err(Error::Invalid(format!(
                    "unknown initializer '{other}'; expected one of: zeros, ones, glorotUniform, glorotNormal, \
                     heNormal, heUniform, lecunNormal, randomNormal, randomUniform"
                )))
            }
        };
        o.finish()?;
        Ok(init)
    }

    /// The config written to model files.
    pub fn to_json(&self) -> Value {
        use serde_json::json;
        match self {
            Initializer::Zeros => json!("zeros"),
            Initializer::Ones => json!("ones"),
            Initializer::GlorotUniform => json!("glorotUniform"),
            Initializer::GlorotNormal => json!("glorotNormal"),
            Initializer::HeNormal => json!("heNormal"),
            Initializer::HeUniform => json!("heUniform"),
            Initializer::LecunNormal => json!("lecunNormal"),
            Initializer::RandomNormal { mean, stddev } => {
                json!({"name": "randomNormal", "mean": mean, "stddev": stddev})
            }
            Initializer::RandomUniform { min, max } => json!({"name": "randomUniform", "minval": min, "maxval": max}),
        }
    }

    /// Values for a weight of `shape` (fans computed the Keras way: the last axis is fan-out,
    /// the one before it fan-in, the rest the receptive field). The weight is charged against
    /// the active [`WeightBudget`](crate::alloc::WeightBudget) before anything is allocated.
    pub fn sample(&self, shape: &[usize], rng: &mut Rng) -> Result<Vec<f32>> {
        let (n, fill) = alloc::charge_weight(shape)?;
        let what = format!("a weight of shape {shape:?}");
        if fill == WeightFill::Overwrite {
            return alloc::try_filled(&what, n, 0.0);
        }
        let mut v = alloc::try_with_capacity(&what, n)?;
        let (fan_in, fan_out) = fans(shape);
        let trunc = |v: &mut Vec<f32>, std: f32, rng: &mut Rng| {
            let s = std / TRUNCATION_CORRECTION;
            v.extend((0..n).map(|_| rng.truncated_normal() * s));
        };
        let uniform =
            |v: &mut Vec<f32>, l: f32, rng: &mut Rng| v.extend((0..n).map(|_| (rng.uniform() * 2.0 - 1.0) * l));
        match *self {
            Initializer::Zeros => v.resize(n, 0.0),
            Initializer::Ones => v.resize(n, 1.0),
            Initializer::GlorotUniform => uniform(&mut v, (6.0 / (fan_in + fan_out)).sqrt(), rng),
            Initializer::GlorotNormal => trunc(&mut v, (2.0 / (fan_in + fan_out)).sqrt(), rng),
            Initializer::HeNormal => trunc(&mut v, (2.0 / fan_in).sqrt(), rng),
            Initializer::HeUniform => uniform(&mut v, (6.0 / fan_in).sqrt(), rng),
            Initializer::LecunNormal => trunc(&mut v, (1.0 / fan_in).sqrt(), rng),
            Initializer::RandomNormal { mean, stddev } => v.extend((0..n).map(|_| mean + stddev * rng.normal())),
            Initializer::RandomUniform { min, max } => v.extend((0..n).map(|_| min + (max - min) * rng.uniform())),
        }
        Ok(v)
    }
}

fn fans(shape: &[usize]) -> (f32, f32) {
    match shape.len() {
        0 => (1.0, 1.0),
        1 => (shape[0] as f32, shape[0] as f32),
        _ => {
            let receptive: usize = shape[..shape.len() - 2].iter().product();
            let fan_in = shape[shape.len() - 2] * receptive;
            let fan_out = shape[shape.len() - 1] * receptive;
            (fan_in.max(1) as f32, fan_out.max(1) as f32)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn he_normal_has_the_keras_stddev() {
        let mut rng = Rng::new(3);
        let w = Initializer::HeNormal.sample(&[3, 3, 32, 64], &mut rng).unwrap();
        let var = w.iter().map(|v| v * v).sum::<f32>() / w.len() as f32;
        let want = 2.0 / (9.0 * 32.0);
        assert!((var / want - 1.0).abs() < 0.05, "{var} vs {want}");
        let g = Initializer::GlorotUniform.sample(&[100, 50], &mut rng).unwrap();
        let l = (6.0f32 / 150.0).sqrt();
        assert!(g.iter().all(|v| v.abs() <= l));
        assert!(Initializer::parse(&serde_json::json!("nope")).is_err());
    }
}
