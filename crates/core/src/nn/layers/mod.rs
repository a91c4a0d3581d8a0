//! Layers: each reads its Keras options, builds its weights for an input shape, and maps a
//! batch forward with differentiable ops.

mod activation;
mod conv;
mod dense;
mod dropout;
mod pooling;
mod reshape;

pub use activation::{ActivationLayer, ActivationSpec};
pub use conv::Conv2dLayer;
pub use dense::Dense;
pub use dropout::Dropout;
pub use pooling::{GlobalAveragePooling2d, Pooling2d};
pub use reshape::{Flatten, Reshape};

use serde_json::Value;

use super::options::Options;
use super::param::Param;
use crate::rng::Rng;
use crate::{Error, Result, Tensor};

/// What a forward pass needs besides the input.
pub struct ForwardCtx<'a> {
    /// Training mode (dropout active).
    pub training: bool,
    /// Randomness for dropout.
    pub rng: &'a mut Rng,
}

/// A Keras layer.
pub trait Layer: Send + Sync {
    /// Keras class name (`"Dense"`, `"Conv2D"`...).
    fn class_name(&self) -> &'static str;
    /// Unique name inside its model.
    fn name(&self) -> &str;
    /// Creates weights for `input_shape` (without the batch axis); returns the output shape.
    fn build(&mut self, input_shape: &[usize], rng: &mut Rng) -> Result<Vec<usize>>;
    /// Maps a batch forward.
    fn forward(&self, x: &Tensor, ctx: &mut ForwardCtx) -> Result<Tensor>;
    /// Weights, in a stable order.
    fn params(&self) -> Vec<&Param> {
        Vec::new()
    }
    /// Options (camelCase) that rebuild this layer, including `name`.
    fn config(&self) -> Value;
}

/// Options every layer accepts.
#[derive(Clone, Debug)]
pub struct Common {
    /// Layer name (given, or assigned by the model).
    pub name: String,
    /// Input shape without the batch axis, when the user gave one.
    pub input_shape: Option<Vec<usize>>,
    /// Whether its weights train.
    pub trainable: bool,
}

impl Common {
    fn read(o: &mut Options) -> Result<Common> {
        Ok(Common {
            name: o.string("name")?.unwrap_or_default(),
            input_shape: o.shape("inputShape")?,
            trainable: o.bool("trainable")?.unwrap_or(true),
        })
    }

    fn write(&self, mut config: Value) -> Value {
        let map = config.as_object_mut().expect("layer configs are objects");
        map.insert("name".into(), self.name.clone().into());
        if let Some(s) = &self.input_shape {
            map.insert("inputShape".into(), s.clone().into());
        }
        if !self.trainable {
            map.insert("trainable".into(), false.into());
        }
        config
    }
}

/// Snake-case base name Keras uses for automatic layer names.
pub fn base_name(class_name: &str) -> &'static str {
    match class_name {
        "Dense" => "dense",
        "Conv2D" => "conv2d",
        "MaxPooling2D" => "max_pooling2d",
        "AveragePooling2D" => "average_pooling2d",
        "GlobalAveragePooling2D" => "global_average_pooling2d",
        "Flatten" => "flatten",
        "Reshape" => "reshape",
        "Dropout" => "dropout",
        _ => "activation",
    }
}

/// Builds a layer from its class name and options, with the options checked.
pub fn from_config(class_name: &str, config: &Value) -> Result<(Box<dyn Layer>, Common)> {
    let mut o = Options::new(class_name, config)?;
    let common = Common::read(&mut o)?;
    let layer: Box<dyn Layer> = match class_name {
        "Dense" => Box::new(Dense::from_options(&mut o, &common)?),
        "Conv2D" => Box::new(Conv2dLayer::from_options(&mut o, &common)?),
        "MaxPooling2D" => Box::new(Pooling2d::from_options(&mut o, &common, true)?),
        "AveragePooling2D" => Box::new(Pooling2d::from_options(&mut o, &common, false)?),
        "GlobalAveragePooling2D" => Box::new(GlobalAveragePooling2d::new(&common)),
        "Flatten" => Box::new(Flatten::new(&common)),
        "Reshape" => Box::new(Reshape::from_options(&mut o, &common)?),
        "Dropout" => Box::new(Dropout::from_options(&mut o, &common)?),
        "Activation" => Box::new(ActivationLayer::from_options(&mut o, &common)?),
        other => {
            return Err(Error::Invalid(format!(
                "unknown layer class '{other}'; expected one of: Dense, Conv2D, MaxPooling2D, AveragePooling2D, \
                 GlobalAveragePooling2D, Flatten, Reshape, Dropout, Activation"
            )))
        }
    };
    o.finish()?;
    Ok((layer, common))
}
