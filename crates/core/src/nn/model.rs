//! [`Model`]: a graph of shared layers (a sequential chain or a functional DAG), compiled with
//! a loss, an optimizer and metrics. A model is itself a [`Layer`], so models nest; nested
//! models and layers are shared, not copied, so their weights are the same everywhere.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use serde_json::{json, Value};

use super::cell::{LayerCell, SharedLayer};
use super::gpu_model::GpuModel;
use super::layers::{self, ForwardCtx, Layer};
use super::loss::Loss;
use super::metrics::Metric;
use super::optim::Optimizer;
use super::param::Param;
use crate::alloc::{self, WeightBudget, WeightFill};
use crate::rng::Rng;
use crate::tensor::{no_grad, numel};
use crate::{backprop, Error, Result, Tensor};

mod compile;
mod config;
mod describe;
mod dp;
mod placement;
mod train;
pub use dp::DpConfig;

pub use train::{Batch, Evaluation};

/// One weight as `(name, shape, values)`.
pub type NamedWeight = (String, Vec<usize>, Vec<f32>);

/// Ordered `(name, value)` pairs, as Keras logs.
pub type Logs = Vec<(String, f64)>;

/// The linear stack kept by Keras's `Sequential`, the DAG of `Model(inputs, outputs)`.
pub type Sequential = Model;

/// What `compile` configured.
pub struct Compiled {
    /// One loss per model output.
    pub losses: Vec<Loss>,
    /// Keras `lossWeights`: the loss that trains is the sum of `weight * loss` over outputs.
    pub loss_weights: Vec<f32>,
    /// The optimizer and its state.
    pub optimizer: Optimizer,
    /// Per output: its extra metrics.
    pub metrics: Vec<Vec<Metric>>,
    /// Addresses of the parameters that train, captured at compile time (Keras semantics:
    /// changing `trainable` afterwards takes effect at the next compile).
    trainable: HashSet<usize>,
    /// `compile({ device })`: `None` for the CPU, `Some(strict)` for "gpu" / "gpu!".
    wants_gpu: Option<bool>,
    /// `compile({ precision })`: "float32" or "mixed_float16" (GPU only).
    precision: String,
    /// The GPU copy of the model, once attached.
    gpu: Option<Mutex<GpuModel>>,
    /// Why a requested GPU is not used (the fallback warning), for the binding to report once.
    pub device_warning: Option<String>,
    /// The planner refused the model and its weights moved to the GPU instead: the layers,
    /// losses and optimizer run there through their own code (see [`Model::to_device`]).
    pub(crate) layers_on_gpu: bool,
}

/// Where a node input comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// Model input `i`.
    Input(usize),
    /// Output `o` of node `n`.
    Node(usize, usize),
}

/// One application of a layer.
#[derive(Clone, Debug)]
pub struct Node {
    /// Index into the model's layers.
    pub layer: usize,
    /// Its inputs.
    pub inputs: Vec<Source>,
}

/// A model: layers, the nodes that apply them, inputs and outputs.
pub struct Model {
    name: String,
    functional: bool,
    layers: Vec<SharedLayer>,
    nodes: Vec<Node>,
    inputs: Vec<Vec<usize>>,
    outputs: Vec<Source>,
    /// Names of the inputs (keys of named inputs); empty for the Keras defaults.
    input_names: Vec<String>,
    output_shapes: Vec<Vec<usize>>,
    /// Sample shape of every model input and node output; empty until built.
    shapes: HashMap<Source, Vec<usize>>,
    compiled: Option<Compiled>,
    pub(crate) rng: Rng,
    /// Where `to_device` put the weights: weights made later (a deferred build) go there too.
    placement: crate::Device,
}

/// Rows `idx` of a tensor whose first axis is the sample axis.
pub fn gather_rows(t: &Tensor, idx: &[usize]) -> Tensor {
    let row = t.len() / t.shape()[0].max(1);
    let mut out = Vec::with_capacity(idx.len() * row);
    for &i in idx {
        out.extend_from_slice(&t.data()[i * row..(i + 1) * row]);
    }
    let mut shape = t.shape().to_vec();
    shape[0] = idx.len();
    Tensor::new(out, &shape).expect("sizes match by construction")
}

