//! Gradients for custom training: `NativeTensor` is an engine tensor held by JavaScript.
//! Ops on it are recorded while any input needs a gradient (model weights and variables do),
//! `backward` returns the gradients, and `NativeOptimizer` applies them to a model's weights.
//! Eager ops run on the calling thread: they are meant for custom steps, not for serving.

use std::collections::HashSet;

use cortex_core::backprop::{self, Grads};
use cortex_core::cpu::elementwise::Activation;
use cortex_core::nn::loss::Loss;
use cortex_core::nn::optim::Optimizer;
use cortex_core::nn::param::{
    current_trainable_scope, enter_trainable_scope, leave_trainable_scope, param_address, within_scope,
};
use cortex_core::nn::Param;
use cortex_core::rng::{self, Rng};
use cortex_core::{ops, threads, Device, Error, Tensor};
use napi::bindgen_prelude::{Float32Array, Float32ArraySlice, ObjectFinalize};
use napi::Env;
use napi_derive::napi;

use crate::layer::NativeLayer;
use crate::model::NativeModel;
use crate::tensor::to_tensor;
use crate::{guarded, parse_json};

/// An engine tensor that may carry a recorded graph.
#[napi(custom_finalize)]
pub struct NativeTensor {
    /// `None` once disposed.
    t: Option<Tensor>,
    /// Bytes announced to V8 as external memory, taken back when the handle is collected.
    external_bytes: i64,
}

/// Wraps a result, telling V8 how much native memory the handle keeps alive: without this a
/// custom training loop creates megabytes per step that V8 sees as a few bytes of JS objects
/// and does not collect until the process has grown by gigabytes.
fn wrap(env: &Env, t: Tensor) -> NativeTensor {
    let external_bytes = (t.len() * std::mem::size_of::<f32>()) as i64;
    // Accounting is advice to the collector; a failure must not fail the op.
    let _ = env.adjust_external_memory(external_bytes);
    NativeTensor {
        t: Some(t),
        external_bytes,
    }
}

impl NativeTensor {
    fn tensor(&self) -> napi::Result<&Tensor> {
        self.t.as_ref().ok_or_else(|| {
            napi::Error::from_reason(
                "this tensor was disposed (valueAndGrads frees the tensors made inside it once the \
                 gradients are copied out); keep values with toTensor() inside the function",
            )
        })
    }
}

impl ObjectFinalize for NativeTensor {
    fn finalize(self, env: Env) -> napi::Result<()> {
        let _ = env.adjust_external_memory(-self.external_bytes);
        Ok(())
    }
}

#[napi]
impl NativeTensor {
    /// A tensor from values; `variable` makes it a gradient leaf.
    #[napi(factory)]
    pub fn from_data(
        env: Env,
        data: Float32Array,
        shape: Vec<u32>,
        variable: Option<bool>,
        device: Option<String>,
    ) -> napi::Result<NativeTensor> {
        let t = to_tensor("tensor", &data, &shape)?;
        // Moved before it becomes a leaf, so a GPU variable's gradient stays on the GPU.
        let t = match device {
            Some(d) => guarded("tensor", || t.to(Device::parse(&d)?))?,
            None => t,
        };
        Ok(wrap(
            &env,
            if variable.unwrap_or(false) {
                t.with_requires_grad(true)
            } else {
                t
            },
        ))
    }

