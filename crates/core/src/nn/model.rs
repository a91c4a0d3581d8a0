//! The sequential model: a stack of layers, compiled with a loss, an optimizer and metrics.

use serde_json::{json, Value};

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

/// What `compile` configured.
pub struct Compiled {
    /// The loss.
    pub loss: Loss,
    /// The optimizer and its state.
    pub optimizer: Optimizer,
    /// Extra metrics.
    pub metrics: Vec<Metric>,
}

/// A linear stack of layers.
pub struct Sequential {
    name: String,
    layers: Vec<Box<dyn Layer>>,
    input_shape: Option<Vec<usize>>,
    output_shape: Option<Vec<usize>>,
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

impl Sequential {
    /// Builds from `{ "name"?, "layers": [{ "className", "config" }, ...] }`; layers get unique
    /// Keras-style names, and the model is built at once when the first layer has `inputShape`.
    pub fn from_config(config: &Value, seed: u64) -> Result<Sequential> {
        let obj = config
            .as_object()
            .ok_or_else(|| Error::Invalid(format!("model config must be an object, got {config}")))?;
        let specs = obj
            .get("layers")
            .and_then(Value::as_array)
            .ok_or_else(|| Error::Invalid("model config needs a 'layers' array".into()))?;
        if let Some(key) = obj
            .keys()
            .find(|k| !["name", "layers", "inputShape"].contains(&k.as_str()))
        {
            return Err(Error::Invalid(format!(
                "sequential: unknown option '{key}'; expected one of: name, layers"
            )));
        }
        let mut model = Sequential {
            name: obj
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("sequential")
                .to_string(),
            layers: Vec::new(),
            input_shape: None,
            output_shape: None,
            compiled: None,
            rng: Rng::new(seed),
        };
        let mut used_names: Vec<String> = Vec::new();
        let mut first_input_shape = None;
        for (i, spec) in specs.iter().enumerate() {
            let class = spec
                .get("className")
                .and_then(Value::as_str)
                .ok_or_else(|| Error::Invalid(format!("layer {i}: expected {{ className, config }}, got {spec}")))?;
            let mut cfg = spec.get("config").cloned().unwrap_or_else(|| json!({}));
            if !cfg.is_object() {
                return Err(Error::Invalid(format!(
                    "layer {i} ({class}): config must be an object, got {cfg}"
                )));
            }
            let given = cfg.get("name").and_then(Value::as_str).map(str::to_string);
            let name = match given {
                Some(n) if used_names.contains(&n) => {
                    return Err(Error::Invalid(format!(
                        "layer name '{n}' is used twice; names must be unique"
                    )))
                }
                Some(n) => n,
                None => {
                    let base = layers::base_name(class);
                    (0..)
                        .map(|k| {
                            if k == 0 {
                                base.to_string()
                            } else {
                                format!("{base}_{k}")
                            }
                        })
                        .find(|n| !used_names.contains(n))
                        .expect("an unused name exists")
                }
            };
            cfg["name"] = Value::String(name.clone());
            let (layer, common) =
                layers::from_config(class, &cfg).map_err(|e| Error::Invalid(format!("layer {i}: {e}")))?;
            if i == 0 {
                first_input_shape = common.input_shape.clone();
            }
            used_names.push(name);
            model.layers.push(layer);
        }
        if model.layers.is_empty() {
            return Err(Error::Invalid("a sequential model needs at least one layer".into()));
        }
        if let Some(shape) = first_input_shape {
            model.build(&shape)?;
        }
        Ok(model)
    }

    /// Creates every layer's weights for samples of `input_shape` (no batch axis).
    pub fn build(&mut self, input_shape: &[usize]) -> Result<()> {
        if input_shape.is_empty() || numel(input_shape) == 0 {
            return Err(Error::shape(
                "build",
                "a non-empty input shape without the batch axis",
                input_shape,
            ));
        }
        let mut shape = input_shape.to_vec();
        for layer in &mut self.layers {
            shape = layer
                .build(&shape, &mut self.rng)
                .map_err(|e| Error::Invalid(format!("building '{}': {e}", layer.name())))?;
        }
        self.input_shape = Some(input_shape.to_vec());
        self.output_shape = Some(shape);
        Ok(())
    }