/// Rows `start..end` of a tensor.
pub fn slice_rows(t: &Tensor, start: usize, end: usize) -> Tensor {
    let row = t.len() / t.shape()[0].max(1);
    let mut shape = t.shape().to_vec();
    shape[0] = end - start;
    Tensor::new(t.data()[start * row..end * row].to_vec(), &shape).expect("sizes match by construction")
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::Invalid(msg.into())
}

impl Model {
    /// Builds every node in order, checking shapes; fills `output_shapes`.
    /// Builds every layer; the weights of the whole model are charged against one budget
    /// (the caller's, e.g. `loadModel`'s `maxBytes`, or [`alloc::max_model_bytes`]).
    fn build_graph(&mut self) -> Result<()> {
        let budget = WeightBudget::new(
            alloc::max_model_bytes(),
            WeightFill::Initialize,
            "the model size limit, see setMaxModelBytes",
        );
        budget.run(|| self.build_layers())
    }

    fn build_layers(&mut self) -> Result<()> {
        let mut shapes: HashMap<Source, Vec<usize>> = HashMap::new();
        for (i, s) in self.inputs.iter().enumerate() {
            shapes.insert(Source::Input(i), s.clone());
        }
        for (n, node) in self.nodes.iter().enumerate() {
            let ins: Vec<Vec<usize>> = node
                .inputs
                .iter()
                .map(|s| {
                    shapes
                        .get(s)
                        .cloned()
                        .ok_or_else(|| invalid(format!("node {n}: input {s:?} does not exist")))
                })
                .collect::<Result<_>>()?;
            let cell = &self.layers[node.layer];
            let outs = cell.build(&ins, &mut self.rng).map_err(|e| {
                let layer = cell.read();
                let msg = format!("building '{}' ({}): {e}", layer.name(), layer.class_name());
                match e {
                    Error::Memory(_) => Error::Memory(msg),
                    _ => invalid(msg),
                }
            })?;
            for (o, shape) in outs.into_iter().enumerate() {
                shapes.insert(Source::Node(n, o), shape);
            }
        }
        self.output_shapes = self
            .outputs
            .iter()
            .map(|s| {
                shapes
                    .get(s)
                    .cloned()
                    .ok_or_else(|| invalid(format!("model output {s:?} does not exist")))
            })
            .collect::<Result<_>>()?;
        self.shapes = shapes;
        Ok(())
    }

    /// Builds a sequential model for samples of `input_shape` (no batch axis).
    pub fn build(&mut self, input_shape: &[usize]) -> Result<()> {
        if input_shape.is_empty() || numel(input_shape) == 0 {
            return Err(Error::shape(
                "build",
                "a non-empty input shape without the batch axis",
                input_shape,
            ));
        }
        if self.functional || !self.inputs.is_empty() {
            if self.inputs.first().map(Vec::as_slice) != Some(input_shape) {
                return Err(Error::shape(
                    &format!("build of '{}'", self.name),
                    &self.inputs,
                    input_shape,
                ));
            }
            return Ok(());
        }
        self.inputs = vec![input_shape.to_vec()];
        if let Err(e) = self.build_graph() {
            self.inputs.clear();
            return Err(e);
        }
        if self.placement != crate::Device::Cpu {
            self.to_device(self.placement)?;
        }
        Ok(())
    }

    /// Whether weights exist.
    pub fn is_built(&self) -> bool {
        !self.output_shapes.is_empty()
    }

    /// Name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sample shape of the first input (no batch axis).
    pub fn input_shape(&self) -> Option<&[usize]> {
        self.inputs.first().map(Vec::as_slice)
    }

    /// Sample shape of the first output (no batch axis).
    pub fn output_shape(&self) -> Option<&[usize]> {
        self.output_shapes.first().map(Vec::as_slice)
    }

    /// Sample shapes of every output (no batch axis); empty until built.
    pub fn output_shapes(&self) -> &[Vec<usize>] {
        &self.output_shapes
    }

    /// Sample shape (no batch axis) of a model input or a node output, once built.
    pub fn source_shape(&self, source: Source) -> Option<&[usize]> {
        self.shapes.get(&source).map(Vec::as_slice)
    }

    /// Sample shapes of every input (no batch axis); empty until known.
    pub fn input_shapes(&self) -> &[Vec<usize>] {
        &self.inputs
    }

    /// The shared layers.
    pub fn layers(&self) -> &[SharedLayer] {
        &self.layers
    }

