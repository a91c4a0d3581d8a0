//! `flatten` and `reshape`: views of the same data.

use serde_json::{json, Value};

use super::{Common, ForwardCtx, Layer};
use crate::nn::options::Options;
use crate::rng::Rng;
use crate::tensor::numel;
use crate::{Error, Result, Tensor};

/// Collapses every axis after the batch into one.
pub struct Flatten {
    common: Common,
}

impl Flatten {
    pub(super) fn new(common: &Common) -> Self {
        Flatten { common: common.clone() }
    }
}

impl Layer for Flatten {
    fn class_name(&self) -> &'static str {
        "Flatten"
    }
    fn name(&self) -> &str {
        &self.common.name
    }
    fn build(&mut self, input_shape: &[usize], _rng: &mut Rng) -> Result<Vec<usize>> {
        Ok(vec![numel(input_shape)])
    }
    fn forward(&self, x: &Tensor, _ctx: &mut ForwardCtx) -> Result<Tensor> {
        let batch = x.shape().first().copied().unwrap_or(1);
        x.reshape(&[batch, x.len() / batch.max(1)])
    }
    fn config(&self) -> Value {
        self.common.write(json!({}))
    }
}

/// Reshapes every sample to `targetShape`.
pub struct Reshape {
    common: Common,
    target: Vec<usize>,
}

impl Reshape {
    pub(super) fn from_options(o: &mut Options, common: &Common) -> Result<Self> {
        let target = o
            .shape("targetShape")?
            .ok_or_else(|| Error::Invalid("Reshape: option 'targetShape' is required".into()))?;
        Ok(Reshape {
            common: common.clone(),
            target,
        })
    }
}

impl Layer for Reshape {
    fn class_name(&self) -> &'static str {
        "Reshape"
    }
    fn name(&self) -> &str {
        &self.common.name
    }
    fn build(&mut self, input_shape: &[usize], _rng: &mut Rng) -> Result<Vec<usize>> {
        if numel(input_shape) != numel(&self.target) {
            return Err(Error::shape(
                &format!("Reshape '{}'", self.common.name),
                format!(
                    "an input with {} values per sample (targetShape {:?})",
                    numel(&self.target),
                    self.target
                ),
                input_shape,
            ));
        }
        Ok(self.target.clone())
    }
    fn forward(&self, x: &Tensor, _ctx: &mut ForwardCtx) -> Result<Tensor> {
        let mut shape = vec![x.shape().first().copied().unwrap_or(1)];
        shape.extend_from_slice(&self.target);
        x.reshape(&shape)
    }
    fn config(&self) -> Value {
        self.common.write(json!({ "targetShape": self.target }))
    }
}
