//! Noise layers for robustness (Keras `GaussianNoise`, `GaussianDropout`): active only in
//! training, the identity in inference, like dropout.

use serde_json::{json, Value};

use super::{Common, ForwardCtx, Layer};
use crate::nn::options::Options;
use crate::rng::Rng;
use crate::{ops, Error, Result, Tensor};

/// (class name, Keras base name) of every layer in this family.
pub(super) const CLASSES: &[(&str, &str)] = &[
    ("GaussianNoise", "gaussian_noise"),
    ("GaussianDropout", "gaussian_dropout"),
];

/// Creates a layer of this family, or `None` for other class names.
pub(super) fn create(class_name: &str, o: &mut Options, common: &Common) -> Option<Result<Box<dyn Layer>>> {
    let kind = match class_name {
        "GaussianNoise" => o.f32("stddev").and_then(|s| {
            let s = s.ok_or_else(|| Error::Invalid("GaussianNoise: option 'stddev' is required".into()))?;
            if !(s.is_finite() && s >= 0.0) {
                return Err(Error::Invalid(format!(
                    "GaussianNoise: option 'stddev' must be a non-negative number, got {s}"
                )));
            }
            Ok(Kind::Additive { stddev: s })
        }),
        "GaussianDropout" => o.f32("rate").and_then(|r| {
            let r = r.ok_or_else(|| Error::Invalid("GaussianDropout: option 'rate' is required".into()))?;
            if !(0.0..1.0).contains(&r) {
                return Err(Error::Invalid(format!(
                    "GaussianDropout: option 'rate' must be in [0, 1), got {r}"
                )));
            }
            Ok(Kind::Multiplicative { rate: r })
        }),
        _ => return None,
    };
    Some(kind.map(|kind| {
        Box::new(GaussianNoise {
            common: common.clone(),
            kind,
        }) as Box<dyn Layer>
    }))
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    /// `x + N(0, stddev²)`.
    Additive { stddev: f32 },
    /// `x * N(1, rate / (1 - rate))`, the Gaussian form of dropout (Srivastava et al. 2014).
    Multiplicative { rate: f32 },
}

/// Gaussian noise added to, or multiplied with, the input in training.
pub struct GaussianNoise {
    common: Common,
    kind: Kind,
}

impl Layer for GaussianNoise {
    fn class_name(&self) -> &'static str {
        match self.kind {
            Kind::Additive { .. } => "GaussianNoise",
            Kind::Multiplicative { .. } => "GaussianDropout",
        }
    }
    fn name(&self) -> &str {
        &self.common.name
    }
    fn build(&mut self, input_shape: &[usize], _rng: &mut Rng) -> Result<Vec<usize>> {
        Ok(input_shape.to_vec())
    }
    fn forward(&self, x: &Tensor, ctx: &mut ForwardCtx) -> Result<Tensor> {
        if !ctx.training {
            return Ok(x.clone());
        }
        match self.kind {
            Kind::Additive { stddev } if stddev > 0.0 => {
                let noise: Vec<f32> = (0..x.len()).map(|_| stddev * ctx.rng.normal()).collect();
                ops::add(x, &Tensor::new(noise, x.shape())?.to(x.device())?)
            }
            Kind::Multiplicative { rate } if rate > 0.0 => {
                let stddev = (rate / (1.0 - rate)).sqrt();
                let noise: Vec<f32> = (0..x.len()).map(|_| 1.0 + stddev * ctx.rng.normal()).collect();
                ops::mul(x, &Tensor::new(noise, x.shape())?.to(x.device())?)
            }
            _ => Ok(x.clone()),
        }
    }
    fn config(&self) -> Value {
        self.common.write(match self.kind {
            Kind::Additive { stddev } => json!({ "stddev": stddev }),
            Kind::Multiplicative { rate } => json!({ "rate": rate }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(class: &str, config: Value) -> Box<dyn Layer> {
        super::super::from_config(class, &config).unwrap().0
    }

    #[test]
    fn noise_is_training_only_with_the_keras_moments() {
        let n = 200_000;
        let x = Tensor::new(vec![2.0; n], &[n, 1]).unwrap();
        for (class, config, mean, var) in [
            ("GaussianNoise", json!({"stddev": 0.5}), 2.0, 0.25),
            // x * N(1, rate / (1 - rate)): variance 4 * 0.25 / 0.75.
            ("GaussianDropout", json!({"rate": 0.25}), 2.0, 4.0 / 3.0),
        ] {
            let l = layer(class, config);
            let mut rng = Rng::new(3);
            let same = l.forward(&x, &mut ForwardCtx::new(false, &mut rng)).unwrap();
            assert_eq!(same.data(), x.data(), "{class} is the identity in inference");
            let y = l.forward(&x, &mut ForwardCtx::new(true, &mut rng)).unwrap();
            let m = y.data().iter().map(|&v| v as f64).sum::<f64>() / n as f64;
            let v = y.data().iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / n as f64;
            assert!((m - mean).abs() < 0.01, "{class} mean {m}");
            assert!((v - var).abs() / var < 0.02, "{class} variance {v} vs {var}");
        }
        let e = super::super::from_config("GaussianDropout", &json!({"rate": 1.0}))
            .err()
            .unwrap();
        assert!(e.to_string().contains("[0, 1)"), "{e}");
    }
}
