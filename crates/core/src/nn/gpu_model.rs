//! A compiled Sequential model trained and run on a GPU through cortex-wgpu's kernels.
//!
//! `compile({ device: "gpu" })` moves the weights and the optimizer state into GPU buffers once;
//! each training step then uploads only the batch, runs the forward pass, the loss and the
//! backward pass and updates the weights with GPU kernels, and reads back only the loss (plus
//! the batch's predictions when an accuracy metric is asked for). The host copy of the weights
//! is refreshed lazily, when something on the host reads them (`getWeights`, `save`, a tape
//! call) or when `fit` ends; weights changed on the host (`setWeights`, `applyGradients`) are
//! noticed through each parameter's version counter and uploaded before the next GPU step.
//!
//! Supported today: Dense, Conv2D (strides, dilation, valid/same), MaxPooling2D, Flatten,
//! Dropout and Activation layers with linear/relu/sigmoid/tanh/leakyRelu activations, softmax
//! on the last layer; sparse categorical cross-entropy (probabilities or logits) and mean
//! squared error; SGD (momentum, Nesterov) and Adam, with per-step schedules. Anything else is
//! reported by [`GpuModel::new`], and `compile` falls back to the CPU (or, with `"gpu!"`,
//! fails).

use std::sync::{Arc, OnceLock};

use cortex_wgpu::{
    Activation as GpuAct, AdamParams, Conv2dSpec, CrossEntropyInput, Gpu, GpuError, GpuTensor, Pool2dSpec, SgdParams,
};
use serde_json::Value;

use super::loss::Loss;
use super::metrics::Metric;
use super::model::{Logs, Model};
use super::optim::{Optimizer, Rule};
use super::param::Param;
use crate::rng::Rng;
use crate::{Error, Result, Tensor};

pub use cortex_wgpu::AdapterSummary;

/// Every adapter wgpu can see (GPUs and software rasterisers), without opening any.
pub fn devices() -> Vec<AdapterSummary> {
    cortex_wgpu::adapters()
}

/// The process-wide GPU device, opened on first use (an error if there is no adapter).
pub fn shared_gpu() -> Result<Arc<Gpu>> {
    static SHARED: OnceLock<std::result::Result<Arc<Gpu>, String>> = OnceLock::new();
    SHARED
        .get_or_init(|| Gpu::new().map(Arc::new).map_err(|e| e.to_string()))
        .clone()
        .map_err(|e| Error::Invalid(format!("gpu: {e}")))
}

fn gpu_err(e: GpuError) -> Error {
    Error::Invalid(format!("gpu: {e}"))
}

/// Where the last layer's softmax goes.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Act {
    Plain(GpuAct),
    Softmax,
}

fn parse_act(layer: &str, name: &str) -> Result<Act> {
    Ok(match name {
        "linear" => Act::Plain(GpuAct::Linear),
        "relu" => Act::Plain(GpuAct::Relu),
        "sigmoid" => Act::Plain(GpuAct::Sigmoid),
        "tanh" => Act::Plain(GpuAct::Tanh),
        "leaky_relu" | "leakyRelu" => Act::Plain(GpuAct::LeakyRelu(0.2)),
        "softmax" => Act::Softmax,
        other => return Err(unsupported(&format!("activation '{other}' (in layer '{layer}')"))),
    })
}

fn unsupported(what: &str) -> Error {
    Error::Invalid(format!(
        "the GPU backend does not support {what} yet; compile with device 'cpu' (or 'gpu' to fall back)"
    ))
}

/// One layer of the plan; weight fields index [`GpuModel::weights`].
#[derive(Clone, Debug)]
enum Step {
    Dense {
        w: usize,
        b: Option<usize>,
        act: Act,
    },
    Conv {
        w: usize,
        b: Option<usize>,
        kernel_hw: (usize, usize),
        strides: (usize, usize),
        dilation: (usize, usize),
        same: bool,
        act: Act,
    },
    MaxPool {
        pool: (usize, usize),
        strides: (usize, usize),
        same: bool,
    },
    Flatten,
    Dropout(f32),
    Activation(Act),
}