    /// Freezes or unfreezes every layer (recursively through nested models).
    pub fn set_trainable(&self, trainable: bool) {
        for l in &self.layers {
            l.set_trainable(trainable);
        }
    }

    /// Sets the arithmetic of inference forward passes for every layer that has a
    /// reduced-precision path (recursively through nested models); returns how many layers
    /// switched. Training is unaffected: it always runs in f32.
    pub fn quantize(&self, precision: super::quantize::Precision) -> Result<usize> {
        if precision != super::quantize::Precision::Float32
            && self.compiled.as_ref().is_some_and(|c| c.wants_gpu.is_some())
        {
            return Err(Error::Invalid(
                "quantize: int8 and bf16 inference run on the CPU; this model is compiled for the GPU".into(),
            ));
        }
        precision.check_supported()?;
        let mut switched = 0;
        for cell in &self.layers {
            let layer = cell.read();
            match layer.as_model() {
                Some(inner) => switched += inner.quantize(precision)?,
                None => switched += usize::from(layer.set_precision(precision)),
            }
        }
        Ok(switched)
    }

    /// The GPU adapter the model trains and predicts on (its planned GPU copy's, or the one
    /// its weights were moved to), or `None` for the CPU.
    pub fn device_name(&self) -> Option<String> {
        if let Some(gpu) = self.compiled.as_ref().and_then(|c| c.gpu.as_ref()) {
            return Some(gpu.lock().unwrap_or_else(|e| e.into_inner()).adapter_name().to_string());
        }
        if self.weights_device() == crate::Device::Gpu {
            return crate::device::shared_gpu()
                .ok()
                .map(|g| g.adapter_summary().name.clone());
        }
        None
    }

    /// Copies weights a planned GPU model trained back into the parameters, this model's and
    /// its nested models' (a discriminator trained on its own plan, then called inside a
    /// combined model, must be read at its current values). A no-op when nothing is newer.
    pub fn sync_from_device(&self) -> Result<()> {
        if let Some(gpu) = self.compiled.as_ref().and_then(|c| c.gpu.as_ref()) {
            gpu.lock().unwrap_or_else(|e| e.into_inner()).sync_to_host(self)?;
        }
        for cell in &self.layers {
            if let Some(inner) = cell.read().as_model() {
                inner.sync_from_device()?;
            }
        }
        Ok(())
    }

    /// The layer applications, in an order where every input comes first.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Where each model output comes from.
    pub fn output_sources(&self) -> &[Source] {
        &self.outputs
    }

    /// Number of model inputs.
    pub fn input_count(&self) -> usize {
        self.inputs.len().max(1)
    }

    /// Whether this is a functional DAG rather than a Sequential chain.
    pub fn is_functional(&self) -> bool {
        self.functional
    }

    /// The optimizer's accumulated state, for checkpoints; `None` when not compiled or when the
    /// optimizer runs on a GPU (its slots live on the device).
    pub fn optimizer_state(&self) -> Option<super::optim::OptimizerState> {
        let c = self.compiled.as_ref()?;
        c.gpu.is_none().then(|| c.optimizer.state().ok()).flatten()
    }

    /// Restores the optimizer's state (from [`Self::optimizer_state`] of the same model).
    pub fn set_optimizer_state(&mut self, state: super::optim::OptimizerState) -> Result<()> {
        self.compiled()?.optimizer.set_state(state)
    }

    /// The random state (shuffling, dropout), for checkpoints.
    pub fn rng_state(&self) -> [u64; 4] {
        self.rng.state()
    }

    /// Replaces the random state (from [`Self::rng_state`]).
    pub fn set_rng(&mut self, rng: Rng) {
        self.rng = rng;
    }

    /// The compile settings, or an error telling the user to compile.
    pub fn compiled(&mut self) -> Result<&mut Compiled> {
        self.compiled.as_mut().ok_or_else(not_compiled)
    }

    /// The compile settings, read-only.
    pub fn compiled_ref(&self) -> Result<&Compiled> {
        self.compiled.as_ref().ok_or_else(not_compiled)
    }

    /// Whether `compile` was called.
    pub fn is_compiled(&self) -> bool {
        self.compiled.is_some()
    }

