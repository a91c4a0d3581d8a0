//! Activation functions by name, and the Activation layer.

use serde_json::{json, Value};

use super::{Common, ForwardCtx, Layer};
use crate::cpu::elementwise::Activation;
use crate::nn::options::Options;
use crate::rng::Rng;
use crate::{ops, Error, Result, Tensor};

/// Any activation a layer can end with.
#[derive(Clone, Debug, PartialEq)]
pub struct ActivationSpec {
    name: String,
    kind: Kind,
}

#[derive(Clone, Debug, PartialEq)]
enum Kind {
    Pointwise(Activation),
    Softmax,
    LogSoftmax,
}

impl ActivationSpec {
    /// Parses a Keras activation name.
    pub fn parse(name: &str) -> Result<ActivationSpec> {
        let kind = match name {
            "softmax" => Kind::Softmax,
            "log_softmax" | "logSoftmax" => Kind::LogSoftmax,
            other => Kind::Pointwise(Activation::parse(other).ok_or_else(|| {
                Error::Invalid(format!(
                    "unknown activation '{other}'; expected one of: linear, relu, sigmoid, tanh, softmax, logSoftmax, \
                     gelu, geluTanh, elu, selu, leakyRelu, swish, softplus"
                ))
            })?),
        };
        Ok(ActivationSpec {
            name: name.to_string(),
            kind,
        })
    }

    /// Identity.
    pub fn linear() -> ActivationSpec {
        ActivationSpec {
            name: "linear".into(),
            kind: Kind::Pointwise(Activation::Linear),
        }
    }

    /// The name it was parsed from.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True for softmax (losses use this to pick metrics and fuse).
    pub fn is_softmax(&self) -> bool {
        self.kind == Kind::Softmax
    }

    /// Applies it.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        match self.kind {
            Kind::Pointwise(a) => ops::activation(x, a),
            Kind::Softmax => ops::softmax(x),
            Kind::LogSoftmax => ops::log_softmax(x),
        }
    }

    /// [`Self::apply`] to a layer's own fresh output: in place when no gradient needs it.
    /// The pointwise activation this is, if it is one (softmax is not).
    pub fn pointwise(&self) -> Option<Activation> {
        match self.kind {
            Kind::Pointwise(a) => Some(a),
            _ => None,
        }
    }

    pub fn apply_owned(&self, x: Tensor) -> Result<Tensor> {
        match self.kind {
            Kind::Pointwise(a) => ops::activation_owned(x, a),
            _ => self.apply(&x),
        }
    }

    pub(super) fn read(o: &mut Options) -> Result<ActivationSpec> {
        match o.string("activation")? {
            Some(name) => ActivationSpec::parse(&name),
            None => Ok(ActivationSpec::linear()),
        }
    }
}

/// `activation({ activation: 'relu' })`.
pub struct ActivationLayer {
    common: Common,
    act: ActivationSpec,
}

impl ActivationLayer {
    pub(super) fn from_options(o: &mut Options, common: &Common) -> Result<Self> {
        let name = o
            .string("activation")?
            .ok_or_else(|| Error::Invalid("Activation: option 'activation' is required".into()))?;
        Ok(ActivationLayer {
            common: common.clone(),
            act: ActivationSpec::parse(&name)?,
        })
    }
}

impl Layer for ActivationLayer {
    fn class_name(&self) -> &'static str {
        "Activation"
    }
    fn name(&self) -> &str {
        &self.common.name
    }
    fn build(&mut self, input_shape: &[usize], _rng: &mut Rng) -> Result<Vec<usize>> {
        Ok(input_shape.to_vec())
    }
    fn forward(&self, x: &Tensor, _ctx: &mut ForwardCtx) -> Result<Tensor> {
        self.act.apply(x)
    }
    fn config(&self) -> Value {
        self.common.write(json!({ "activation": self.act.name() }))
    }
}