/// What the backward pass needs from the forward pass, per step.
enum Saved {
    Dense {
        x: GpuTensor,
        z: Option<GpuTensor>,
        lead: Vec<usize>,
    },
    Conv {
        x: GpuTensor,
        z: Option<GpuTensor>,
        spec: Conv2dSpec,
    },
    Pool {
        argmax: GpuTensor,
        x_shape: [usize; 4],
        spec: Pool2dSpec,
    },
    Reshape(Vec<usize>),
    Dropout(Option<GpuTensor>),
    Act(Option<GpuTensor>),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum GpuLoss {
    /// Sparse categorical cross-entropy; `fused_softmax`: the last layer's softmax is folded in.
    SparseCe {
        input: CrossEntropyInput,
        fused_softmax: bool,
    },
    Mse,
}

/// A compiled model's weights, optimizer state and layer plan on the GPU.
pub struct GpuModel {
    gpu: Arc<Gpu>,
    steps: Vec<Step>,
    /// Device copies of every parameter, in `visit_params` order.
    weights: Vec<GpuTensor>,
    /// Per weight: whether the optimizer updates it (captured at compile).
    trainable: Vec<bool>,
    /// Per weight: the host parameter's version the device copy was made from.
    host_versions: Vec<u64>,
    /// Per weight: optimizer slots (velocity, or Adam's two moments), created on first use.
    slots: Vec<Vec<GpuTensor>>,
    loss: GpuLoss,
    /// The device copy is newer than the host copy.
    device_newer: bool,
}

/// Reads a `[a, b]` config entry (Keras writes kernelSize, strides... as pairs).
fn pair(config: &Value, key: &str) -> Option<(usize, usize)> {
    let a = config.get(key)?.as_array()?;
    Some((a.first()?.as_u64()? as usize, a.get(1)?.as_u64()? as usize))
}

impl GpuModel {
    /// Plans `model` (built, Sequential, of supported layers) for the GPU and uploads its weights.
    pub fn new(model: &Model, loss: &Loss, optimizer: &Optimizer, trainable: &dyn Fn(&Param) -> bool) -> Result<Self> {
        if model.is_functional() {
            return Err(unsupported("functional models (only Sequential chains)"));
        }
        if !model.is_built() {
            return Err(Error::Invalid(
                "gpu: the model must be built before it moves to the GPU".into(),
            ));
        }
        match optimizer.rule {
            Rule::Sgd { .. } => {}
            Rule::Adam { weight_decay: 0.0, .. } => {}
            Rule::Adam { .. } => return Err(unsupported("the adamw optimizer")),
            Rule::RmsProp { .. } => return Err(unsupported("the rmsprop optimizer")),
        }
        if optimizer.ema_momentum.is_some() {
            return Err(unsupported("optimizer useEma"));
        }
        let gpu = shared_gpu()?;
        let mut steps = Vec::new();
        let mut params: Vec<&Param> = Vec::new();
        let guards: Vec<_> = model.layers().iter().map(|cell| cell.read()).collect();
        for layer in &guards {
            if layer.as_model().is_some() {
                return Err(unsupported("nested models"));
            }
            let name = layer.name().to_string();
            let config = layer.config();
            let layer_params = layer.params();
            let act = || {
                parse_act(
                    &name,
                    config.get("activation").and_then(Value::as_str).unwrap_or("linear"),
                )
            };
            let index = |k: usize| layer_params.get(k).map(|_| params.len() + k);
            let step = match layer.class_name() {
                "Dense" => Step::Dense {
                    w: index(0).ok_or_else(|| Error::Invalid(format!("gpu: dense layer '{name}' has no kernel")))?,
                    b: index(1),
                    act: act()?,
                },
                "Conv2D" => Step::Conv {
                    w: index(0).ok_or_else(|| Error::Invalid(format!("gpu: conv layer '{name}' has no kernel")))?,
                    b: index(1),
                    kernel_hw: pair(&config, "kernelSize").unwrap_or((3, 3)),
                    strides: pair(&config, "strides").unwrap_or((1, 1)),
                    dilation: pair(&config, "dilationRate").unwrap_or((1, 1)),
                    same: config.get("padding").and_then(Value::as_str) == Some("same"),
                    act: act()?,
                },
                "MaxPooling2D" => {
                    let pool = pair(&config, "poolSize").unwrap_or((2, 2));
                    Step::MaxPool {
                        pool,
                        strides: pair(&config, "strides").unwrap_or(pool),
                        same: config.get("padding").and_then(Value::as_str) == Some("same"),
                    }
                }
                "Flatten" => Step::Flatten,
                "Dropout" => Step::Dropout(config.get("rate").and_then(Value::as_f64).unwrap_or(0.0) as f32),
                "Activation" => Step::Activation(act()?),
                other => return Err(unsupported(&format!("the {other} layer ('{name}')"))),
            };
            params.extend(layer_params);
            steps.push(step);
        }
        // Softmax is allowed only as the very last operation.
        for (i, s) in steps.iter().enumerate() {
            let softmax = matches!(
                s,
                Step::Dense { act: Act::Softmax, .. }
                    | Step::Conv { act: Act::Softmax, .. }
                    | Step::Activation(Act::Softmax)
            );
            if softmax && i + 1 != steps.len() {
                return Err(unsupported("softmax before the last layer"));
            }
        }
        let ends_in_softmax = matches!(
            steps.last(),
            Some(
                Step::Dense { act: Act::Softmax, .. }
                    | Step::Conv { act: Act::Softmax, .. }
                    | Step::Activation(Act::Softmax)
            )
        );
        let loss = match *loss {
            Loss::SparseCategoricalCrossentropy { from_logits: false } if ends_in_softmax => GpuLoss::SparseCe {
                input: CrossEntropyInput::Logits,
                fused_softmax: true,
            },
            Loss::SparseCategoricalCrossentropy { from_logits: false } => GpuLoss::SparseCe {
                input: CrossEntropyInput::Probabilities,
                fused_softmax: false,
            },
            Loss::SparseCategoricalCrossentropy { from_logits: true } if !ends_in_softmax => GpuLoss::SparseCe {
                input: CrossEntropyInput::Logits,
                fused_softmax: false,
            },
            Loss::MeanSquaredError if !ends_in_softmax => GpuLoss::Mse,
            ref other => return Err(unsupported(&format!("the loss {other:?} with this output layer"))),
        };
        let mut weights = Vec::with_capacity(params.len());
        for p in &params {
            let t = p.get();
            weights.push(gpu.upload(t.data(), t.shape()).map_err(gpu_err)?);
        }
        Ok(GpuModel {
            trainable: params.iter().map(|p| trainable(p)).collect(),
            host_versions: params.iter().map(|p| p.version()).collect(),
            slots: (0..params.len()).map(|_| Vec::new()).collect(),
            gpu,
            steps,
            weights,
            loss,
            device_newer: false,
        })
    }