    /// Copy of the values (a GPU tensor's are read back first).
    #[napi(getter)]
    pub fn data<'e>(&self, env: &'e Env) -> napi::Result<Float32ArraySlice<'e>> {
        let t = self.tensor()?;
        js_copy(env, guarded("data", || t.host_values())?)
    }

    /// `'cpu'` or `'gpu'`.
    #[napi(getter)]
    pub fn device(&self) -> napi::Result<String> {
        Ok(self.tensor()?.device().name().to_string())
    }

    /// The same values on `device` (`'cpu'` or `'gpu'`): this tensor when it is there already,
    /// else a copy that gradients flow back through.
    #[napi]
    pub fn to(&self, env: Env, device: String) -> napi::Result<NativeTensor> {
        let t = self.tensor()?;
        guarded("to", || t.to(Device::parse(&device)?)).map(|t| wrap(&env, t))
    }

    /// Dimensions.
    #[napi(getter)]
    pub fn shape(&self) -> napi::Result<Vec<u32>> {
        Ok(self.tensor()?.shape().iter().map(|&d| d as u32).collect())
    }

    /// Whether gradients flow through it.
    #[napi(getter)]
    pub fn tracks(&self) -> napi::Result<bool> {
        Ok(self.tensor()?.tracks())
    }

    /// Frees the values (and any recorded graph) now instead of when the handle is collected:
    /// Node runs native finalizers only between event-loop turns, so a synchronous training
    /// loop would otherwise hold every step's tensors until it yields.
    #[napi]
    pub fn dispose(&mut self, env: Env) {
        if self.t.take().is_some() {
            let _ = env.adjust_external_memory(-self.external_bytes);
            self.external_bytes = 0;
        }
    }

    /// Elementwise op with another tensor of the same shape: `add`, `sub`, `mul`, or `matMul`.
    #[napi]
    pub fn binary(&self, env: Env, op: String, other: &NativeTensor) -> napi::Result<NativeTensor> {
        let (a, b) = (self.tensor()?, other.tensor()?);
        guarded(&op, || match op.as_str() {
            "add" => ops::add(a, b),
            "sub" => ops::sub(a, b),
            "mul" => ops::mul(a, b),
            "matMul" => threads::run(|| ops::matmul(a, b)),
            other => Err(Error::Invalid(format!(
                "unknown binary op '{other}'; expected add, sub, mul or matMul"
            ))),
        })
        .map(|t| wrap(&env, t))
    }

    /// One-input op: `sum`, `mean`, `scale` (attrs `{ factor }`), `reshape` (attrs `{ shape }`),
    /// `softmax`, `logSoftmax`, or any activation name (`relu`, `sigmoid`, `tanh`, ...).
    #[napi]
    pub fn unary(&self, env: Env, op: String, attrs_json: Option<String>) -> napi::Result<NativeTensor> {
        let attrs = parse_json(&op, attrs_json.as_deref().unwrap_or("{}"))?;
        let x = self.tensor()?;
        guarded(&op, || match op.as_str() {
            "sum" => ops::sum(x),
            "mean" => ops::mean(x),
            "scale" => {
                let f = attrs.get("factor").and_then(|v| v.as_f64());
                let f = f.ok_or_else(|| Error::Invalid("scale needs a numeric 'factor'".into()))?;
                ops::scale(x, f as f32)
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
            name => match Activation::parse(name) {
                Some(a) => ops::activation(x, a),
                None => Err(Error::Invalid(format!("unknown op '{name}'"))),
            },
        })
        .map(|t| wrap(&env, t))
    }

    /// A Keras loss of predictions `self` against `target` (spec as in `compile`): a scalar.
    #[napi]
    pub fn loss(&self, env: Env, target: &NativeTensor, spec_json: String) -> napi::Result<NativeTensor> {
        let spec = parse_json("loss", &spec_json)?;
        let (y, target) = (self.tensor()?, target.tensor()?);
        guarded("loss", || Loss::parse(&spec)?.compute(y, target)).map(|t| wrap(&env, t))
    }

    /// Gradients of this scalar with respect to everything it was computed from. The graph is
    /// freed as it is walked unless `retainGraph` is true (then another backward may follow).
    #[napi]
    pub fn backward(&self, retain_graph: Option<bool>) -> napi::Result<NativeGrads> {
        let retain = retain_graph.unwrap_or(false);
        let t = self.tensor()?;
        guarded("backward", || {
            threads::run(|| match retain {
                true => backprop::backward_retaining_graph(t),
                false => backprop::backward(t),
            })
        })
        .map(|grads| NativeGrads { grads })
    }
}

