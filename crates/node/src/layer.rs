//! `NativeLayer`: a handle to a shared layer. Models built from TypeScript refer to layers by
//! handle id, so a layer object has one set of weights wherever it is used; it can also be
//! used eagerly (build, set weights, apply) for tests and custom code.

use cortex_core::nn::layers::{self, ForwardCtx};
use cortex_core::nn::{LayerCell, SharedLayer};
use cortex_core::rng::{self, Rng};
use cortex_core::tensor::no_grad;
use napi::bindgen_prelude::Float32Array;
use napi_derive::napi;

use crate::model::WeightData;
use crate::tensor::{to_tensor, TensorData};
use crate::{guarded, parse_json};

/// A layer (or a model used as a layer).
#[napi]
pub struct NativeLayer {
    pub(crate) cell: SharedLayer,
    rng: Rng,
}

fn shapes_u32(shapes: &[Vec<usize>]) -> Vec<Vec<u32>> {
    shapes.iter().map(|s| s.iter().map(|&d| d as u32).collect()).collect()
}

#[napi]
impl NativeLayer {
    /// Creates a layer from its Keras class name and JSON options. Without a `name` it gets a
    /// process-wide unique Keras-style one (`dense`, `dense_1`, ...).
    #[napi(constructor)]
    pub fn new(class_name: String, config_json: String) -> napi::Result<Self> {
        let mut config = parse_json("layer config", &config_json)?;
        if config.get("name").is_none() {
            if let Some(m) = config.as_object_mut() {
                m.insert(
                    "name".into(),
                    layers::unique_name(layers::base_name(&class_name)).into(),
                );
            }
        }
        let (layer, common) = guarded("layer", || layers::from_config(&class_name, &config))?;
        Ok(NativeLayer {
            cell: LayerCell::new(layer, common.trainable),
            rng: Rng::new(rng::next_seed()),
        })
    }

    /// A handle to the live layer with registry id `id` (layers of a loaded model).
    #[napi(factory)]
    pub fn from_id(id: f64) -> napi::Result<Self> {
        let cell = guarded("layer", || LayerCell::lookup(id as u64))?;
        Ok(NativeLayer {
            cell,
            rng: Rng::new(rng::next_seed()),
        })
    }

    /// Registry id (how model descriptions refer to this layer).
    #[napi(getter)]
    pub fn id(&self) -> f64 {
        self.cell.id() as f64
    }

    /// Layer name.
    #[napi(getter)]
    pub fn name(&self) -> String {
        self.cell.read().name().to_string()
    }

    /// Keras class name.
    #[napi(getter)]
    pub fn class_name(&self) -> String {
        self.cell.read().class_name().to_string()
    }

    /// Whether training updates its weights.
    #[napi(getter)]
    pub fn trainable(&self) -> bool {
        self.cell.trainable()
    }

    /// Freezes or unfreezes it (a nested model: all its layers); takes effect at the next compile.
    #[napi(setter)]
    pub fn set_trainable(&self, trainable: bool) {
        self.cell.set_trainable(trainable);
    }

    /// Creates the weights for samples of `inputShape`; returns the output sample shape.
    #[napi]
    pub fn build(&mut self, input_shape: Vec<u32>) -> napi::Result<Vec<u32>> {
        let shape: Vec<usize> = input_shape.iter().map(|&d| d as usize).collect();
        let mut outs = guarded("build", || self.cell.build(&[shape], &mut self.rng))?;
        Ok(shapes_u32(&outs.split_off(0)).swap_remove(0))
    }

    /// Builds for several inputs (on first use) and returns the output shapes: what calling the
    /// layer on symbolic inputs of these shapes produces.
    #[napi]
    pub fn output_shapes(&mut self, input_shapes: Vec<Vec<u32>>) -> napi::Result<Vec<Vec<u32>>> {
        let shapes: Vec<Vec<usize>> = input_shapes
            .iter()
            .map(|s| s.iter().map(|&d| d as usize).collect())
            .collect();
        guarded("apply", || self.cell.build(&shapes, &mut self.rng)).map(|s| shapes_u32(&s))
    }

    /// Copies of the weights.
    #[napi]
    pub fn get_weights(&self) -> napi::Result<Vec<WeightData>> {
        let mut out = Vec::new();
        let layer = self.cell.read();
        if let Some(m) = layer.as_model() {
            guarded("getWeights", || m.sync_from_device())?;
        }
        let mut push = |name: &str, p: &cortex_core::nn::Param, _| {
            out.push(WeightData {
                name: name.to_string(),
                shape: p.shape().iter().map(|&d| d as u32).collect(),
                data: Float32Array::new(p.get().to_vec()),
            })
        };
        match layer.as_model() {
            Some(m) => m.visit_params(&mut push),
            None => layer.params().into_iter().for_each(|p| push(&p.name, p, true)),
        }
        Ok(out)
    }

    /// Replaces the weights (same order and sizes as `getWeights`).
    #[napi]
    pub fn set_weights(&self, weights: Vec<Float32Array>) -> napi::Result<()> {
        let values: Vec<Vec<f32>> = weights.iter().map(|w| w.to_vec()).collect();
        let layer = self.cell.read();
        if let Some(m) = layer.as_model() {
            return guarded("setWeights", || m.set_weights(&values));
        }
        let params = layer.params();
        if params.len() != values.len() {
            return Err(napi::Error::new(
                napi::Status::InvalidArg,
                format!(
                    "setWeights: layer '{}' has {} weights, got {}",
                    layer.name(),
                    params.len(),
                    values.len()
                ),
            ));
        }
        guarded("setWeights", || {
            params.iter().zip(values).try_for_each(|(p, w)| p.set(w))
        })
    }

    /// Applies the layer to a batch (inference mode unless `training`).
    #[napi]
    pub fn apply(&mut self, x: Float32Array, x_shape: Vec<u32>, training: Option<bool>) -> napi::Result<TensorData> {
        let Some((inputs, outputs)) = self.cell.built_shapes() else {
            return Err(napi::Error::new(
                napi::Status::InvalidArg,
                format!(
                    "layer '{}' is not built; call build(inputShape) first",
                    self.cell.read().name()
                ),
            ));
        };
        let x = to_tensor("layer input", &x, &x_shape)?;
        if inputs.len() != 1 || x.shape().get(1..) != Some(inputs[0].as_slice()) {
            return Err(napi::Error::new(
                napi::Status::InvalidArg,
                format!(
                    "layer '{}' was built for samples of shape {inputs:?}; got a batch of shape {:?}",
                    self.cell.read().name(),
                    x.shape()
                ),
            ));
        }
        let batch = x.shape()[0];
        guarded("apply", || {
            cortex_core::alloc::check_activations("apply", batch, cortex_core::alloc::activation_bytes(&outputs))
        })?;
        let training = training.unwrap_or(false);
        let (cell, rng) = (&self.cell, &mut self.rng);
        let y = guarded("apply", || {
            x.check_finite("layer input")?;
            let layer = cell.read();
            cortex_core::threads::run(|| no_grad(|| layer.forward(&x, &mut ForwardCtx::new(training, rng))))
        })?;
        Ok(TensorData::from_tensor(y))
    }

    /// Options that rebuild this layer, as JSON.
    #[napi]
    pub fn config(&self) -> String {
        self.cell.read().config().to_string()
    }
}
