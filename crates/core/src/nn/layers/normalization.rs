//! Layer family `normalization`: Keras `LayerNormalization` and `BatchNormalization` over the
//! last axis, on the fused kernels of [`crate::cpu::norm`].

use serde_json::{json, Value};

use super::dense::init_option;
use super::{Common, ForwardCtx, Layer};
use crate::cpu::norm::{self, BatchStats};
use crate::nn::init::Initializer;
use crate::nn::options::Options;
use crate::nn::param::Param;
use crate::ops::gpu_norm;
use crate::rng::Rng;
use crate::{Error, Result, Tensor};

/// (class name, Keras base name) of every layer in this family.
pub(super) const CLASSES: &[(&str, &str)] = &[
    ("LayerNormalization", "layer_normalization"),
    ("BatchNormalization", "batch_normalization"),
];

/// Creates a layer of this family, or `None` for other class names.
pub(super) fn create(class_name: &str, o: &mut Options, common: &Common) -> Option<Result<Box<dyn Layer>>> {
    fn boxed<L: Layer + 'static>(l: Result<L>) -> Result<Box<dyn Layer>> {
        l.map(|l| Box::new(l) as Box<dyn Layer>)
    }
    Some(match class_name {
        "LayerNormalization" => boxed(LayerNormalization::from_options(o, common)),
        "BatchNormalization" => boxed(BatchNormalization::from_options(o, common)),
        _ => return None,
    })
}

/// Options both layers share.
struct NormOptions {
    axis: i64,
    epsilon: f32,
    center: bool,
    scale: bool,
    beta_init: Initializer,
    gamma_init: Initializer,
}

impl NormOptions {
    fn read(class: &str, o: &mut Options) -> Result<Self> {
        let axis = match o.value("axis") {
            None => -1,
            Some(v) => {
                let one = match &v {
                    Value::Array(a) if a.len() == 1 => a[0].as_i64(),
                    other => other.as_i64(),
                };
                one.ok_or_else(|| {
                    Error::Invalid(format!(
                        "{class}: option 'axis' must be an integer (the last axis, -1), got {v}"
                    ))
                })?
            }
        };
        let epsilon = o.f32("epsilon")?.unwrap_or(1e-3);
        if epsilon <= 0.0 {
            return Err(Error::Invalid(format!(
                "{class}: option 'epsilon' must be positive, got {epsilon}"
            )));
        }
        Ok(NormOptions {
            axis,
            epsilon,
            center: o.bool("center")?.unwrap_or(true),
            scale: o.bool("scale")?.unwrap_or(true),
            beta_init: init_option(o, "betaInitializer", Initializer::Zeros)?,
            gamma_init: init_option(o, "gammaInitializer", Initializer::Ones)?,
        })
    }

    /// Checks that `axis` is the last axis of inputs `[batch, ...input_shape]`; returns its size.
    fn features(&self, op: &str, input_shape: &[usize]) -> Result<usize> {
        let rank = input_shape.len() as i64 + 1;
        let Some(&c) = input_shape.last() else {
            return Err(Error::shape(
                op,
                "an input of rank >= 2 (with the batch axis)",
                input_shape,
            ));
        };
        if self.axis != -1 && self.axis != rank - 1 {
            return Err(Error::Invalid(format!(
                "{op}: only the last axis is supported (axis -1 or {}), got axis {}",
                rank - 1,
                self.axis
            )));
        }
        Ok(c)
    }

    /// `(gamma, beta)`, each only when enabled.
    fn affine(&self, name: &str, c: usize, trainable: bool, rng: &mut Rng) -> Result<(Option<Param>, Option<Param>)> {
        let gamma = self.scale.then(|| {
            Param::new(
                format!("{name}/gamma"),
                self.gamma_init.sample(&[c], rng)?,
                &[c],
                trainable,
            )
        });
        let beta = self.center.then(|| {
            Param::new(
                format!("{name}/beta"),
                self.beta_init.sample(&[c], rng)?,
                &[c],
                trainable,
            )
        });
        Ok((gamma.transpose()?, beta.transpose()?))
    }