/// The gradients of one backward pass.
#[napi]
pub struct NativeGrads {
    grads: Grads,
}

/// A callback that receives each parameter (name, parameter, trainable) of a layer or model.
type ParamSink<'a> = dyn FnMut(&str, &Param, bool) + 'a;

/// Each parameter's shape and gradient (zeros where it did not contribute), in visit order.
fn param_grads(grads: &Grads, visit: &dyn Fn(&mut ParamSink)) -> Vec<(Vec<u32>, Vec<f32>)> {
    let mut out = Vec::new();
    visit(&mut |_, p, _| {
        let leaf = p.get();
        let g = grads
            .get(&leaf)
            .map(<[f32]>::to_vec)
            .unwrap_or_else(|| vec![0.0; leaf.len()]);
        out.push((leaf.shape().iter().map(|&d| d as u32).collect(), g));
    });
    out
}

/// A JS-heap copy of `values`. Custom training loops call the tape synchronously, and Node runs
/// the finalizers of external (Rust-owned) arrays only between event-loop turns, so handing out
/// Rust buffers would pile up every step's gradients until the loop yields; V8-owned memory is
/// reclaimed by an ordinary collection.
pub(crate) fn js_copy<'e>(env: &'e Env, values: &[f32]) -> napi::Result<Float32ArraySlice<'e>> {
    Float32ArraySlice::copy_from(env, values)
}

fn to_js<'e>(env: &'e Env, grads: Vec<(Vec<u32>, Vec<f32>)>) -> napi::Result<Vec<GradData<'e>>> {
    grads
        .into_iter()
        .map(|(shape, g)| {
            Ok(GradData {
                data: js_copy(env, &g)?,
                shape,
            })
        })
        .collect()
}

/// One weight's gradient.
#[napi(object)]
pub struct GradData<'e> {
    /// Row-major values.
    pub data: Float32ArraySlice<'e>,
    /// Dimensions.
    pub shape: Vec<u32>,
}

#[napi]
impl NativeGrads {
    /// Gradient with respect to a variable (zeros if it did not contribute).
    #[napi]
    pub fn of_tensor<'e>(&self, env: &'e Env, t: &NativeTensor) -> napi::Result<Float32ArraySlice<'e>> {
        let t = t.tensor()?;
        match self.grads.get(t) {
            Some(g) => js_copy(env, g),
            None => js_copy(env, &vec![0.0; t.len()]),
        }
    }

    /// Gradients with respect to every weight of a model, in `getWeights` order.
    #[napi]
    pub fn of_model<'e>(&self, env: &'e Env, model: &NativeModel) -> napi::Result<Vec<GradData<'e>>> {
        let cell = model.cell();
        let guard = cell.read();
        let m = guard.as_model().expect("a model cell");
        to_js(env, param_grads(&self.grads, &|f| m.visit_params(f)))
    }

    /// Frees the gradients now instead of when the handle is collected.
    #[napi]
    pub fn dispose(&mut self) {
        self.grads = Grads::default();
    }

    /// Gradients with respect to a layer's weights, in `getWeights` order.
    #[napi]
    pub fn of_layer<'e>(&self, env: &'e Env, layer: &NativeLayer) -> napi::Result<Vec<GradData<'e>>> {
        let guard = layer.cell.read();
        let grads = match guard.as_model() {
            Some(m) => param_grads(&self.grads, &|f| m.visit_params(f)),
            None => param_grads(&self.grads, &|f| {
                guard.params().into_iter().for_each(|p| f(&p.name, p, true))
            }),
        };
        to_js(env, grads)
    }
}

