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
//! Supported today: Sequential and functional models (one input, one output; layers may be shared)
//! of Dense, Conv2D (strides, dilation, valid/same), Conv1D (strides, dilation,
//! valid/same/causal), Conv2DTranspose (strides, dilation, valid/same), MaxPooling2D and
//! AveragePooling2D (strides, valid/same), GlobalAveragePooling2D, ZeroPadding2D, UpSampling2D
//! (nearest), Flatten, Reshape, Dropout, Activation (linear/relu/sigmoid/tanh/gelu/leakyRelu;
//! softmax at the output), Add, Multiply, Concatenate (last axis), Embedding (maskZero too), LSTM,
//! GRU and SimpleRNN (tanh/sigmoid, returnSequences, goBackwards; not returnState or stateful),
//! Bidirectional around them (merge concat, sum, mul or ave), LayerNormalization,
//! BatchNormalization (moving statistics updated on the device), MultiHeadAttention (no masks,
//! scores or attention dropout; key size <= 64), PositionalEmbedding and GlobalAveragePooling1D
//! layers; sparse and dense categorical cross-entropy and binary cross-entropy (probabilities or
//! logits; a softmax output is folded into a categorical cross-entropy), mean squared and mean
//! absolute error; SGD (momentum, Nesterov), Adam, AdamW and RMSprop, with per-step schedules. An
//! Embedding maskZero mask is applied as on the CPU by the LSTM, GRU, SimpleRNN and Bidirectional
//! layers it reaches (directly, through stacked returnSequences layers and per-step layers, with
//! goBackwards); a model where it would reach GlobalAveragePooling1D or MultiHeadAttention is
//! refused (see `masking.rs`). Anything else is reported by [`GpuModel::new`], and `compile` falls
//! back to the CPU (or, with `"gpu!"`, fails).

mod attention;
mod batchnorm;
mod bidirectional;
mod conv_steps;
mod loss;
mod masking;
mod merge;
mod profile;
pub(crate) mod sequence;
mod spatial;
mod steps;

use std::sync::Arc;

use std::collections::HashMap;

use cortex_wgpu::{Gpu, GpuTensor, MatmulKernel};

use loss::GpuLoss;
use steps::{BackwardCx, Forward, Step};

use super::loss::Loss;
use super::metrics::Metric;
use super::model::{Logs, Model, Source};
use super::optim::{update_gpu_buffers, Optimizer};
use super::param::Param;
use crate::rng::Rng;
use crate::{Error, Result, Tensor};

pub use cortex_wgpu::{gpu_test_skip_reason, AdapterSummary};

/// Every adapter wgpu can see (GPUs and software rasterisers), without opening any.
pub fn devices() -> Vec<AdapterSummary> {
    cortex_wgpu::adapters()
}

use crate::device::gpu_err;
pub use crate::device::shared_gpu;

fn unsupported(what: &str) -> Error {
    Error::Invalid(format!(
        "the GPU backend does not support {what} yet; compile with device 'cpu' (or 'gpu' to fall back)"
    ))
}

/// One application of a planned layer.
struct GpuNode {
    step: Step,
    inputs: Vec<Source>,
}

/// A compiled model's weights, optimizer state and layer plan on the GPU.
pub struct GpuModel {
    gpu: Arc<Gpu>,
    nodes: Vec<GpuNode>,
    /// The model output (a node output).
    output: Source,
    /// Per node: whether it consumes the Embedding maskZero mask (see `masking.rs`).
    masked: Vec<bool>,
    /// Device copies of every parameter, in `visit_params` order.
    weights: Vec<GpuTensor>,
    /// Per weight: whether the optimizer updates it (captured at compile).
    trainable: Vec<bool>,
    /// Per weight: whether a training step's forward pass changes it on the device
    /// (BatchNormalization's moving statistics), so the host needs it back.
    device_state: Vec<bool>,
    /// Per weight: the host parameter's version the device copy was made from.
    host_versions: Vec<u64>,
    /// Per weight: optimizer slots (velocity, Adam's two moments or RMSprop's mean square),
    /// created on first use.
    slots: Vec<Vec<GpuTensor>>,
    loss: GpuLoss,
    /// The compiled loss (for its target checks).
    loss_spec: Loss,
    /// The device copy is newer than the host copy.
    device_newer: bool,
    /// Stage timings (`CORTEX_GPU_PROFILE=1`).
    profiler: Option<profile::Profiler>,
    /// GEMM kernel of the dense layers and attention projections: `Auto` (f32), or
    /// `Tile128F16` under the `mixed_float16` precision policy.
    matmul: MatmulKernel,
}

