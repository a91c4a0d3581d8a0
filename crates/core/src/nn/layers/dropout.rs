//! `dropout`: active only in training.

use serde_json::{json, Value};

use super::{Common, ForwardCtx, Layer};
use crate::nn::options::Options;
use crate::rng::Rng;
use crate::{ops, Error, Result, Tensor};

/// Inverted dropout.
pub struct Dropout {
    common: Common,
    rate: f32,
}

impl Dropout {
    pub(super) fn from_options(o: &mut Options, common: &Common) -> Result<Self> {
        let rate = o
            .f32("rate")?
            .ok_or_else(|| Error::Invalid("Dropout: option 'rate' is required".into()))?;
        if !(0.0..1.0).contains(&rate) {
            return Err(Error::Invalid(format!(
                "Dropout: option 'rate' must be in [0, 1), got {rate}"
            )));
        }
        Ok(Dropout {
            common: common.clone(),
            rate,
        })
    }
}

impl Layer for Dropout {
    fn class_name(&self) -> &'static str {
        "Dropout"
    }
    fn name(&self) -> &str {
        &self.common.name
    }
    fn build(&mut self, input_shape: &[usize], _rng: &mut Rng) -> Result<Vec<usize>> {
        Ok(input_shape.to_vec())
    }
    fn forward(&self, x: &Tensor, ctx: &mut ForwardCtx) -> Result<Tensor> {
        if ctx.training {
            ops::dropout(x, self.rate, ctx.rng)
        } else {
            Ok(x.clone())
        }
    }
    fn config(&self) -> Value {
        self.common.write(json!({ "rate": self.rate }))
    }
}