    /// The adapter, for messages.
    pub fn adapter_name(&self) -> &str {
        &self.gpu.adapter_summary().name
    }

    /// Uploads host weights that changed since the device copy was made.
    fn refresh_from_host(&mut self, model: &Model) -> Result<()> {
        let mut result = Ok(());
        let mut i = 0;
        model.visit_params(&mut |_, p, _| {
            if result.is_ok() && i < self.weights.len() && p.version() != self.host_versions[i] {
                let t = p.get();
                match self.gpu.upload(t.data(), t.shape()) {
                    Ok(w) => {
                        self.weights[i] = w;
                        self.host_versions[i] = p.version();
                    }
                    Err(e) => result = Err(gpu_err(e)),
                }
            }
            i += 1;
        });
        result
    }

    /// Copies the device weights into the host parameters if they are newer.
    pub fn sync_to_host(&mut self, model: &Model) -> Result<()> {
        if !self.device_newer {
            return Ok(());
        }
        let mut result = Ok(());
        let mut i = 0;
        model.visit_params(&mut |_, p, _| {
            if result.is_ok() && i < self.weights.len() && self.trainable[i] {
                result = self
                    .gpu
                    .download(&self.weights[i])
                    .map_err(gpu_err)
                    .and_then(|data| p.set(data));
                self.host_versions[i] = p.version();
            }
            i += 1;
        });
        self.device_newer = false;
        result
    }