    fn write(&self, extra: Value) -> Value {
        let mut c = json!({
            "axis": self.axis,
            "epsilon": self.epsilon,
            "center": self.center,
            "scale": self.scale,
            "betaInitializer": self.beta_init.to_json(),
            "gammaInitializer": self.gamma_init.to_json(),
        });
        if let (Some(m), Value::Object(e)) = (c.as_object_mut(), extra) {
            m.extend(e);
        }
        c
    }
}

fn not_built(name: &str) -> Error {
    Error::Invalid(format!(
        "layer '{name}' is used before it was built; call build(inputShape) first"
    ))
}

fn check_features(op: &str, x: &Tensor, c: usize) -> Result<()> {
    if x.rank() < 2 || x.shape().last() != Some(&c) {
        return Err(Error::shape(op, format!("[batch, ..., {c}]"), x.shape()));
    }
    Ok(())
}

/// Keras `LayerNormalization`: standardises each sample over its last axis.
pub struct LayerNormalization {
    common: Common,
    opts: NormOptions,
    features: usize,
    gamma: Option<Param>,
    beta: Option<Param>,
}

impl LayerNormalization {
    fn from_options(o: &mut Options, common: &Common) -> Result<Self> {
        let opts = NormOptions::read("LayerNormalization", o)?;
        Ok(LayerNormalization {
            common: common.clone(),
            opts,
            features: 0,
            gamma: None,
            beta: None,
        })
    }
}

impl Layer for LayerNormalization {
    fn class_name(&self) -> &'static str {
        "LayerNormalization"
    }
    fn name(&self) -> &str {
        &self.common.name
    }
    fn build(&mut self, input_shape: &[usize], rng: &mut Rng) -> Result<Vec<usize>> {
        let op = format!("LayerNormalization '{}'", self.common.name);
        let c = self.opts.features(&op, input_shape)?;
        (self.gamma, self.beta) = self.opts.affine(&self.common.name, c, self.common.trainable, rng)?;
        self.features = c;
        Ok(input_shape.to_vec())
    }
    fn forward(&self, x: &Tensor, _ctx: &mut ForwardCtx) -> Result<Tensor> {
        if self.features == 0 {
            return Err(not_built(&self.common.name));
        }
        check_features(&format!("LayerNormalization '{}'", self.common.name), x, self.features)?;
        let (g, b) = (self.gamma.as_ref().map(Param::get), self.beta.as_ref().map(Param::get));
        norm::layer_norm(x, g.as_ref(), b.as_ref(), self.opts.epsilon)
    }
    fn params(&self) -> Vec<&Param> {
        self.gamma.iter().chain(self.beta.iter()).collect()
    }
    fn config(&self) -> Value {
        self.common.write(self.opts.write(json!({})))
    }
}

/// Keras `BatchNormalization` over every axis but the last: batch statistics in training (and
/// moving averages of them, `moving = moving * momentum + batch * (1 - momentum)`), the moving
/// statistics in inference and whenever the layer is not trainable.
pub struct BatchNormalization {
    common: Common,
    opts: NormOptions,
    momentum: f32,
    moving_mean_init: Initializer,
    moving_var_init: Initializer,
    features: usize,
    gamma: Option<Param>,
    beta: Option<Param>,
    moving: Option<(Param, Param)>,
}

impl BatchNormalization {
    fn from_options(o: &mut Options, common: &Common) -> Result<Self> {
        let opts = NormOptions::read("BatchNormalization", o)?;
        let momentum = o.f32("momentum")?.unwrap_or(0.99);
        if !(0.0..=1.0).contains(&momentum) {
            return Err(Error::Invalid(format!(
                "BatchNormalization: option 'momentum' must be in [0, 1], got {momentum}"
            )));
        }
        Ok(BatchNormalization {
            common: common.clone(),
            opts,
            momentum,
            moving_mean_init: init_option(o, "movingMeanInitializer", Initializer::Zeros)?,
            moving_var_init: init_option(o, "movingVarianceInitializer", Initializer::Ones)?,
            features: 0,
            gamma: None,
            beta: None,
            moving: None,
        })
    }