impl GpuModel {
    /// Plans `model` (built, of supported layers) for the GPU and uploads its weights.
    pub fn new(model: &Model, loss: &Loss, optimizer: &Optimizer, trainable: &dyn Fn(&Param) -> bool) -> Result<Self> {
        if !model.is_built() {
            return Err(Error::Invalid(
                "gpu: the model must be built before it moves to the GPU".into(),
            ));
        }
        if model.input_count() != 1 || model.output_sources().len() != 1 {
            return Err(unsupported("models with several inputs or outputs"));
        }
        if optimizer.ema_momentum.is_some() {
            return Err(unsupported("optimizer useEma"));
        }
        let gpu = shared_gpu()?;
        let guards: Vec<_> = model.layers().iter().map(|cell| cell.read()).collect();
        // Weights are numbered as `visit_params` walks them: layer by layer, in layer order.
        let mut params: Vec<&Param> = Vec::new();
        let mut layer_steps = Vec::with_capacity(guards.len());
        for layer in &guards {
            if layer.as_model().is_some() {
                return Err(unsupported("nested models"));
            }
            let layer_params = layer.params();
            // The GPU optimizer kernels know no sign projection (EIDense, EIRNN).
            if layer_params.iter().any(|p| p.row_signs().is_some()) {
                return Err(unsupported(&format!(
                    "sign-constrained weights (Dale's law; layer '{}', {})",
                    layer.name(),
                    layer.class_name()
                )));
            }
            let step = steps::plan(
                layer.class_name(),
                layer.name(),
                &layer.config(),
                params.len(),
                layer_params.len(),
            )?;
            params.extend(layer_params);
            layer_steps.push(step);
        }
        let output = model.output_sources()[0];
        let mut nodes = Vec::with_capacity(model.nodes().len());
        let mut node_layers = Vec::with_capacity(model.nodes().len());
        for (n, node) in model.nodes().iter().enumerate() {
            let layer = &guards[node.layer];
            node_layers.push((layer.class_name().to_string(), layer.name().to_string()));
            let step = layer_steps[node.layer].clone();
            merge::check_node(&step, &node.inputs, model)?;
            // Token ids carry no gradient: an Embedding must read the model input itself.
            if matches!(step, Step::Embedding { .. }) && node.inputs.iter().any(|s| !matches!(s, Source::Input(_))) {
                return Err(unsupported("an Embedding layer that does not read the model input"));
            }
            if step.is_softmax() && output != Source::Node(n, 0) {
                return Err(unsupported("softmax before the model output"));
            }
            nodes.push(GpuNode {
                step,
                inputs: node.inputs.clone(),
            });
        }
        let masked = masking::plan(model, &nodes, &node_layers)?;
        let ends_in_softmax = match output {
            Source::Node(n, 0) => nodes[n].step.is_softmax(),
            _ => false,
        };
        let loss_spec = loss.clone();
        let loss = GpuLoss::plan(loss, ends_in_softmax)?;
        let mut weights = Vec::with_capacity(params.len());
        for p in &params {
            let t = p.get();
            weights.push(gpu.upload(t.data(), t.shape()).map_err(gpu_err)?);
        }
        Ok(GpuModel {
            trainable: params.iter().map(|p| trainable(p)).collect(),
            device_state: {
                let mut state = vec![false; params.len()];
                layer_steps
                    .iter()
                    .flat_map(Step::state_weights)
                    .for_each(|i| state[i] = true);
                state
            },
            host_versions: params.iter().map(|p| p.version()).collect(),
            slots: (0..params.len()).map(|_| Vec::new()).collect(),
            gpu,
            nodes,
            output,
            masked,
            weights,
            loss,
            loss_spec,
            device_newer: false,
            profiler: profile::Profiler::from_env(),
            matmul: MatmulKernel::Auto,
        })
    }