    /// Builds the model for samples shaped like those of `x` if it has no weights yet.
    pub fn ensure_built(&mut self, x: &Tensor) -> Result<()> {
        if x.rank() < 2 {
            return Err(Error::shape("model input", "[batch, ...sample shape]", x.shape()));
        }
        if !self.is_built() {
            self.build(&x.shape()[1..])?;
        }
        self.attach_gpu()
    }

    /// Checks `x`: `[batch, ...input_shape]` with finite values.
    pub fn check_input(&self, x: &Tensor) -> Result<()> {
        if x.rank() < 2 {
            return Err(Error::shape("model input", "[batch, ...sample shape]", x.shape()));
        }
        let Some(want) = self.input_shape() else {
            return Err(invalid(
                "the model is not built yet; give the first layer an inputShape",
            ));
        };
        if self.inputs.len() != 1 {
            return Err(invalid(format!(
                "model '{}' takes {} inputs; pass them as a list",
                self.name,
                self.inputs.len()
            )));
        }
        if &x.shape()[1..] != want {
            let mut expected = vec![x.shape()[0]];
            expected.extend_from_slice(want);
            return Err(Error::shape(
                &format!("model '{}' input", self.name),
                expected,
                x.shape(),
            ));
        }
        x.check_finite("input")
    }

    /// Runs the graph on `inputs` (one tensor per model input); returns the outputs.
    pub fn run(
        &self,
        inputs: &[Tensor],
        masks: &[Option<Tensor>],
        training: bool,
        rng: &mut Rng,
    ) -> Result<Vec<Tensor>> {
        self.run_tapped(inputs, masks, training, rng, None)
            .map(|(outs, _)| outs)
    }

    /// [`Self::run`], with the first output of node `tap` cut from the graph and replaced by a
    /// gradient leaf holding the same values, which is returned too: a backward pass then
    /// yields the gradient with respect to that layer's activations (Grad-CAM).
    pub fn run_tapped(
        &self,
        inputs: &[Tensor],
        masks: &[Option<Tensor>],
        training: bool,
        rng: &mut Rng,
        tap: Option<usize>,
    ) -> Result<(Vec<Tensor>, Option<Tensor>)> {
        let mut tapped = None;
        if inputs.len() != self.inputs.len() {
            return Err(invalid(format!(
                "model '{}' takes {} inputs, got {}",
                self.name,
                self.inputs.len(),
                inputs.len()
            )));
        }
        // Inputs go where the weights are (a differentiable copy when they are elsewhere).
        let device = self.weights_device();
        let mut values: HashMap<Source, (Tensor, Option<Tensor>)> = HashMap::new();
        for (i, x) in inputs.iter().enumerate() {
            let mask = masks.get(i).cloned().flatten().map(|m| m.to(device)).transpose()?;
            values.insert(Source::Input(i), (x.to(device)?, mask));
        }
        // Free intermediate values after their last use (inference memory stays small).
        let mut uses: HashMap<Source, usize> = HashMap::new();
        for s in self
            .nodes
            .iter()
            .flat_map(|n| n.inputs.iter())
            .chain(self.outputs.iter())
        {
            *uses.entry(*s).or_default() += 1;
        }
        // A node whose value a fused kernel of the node before it already produced.
        let mut fused_into = None;
        for (n, node) in self.nodes.iter().enumerate() {
            if fused_into == Some(n) {
                continue;
            }
            let mut xs = Vec::with_capacity(node.inputs.len());
            let mut ms = Vec::with_capacity(node.inputs.len());
            for s in &node.inputs {
                let (t, m) = values
                    .get(s)
                    .cloned()
                    .ok_or_else(|| invalid(format!("node {n}: missing input {s:?}")))?;
                let left = uses.get_mut(s).expect("counted");
                *left -= 1;
                if *left == 0 {
                    values.remove(s);
                }
                xs.push(t);
                ms.push(m);
            }
            let mut ctx = ForwardCtx {
                training,
                rng: &mut *rng,
                input_masks: ms.clone(),
                output_masks: None,
            };
            if !training && tap.is_none_or(|t| t != n && t != n + 1) {
                if let Some(y) = self.fused_with_next(n, &xs, &ms, &uses, &mut ctx)? {
                    values.insert(Source::Node(n + 1, 0), (y, None));
                    fused_into = Some(n + 1);
                    continue;
                }
            }
            let outs = self.layers[node.layer].read().call(&xs, &mut ctx)?;
            let out_masks = ctx.output_masks.take().unwrap_or_else(|| {
                let carried = ms.first().cloned().flatten();
                outs.iter()
                    .map(|o| {
                        carried
                            .clone()
                            .filter(|m| o.rank() >= m.rank() && o.shape()[..m.rank()] == *m.shape())
                    })
                    .collect()
            });
            for (o, (mut t, m)) in outs
                .into_iter()
                .zip(out_masks.into_iter().chain(std::iter::repeat(None)))
                .enumerate()
            {
                if tap == Some(n) && o == 0 {
                    t = t.detach().with_requires_grad(true);
                    tapped = Some(t.clone());
                }
                values.insert(Source::Node(n, o), (t, m));
            }
        }
        let outs = self
            .outputs
            .iter()
            .map(|s| {
                values
                    .get(s)
                    .map(|(t, _)| t.clone())
                    .ok_or_else(|| invalid(format!("model output {s:?} missing")))
            })
            .collect::<Result<_>>()?;
        Ok((outs, tapped))
    }