    fn forward(&self, x: GpuTensor, training: bool, rng: &mut Rng, keep: bool) -> Result<(GpuTensor, Vec<Saved>)> {
        let g = &*self.gpu;
        let last = self.steps.len().saturating_sub(1);
        let mut saved = Vec::with_capacity(self.steps.len());
        let mut h = x;
        for (i, step) in self.steps.iter().enumerate() {
            // With a fused loss the last softmax is left to the loss (logits come out).
            let fuse = i == last
                && training
                && matches!(
                    self.loss,
                    GpuLoss::SparseCe {
                        fused_softmax: true,
                        ..
                    }
                );
            let activate = |z: GpuTensor, act: Act| -> Result<(GpuTensor, Option<GpuTensor>)> {
                match act {
                    Act::Plain(GpuAct::Linear) => Ok((z, None)),
                    Act::Plain(a) => {
                        let y = g.activation(a, &z).map_err(gpu_err)?;
                        Ok((y, keep.then_some(z)))
                    }
                    Act::Softmax if fuse => Ok((z, None)),
                    Act::Softmax => Ok((g.softmax(&z).map_err(gpu_err)?, None)),
                }
            };
            h = match *step {
                Step::Dense { w, b, act } => {
                    let shape = h.shape().to_vec();
                    let lead = shape[..shape.len() - 1].to_vec();
                    let rows: usize = lead.iter().product();
                    let x2 = h.reshape(&[rows, shape[shape.len() - 1]]).map_err(gpu_err)?;
                    let mut z = g.matmul(&x2, &self.weights[w], false, false).map_err(gpu_err)?;
                    if let Some(b) = b {
                        z = g.bias_add(&z, &self.weights[b]).map_err(gpu_err)?;
                    }
                    let (y, z) = activate(z, act)?;
                    if keep {
                        saved.push(Saved::Dense {
                            x: x2,
                            z,
                            lead: lead.clone(),
                        });
                    }
                    let units = y.shape()[1];
                    y.reshape(&[lead, vec![units]].concat()).map_err(gpu_err)?
                }
                Step::Conv {
                    w,
                    b,
                    kernel_hw,
                    strides,
                    dilation,
                    same,
                    act,
                } => {
                    let s = h.shape();
                    let spec = Conv2dSpec {
                        strides,
                        dilation,
                        padding: padding(same, [s[1], s[2]], kernel_hw, strides, dilation),
                    };
                    let mut z = g.conv2d(&h, &self.weights[w], &spec).map_err(gpu_err)?;
                    if let Some(b) = b {
                        z = g.bias_add(&z, &self.weights[b]).map_err(gpu_err)?;
                    }
                    let (y, z) = activate(z, act)?;
                    if keep {
                        saved.push(Saved::Conv { x: h, z, spec });
                    }
                    y
                }
                Step::MaxPool { pool, strides, same } => {
                    let s = h.shape();
                    let x_shape = [s[0], s[1], s[2], s[3]];
                    let spec = Pool2dSpec {
                        pool,
                        strides,
                        padding: padding(same, [s[1], s[2]], pool, strides, (1, 1)),
                    };
                    let out = g.max_pool2d(&h, &spec).map_err(gpu_err)?;
                    if keep {
                        saved.push(Saved::Pool {
                            argmax: out.argmax,
                            x_shape,
                            spec,
                        });
                    }
                    out.output
                }
                Step::Flatten => {
                    let s = h.shape().to_vec();
                    if keep {
                        saved.push(Saved::Reshape(s.clone()));
                    }
                    h.reshape(&[s[0], s[1..].iter().product()]).map_err(gpu_err)?
                }
                Step::Dropout(rate) if training && rate > 0.0 => {
                    let mask = g
                        .upload(&dropout_mask(h.len(), rate, rng), h.shape())
                        .map_err(gpu_err)?;
                    let y = g.mul(&h, &mask).map_err(gpu_err)?;
                    if keep {
                        saved.push(Saved::Dropout(Some(mask)));
                    }
                    y
                }
                Step::Dropout(_) => {
                    if keep {
                        saved.push(Saved::Dropout(None));
                    }
                    h
                }
                Step::Activation(act) => {
                    let (y, z) = activate(h, act)?;
                    if keep {
                        saved.push(Saved::Act(z));
                    }
                    y
                }
            };
        }
        Ok((h, saved))
    }

