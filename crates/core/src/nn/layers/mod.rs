//! Layers: each reads its Keras options, builds its weights for an input shape, and maps a
//! batch forward with differentiable ops.

mod activation;
mod attention;
mod conv;
mod dale;
mod dann;
mod dense;
mod dropout;
mod embedding;
mod merge;
mod noise;
mod normalization;
mod pooling;
mod recurrent;
mod reshape;
mod spatial;

pub use activation::{ActivationLayer, ActivationSpec};
pub use conv::Conv2dLayer;
pub use dense::Dense;
pub use dropout::Dropout;
pub use embedding::EmbeddingLookup;
pub use pooling::{GlobalAveragePooling2d, Pooling2d};
pub(crate) use recurrent::BidirectionalMerge;
pub use reshape::{Flatten, Reshape};

use serde_json::Value;

use super::options::Options;
use super::param::Param;
use crate::rng::Rng;
use crate::{Error, Result, Tensor};

/// What a forward pass needs besides the inputs.
pub struct ForwardCtx<'a> {
    /// Training mode (dropout active, batch statistics used).
    pub training: bool,
    /// Randomness for dropout.
    pub rng: &'a mut Rng,
    /// Keras masks of the current call's inputs (`[batch, time]`, 1 = keep, 0 = padded), one per input.
    pub input_masks: Vec<Option<Tensor>>,
    /// Masks of the outputs, if the layer sets them (Embedding with maskZero); when left `None`
    /// the model passes the first input's mask through to outputs that keep the `[batch, time]` axes.
    pub output_masks: Option<Vec<Option<Tensor>>>,
}

impl<'a> ForwardCtx<'a> {
    /// A context with no masks.
    pub fn new(training: bool, rng: &'a mut Rng) -> Self {
        ForwardCtx {
            training,
            rng,
            input_masks: Vec::new(),
            output_masks: None,
        }
    }