/// Runs a model on a tensor with gradients recorded (training mode unless `training` is false).
#[napi]
pub fn model_call(
    env: Env,
    model: &NativeModel,
    x: &NativeTensor,
    training: Option<bool>,
) -> napi::Result<NativeTensor> {
    let cell = model.cell();
    let x = x.tensor()?;
    guarded("call", || {
        let guard = cell.read();
        let m = guard.as_model().expect("a model cell");
        let mut rng = Rng::new(rng::next_seed());
        m.check_input(x)?;
        m.check_activation_memory("call", x.shape()[0], if training.unwrap_or(true) { 2 } else { 1 })?;
        m.sync_from_device()?;
        // The forward runs on the pool: it must see the valueAndGrads scope of this thread.
        let scope = current_trainable_scope();
        threads::run(|| within_scope(scope.as_ref(), || m.forward(x, training.unwrap_or(true), &mut rng)))
    })
    .map(|t| wrap(&env, t))
}

/// The weights that gradients are wanted for while a JS `valueAndGrads` runs its function:
/// every other weight is read as a constant, so the backward computes no gradient for it (the
/// discriminator's weights in a GAN's generator step). Built from the targets, then
/// `enter` before the function and `exit` after it, on the same thread.
#[napi]
#[derive(Default)]
pub struct NativeGradScope {
    params: HashSet<usize>,
}

#[napi]
impl NativeGradScope {
    /// An empty scope: only variables would get gradients.
    #[napi(constructor)]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds every weight of a model (nested models included).
    #[napi]
    pub fn add_model(&mut self, model: &NativeModel) {
        let cell = model.cell();
        let guard = cell.read();
        if let Some(m) = guard.as_model() {
            m.visit_params(&mut |_, p, _| {
                self.params.insert(param_address(p));
            });
        }
    }

    /// Adds every weight of a layer (or of a model used as a layer).
    #[napi]
    pub fn add_layer(&mut self, layer: &NativeLayer) {
        let guard = layer.cell.read();
        match guard.as_model() {
            Some(m) => m.visit_params(&mut |_, p, _| {
                self.params.insert(param_address(p));
            }),
            None => self.params.extend(guard.params().into_iter().map(param_address)),
        }
    }

    /// Weights outside the scope read as constants on this thread until `exit`.
    #[napi]
    pub fn enter(&self) {
        enter_trainable_scope(self.params.clone());
    }

    /// Ends the innermost entered scope.
    #[napi]
    pub fn exit(&self) {
        leave_trainable_scope();
    }
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
            // Weights trained on a GPU come back first, so the update applies to current values.
            m.sync_from_device()?;
            let mut count = 0;
            m.visit_params(&mut |_, _, _| count += 1);
            if grads.len() != count {
                return Err(Error::Invalid(format!(
                    "applyGradients: model '{}' has {count} weights, got {} gradients",
                    m.name(),
                    grads.len()
                )));
            }
            // Check every gradient before any weight moves, then clip them together (a
            // global norm needs them all) as `fit` does.
            let mut clipped: Vec<Option<Vec<f32>>> = Vec::with_capacity(count);
            let mut result = Ok(());
            m.visit_params(&mut |name, p, trainable| {
                let g = &grads[clipped.len()];
                if result.is_err() || !(trainable && p.trainable) {
                    clipped.push(None);
                    return;
                }
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
                }
                clipped.push(Some(g.to_vec()));
            });
            result?;
            optimizer.clip_gradients(&mut clipped);
            optimizer.begin_step();
            let mut index = 0;
            let mut result = Ok(());
            m.visit_params(&mut |_, p, _| {
                let i = index;
                index += 1;
                let (Some(g), Ok(())) = (&clipped[i], &result) else {
                    return;
                };
                result = if p.device() == Device::Gpu && p.row_signs().is_none() {
                    // Weights on the GPU: the gradient goes up and the update runs there.
                    Tensor::new(g.clone(), &p.shape())
                        .and_then(|t| t.to(Device::Gpu))
                        .and_then(|t| {
                            let buffer = t
                                .gpu_buffer()
                                .ok_or_else(|| Error::Invalid("a gradient left the GPU".into()))?;
                            p.update_on_device(|w| optimizer.update_on_device(i, w, &buffer))
                        })
                } else {
                    p.update(|data| optimizer.update(i, data, g)).and_then(|r| r)
                };
            });
            result
        })
    }
}