    /// Gradients of every weight (None: not reached) from the output gradient `dy`.
    fn backward(&self, mut dy: GpuTensor, saved: Vec<Saved>) -> Result<Vec<Option<GpuTensor>>> {
        let g = &*self.gpu;
        let mut grads: Vec<Option<GpuTensor>> = (0..self.weights.len()).map(|_| None).collect();
        let act_back = |act: Act, z: &Option<GpuTensor>, dy: GpuTensor| -> Result<GpuTensor> {
            match (act, z) {
                (Act::Plain(a), Some(z)) => g.activation_backward(a, z, &dy).map_err(gpu_err),
                // Linear, or a softmax fused into the loss: the gradient passes through.
                _ => Ok(dy),
            }
        };
        for (step, saved) in self.steps.iter().zip(saved).rev() {
            dy = match (step, saved) {
                (&Step::Dense { w, b, act }, Saved::Dense { x, z, lead }) => {
                    let rows: usize = lead.iter().product();
                    let units = dy.len() / rows.max(1);
                    let dz = act_back(act, &z, dy.reshape(&[rows, units]).map_err(gpu_err)?)?;
                    grads[w] = Some(g.matmul(&x, &dz, true, false).map_err(gpu_err)?);
                    let dx = g.matmul(&dz, &self.weights[w], false, true).map_err(gpu_err)?;
                    if let Some(b) = b {
                        grads[b] = Some(g.sum_rows(&dz).map_err(gpu_err)?);
                    }
                    let inputs = dx.shape()[1];
                    dx.reshape(&[lead, vec![inputs]].concat()).map_err(gpu_err)?
                }
                (
                    &Step::Conv {
                        w, b, kernel_hw, act, ..
                    },
                    Saved::Conv { x, z, spec },
                ) => {
                    let dz = act_back(act, &z, dy)?;
                    let xs = x.shape();
                    let x_shape = [xs[0], xs[1], xs[2], xs[3]];
                    grads[w] = Some(g.conv2d_backward_filter(&x, &dz, kernel_hw, &spec).map_err(gpu_err)?);
                    let dx = g
                        .conv2d_backward_input(&dz, &self.weights[w], x_shape, &spec)
                        .map_err(gpu_err)?;
                    if let Some(b) = b {
                        let cout = dz.shape()[3];
                        let rows = dz.len() / cout.max(1);
                        let flat = dz.reshape(&[rows, cout]).map_err(gpu_err)?;
                        grads[b] = Some(g.sum_rows(&flat).map_err(gpu_err)?);
                    }
                    dx
                }
                (Step::MaxPool { .. }, Saved::Pool { argmax, x_shape, spec }) => {
                    g.max_pool2d_backward(&dy, &argmax, x_shape, &spec).map_err(gpu_err)?
                }
                (Step::Flatten, Saved::Reshape(shape)) => dy.reshape(&shape).map_err(gpu_err)?,
                (Step::Dropout(_), Saved::Dropout(Some(mask))) => g.mul(&dy, &mask).map_err(gpu_err)?,
                (Step::Dropout(_), Saved::Dropout(None)) => dy,
                (&Step::Activation(act), Saved::Act(z)) => act_back(act, &z, dy)?,
                _ => {
                    return Err(Error::Invalid(
                        "gpu: internal error: forward and backward plans differ".into(),
                    ))
                }
            };
        }
        Ok(grads)
    }

    /// One training step; returns the loss and the metrics, like [`Model::train_on_batch`].
    pub fn train_on_batch(
        &mut self,
        model: &Model,
        x: &Tensor,
        y: &Tensor,
        optimizer: &mut Optimizer,
        metrics: &[Metric],
        rng: &mut Rng,
    ) -> Result<Logs> {
        self.refresh_from_host(model)?;
        let g = Arc::clone(&self.gpu);
        let xg = g.upload(x.data(), x.shape()).map_err(gpu_err)?;
        let (out, saved) = self.forward(xg, true, rng, true)?;
        let (loss_t, dy) = self.loss_and_grad(&out, y)?;
        let loss = g.download(&loss_t).map_err(gpu_err)?[0];
        let mut logs = vec![("loss".to_string(), loss as f64)];
        if !metrics.is_empty() {
            let pred = g.download(&out).map_err(gpu_err)?;
            for m in metrics {
                let (correct, total) = m.count(&pred, out.shape(), y.data());
                logs.push((m.key().to_string(), correct / total.max(1.0)));
            }
        }
        if !loss.is_finite() {
            return Ok(logs);
        }
        let grads = self.backward(dy, saved)?;
        optimizer.begin_step();
        let lr = optimizer.learning_rate;
        let step = optimizer.iterations().min(u32::MAX as u64) as u32;
        for (i, grad) in grads.into_iter().enumerate() {
            let (Some(grad), true) = (grad, self.trainable[i]) else {
                continue;
            };
            let w = &mut self.weights[i];
            let slots = &mut self.slots[i];
            match optimizer.rule {
                Rule::Sgd { momentum, nesterov } => {
                    if momentum != 0.0 && slots.is_empty() {
                        slots.push(g.zeros(w.shape()).map_err(gpu_err)?);
                    }
                    let hp = SgdParams { lr, momentum, nesterov };
                    g.sgd_update(w, &grad, slots.first_mut(), &hp).map_err(gpu_err)?;
                }
                Rule::Adam {
                    beta1, beta2, epsilon, ..
                } => {
                    if slots.is_empty() {
                        slots.push(g.zeros(w.shape()).map_err(gpu_err)?);
                        slots.push(g.zeros(w.shape()).map_err(gpu_err)?);
                    }
                    let (m, v) = slots.split_at_mut(1);
                    let hp = AdamParams {
                        lr,
                        beta1,
                        beta2,
                        epsilon,
                        step,
                    };
                    g.adam_update(w, &grad, &mut m[0], &mut v[0], &hp).map_err(gpu_err)?;
                }
                Rule::RmsProp { .. } => return Err(unsupported("the rmsprop optimizer")),
            }
        }
        self.device_newer = true;
        Ok(logs)
    }