    /// Inference peephole: when node `n` (one unmasked input) feeds only node `n + 1`, the value
    /// of `n + 1` from one fused kernel if there is one for this call: `n`'s kernel max-pooled
    /// when `n + 1` is a plain max pooling, or `n + 1` folding the lookup of `n`, an Embedding,
    /// into its input projection.
    fn fused_with_next(
        &self,
        n: usize,
        xs: &[Tensor],
        masks: &[Option<Tensor>],
        uses: &HashMap<Source, usize>,
        ctx: &mut ForwardCtx,
    ) -> Result<Option<Tensor>> {
        let Some(next) = self.nodes.get(n + 1) else {
            return Ok(None);
        };
        let only_consumer = next.inputs == [Source::Node(n, 0)] && uses.get(&Source::Node(n, 0)) == Some(&1);
        if !only_consumer || xs.len() != 1 || masks.iter().any(Option::is_some) {
            return Ok(None);
        }
        let (this, next) = (self.nodes[n].layer, next.layer);
        if let Some(pool) = self.layers[next].read().plain_max_pool() {
            return self.layers[this].read().forward_max_pooled(&xs[0], pool, ctx);
        }
        // Both layers are read at once: not when they are one layer (a second read of one
        // lock can wait on a queued writer forever).
        if this == next {
            return Ok(None);
        }
        let embedding = self.layers[this].read();
        self.layers[next].read().forward_embedded(&**embedding, &xs[0], ctx)
    }

    /// Runs a single-input, single-output model (`rng` feeds dropout in training mode).
    pub fn forward(&self, x: &Tensor, training: bool, rng: &mut Rng) -> Result<Tensor> {
        let mut outs = self.run(std::slice::from_ref(x), &[], training, rng)?;
        if outs.len() != 1 {
            return Err(invalid(format!(
                "model '{}' has {} outputs; expected one here",
                self.name,
                outs.len()
            )));
        }
        Ok(outs.remove(0))
    }

    /// Moves every weight to `device`: the layers' ops then run there (inputs are moved to the
    /// weights as the model runs), for `call` and the tape as for `fit`, `evaluate` and
    /// `predict` of a model compiled for the CPU (`compile({ device: 'gpu' })` is separate: it
    /// plans the model onto the GPU kernels with weights of its own).
    pub fn to_device(&mut self, device: crate::Device) -> Result<()> {
        self.move_weights(device)?;
        self.placement = device;
        Ok(())
    }

    /// Moves every weight to `device` (without changing where later-built weights go).
    fn move_weights(&self, device: crate::Device) -> Result<()> {
        self.sync_from_device()?;
        let before = self.weights_device();
        let mut result = Ok(());
        self.visit_params(&mut |_, p, _| {
            if result.is_ok() {
                result = p.to_device(device);
            }
        });
        if result.is_err() {
            // A weight that did not fit (device memory, buffer limits): all go back, so the
            // model is never split across devices.
            self.visit_params(&mut |_, p, _| {
                let _ = p.to_device(before);
            });
        }
        result
    }

    /// Where the weights live (the CPU for a model without weights).
    pub fn weights_device(&self) -> crate::Device {
        let mut device = crate::Device::Cpu;
        self.visit_unnamed_params(&mut |p| device = p.device());
        device
    }