    /// Sets the precision policy (Keras names): `"float32"`, or `"mixed_float16"`, where the
    /// GEMMs of dense layers and attention projections, forward and backward, take f16
    /// operands with f32 sums and everything else (weights, optimizer state, activations,
    /// convolutions, recurrent cells, losses) stays f32. Returns a warning when the adapter
    /// has no `SHADER_F16`, in which case training stays f32.
    pub fn set_precision(&mut self, policy: &str) -> Result<Option<String>> {
        match policy {
            "float32" => {
                self.matmul = MatmulKernel::Auto;
                Ok(None)
            }
            "mixed_float16" => {
                self.matmul = MatmulKernel::Tile128F16;
                if self.gpu.adapter_summary().shader_f16 {
                    Ok(None)
                } else {
                    Ok(Some(format!(
                        "precision 'mixed_float16': adapter '{}' has no SHADER_F16, computing in float32",
                        self.adapter_name()
                    )))
                }
            }
            other => Err(Error::Invalid(format!(
                "precision must be 'float32' or 'mixed_float16', got '{other}'"
            ))),
        }
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
            // Every weight the device changes: the optimizer's and the moving statistics.
            if result.is_ok() && i < self.weights.len() && (self.trainable[i] || self.device_state[i]) {
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

    /// Runs the node graph on `x`; returns the output and, with `keep`, each node's tape.
    fn forward(
        &self,
        x: GpuTensor,
        training: bool,
        rng: &mut Rng,
        keep: bool,
    ) -> Result<(GpuTensor, Vec<Option<steps::Saved>>)> {
        let fused = self.loss.fuses_softmax();
        // Values are dropped after their last use, so inference holds few activations.
        let mut uses: HashMap<Source, usize> = HashMap::new();
        for s in self.nodes.iter().flat_map(|n| n.inputs.iter()).chain([&self.output]) {
            *uses.entry(*s).or_default() += 1;
        }
        // The Embedding maskZero mask, from the token ids (the model input).
        let mask = if self.masked.iter().any(|&m| m) {
            Some(self.gpu.nonzero_mask(&x).map_err(gpu_err)?)
        } else {
            None
        };
        let mut values: HashMap<Source, GpuTensor> = HashMap::from([(Source::Input(0), x)]);
        let mut saved = Vec::with_capacity(self.nodes.len());
        for (n, node) in self.nodes.iter().enumerate() {
            let mut xs = Vec::with_capacity(node.inputs.len());
            for s in &node.inputs {
                let v = values
                    .get(s)
                    .cloned()
                    .ok_or_else(|| Error::Invalid(format!("gpu: node {n} reads {s:?} before it exists")))?;
                let left = uses.get_mut(s).expect("counted");
                *left -= 1;
                if *left == 0 {
                    values.remove(s);
                }
                xs.push(v);
            }
            let mut cx = Forward {
                g: &self.gpu,
                weights: &self.weights,
                training,
                keep,
                fuse_softmax: fused && training && self.output == Source::Node(n, 0),
                rng: &mut *rng,
                matmul: self.matmul,
                mask: mask.as_ref().filter(|_| self.masked[n]),
            };
            let (y, tape) = node.step.forward(&mut cx, xs)?;
            if let Some(p) = &self.profiler {
                p.mark(&self.gpu, || format!("fwd {n:02} {}", node.step.kind()));
            }
            values.insert(Source::Node(n, 0), y);
            saved.push(tape);
        }
        let out = values
            .remove(&self.output)
            .ok_or_else(|| Error::Invalid("gpu: the model output was never computed".into()))?;
        Ok((out, saved))
    }

    /// Gradients of every weight (None: not reached) from the output gradient `dy`, and, with
    /// `input_grad`, the gradient wrt the model input (otherwise never computed).
    fn backward(
        &self,
        dy: GpuTensor,
        saved: Vec<Option<steps::Saved>>,
        input_grad: bool,
    ) -> Result<(Vec<Option<GpuTensor>>, Option<GpuTensor>)> {
        let g = &*self.gpu;
        let bx = BackwardCx {
            g,
            weights: &self.weights,
            matmul: self.matmul,
        };
        let mut grads: Vec<Option<GpuTensor>> = (0..self.weights.len()).map(|_| None).collect();
        let mut pending: HashMap<Source, GpuTensor> = HashMap::from([(self.output, dy)]);
        for (n, (node, tape)) in self.nodes.iter().zip(saved).enumerate().rev() {
            let (Some(dy), Some(tape)) = (pending.remove(&Source::Node(n, 0)), tape) else {
                continue; // the output does not depend on this node
            };
            // Training never needs the gradient wrt the model's input.
            let needed = |s: &Source| input_grad || matches!(s, Source::Node(..));
            let need: Vec<bool> = node.inputs.iter().map(needed).collect();
            let dxs = node.step.backward(&bx, tape, dy, &need, &mut grads)?;
            if let Some(p) = &self.profiler {
                p.mark(g, || format!("bwd {n:02} {}", node.step.kind()));
            }
            for (s, dx) in node.inputs.iter().zip(dxs) {
                if let (Some(dx), true) = (dx, needed(s)) {
                    let slot = pending.remove(s);
                    let total = match slot {
                        Some(old) => g.add(&old, &dx).map_err(gpu_err)?,
                        None => dx,
                    };
                    pending.insert(*s, total);
                }
            }
        }
        Ok((grads, pending.remove(&Source::Input(0))))
    }

    /// The output of `model` on `x` and, for the output cotangent `dy`, the gradients of
    /// `sum(output * dy)` wrt `x` (None when the input is token ids) and every weight (None
    /// where unreached), computed as a training step would (dropout off; BatchNormalization on
    /// the batch statistics, its moving ones left alone): the PyTorch fixture suite checks
    /// layers on the GPU through this.
    pub fn output_and_gradients(
        &mut self,
        model: &Model,
        x: &Tensor,
        dy: &Tensor,
    ) -> Result<(Tensor, Option<Tensor>, Vec<Option<Tensor>>)> {
        self.refresh_from_host(model)?;
        let g = Arc::clone(&self.gpu);
        let xg = g.upload(x.data(), x.shape()).map_err(gpu_err)?;
        let (out, saved) = self.forward(xg, false, &mut Rng::new(0), true)?;
        if dy.shape() != out.shape() {
            return Err(Error::shape("output cotangent", out.shape(), dy.shape()));
        }
        let dyg = g.upload(dy.data(), dy.shape()).map_err(gpu_err)?;
        let (grads, dx) = self.backward(dyg, saved, true)?;
        let host = |t: &GpuTensor| -> Result<Tensor> { Tensor::new(g.download(t).map_err(gpu_err)?, t.shape()) };
        let y = host(&out)?;
        let dx = dx.as_ref().map(host).transpose()?;
        let grads = grads
            .iter()
            .map(|t| t.as_ref().map(host).transpose())
            .collect::<Result<_>>()?;
        Ok((y, dx, grads))
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
        // The step's kernel calls go to the queue in chunks (Gpu::record), not one by one.
        let _scope = g.record();
        if let Some(p) = &self.profiler {
            p.start(&g);
        }
        let xg = g.upload(x.data(), x.shape()).map_err(gpu_err)?;
        if let Some(p) = &self.profiler {
            p.mark(&g, || "upload x".into());
        }
        let (out, saved) = self.forward(xg, true, rng, true)?;
        let (loss_t, dy) = self.loss_and_grad(&out, y)?;
        let loss = g.download(&loss_t).map_err(gpu_err)?[0];
        if let Some(p) = &self.profiler {
            p.mark(&g, || "loss + readback".into());
        }
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
        let (mut grads, _) = self.backward(dy, saved, false)?;
        // Frozen weights' gradients take no part in clipping, as on the CPU.
        for (g, &trains) in grads.iter_mut().zip(&self.trainable) {
            if !trains {
                *g = None;
            }
        }
        optimizer.clip_device_gradients(&mut grads)?;
        optimizer.begin_step();
        let lr = optimizer.learning_rate;
        let step = optimizer.iterations().min(u32::MAX as u64) as u32;
        for (i, grad) in grads.into_iter().enumerate() {
            let (Some(grad), true) = (grad, self.trainable[i]) else {
                continue;
            };
            let w = &mut self.weights[i];
            update_gpu_buffers(&g, &optimizer.rule, lr, step, w, &grad, &mut self.slots[i])?;
        }
        self.device_newer = true;
        if let Some(p) = &self.profiler {
            p.mark(&g, || "optimizer".into());
            p.finish("train_on_batch");
        }
        Ok(logs)
    }

    /// The loss (a `[1]` tensor) and its gradient with respect to the forward output.
    fn loss_and_grad(&self, out: &GpuTensor, y: &Tensor) -> Result<(GpuTensor, GpuTensor)> {
        self.loss.compute(&self.gpu, &self.loss_spec, out, y)
    }

    /// Inference on the GPU (softmax applied), as [`Model::predict`] on one batch.
    pub fn predict(&mut self, model: &Model, x: &Tensor) -> Result<Tensor> {
        self.refresh_from_host(model)?;
        let g = Arc::clone(&self.gpu);
        let _scope = g.record();
        if let Some(p) = &self.profiler {
            p.start(&self.gpu);
        }
        let xg = self.gpu.upload(x.data(), x.shape()).map_err(gpu_err)?;
        if let Some(p) = &self.profiler {
            p.mark(&self.gpu, || "upload x".into());
        }
        let (out, _) = self.forward(xg, false, &mut Rng::new(0), false)?;
        let data = self.gpu.download(&out).map_err(gpu_err)?;
        if let Some(p) = &self.profiler {
            p.mark(&self.gpu, || "readback".into());
            p.finish("predict");
        }
        Tensor::new(data, out.shape())
    }
}
