//! `conv2d`: channels-last 2-D convolution with TensorFlow padding.

use serde_json::{json, Value};

use super::dense::init_option;
use super::{ActivationSpec, Common, ForwardCtx, Layer};
use crate::cpu::conv::{Conv2dGeometry, Padding};
use crate::cpu::conv_winograd::KernelCache;
use crate::cpu::elementwise::Activation;
use crate::nn::init::Initializer;
use crate::nn::options::Options;
use crate::nn::param::Param;
use crate::nn::quantize::{Precision, QuantizedWeights};
use crate::rng::Rng;
use crate::{ops, Error, Result, Tensor};

/// 2-D convolution layer.
pub struct Conv2dLayer {
    common: Common,
    filters: usize,
    kernel_size: [usize; 2],
    strides: [usize; 2],
    dilation: [usize; 2],
    padding: Padding,
    activation: ActivationSpec,
    use_bias: bool,
    kernel_init: Initializer,
    bias_init: Initializer,
    kernel: Option<Param>,
    bias: Option<Param>,
    quantized: QuantizedWeights,
    /// The kernel's Winograd transform for inference (3x3, stride 1), per weight version.
    winograd: KernelCache,
}

impl Conv2dLayer {
    pub(super) fn from_options(o: &mut Options, common: &Common) -> Result<Self> {
        let filters = o.required_positive("filters")?;
        let kernel_size = o
            .pair("kernelSize")?
            .ok_or_else(|| Error::Invalid("Conv2D: option 'kernelSize' is required".into()))?;
        let strides = o.pair("strides")?.unwrap_or([1, 1]);
        let dilation = o.pair("dilationRate")?.unwrap_or([1, 1]);
        if strides != [1, 1] && dilation != [1, 1] {
            return Err(Error::Invalid(format!(
                "Conv2D: strides {strides:?} and dilationRate {dilation:?} cannot both differ from 1 (as in Keras)"
            )));
        }
        Ok(Conv2dLayer {
            common: common.clone(),
            filters,
            kernel_size,
            strides,
            dilation,
            padding: Padding::parse(&o.string("padding")?.unwrap_or_else(|| "valid".into()))?,
            activation: ActivationSpec::read(o)?,
            use_bias: o.bool("useBias")?.unwrap_or(true),
            kernel_init: init_option(o, "kernelInitializer", Initializer::GlorotUniform)?,
            bias_init: init_option(o, "biasInitializer", Initializer::Zeros)?,
            kernel: None,
            bias: None,
            quantized: QuantizedWeights::default(),
            winograd: KernelCache::default(),
        })
    }
}

impl Conv2dLayer {
    /// The reduced-precision forward pass, when the layer is quantized and this call is plain
    /// inference.
    fn forward_quantized(
        &self,
        x: &Tensor,
        kernel: &Param,
        bias: Option<&Tensor>,
        ctx: &ForwardCtx,
    ) -> Result<Option<Tensor>> {
        let w = kernel.get();
        let geom = Conv2dGeometry::new(x.shape(), w.shape(), self.strides, self.dilation, self.padding)?;
        let Some(packed) = self
            .quantized
            .for_call(kernel, &w, x, ctx, geom.patch_len(), geom.out_c)?
        else {
            return Ok(None);
        };
        let act = self.activation.pointwise();
        let y = packed.conv2d(
            x.data(),
            &geom,
            bias.map(Tensor::data),
            act.unwrap_or(Activation::Linear),
        )?;
        let y = Tensor::new(y, &geom.output_shape())?;
        Ok(Some(if act.is_some() {
            y
        } else {
            self.activation.apply_owned(y)?
        }))
    }
}

impl Layer for Conv2dLayer {
    fn class_name(&self) -> &'static str {
        "Conv2D"
    }
    fn name(&self) -> &str {
        &self.common.name
    }
    fn build(&mut self, input_shape: &[usize], rng: &mut Rng) -> Result<Vec<usize>> {
        let what = format!("Conv2D '{}'", self.common.name);
        if input_shape.len() != 3 {
            return Err(Error::shape(&what, "input [height, width, channels]", input_shape));
        }
        let kshape = [self.kernel_size[0], self.kernel_size[1], input_shape[2], self.filters];
        let mut with_batch = vec![1];
        with_batch.extend_from_slice(input_shape);
        let geom = Conv2dGeometry::new(&with_batch, &kshape, self.strides, self.dilation, self.padding)?;
        let name = &self.common.name;
        self.kernel = Some(Param::new(
            format!("{name}/kernel"),
            self.kernel_init.sample(&kshape, rng)?,
            &kshape,
            self.common.trainable,
        )?);
        self.bias = if self.use_bias {
            let b = self.bias_init.sample(&[self.filters], rng)?;
            Some(Param::new(
                format!("{name}/bias"),
                b,
                &[self.filters],
                self.common.trainable,
            )?)
        } else {
            None
        };
        Ok(geom.output_shape()[1..].to_vec())
    }
    fn forward(&self, x: &Tensor, ctx: &mut ForwardCtx) -> Result<Tensor> {
        let kernel = self
            .kernel
            .as_ref()
            .ok_or_else(|| Error::Invalid(format!("layer '{}' is used before it was built", self.common.name)))?;
        let bias = self.bias.as_ref().map(Param::get);
        if let Some(y) = self.forward_quantized(x, kernel, bias.as_ref(), ctx)? {
            return Ok(y);
        }
        if let Some(act) = self.activation.pointwise() {
            // The version before the value: a change in between costs a transform, never a stale one.
            let version = kernel.version();
            let (k, b) = (kernel.get(), bias.as_ref());
            let cache = Some((&self.winograd, version));
            return ops::conv2d_act(x, &k, b, self.strides, self.dilation, self.padding, act, cache);
        }
        let y = ops::conv2d(
            x,
            &kernel.get(),
            bias.as_ref(),
            self.strides,
            self.dilation,
            self.padding,
        )?;
        self.activation.apply_owned(y)
    }
    fn forward_max_pooled(&self, x: &Tensor, pool: [usize; 2], ctx: &mut ForwardCtx) -> Result<Option<Tensor>> {
        let (Some(kernel), Some(act)) = (self.kernel.as_ref(), self.activation.pointwise()) else {
            return Ok(None);
        };
        let (k, bias) = (kernel.get(), self.bias.as_ref().map(Param::get));
        let geom = Conv2dGeometry::new(x.shape(), k.shape(), self.strides, self.dilation, self.padding)?;
        if let Some(packed) = self
            .quantized
            .for_call(kernel, &k, x, ctx, geom.patch_len(), geom.out_c)?
        {
            let Some(shape) = geom.pooled_shape(pool) else {
                return Ok(None);
            };
            let y = packed.conv2d_max_pool(x.data(), &geom, bias.as_ref().map(Tensor::data), act, pool)?;
            return Tensor::new(y, &shape).map(Some);
        }
        ops::conv2d_act_max_pool(
            x,
            &k,
            bias.as_ref(),
            self.strides,
            self.dilation,
            self.padding,
            act,
            pool,
        )
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
            "filters": self.filters,
            "kernelSize": self.kernel_size,
            "strides": self.strides,
            "dilationRate": self.dilation,
            "padding": if self.padding == Padding::Same { "same" } else { "valid" },
            "activation": self.activation.name(),
            "useBias": self.use_bias,
            "kernelInitializer": self.kernel_init.to_json(),
            "biasInitializer": self.bias_init.to_json(),
        }))
    }
}