    /// The mask of input `i`, if any.
    pub fn mask(&self, i: usize) -> Option<&Tensor> {
        self.input_masks.get(i).and_then(Option::as_ref)
    }
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
    /// Multi-input / multi-output form of [`Layer::build`]; the default accepts exactly one input.
    fn build_many(&mut self, input_shapes: &[Vec<usize>], rng: &mut Rng) -> Result<Vec<Vec<usize>>> {
        match input_shapes {
            [one] => Ok(vec![self.build(one, rng)?]),
            _ => Err(Error::Invalid(format!(
                "layer '{}' ({}) takes one input, got {}",
                self.name(),
                self.class_name(),
                input_shapes.len()
            ))),
        }
    }
    /// Multi-input / multi-output form of [`Layer::forward`]; the default accepts exactly one input.
    fn call(&self, inputs: &[Tensor], ctx: &mut ForwardCtx) -> Result<Vec<Tensor>> {
        match inputs {
            [x] => Ok(vec![self.forward(x, ctx)?]),
            _ => Err(Error::Invalid(format!(
                "layer '{}' ({}) takes one input, got {}",
                self.name(),
                self.class_name(),
                inputs.len()
            ))),
        }
    }
    /// Weights, in a stable order (trainable and non-trainable, e.g. moving statistics).
    fn params(&self) -> Vec<&Param> {
        Vec::new()
    }
    /// Options (camelCase) that rebuild this layer, including `name`.
    fn config(&self) -> Value;
    /// The model, when this layer is a nested model.
    fn as_model(&self) -> Option<&crate::nn::model::Model> {
        None
    }
    /// Mutable access to the model, when this layer is a nested model.
    fn as_model_mut(&mut self) -> Option<&mut crate::nn::model::Model> {
        None
    }
    /// Switches the arithmetic of inference forward passes; returns whether this layer has a
    /// reduced-precision path (the others keep f32).
    fn set_precision(&self, _precision: crate::nn::quantize::Precision) -> bool {
        false
    }
    /// Inference fusion: this layer's output max-pooled over non-overlapping `pool` windows
    /// ('valid') in one pass, when the layer has such a kernel for this call; `None` (the
    /// default) and the model runs the pooling layer itself.
    fn forward_max_pooled(&self, _x: &Tensor, _pool: [usize; 2], _ctx: &mut ForwardCtx) -> Result<Option<Tensor>> {
        Ok(None)
    }
    /// The window of a max pooling layer whose strides equal its window and whose padding is
    /// 'valid' (what [`Layer::forward_max_pooled`] fuses); `None` for other layers.
    fn plain_max_pool(&self) -> Option<[usize; 2]> {
        None
    }
    /// Inference fusion: an Embedding's lookup of `x` (ids checked as `forward` checks them),
    /// for a following layer that folds the table into its input projection
    /// ([`Layer::forward_embedded`]). `None` (the default): not an embedding.
    fn embedding_lookup(&self, _x: &Tensor) -> Result<Option<EmbeddingLookup>> {
        Ok(None)
    }
    /// Inference fusion: this layer's output for `x` fed through `embedding` (the layer before
    /// it, its only input), when this layer folds the embedding's lookup into its own input
    /// for this call; `None` (the default) and the model runs the embedding.
    fn forward_embedded(&self, _embedding: &dyn Layer, _x: &Tensor, _ctx: &mut ForwardCtx) -> Result<Option<Tensor>> {
        Ok(None)
    }
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

/// Creates a layer of one family from its class name, or `None` when the family does not have it.
pub(crate) type Factory = fn(&str, &mut Options, &Common) -> Option<Result<Box<dyn Layer>>>;

/// Every layer family: (class name, Keras base name) pairs and the factory.
const FAMILIES: &[(&[(&str, &str)], Factory)] = &[
    (CORE_CLASSES, core_layers),
    (recurrent::CLASSES, recurrent::create),
    (attention::CLASSES, attention::create),
    (normalization::CLASSES, normalization::create),
    (spatial::CLASSES, spatial::create),
    (embedding::CLASSES, embedding::create),
    (merge::CLASSES, merge::create),
    (noise::CLASSES, noise::create),
];

const CORE_CLASSES: &[(&str, &str)] = &[
    ("Dense", "dense"),
    ("EIDense", "ei_dense"),
    ("Conv2D", "conv2d"),
    ("MaxPooling2D", "max_pooling2d"),
    ("AveragePooling2D", "average_pooling2d"),
    ("GlobalAveragePooling2D", "global_average_pooling2d"),
    ("Flatten", "flatten"),
    ("Reshape", "reshape"),
    ("Dropout", "dropout"),
    ("Activation", "activation"),
];

fn core_layers(class_name: &str, o: &mut Options, common: &Common) -> Option<Result<Box<dyn Layer>>> {
    fn boxed<L: Layer + 'static>(l: Result<L>) -> Result<Box<dyn Layer>> {
        l.map(|l| Box::new(l) as Box<dyn Layer>)
    }
    Some(match class_name {
        "Dense" => boxed(Dense::from_options(o, common)),
        "EIDense" => boxed(dann::EIDense::from_options(o, common)),
        "Conv2D" => boxed(Conv2dLayer::from_options(o, common)),
        "MaxPooling2D" => boxed(Pooling2d::from_options(o, common, true)),
        "AveragePooling2D" => boxed(Pooling2d::from_options(o, common, false)),
        "GlobalAveragePooling2D" => boxed(Ok(GlobalAveragePooling2d::new(common))),
        "Flatten" => boxed(Ok(Flatten::new(common))),
        "Reshape" => boxed(Reshape::from_options(o, common)),
        "Dropout" => boxed(Dropout::from_options(o, common)),
        "Activation" => boxed(ActivationLayer::from_options(o, common)),
        _ => return None,
    })
}

/// A process-wide unique layer name from a base (`dense`, `dense_1`, ...), as Keras assigns.
pub fn unique_name(base: &str) -> String {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static COUNTS: OnceLock<Mutex<HashMap<String, usize>>> = OnceLock::new();
    let mut counts = COUNTS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let n = counts.entry(base.to_string()).or_insert(0);
    let name = if *n == 0 {
        base.to_string()
    } else {
        format!("{base}_{n}")
    };
    *n += 1;
    name
}

/// Snake-case base name Keras uses for automatic layer names.
pub fn base_name(class_name: &str) -> &'static str {
    FAMILIES
        .iter()
        .flat_map(|(classes, _)| classes.iter())
        .find(|(c, _)| *c == class_name)
        .map_or("layer", |(_, base)| base)
}

/// Builds a layer from its class name and options, with the options checked.
pub fn from_config(class_name: &str, config: &Value) -> Result<(Box<dyn Layer>, Common)> {
    let mut o = Options::new(class_name, config)?;
    let common = Common::read(&mut o)?;
    let layer = FAMILIES
        .iter()
        .find_map(|(_, factory)| factory(class_name, &mut o, &common))
        .unwrap_or_else(|| {
            let known: Vec<&str> = FAMILIES.iter().flat_map(|(c, _)| c.iter().map(|(n, _)| *n)).collect();
            Err(Error::Invalid(format!(
                "unknown layer class '{class_name}'; expected one of: {}",
                known.join(", ")
            )))
        })?;
    o.finish()?;
    Ok((layer, common))
}
