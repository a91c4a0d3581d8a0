//! `dense`: `activation(x · kernel + bias)` on the last axis.

use serde_json::{json, Value};

use super::{ActivationSpec, Common, ForwardCtx, Layer};
use crate::cpu::elementwise::Activation;
use crate::nn::init::Initializer;
use crate::nn::options::Options;
use crate::nn::param::Param;
use crate::nn::quantize::{Precision, QuantizedWeights};
use crate::rng::Rng;
use crate::{ops, Error, Result, Tensor};

/// Fully connected layer.
pub struct Dense {
    common: Common,
    units: usize,
    activation: ActivationSpec,
    use_bias: bool,
    kernel_init: Initializer,
    bias_init: Initializer,
    kernel: Option<Param>,
    bias: Option<Param>,
    quantized: QuantizedWeights,
}

impl Dense {
    pub(super) fn from_options(o: &mut Options, common: &Common) -> Result<Self> {
        Ok(Dense {
            common: common.clone(),
            units: o.required_positive("units")?,
            activation: ActivationSpec::read(o)?,
            use_bias: o.bool("useBias")?.unwrap_or(true),
            kernel_init: init_option(o, "kernelInitializer", Initializer::GlorotUniform)?,
            bias_init: init_option(o, "biasInitializer", Initializer::Zeros)?,
            kernel: None,
            bias: None,
            quantized: QuantizedWeights::default(),
        })
    }
}

/// Reads an initializer option with a default.
pub(super) fn init_option(o: &mut Options, key: &'static str, default: Initializer) -> Result<Initializer> {
    o.value(key)
        .map(|v| Initializer::parse(&v))
        .transpose()
        .map(|i| i.unwrap_or(default))
}

fn not_built(name: &str) -> Error {
    Error::Invalid(format!(
        "layer '{name}' is used before it was built; call build(inputShape) first"
    ))
}

impl Layer for Dense {
    fn class_name(&self) -> &'static str {
        "Dense"
    }
    fn name(&self) -> &str {
        &self.common.name
    }
    fn build(&mut self, input_shape: &[usize], rng: &mut Rng) -> Result<Vec<usize>> {
        let Some(&din) = input_shape.last() else {
            return Err(Error::shape(
                &format!("Dense '{}'", self.common.name),
                "an input of rank >= 1",
                input_shape,
            ));
        };
        let name = &self.common.name;
        let shape = [din, self.units];
        self.kernel = Some(Param::new(
            format!("{name}/kernel"),
            self.kernel_init.sample(&shape, rng)?,
            &shape,
            self.common.trainable,
        )?);
        self.bias = if self.use_bias {
            let b = self.bias_init.sample(&[self.units], rng)?;
            Some(Param::new(
                format!("{name}/bias"),
                b,
                &[self.units],
                self.common.trainable,
            )?)
        } else {
            None
        };
        let mut out = input_shape.to_vec();
        *out.last_mut().expect("rank checked") = self.units;
        Ok(out)
    }
    fn forward(&self, x: &Tensor, ctx: &mut ForwardCtx) -> Result<Tensor> {
        let kernel = self.kernel.as_ref().ok_or_else(|| not_built(&self.common.name))?;
        let bias = self.bias.as_ref().map(Param::get);
        let w = kernel.get();
        let (din, dout) = (w.shape()[0], self.units);
        if x.shape().last() == Some(&din) {
            if let Some(packed) = self.quantized.for_call(kernel, &w, x, ctx, din, dout)? {
                let act = self.activation.pointwise().unwrap_or(Activation::Linear);
                let rows = x.len() / din.max(1);
                let y = packed.linear(x.data(), rows, bias.as_ref().map(Tensor::data), act)?;
                let mut shape = x.shape().to_vec();
                *shape.last_mut().expect("rank >= 1") = dout;
                let y = Tensor::new(y, &shape)?;
                return if self.activation.pointwise().is_some() {
                    Ok(y)
                } else {
                    self.activation.apply_owned(y)
                };
            }
        }
        let y = ops::linear(x, &w, bias.as_ref())?;
        self.activation.apply_owned(y)
    }
    fn set_precision(&self, precision: Precision) -> bool {
        self.quantized.set(precision);
        true
    }
    fn params(&self) -> Vec<&Param> {
        self.kernel.iter().chain(self.bias.iter()).collect()
    }
    fn config(&self) -> Value {
        self.common.write(json!({
            "units": self.units,
            "activation": self.activation.name(),
            "useBias": self.use_bias,
            "kernelInitializer": self.kernel_init.to_json(),
            "biasInitializer": self.bias_init.to_json(),
        }))
    }
}
