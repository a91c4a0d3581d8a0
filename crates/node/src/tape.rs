//! Gradients for custom training: `NativeTensor` is an engine tensor held by JavaScript.
//! Ops on it are recorded while any input needs a gradient (model weights and variables do),
//! `backward` returns the gradients, and `NativeOptimizer` applies them to a model's weights.
//! Eager ops run on the calling thread: they are meant for custom steps, not for serving.

use cortex_core::backprop::{self, Grads};
use cortex_core::cpu::elementwise::Activation;
use cortex_core::nn::loss::Loss;
use cortex_core::nn::optim::Optimizer;
use cortex_core::nn::Param;
use cortex_core::rng::{self, Rng};
use cortex_core::{ops, threads, Error, Tensor};
use napi::bindgen_prelude::Float32Array;
use napi_derive::napi;

use crate::layer::NativeLayer;
use crate::model::NativeModel;
use crate::tensor::to_tensor;
use crate::{guarded, parse_json};

/// An engine tensor that may carry a recorded graph.
#[napi]
pub struct NativeTensor {
    pub(crate) t: Tensor,
}

fn wrap(t: Tensor) -> NativeTensor {
    NativeTensor { t }
}

#[napi]
impl NativeTensor {
    /// A tensor from values; `variable` makes it a gradient leaf.
    #[napi(factory)]
    pub fn from_data(data: Float32Array, shape: Vec<u32>, variable: Option<bool>) -> napi::Result<NativeTensor> {
        let t = to_tensor("tensor", &data, &shape)?;
        Ok(wrap(if variable.unwrap_or(false) {
            t.with_requires_grad(true)
        } else {
            t
        }))
    }

    /// Copy of the values.
    #[napi(getter)]
    pub fn data(&self) -> Float32Array {
        Float32Array::new(self.t.to_vec())
    }

    /// Dimensions.
    #[napi(getter)]
    pub fn shape(&self) -> Vec<u32> {
        self.t.shape().iter().map(|&d| d as u32).collect()
    }

    /// Whether gradients flow through it.
    #[napi(getter)]
    pub fn tracks(&self) -> bool {
        self.t.tracks()
    }

    /// Elementwise op with another tensor of the same shape: `add`, `sub`, `mul`, or `matMul`.
    #[napi]
    pub fn binary(&self, op: String, other: &NativeTensor) -> napi::Result<NativeTensor> {
        let (a, b) = (&self.t, &other.t);
        guarded(&op, || match op.as_str() {
            "add" => ops::add(a, b),
            "sub" => ops::sub(a, b),
            "mul" => ops::mul(a, b),
            "matMul" => threads::run(|| ops::matmul(a, b)),
            other => Err(Error::Invalid(format!(
                "unknown binary op '{other}'; expected add, sub, mul or matMul"
            ))),
        })
        .map(wrap)
    }

    /// One-input op: `sum`, `mean`, `scale` (attrs `{ factor }`), `reshape` (attrs `{ shape }`),
    /// `softmax`, `logSoftmax`, or any activation name (`relu`, `sigmoid`, `tanh`, ...).
    #[napi]
    pub fn unary(&self, op: String, attrs_json: Option<String>) -> napi::Result<NativeTensor> {
        let attrs = parse_json(&op, attrs_json.as_deref().unwrap_or("{}"))?;
        let x = &self.t;
        guarded(&op, || match op.as_str() {
            "sum" => Ok(ops::sum(x)),
            "mean" => Ok(ops::mean(x)),
            "scale" => {
                let f = attrs.get("factor").and_then(|v| v.as_f64());
                f.map(|f| ops::scale(x, f as f32))
                    .ok_or_else(|| Error::Invalid("scale needs a numeric 'factor'".into()))
            }
            "reshape" => {
                let shape: Option<Vec<usize>> = attrs
                    .get("shape")
                    .and_then(|s| s.as_array())
                    .and_then(|a| a.iter().map(|d| d.as_u64().map(|d| d as usize)).collect());
                x.reshape(&shape.ok_or_else(|| Error::Invalid("reshape needs 'shape'".into()))?)
            }
            "softmax" => ops::softmax(x),
            "logSoftmax" => ops::log_softmax(x),
            name => Activation::parse(name)
                .map(|a| ops::activation(x, a))
                .ok_or_else(|| Error::Invalid(format!("unknown op '{name}'"))),
        })
        .map(wrap)
    }

    /// A Keras loss of predictions `self` against `target` (spec as in `compile`): a scalar.
    #[napi]
    pub fn loss(&self, target: &NativeTensor, spec_json: String) -> napi::Result<NativeTensor> {
        let spec = parse_json("loss", &spec_json)?;
        guarded("loss", || Loss::parse(&spec)?.compute(&self.t, &target.t)).map(wrap)
    }