    /// Visits every weight without building its name: every predict asks [`Self::weights_device`],
    /// and formatting a name per weight showed in batch-1 profiles.
    fn visit_unnamed_params(&self, f: &mut dyn FnMut(&Param)) {
        for cell in &self.layers {
            let layer = cell.read();
            match layer.as_model() {
                Some(inner) => inner.visit_unnamed_params(f),
                None => layer.params().into_iter().for_each(&mut *f),
            }
        }
    }

    /// Visits every weight with its file name (`layer/weight`, nested models prefixed by their
    /// name) and whether its layer is trainable.
    pub fn visit_params(&self, f: &mut dyn FnMut(&str, &Param, bool)) {
        self.visit_prefixed("", f);
    }

    fn visit_prefixed(&self, prefix: &str, f: &mut dyn FnMut(&str, &Param, bool)) {
        for cell in &self.layers {
            let layer = cell.read();
            if let Some(inner) = layer.as_model() {
                inner.visit_prefixed(&format!("{prefix}{}/", inner.name()), f);
            } else {
                for p in layer.params() {
                    f(&format!("{prefix}{}", p.name), p, cell.trainable());
                }
            }
        }
    }

    /// Current weights as `(name, shape, values)` (fetched from the GPU first when they live there).
    pub fn get_weights(&self) -> Result<Vec<NamedWeight>> {
        self.sync_from_device()?;
        let mut out = Vec::new();
        self.visit_params(&mut |name, p, _| out.push((name.to_string(), p.shape(), p.get().to_vec())));
        Ok(out)
    }

    /// Replaces every weight, in [`Self::get_weights`] order.
    pub fn set_weights(&self, weights: &[Vec<f32>]) -> Result<()> {
        let current = self.get_weights()?;
        if weights.len() != current.len() {
            return Err(invalid(format!(
                "setWeights: the model has {} weight tensors, got {}",
                current.len(),
                weights.len()
            )));
        }
        for (w, (name, shape, _)) in weights.iter().zip(&current) {
            if w.len() != numel(shape) {
                return Err(Error::shape(&format!("setWeights for '{name}'"), shape, w.len()));
            }
            if let Some(i) = w.iter().position(|v| !v.is_finite()) {
                return Err(invalid(format!(
                    "setWeights: non-finite value at index {i} of '{name}'"
                )));
            }
        }
        let mut i = 0;
        let mut result = Ok(());
        self.visit_params(&mut |_, p, _| {
            if result.is_ok() {
                result = p.set(weights[i].clone());
            }
            i += 1;
        });
        result
    }
}

fn not_compiled() -> Error {
    invalid("the model must be compiled before training or evaluation; call compile() first")
}

impl Layer for Model {
    fn class_name(&self) -> &'static str {
        if self.functional {
            "Functional"
        } else {
            "Sequential"
        }
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn build(&mut self, input_shape: &[usize], _rng: &mut Rng) -> Result<Vec<usize>> {
        Model::build(self, input_shape)?;
        self.output_shape()
            .map(<[usize]>::to_vec)
            .ok_or_else(|| invalid("model has no output"))
    }
    fn build_many(&mut self, input_shapes: &[Vec<usize>], rng: &mut Rng) -> Result<Vec<Vec<usize>>> {
        if !self.functional && input_shapes.len() == 1 {
            return Ok(vec![Layer::build(self, &input_shapes[0], rng)?]);
        }
        if input_shapes != self.inputs.as_slice() {
            return Err(Error::shape(
                &format!("model '{}' used as a layer", self.name),
                &self.inputs,
                input_shapes,
            ));
        }
        Ok(self.output_shapes.clone())
    }
    fn forward(&self, x: &Tensor, ctx: &mut ForwardCtx) -> Result<Tensor> {
        Model::forward(self, x, ctx.training, ctx.rng)
    }
    fn call(&self, inputs: &[Tensor], ctx: &mut ForwardCtx) -> Result<Vec<Tensor>> {
        self.run(inputs, &ctx.input_masks, ctx.training, ctx.rng)
    }
    fn config(&self) -> Value {
        let mut v = self.to_json();
        v.as_object_mut().expect("object").remove("className");
        v
    }
    fn as_model(&self) -> Option<&Model> {
        Some(self)
    }
    fn as_model_mut(&mut self) -> Option<&mut Model> {
        Some(self)
    }
}