    /// The forward pass with the input and the moving averages on the GPU: the statistics
    /// never leave the device (training blends the batch's into the moving averages in place,
    /// inference reads the moving buffers).
    fn forward_on_device(
        &self,
        x: &Tensor,
        gamma: Option<&Tensor>,
        beta: Option<&Tensor>,
        (mm, mv): (&Param, &Param),
        training: bool,
    ) -> Result<Tensor> {
        let eps = self.opts.epsilon;
        let moving_buffer = |p: &Param| {
            p.get()
                .gpu_buffer()
                .ok_or_else(|| Error::Invalid(format!("'{}' left the GPU during the call", p.name)))
        };
        if !training {
            let moving = (moving_buffer(mm)?, moving_buffer(mv)?);
            return Ok(gpu_norm::batch_norm_on_device(x, gamma, beta, Some(moving), eps)?.0);
        }
        let (y, batch) = gpu_norm::batch_norm_on_device(x, gamma, beta, None, eps)?;
        let batch = batch.expect("batch statistics are returned when no moving ones are given");
        mm.update_on_device(|mean| {
            mv.update_on_device(|var| gpu_norm::update_moving(mean, var, &batch, self.momentum))
        })?;
        Ok(y)
    }
}

impl Layer for BatchNormalization {
    fn class_name(&self) -> &'static str {
        "BatchNormalization"
    }
    fn name(&self) -> &str {
        &self.common.name
    }
    fn build(&mut self, input_shape: &[usize], rng: &mut Rng) -> Result<Vec<usize>> {
        let op = format!("BatchNormalization '{}'", self.common.name);
        let c = self.opts.features(&op, input_shape)?;
        let name = &self.common.name;
        (self.gamma, self.beta) = self.opts.affine(name, c, self.common.trainable, rng)?;
        let mean = Param::new(
            format!("{name}/moving_mean"),
            self.moving_mean_init.sample(&[c], rng)?,
            &[c],
            false,
        )?;
        let var = Param::new(
            format!("{name}/moving_variance"),
            self.moving_var_init.sample(&[c], rng)?,
            &[c],
            false,
        )?;
        self.moving = Some((mean, var));
        self.features = c;
        Ok(input_shape.to_vec())
    }
    fn forward(&self, x: &Tensor, ctx: &mut ForwardCtx) -> Result<Tensor> {
        let (mm, mv) = self.moving.as_ref().ok_or_else(|| not_built(&self.common.name))?;
        check_features(&format!("BatchNormalization '{}'", self.common.name), x, self.features)?;
        let (g, b) = (self.gamma.as_ref().map(Param::get), self.beta.as_ref().map(Param::get));
        let eps = self.opts.epsilon;
        let training = ctx.training && self.common.trainable;
        if x.device() == crate::Device::Gpu && mm.device() == crate::Device::Gpu && mv.device() == crate::Device::Gpu {
            return self.forward_on_device(x, g.as_ref(), b.as_ref(), (mm, mv), training);
        }
        // Keras: a frozen BatchNormalization runs in inference mode even while fitting.
        if training {
            let (y, batch) = norm::batch_norm(x, g.as_ref(), b.as_ref(), None, eps)?;
            let m = self.momentum;
            let blend = |moving: &mut [f32], now: &[f32]| {
                moving
                    .iter_mut()
                    .zip(now)
                    .for_each(|(a, &v)| *a = *a * m + v * (1.0 - m))
            };
            mm.update(|d| blend(d, &batch.mean))?;
            mv.update(|d| blend(d, &batch.var))?;
            Ok(y)
        } else {
            let stats = BatchStats {
                mean: mm.get().to_vec(),
                var: mv.get().to_vec(),
            };
            Ok(norm::batch_norm(x, g.as_ref(), b.as_ref(), Some(&stats), eps)?.0)
        }
    }
    fn params(&self) -> Vec<&Param> {
        let moving = self.moving.iter().flat_map(|(m, v)| [m, v]);
        self.gamma.iter().chain(self.beta.iter()).chain(moving).collect()
    }
    fn config(&self) -> Value {
        self.common.write(self.opts.write(json!({
            "momentum": self.momentum,
            "movingMeanInitializer": self.moving_mean_init.to_json(),
            "movingVarianceInitializer": self.moving_var_init.to_json(),
        })))
    }
}