    /// Whether weights exist.
    pub fn is_built(&self) -> bool {
        self.input_shape.is_some()
    }

    /// Sample shape the model takes (no batch axis).
    pub fn input_shape(&self) -> Option<&[usize]> {
        self.input_shape.as_deref()
    }

    /// Sample shape the model returns (no batch axis).
    pub fn output_shape(&self) -> Option<&[usize]> {
        self.output_shape.as_deref()
    }

    /// Sets the loss, optimizer and metrics: `{ "optimizer", "loss", "metrics"? }`.
    pub fn compile(&mut self, config: &Value) -> Result<()> {
        let obj = config
            .as_object()
            .ok_or_else(|| Error::Invalid(format!("compile expects an object, got {config}")))?;
        if let Some(key) = obj
            .keys()
            .find(|k| !["optimizer", "loss", "metrics"].contains(&k.as_str()))
        {
            return Err(Error::Invalid(format!(
                "compile: unknown option '{key}'; expected one of: loss, metrics, optimizer"
            )));
        }
        let loss = Loss::parse(
            obj.get("loss")
                .ok_or_else(|| Error::Invalid("compile: option 'loss' is required".into()))?,
        )?;
        let optimizer = Optimizer::parse(obj.get("optimizer").unwrap_or(&json!("rmsprop")))?;
        let metrics = match obj.get("metrics") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(list)) => list.iter().map(|m| Metric::parse(m, &loss)).collect::<Result<_>>()?,
            Some(other) => {
                return Err(Error::Invalid(format!(
                    "compile: metrics must be an array of names, got {other}"
                )))
            }
        };
        self.compiled = Some(Compiled {
            loss,
            optimizer,
            metrics,
        });
        Ok(())
    }

    /// The compile settings, or an error telling the user to compile.
    pub fn compiled(&mut self) -> Result<&mut Compiled> {
        self.compiled.as_mut().ok_or_else(|| {
            Error::Invalid("the model must be compiled before training or evaluation; call compile() first".into())
        })
    }

    /// The compile settings, read-only.
    pub fn compiled_ref(&self) -> Result<&Compiled> {
        self.compiled.as_ref().ok_or_else(|| {
            Error::Invalid("the model must be compiled before training or evaluation; call compile() first".into())
        })
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
        let Some(want) = self.input_shape.as_deref() else {
            return Err(Error::Invalid(
                "the model is not built yet; give the first layer an inputShape".into(),
            ));
        };
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

    /// Runs the layers (`rng` feeds dropout in training mode).
    pub fn forward(&self, x: &Tensor, training: bool, rng: &mut Rng) -> Result<Tensor> {
        let mut ctx = ForwardCtx::new(training, rng);
        let mut h = x.clone();
        for layer in &self.layers {
            h = layer.forward(&h, &mut ctx)?;
        }
        Ok(h)
    }

    /// All weights in layer order.
    pub fn params(&self) -> Vec<&Param> {
        self.layers.iter().flat_map(|l| l.params()).collect()
    }

    /// The layers.
    pub fn layers(&self) -> &[Box<dyn Layer>] {
        &self.layers
    }

    /// One gradient step on one batch; returns the batch's loss and metrics.
    pub fn train_on_batch(&mut self, x: &Tensor, y: &Tensor) -> Result<Logs> {
        self.compiled()?;
        let mut rng = self.rng.fork();
        let pred = self.forward(x, true, &mut rng)?;
        let compiled = self.compiled.as_mut().expect("checked above");
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
        // Drop the graph so the weights are uniquely owned again and update in place.
        let leaves: Vec<Tensor> = self.params().iter().map(|p| p.get()).collect();
        drop((loss, pred));
        let grads: Vec<Option<Vec<f32>>> = leaves.iter().map(|t| grads.remove(t)).collect();
        drop(leaves);
        let params: Vec<&Param> = self.layers.iter().flat_map(|l| l.params()).collect();
        let optimizer = &mut self.compiled.as_mut().expect("checked above").optimizer;
        optimizer.begin_step();
        for (i, (p, g)) in params.iter().zip(&grads).enumerate() {
            if let (true, Some(g)) = (p.trainable, g) {
                p.update(|data| optimizer.update(i, data, g))?;
            }
        }
        Ok(logs)
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
        let mut loss_sum = 0.0;
        let compiled = self.compiled_ref()?;
        let metrics = &compiled.metrics;
        let mut unused = Rng::new(0);
        let mut counts = vec![(0.0, 0.0); metrics.len()];
        for start in (0..n).step_by(batch_size.max(1)) {
            let end = (start + batch_size.max(1)).min(n);
            let (xb, yb) = (slice_rows(x, start, end), slice_rows(y, start, end));
            let pred = no_grad(|| self.forward(&xb, false, &mut unused))?;
            let loss = no_grad(|| compiled.loss.compute(&pred, &yb))?.item()?;
            loss_sum += loss as f64 * (end - start) as f64;
            for (m, c) in metrics.iter().zip(&mut counts) {
                let (a, b) = m.count(pred.data(), pred.shape(), yb.data());
                c.0 += a;
                c.1 += b;
            }
        }
        let mut logs = vec![("loss".to_string(), loss_sum / n.max(1) as f64)];
        for (m, (a, b)) in metrics.iter().zip(counts) {
            logs.push((m.key().to_string(), a / f64::max(b, 1.0)));
        }
        Ok(logs)
    }

    /// Checks that `y` has one target per sample of `x` and fits the loss.
    pub fn check_targets(&self, x: &Tensor, y: &Tensor) -> Result<()> {
        if y.rank() == 0 || y.shape()[0] != x.shape()[0] {
            return Err(Error::Invalid(format!(
                "x has {} samples but y has {}; expected the same number of samples",
                x.shape()[0],
                y.shape().first().copied().unwrap_or(0)
            )));
        }
        let mut pred_shape = vec![x.shape()[0]];
        pred_shape.extend_from_slice(self.output_shape.as_deref().unwrap_or(&[]));
        self.compiled_ref()?.loss.check_targets(&pred_shape, y)
    }

    /// Current weights as `(name, shape, values)`.
    pub fn get_weights(&self) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        self.params()
            .iter()
            .map(|p| (p.name.clone(), p.shape(), p.get().to_vec()))
            .collect()
    }

    /// Replaces every weight, in [`Self::get_weights`] order.
    pub fn set_weights(&self, weights: &[Vec<f32>]) -> Result<()> {
        let params = self.params();
        if weights.len() != params.len() {
            return Err(Error::Invalid(format!(
                "setWeights: the model has {} weight tensors, got {}",
                params.len(),
                weights.len()
            )));
        }
        for w in weights {
            if let Some(i) = w.iter().position(|v| !v.is_finite()) {
                return Err(Error::Invalid(format!("setWeights: non-finite value at index {i}")));
            }
        }
        for (p, w) in params.iter().zip(weights) {
            p.set(w.clone())?;
        }
        Ok(())
    }

    /// The topology (and compile settings) as JSON, as stored in model files.
    pub fn to_json(&self) -> Value {
        let layers: Vec<Value> = self
            .layers
            .iter()
            .map(|l| json!({ "className": l.class_name(), "config": l.config() }))
            .collect();
        let mut v = json!({ "name": self.name, "layers": layers });
        if let Some(s) = &self.input_shape {
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
        let mut shape = self.input_shape.clone();
        let mut total = 0;
        let mut trainable = 0;
        for layer in &self.layers {
            let count: usize = layer.params().iter().map(|p| numel(&p.shape())).sum();
            let train: usize = layer
                .params()
                .iter()
                .filter(|p| p.trainable)
                .map(|p| numel(&p.shape()))
                .sum();
            total += count;
            trainable += train;
            shape = shape.and_then(|s| output_shape_of(layer.as_ref(), &s));
            let shown = shape.as_ref().map_or("?".to_string(), |s| {
                let dims: Vec<String> = s.iter().map(usize::to_string).collect();
                format!("(None, {})", dims.join(", "))
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

/// Output shape of a built layer, found by a zero-sized dry run of `build` on a scratch copy.
fn output_shape_of(layer: &dyn Layer, input: &[usize]) -> Option<Vec<usize>> {
    let (mut scratch, _) = layers::from_config(layer.class_name(), &layer.config()).ok()?;
    scratch.build(input, &mut Rng::new(0)).ok()
}