    /// The loss (a `[1]` tensor) and its gradient with respect to the forward output.
    fn loss_and_grad(&self, out: &GpuTensor, y: &Tensor) -> Result<(GpuTensor, GpuTensor)> {
        let g = &*self.gpu;
        match self.loss {
            GpuLoss::SparseCe { input, .. } => {
                let labels = g.upload(y.data(), &[y.len()]).map_err(gpu_err)?;
                let ce = g
                    .sparse_categorical_crossentropy(out, &labels, input)
                    .map_err(gpu_err)?;
                Ok((ce.loss, ce.grad))
            }
            GpuLoss::Mse => {
                if y.len() != out.len() {
                    return Err(Error::shape("meanSquaredError targets", out.shape(), y.shape()));
                }
                let target = g.upload(y.data(), out.shape()).map_err(gpu_err)?;
                let diff = g.binary(cortex_wgpu::BinaryOp::Sub, out, &target).map_err(gpu_err)?;
                let loss = g.mean(&g.mul(&diff, &diff).map_err(gpu_err)?).map_err(gpu_err)?;
                let grad = g.scale(&diff, 2.0 / out.len().max(1) as f32, 0.0).map_err(gpu_err)?;
                Ok((loss, grad))
            }
        }
    }

    /// Inference on the GPU (softmax applied), as [`Model::predict`] on one batch.
    pub fn predict(&mut self, model: &Model, x: &Tensor) -> Result<Tensor> {
        self.refresh_from_host(model)?;
        let xg = self.gpu.upload(x.data(), x.shape()).map_err(gpu_err)?;
        let (out, _) = self.forward(xg, false, &mut Rng::new(0), false)?;
        let data = self.gpu.download(&out).map_err(gpu_err)?;
        Tensor::new(data, out.shape())
    }
}

/// TensorFlow's padding: none for `valid`; for `same`, enough for `ceil(in / stride)` outputs,
/// the odd pixel at the bottom/right. Returns top, left, bottom, right.
fn padding(
    same: bool,
    hw: [usize; 2],
    window: (usize, usize),
    strides: (usize, usize),
    dilation: (usize, usize),
) -> [usize; 4] {
    if !same {
        return [0; 4];
    }
    let pad = |n: usize, k: usize, s: usize, d: usize| {
        let out = n.div_ceil(s.max(1));
        let need = (out.saturating_sub(1)) * s + (k - 1) * d + 1;
        need.saturating_sub(n)
    };
    let ph = pad(hw[0], window.0, strides.0, dilation.0);
    let pw = pad(hw[1], window.1, strides.1, dilation.1);
    [ph / 2, pw / 2, ph - ph / 2, pw - pw / 2]
}

/// Inverted-dropout mask: 0 with probability `rate`, else `1 / (1 - rate)`.
fn dropout_mask(len: usize, rate: f32, rng: &mut Rng) -> Vec<f32> {
    let keep = 1.0 / (1.0 - rate);
    let threshold = (f64::from(rate) * 4_294_967_296.0) as u64;
    let mut mask = Vec::with_capacity(len + 1);
    while mask.len() < len {
        let r = rng.next_u64();
        for bits in [r & 0xffff_ffff, r >> 32] {
            mask.push(if bits < threshold { 0.0 } else { keep });
        }
    }
    mask.truncate(len);
    mask
}
