//! [`Model`]: a graph of shared layers (a sequential chain or a functional DAG), compiled with
//! a loss, an optimizer and metrics. A model is itself a [`Layer`], so models nest; nested
//! models and layers are shared, not copied, so their weights are the same everywhere.

use std::collections::{HashMap, HashSet};

use serde_json::{json, Value};

use super::cell::{LayerCell, SharedLayer};
use super::layers::{self, ForwardCtx, Layer};
use super::loss::Loss;
use super::metrics::Metric;
use super::optim::Optimizer;
use super::param::Param;
use crate::rng::Rng;
use crate::tensor::{no_grad, numel};
use crate::{backprop, Error, Result, Tensor};

/// Ordered `(name, value)` pairs, as Keras logs.
pub type Logs = Vec<(String, f64)>;

/// The linear stack kept by Keras's `Sequential`, the DAG of `Model(inputs, outputs)`.
pub type Sequential = Model;

/// What `compile` configured.
pub struct Compiled {
    /// The loss.
    pub loss: Loss,
    /// The optimizer and its state.
    pub optimizer: Optimizer,
    /// Extra metrics.
    pub metrics: Vec<Metric>,
    /// Addresses of the parameters that train, captured at compile time (Keras semantics:
    /// changing `trainable` afterwards takes effect at the next compile).
    trainable: HashSet<usize>,
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
    output_shapes: Vec<Vec<usize>>,
    compiled: Option<Compiled>,
    pub(crate) rng: Rng,
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

fn shape_list(v: &Value, what: &str) -> Result<Vec<usize>> {
    v.as_array()
        .and_then(|a| {
            a.iter()
                .map(|d| d.as_u64().filter(|&d| d > 0).map(|d| d as usize))
                .collect()
        })
        .ok_or_else(|| invalid(format!("{what}: expected an array of positive integers, got {v}")))
}

/// Makes (or finds, for `{ "ref": id }`) the layer of one `layers` entry.
fn layer_entry(entry: &Value, index: usize, seed: &mut Rng) -> Result<SharedLayer> {
    if let Some(id) = entry.get("ref").and_then(Value::as_u64) {
        return LayerCell::lookup(id);
    }
    let class = entry
        .get("className")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("layer {index}: expected {{ className, config }}, got {entry}")))?;
    let mut config = entry.get("config").cloned().unwrap_or_else(|| json!({}));
    if config.get("name").is_none() {
        if let Some(map) = config.as_object_mut() {
            map.insert("name".into(), json!(layers::unique_name(layers::base_name(class))));
        }
    }
    if class == "Sequential" || class == "Functional" {
        let mut cfg = config.clone();
        cfg["className"] = json!(class);
        let model = Model::from_config(&cfg, seed.next_u64())?;
        return Ok(LayerCell::new(Box::new(model), true));
    }
    let (layer, common) = layers::from_config(class, &config).map_err(|e| invalid(format!("layer {index}: {e}")))?;
    Ok(LayerCell::new(layer, common.trainable))
}

fn source_of(v: &Value, nodes_so_far: usize, inputs: usize) -> Result<Source> {
    let pair = v
        .as_array()
        .filter(|a| a.len() == 2)
        .and_then(|a| Some((a[0].as_i64()?, a[1].as_u64()? as usize)));
    match pair {
        Some((-1, i)) if i < inputs => Ok(Source::Input(i)),
        Some((n, o)) if n >= 0 && (n as usize) < nodes_so_far => Ok(Source::Node(n as usize, o)),
        _ => Err(invalid(format!("functional model: bad node reference {v}"))),
    }
}

