//! `NativeLayer`: one layer used eagerly (build, set weights, apply), for tests and custom code.

use cortex_core::nn::layers::{self, ForwardCtx, Layer};
use cortex_core::rng::{self, Rng};
use cortex_core::tensor::no_grad;
use napi::bindgen_prelude::Float32Array;
use napi_derive::napi;

use crate::model::WeightData;
use crate::tensor::{to_tensor, TensorData};
use crate::{guarded, parse_json};

/// A standalone layer.
#[napi]
pub struct NativeLayer {
    layer: Box<dyn Layer>,
    rng: Rng,
    built: bool,
}

#[napi]
impl NativeLayer {
    /// Creates a layer from its Keras class name and JSON options.
    #[napi(constructor)]
    pub fn new(class_name: String, config_json: String) -> napi::Result<Self> {
        let mut config = parse_json("layer config", &config_json)?;
        if config.get("name").is_none() {
            if let Some(m) = config.as_object_mut() {
                m.insert("name".into(), layers::base_name(&class_name).into());
            }
        }
        let (layer, _) = guarded("layer", || layers::from_config(&class_name, &config))?;
        Ok(NativeLayer {
            layer,
            rng: Rng::new(rng::next_seed()),
            built: false,
        })
    }

    /// Creates the weights for samples of `inputShape`; returns the output sample shape.
    #[napi]
    pub fn build(&mut self, input_shape: Vec<u32>) -> napi::Result<Vec<u32>> {
        let shape: Vec<usize> = input_shape.iter().map(|&d| d as usize).collect();
        let out = guarded("build", || self.layer.build(&shape, &mut self.rng))?;
        self.built = true;
        Ok(out.iter().map(|&d| d as u32).collect())
    }

    /// Copies of the weights.
    #[napi]
    pub fn get_weights(&self) -> Vec<WeightData> {
        self.layer
            .params()
            .iter()
            .map(|p| WeightData {
                name: p.name.clone(),
                shape: p.shape().iter().map(|&d| d as u32).collect(),
                data: Float32Array::new(p.get().to_vec()),
            })
            .collect()
    }

    /// Replaces the weights (same order and sizes as `getWeights`).
    #[napi]
    pub fn set_weights(&self, weights: Vec<Float32Array>) -> napi::Result<()> {
        let params = self.layer.params();
        if params.len() != weights.len() {
            return Err(napi::Error::new(
                napi::Status::InvalidArg,
                format!(
                    "setWeights: layer '{}' has {} weights, got {}",
                    self.layer.name(),
                    params.len(),
                    weights.len()
                ),
            ));
        }
        guarded("setWeights", || {
            params.iter().zip(&weights).try_for_each(|(p, w)| p.set(w.to_vec()))
        })
    }

    /// Applies the layer to a batch (inference mode unless `training`).
    #[napi]
    pub fn apply(&mut self, x: Float32Array, x_shape: Vec<u32>, training: Option<bool>) -> napi::Result<TensorData> {
        if !self.built {
            return Err(napi::Error::new(
                napi::Status::InvalidArg,
                format!(
                    "layer '{}' is not built; call build(inputShape) first",
                    self.layer.name()
                ),
            ));
        }
        let x = to_tensor("layer input", &x, &x_shape)?;
        let training = training.unwrap_or(false);
        let layer = &self.layer;
        let rng = &mut self.rng;
        let y = guarded("apply", || {
            x.check_finite("layer input")?;
            cortex_core::threads::run(|| no_grad(|| layer.forward(&x, &mut ForwardCtx::new(training, rng))))
        })?;
        Ok(TensorData::from_tensor(&y))
    }

    /// Options that rebuild this layer, as JSON.
    #[napi]
    pub fn config(&self) -> String {
        self.layer.config().to_string()
    }

    /// Keras class name.
    #[napi(getter)]
    pub fn class_name(&self) -> String {
        self.layer.class_name().to_string()
    }
}