    /// Gradients of this scalar with respect to everything it was computed from.
    #[napi]
    pub fn backward(&self) -> napi::Result<NativeGrads> {
        guarded("backward", || threads::run(|| backprop::backward(&self.t))).map(|grads| NativeGrads { grads })
    }
}

/// The gradients of one backward pass.
#[napi]
pub struct NativeGrads {
    grads: Grads,
}

/// A callback that receives each parameter (name, parameter, trainable) of a layer or model.
type ParamSink<'a> = dyn FnMut(&str, &Param, bool) + 'a;

fn collect_param_grads(grads: &Grads, visit: &dyn Fn(&mut ParamSink)) -> Vec<Float32Array> {
    let mut out = Vec::new();
    visit(&mut |_, p, _| {
        let leaf = p.get();
        let g = grads
            .get(&leaf)
            .map(<[f32]>::to_vec)
            .unwrap_or_else(|| vec![0.0; leaf.len()]);
        out.push(Float32Array::new(g));
    });
    out
}

#[napi]
impl NativeGrads {
    /// Gradient with respect to a variable (zeros if it did not contribute).
    #[napi]
    pub fn of_tensor(&self, t: &NativeTensor) -> Float32Array {
        Float32Array::new(
            self.grads
                .get(&t.t)
                .map(<[f32]>::to_vec)
                .unwrap_or_else(|| vec![0.0; t.t.len()]),
        )
    }

    /// Gradients with respect to every weight of a model, in `getWeights` order.
    #[napi]
    pub fn of_model(&self, model: &NativeModel) -> Vec<Float32Array> {
        let cell = model.cell();
        let guard = cell.read();
        let m = guard.as_model().expect("a model cell");
        collect_param_grads(&self.grads, &|f| m.visit_params(f))
    }

    /// Gradients with respect to a layer's weights, in `getWeights` order.
    #[napi]
    pub fn of_layer(&self, layer: &NativeLayer) -> Vec<Float32Array> {
        let guard = layer.cell.read();
        match guard.as_model() {
            Some(m) => collect_param_grads(&self.grads, &|f| m.visit_params(f)),
            None => collect_param_grads(&self.grads, &|f| {
                guard.params().into_iter().for_each(|p| f(&p.name, p, true))
            }),
        }
    }
}

/// Runs a model on a tensor with gradients recorded (training mode unless `training` is false).
#[napi]
pub fn model_call(model: &NativeModel, x: &NativeTensor, training: Option<bool>) -> napi::Result<NativeTensor> {
    let cell = model.cell();
    guarded("call", || {
        let guard = cell.read();
        let m = guard.as_model().expect("a model cell");
        let mut rng = Rng::new(rng::next_seed());
        m.check_input(&x.t)?;
        threads::run(|| m.forward(&x.t, training.unwrap_or(true), &mut rng))
    })
    .map(wrap)
}

/// An optimizer with its own state, for custom training steps.
#[napi]
pub struct NativeOptimizer {
    optimizer: Optimizer,
}

#[napi]
impl NativeOptimizer {
    /// From a spec as in `compile` (`"adam"` or `{ name, learningRate, ... }`).
    #[napi(constructor)]
    pub fn new(spec_json: String) -> napi::Result<Self> {
        let spec = parse_json("optimizer", &spec_json)?;
        Ok(NativeOptimizer {
            optimizer: guarded("optimizer", || Optimizer::parse(&spec))?,
        })
    }

    /// Steps taken.
    #[napi(getter)]
    pub fn iterations(&self) -> f64 {
        self.optimizer.iterations() as f64
    }

    /// Applies one gradient per model weight (`getWeights` order) to the model's trainable weights.
    #[napi]
    pub fn apply_gradients(&mut self, model: &NativeModel, grads: Vec<Float32Array>) -> napi::Result<()> {
        let cell = model.cell();
        let optimizer = &mut self.optimizer;
        guarded("applyGradients", || {
            let guard = cell.read();
            let m = guard.as_model().expect("a model cell");
            let mut count = 0;
            m.visit_params(&mut |_, _, _| count += 1);
            if grads.len() != count {
                return Err(Error::Invalid(format!(
                    "applyGradients: model '{}' has {count} weights, got {} gradients",
                    m.name(),
                    grads.len()
                )));
            }
            optimizer.begin_step();
            let mut index = 0;
            let mut result = Ok(());
            m.visit_params(&mut |name, p, trainable| {
                let i = index;
                index += 1;
                if result.is_err() || !(trainable && p.trainable) {
                    return;
                }
                let g = &grads[i];
                if g.len() != p.get().len() {
                    result = Err(Error::shape(
                        &format!("applyGradients for '{name}'"),
                        p.shape(),
                        g.len(),
                    ));
                } else if g.iter().any(|v| !v.is_finite()) {
                    result = Err(Error::Invalid(format!(
                        "applyGradients: non-finite gradient for '{name}'"
                    )));
                } else {
                    result = p.update(|data| optimizer.update(i, data, g));
                }
            });
            result
        })
    }
}