impl Model {
    /// Builds a model from its description:
    /// `{ className: "Sequential", name?, layers: [...], inputShape? }` or
    /// `{ className: "Functional", name?, layers: [...], inputs: [shape...], nodes: [{ layer, inputs: [[node|-1, index]] }], outputs: [[node, index]] }`.
    /// A `layers` entry is `{ className, config }` (a new layer) or `{ ref: id }` (a live shared layer).
    pub fn from_config(config: &Value, seed: u64) -> Result<Model> {
        let obj = config
            .as_object()
            .ok_or_else(|| invalid(format!("model config must be an object, got {config}")))?;
        let class = obj.get("className").and_then(Value::as_str).unwrap_or("Sequential");
        let functional = match class {
            "Sequential" => false,
            "Functional" => true,
            other => {
                return Err(invalid(format!(
                    "unknown model class '{other}'; expected Sequential or Functional"
                )))
            }
        };
        let allowed: &[&str] = if functional {
            &["className", "name", "layers", "inputs", "nodes", "outputs", "trainable"]
        } else {
            &["className", "name", "layers", "inputShape", "trainable"]
        };
        if let Some(key) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(invalid(format!(
                "{class}: unknown option '{key}'; expected one of: {}",
                allowed.join(", ")
            )));
        }
        let mut rng = Rng::new(seed);
        let entries = obj
            .get("layers")
            .and_then(Value::as_array)
            .ok_or_else(|| invalid("model config needs a 'layers' array"))?;
        if entries.is_empty() {
            return Err(invalid("a model needs at least one layer"));
        }
        let layers: Vec<SharedLayer> = entries
            .iter()
            .enumerate()
            .map(|(i, e)| layer_entry(e, i, &mut rng))
            .collect::<Result<_>>()?;
        let mut seen = HashSet::new();
        for l in &layers {
            let name = l.read().name().to_string();
            if !seen.insert(name.clone()) {
                return Err(invalid(format!(
                    "layer name '{name}' is used twice in one model; names must be unique"
                )));
            }
        }
        let mut model = Model {
            // Keras numbering (sequential, sequential_1, ...) so two unnamed models can nest in one.
            name: match obj.get("name").and_then(Value::as_str) {
                Some(name) => name.into(),
                None => crate::nn::layers::unique_name(if functional { "model" } else { "sequential" }),
            },
            functional,
            layers,
            nodes: Vec::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            output_shapes: Vec::new(),
            compiled: None,
            rng,
        };
        if functional {
            model.inputs = obj
                .get("inputs")
                .and_then(Value::as_array)
                .ok_or_else(|| invalid("functional model needs 'inputs' (sample shapes)"))?
                .iter()
                .map(|s| shape_list(s, "functional model input"))
                .collect::<Result<_>>()?;
            let nodes = obj
                .get("nodes")
                .and_then(Value::as_array)
                .ok_or_else(|| invalid("functional model needs 'nodes'"))?;
            for (n, node) in nodes.iter().enumerate() {
                let layer = node
                    .get("layer")
                    .and_then(Value::as_u64)
                    .map(|l| l as usize)
                    .filter(|&l| l < model.layers.len());
                let layer =
                    layer.ok_or_else(|| invalid(format!("node {n}: 'layer' must index 'layers', got {node}")))?;
                let inputs = node
                    .get("inputs")
                    .and_then(Value::as_array)
                    .ok_or_else(|| invalid(format!("node {n}: needs 'inputs'")))?
                    .iter()
                    .map(|s| source_of(s, n, model.inputs.len()))
                    .collect::<Result<_>>()?;
                model.nodes.push(Node { layer, inputs });
            }
            model.outputs = obj
                .get("outputs")
                .and_then(Value::as_array)
                .ok_or_else(|| invalid("functional model needs 'outputs'"))?
                .iter()
                .map(|s| source_of(s, model.nodes.len(), model.inputs.len()))
                .collect::<Result<_>>()?;
            model.build_graph()?;
        } else {
            model.nodes = (0..model.layers.len())
                .map(|i| Node {
                    layer: i,
                    inputs: vec![if i == 0 {
                        Source::Input(0)
                    } else {
                        Source::Node(i - 1, 0)
                    }],
                })
                .collect();
            model.outputs = vec![Source::Node(model.nodes.len() - 1, 0)];
            let shape = match obj.get("inputShape") {
                Some(s) if !s.is_null() => Some(shape_list(s, "inputShape")?),
                _ => model.layers[0]
                    .read()
                    .config()
                    .get("inputShape")
                    .map(|s| shape_list(s, "inputShape"))
                    .transpose()?,
            };
            if let Some(shape) = shape {
                model.build(&shape)?;
            }
        }
        if obj.get("trainable") == Some(&Value::Bool(false)) {
            model.set_trainable(false);
        }
        Ok(model)
    }

    /// Builds every node in order, checking shapes; fills `output_shapes`.
    fn build_graph(&mut self) -> Result<()> {
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
                invalid(format!("building '{}' ({}): {e}", layer.name(), layer.class_name()))
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

    /// Sets the loss, optimizer and metrics: `{ "optimizer", "loss", "metrics"? }`.
    pub fn compile(&mut self, config: &Value) -> Result<()> {
        let obj = config
            .as_object()
            .ok_or_else(|| invalid(format!("compile expects an object, got {config}")))?;
        if let Some(key) = obj
            .keys()
            .find(|k| !["optimizer", "loss", "metrics"].contains(&k.as_str()))
        {
            return Err(invalid(format!(
                "compile: unknown option '{key}'; expected one of: loss, metrics, optimizer"
            )));
        }
        let loss = Loss::parse(
            obj.get("loss")
                .ok_or_else(|| invalid("compile: option 'loss' is required"))?,
        )?;
        let optimizer = Optimizer::parse(obj.get("optimizer").unwrap_or(&json!("rmsprop")))?;
        let metrics = match obj.get("metrics") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(list)) => list.iter().map(|m| Metric::parse(m, &loss)).collect::<Result<_>>()?,
            Some(other) => {
                return Err(invalid(format!(
                    "compile: metrics must be an array of names, got {other}"
                )))
            }
        };
        let mut trainable = HashSet::new();
        self.visit_params(&mut |_, p, layer_trainable| {
            if layer_trainable && p.trainable {
                trainable.insert(p as *const Param as usize);
            }
        });
        self.compiled = Some(Compiled {
            loss,
            optimizer,
            metrics,
            trainable,
        });
        Ok(())
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
        Ok(())
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
        if inputs.len() != self.inputs.len() {
            return Err(invalid(format!(
                "model '{}' takes {} inputs, got {}",
                self.name,
                self.inputs.len(),
                inputs.len()
            )));
        }
        let mut values: HashMap<Source, (Tensor, Option<Tensor>)> = HashMap::new();
        for (i, x) in inputs.iter().enumerate() {
            values.insert(Source::Input(i), (x.clone(), masks.get(i).cloned().flatten()));
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
        for (n, node) in self.nodes.iter().enumerate() {
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
            for (o, (t, m)) in outs
                .into_iter()
                .zip(out_masks.into_iter().chain(std::iter::repeat(None)))
                .enumerate()
            {
                values.insert(Source::Node(n, o), (t, m));
            }
        }
        self.outputs
            .iter()
            .map(|s| {
                values
                    .get(s)
                    .map(|(t, _)| t.clone())
                    .ok_or_else(|| invalid(format!("model output {s:?} missing")))
            })
            .collect()
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

    /// One gradient step on one batch; returns the batch's loss and metrics.
    pub fn train_on_batch(&mut self, x: &Tensor, y: &Tensor) -> Result<Logs> {
        self.compiled()?;
        let mut rng = self.rng.fork();
        let pred = self.forward(x, true, &mut rng)?;
        let compiled = self.compiled.as_ref().expect("checked above");
        let loss = compiled.loss.compute(&pred, y)?;
        let loss_value = loss.item()?;
        let mut logs = vec![("loss".to_string(), loss_value as f64)];
        for m in &compiled.metrics {
            let (correct, total) = m.count(pred.data(), pred.shape(), y.data());
            logs.push((m.key().to_string(), correct / total.max(1.0)));
        }
        if !loss_value.is_finite() {
            return Ok(logs);
        }
        let mut grads = backprop::backward(&loss)?;
        let mut leaves = Vec::new();
        self.visit_params(&mut |_, p, _| leaves.push(p.get()));
        // Drop the graph so the weights are uniquely owned again and update in place.
        drop((loss, pred));
        let grads: Vec<Option<Vec<f32>>> = leaves.iter().map(|t| grads.remove(t)).collect();
        drop(leaves);
        // Take the compile state out so weights can be visited while the optimizer mutates.
        let mut compiled = self.compiled.take().expect("checked above");
        compiled.optimizer.begin_step();
        let mut result = Ok(());
        let mut index = 0;
        self.visit_params(&mut |_, p, _| {
            let i = index;
            index += 1;
            if let (true, Some(g), Ok(())) = (
                compiled.trainable.contains(&(p as *const Param as usize)),
                &grads[i],
                &result,
            ) {
                result = p.update(|data| compiled.optimizer.update(i, data, g));
            }
        });
        self.compiled = Some(compiled);
        result.map(|_| logs)
    }

    /// Predictions for `x`, in batches, without recording gradients.
    pub fn predict(&self, x: &Tensor, batch_size: usize) -> Result<Tensor> {
        self.check_input(x)?;
        let n = x.shape()[0];
        let batch_size = batch_size.max(1);
        let mut unused = Rng::new(0);
        if n <= batch_size {
            return no_grad(|| self.forward(x, false, &mut unused));
        }
        let mut out = Vec::new();
        let mut out_shape = Vec::new();
        for start in (0..n).step_by(batch_size) {
            let end = (start + batch_size).min(n);
            let y = no_grad(|| self.forward(&slice_rows(x, start, end), false, &mut unused))?;
            out_shape = y.shape().to_vec();
            out.extend_from_slice(y.data());
        }
        out_shape[0] = n;
        Tensor::new(out, &out_shape)
    }

    /// Mean loss and metrics over `x`, `y`.
    pub fn evaluate(&self, x: &Tensor, y: &Tensor, batch_size: usize) -> Result<Logs> {
        self.check_input(x)?;
        self.check_targets(x, y)?;
        let n = x.shape()[0];
        let compiled = self.compiled_ref()?;
        let mut loss_sum = 0.0;
        let mut counts = vec![(0.0, 0.0); compiled.metrics.len()];
        let mut unused = Rng::new(0);
        for start in (0..n).step_by(batch_size.max(1)) {
            let end = (start + batch_size.max(1)).min(n);
            let (xb, yb) = (slice_rows(x, start, end), slice_rows(y, start, end));
            let pred = no_grad(|| self.forward(&xb, false, &mut unused))?;
            let loss = no_grad(|| compiled.loss.compute(&pred, &yb))?.item()?;
            loss_sum += loss as f64 * (end - start) as f64;
            for (m, c) in compiled.metrics.iter().zip(&mut counts) {
                let (a, b) = m.count(pred.data(), pred.shape(), yb.data());
                c.0 += a;
                c.1 += b;
            }
        }
        let mut logs = vec![("loss".to_string(), loss_sum / n.max(1) as f64)];
        for (m, (a, b)) in compiled.metrics.iter().zip(counts) {
            logs.push((m.key().to_string(), a / f64::max(b, 1.0)));
        }
        Ok(logs)
    }

    /// Checks that `y` has one target per sample of `x` and fits the loss.
    pub fn check_targets(&self, x: &Tensor, y: &Tensor) -> Result<()> {
        if y.rank() == 0 || y.shape()[0] != x.shape()[0] {
            return Err(invalid(format!(
                "x has {} samples but y has {}; expected the same number of samples",
                x.shape()[0],
                y.shape().first().copied().unwrap_or(0)
            )));
        }
        if self.output_shapes.len() != 1 {
            return Err(invalid(format!(
                "training needs a single-output model; '{}' has {}",
                self.name,
                self.output_shapes.len()
            )));
        }
        let mut pred_shape = vec![x.shape()[0]];
        pred_shape.extend_from_slice(&self.output_shapes[0]);
        self.compiled_ref()?.loss.check_targets(&pred_shape, y)
    }

    /// Current weights as `(name, shape, values)`.
    pub fn get_weights(&self) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        let mut out = Vec::new();
        self.visit_params(&mut |name, p, _| out.push((name.to_string(), p.shape(), p.get().to_vec())));
        out
    }

    /// Replaces every weight, in [`Self::get_weights`] order.
    pub fn set_weights(&self, weights: &[Vec<f32>]) -> Result<()> {
        let current = self.get_weights();
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

    /// The description that rebuilds this model (new layers, not references), as stored in files.
    pub fn to_json(&self) -> Value {
        let layers: Vec<Value> = self
            .layers
            .iter()
            .map(|cell| {
                let l = cell.read();
                let mut config = l.config();
                if !cell.trainable() {
                    config["trainable"] = json!(false);
                }
                json!({ "className": l.class_name(), "config": config })
            })
            .collect();
        let mut v = json!({ "className": if self.functional { "Functional" } else { "Sequential" }, "name": self.name, "layers": layers });
        if self.functional {
            let src = |s: &Source| match *s {
                Source::Input(i) => json!([-1, i]),
                Source::Node(n, o) => json!([n, o]),
            };
            v["inputs"] = json!(self.inputs);
            v["nodes"] = self
                .nodes
                .iter()
                .map(|n| json!({"layer": n.layer, "inputs": n.inputs.iter().map(src).collect::<Vec<_>>()}))
                .collect();
            v["outputs"] = self.outputs.iter().map(src).collect();
        } else if let Some(s) = self.input_shape() {
            v["inputShape"] = json!(s);
        }
        v
    }

    /// The compile settings as JSON (loss, optimizer with its learning rate, metrics).
    pub fn compile_json(&self) -> Option<Value> {
        self.compiled.as_ref().map(|c| {
            json!({
                "loss": c.loss.to_json(),
                "optimizer": c.optimizer.to_json(),
                "metrics": c.metrics.iter().map(|m| m.key()).collect::<Vec<_>>(),
            })
        })
    }

    /// A Keras-like table of layers, output shapes and parameter counts.
    pub fn summary(&self) -> String {
        let mut lines = vec![format!("Model: \"{}\"", self.name)];
        let rule = "─".repeat(72);
        lines.push(rule.clone());
        lines.push(format!("{:<34}{:<24}{:>14}", "Layer (type)", "Output Shape", "Param #"));
        lines.push(rule.clone());
        let (mut total, mut trainable) = (0, 0);
        for cell in &self.layers {
            let layer = cell.read();
            let mut count = 0;
            let mut train = 0;
            let mut count_param = |_: &str, p: &Param, t: bool| {
                count += numel(&p.shape());
                if t && p.trainable {
                    train += numel(&p.shape());
                }
            };
            match layer.as_model() {
                Some(inner) => inner.visit_params(&mut count_param),
                None => layer
                    .params()
                    .into_iter()
                    .for_each(|p| count_param("", p, cell.trainable())),
            }
            total += count;
            trainable += train;
            let shown = cell.built_shapes().map_or("?".to_string(), |(_, outs)| {
                let each: Vec<String> = outs
                    .iter()
                    .map(|s| {
                        format!(
                            "(None, {})",
                            s.iter().map(usize::to_string).collect::<Vec<_>>().join(", ")
                        )
                    })
                    .collect();
                each.join(", ")
            });
            lines.push(format!(
                "{:<34}{:<24}{:>14}",
                format!("{} ({})", layer.name(), layer.class_name()),
                shown,
                count
            ));
        }
        lines.push(rule);
        lines.push(format!("Total params: {total}"));
        lines.push(format!("Trainable params: {trainable}"));
        lines.push(format!("Non-trainable params: {}", total - trainable));
        lines.join("\n")
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
