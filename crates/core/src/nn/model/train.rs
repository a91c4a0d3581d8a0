//! Training, prediction and evaluation on whole batches (the `fit` loop in `fit.rs` drives these).
//! A batch holds one tensor per model input and one target per output; the loss that trains is
//! the weighted sum of each output's loss, optionally weighted per sample.

use super::*;
use crate::nn::param::with_only_trainable;
use rayon::prelude::*;

/// One batch: a tensor per model input, a target per model output, and optionally one weight
/// per sample (`sampleWeight`, `classWeight`). The first axis of each is the sample axis.
#[derive(Clone, Debug)]
pub struct Batch {
    /// One tensor per model input.
    pub xs: Vec<Tensor>,
    /// One target per model output.
    pub ys: Vec<Tensor>,
    /// One weight per sample.
    pub sample_weight: Option<Vec<f32>>,
}

impl Batch {
    /// A single-input, single-output batch.
    pub fn single(x: Tensor, y: Tensor) -> Batch {
        Batch {
            xs: vec![x],
            ys: vec![y],
            sample_weight: None,
        }
    }

    /// Number of samples.
    pub fn rows(&self) -> usize {
        self.xs.first().and_then(|x| x.shape().first().copied()).unwrap_or(0)
    }

    /// Rows `idx` of every tensor (and weight).
    pub fn gather(&self, idx: &[usize]) -> Batch {
        Batch {
            xs: self.xs.iter().map(|t| gather_rows(t, idx)).collect(),
            ys: self.ys.iter().map(|t| gather_rows(t, idx)).collect(),
            sample_weight: self.sample_weight.as_ref().map(|w| idx.iter().map(|&i| w[i]).collect()),
        }
    }

    /// Rows `start..end` of every tensor (and weight).
    pub fn slice(&self, start: usize, end: usize) -> Batch {
        Batch {
            xs: self.xs.iter().map(|t| slice_rows(t, start, end)).collect(),
            ys: self.ys.iter().map(|t| slice_rows(t, start, end)).collect(),
            sample_weight: self.sample_weight.as_ref().map(|w| w[start..end].to_vec()),
        }
    }
}

/// Bytes of activations per inference chunk (see `Model::forward_in_chunks`):
/// `CORTEX_PREDICT_CHUNK_BYTES`, default 1 MiB (half a Sapphire Rapids or Zen 4 core's L2;
/// measured best of 0.5 / 1 / 2 / 4 MiB on the convnet); 0 turns chunking off.
fn chunk_bytes() -> u64 {
    static BYTES: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *BYTES.get_or_init(|| {
        std::env::var("CORTEX_PREDICT_CHUNK_BYTES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1 << 20)
    })
}

impl Model {
    /// One gradient step on one single-input, single-output batch; returns its loss and metrics.
    pub fn train_on_batch(&mut self, x: &Tensor, y: &Tensor) -> Result<Logs> {
        self.train_step(&Batch::single(x.clone(), y.clone()))
    }

    /// One gradient step on one batch; returns the batch's loss (and each output's, with
    /// several outputs) and metrics.
    pub fn train_step(&mut self, batch: &Batch) -> Result<Logs> {
        self.compiled()?;
        self.check_activation_memory("training", batch.rows(), 2)?;
        let mut rng = self.rng.fork();
        if self.compiled.as_ref().is_some_and(|c| c.gpu.is_some()) {
            if batch.xs.len() != 1 || batch.ys.len() != 1 || batch.sample_weight.is_some() {
                return Err(invalid(
                    "sample weights, class weights and several inputs or outputs train on the CPU only; \
                     compile with device 'cpu'",
                ));
            }
            let mut compiled = self.compiled.take().expect("checked above");
            let gpu = compiled.gpu.as_mut().expect("checked above");
            let gpu = gpu.get_mut().unwrap_or_else(|e| e.into_inner());
            let logs = gpu.train_on_batch(
                self,
                &batch.xs[0],
                &batch.ys[0],
                &mut compiled.optimizer,
                &compiled.metrics[0],
                &mut rng,
            );
            self.compiled = Some(compiled);
            return logs;
        }
        self.sync_from_device()?;
        // Frozen layers' weights are constants for this step: no gradient is computed for them.
        let trainable = &self.compiled_ref()?.trainable;
        let (preds, scored) = with_only_trainable(trainable, || -> Result<_> {
            let preds = self.run(&batch.xs, &[], true, &mut rng)?;
            let scored = self.score(&preds, batch)?;
            Ok((preds, scored))
        })?;
        let logs = scored.logs(self);
        let loss_value = logs[0].1;
        if !loss_value.is_finite() {
            return Ok(logs);
        }
        let loss = scored.total;
        let mut grads = backprop::backward(&loss)?;
        let mut leaves = Vec::new();
        self.visit_params(&mut |_, p, _| leaves.push(p.get()));
        // Drop the graph so the weights are uniquely owned again and update in place.
        drop((loss, preds));
        let on_device = self.weights_device() == crate::Device::Gpu;
        if on_device {
            // GPU gradients stay there: clipped and applied by the optimizer's kernels in place.
            let grads = leaves
                .iter()
                .map(|t| grads.tensor(t).transpose())
                .collect::<Result<Vec<_>>>()?;
            drop(leaves);
            let grads = self.clip_device_gradients(grads)?;
            return self.apply_device_gradients(grads).map(|_| logs);
        }
        let grads: Vec<Option<Vec<f32>>> = leaves.iter().map(|t| grads.remove(t)).collect();
        drop(leaves);
        self.apply_gradients(grads).map(|_| logs)
    }

    /// The optimizer's clipping of one step's GPU gradients (one per weight, in `visit_params`
    /// order), on the device; gradients of weights that do not train take no part, as in
    /// [`Self::apply_gradients`]. A host gradient among them clips them all on the host.
    pub(crate) fn clip_device_gradients(&self, grads: Vec<Option<Tensor>>) -> Result<Vec<Option<Tensor>>> {
        let c = self.compiled_ref()?;
        if c.optimizer.clip().is_none() {
            return Ok(grads);
        }
        let mut trains = Vec::with_capacity(grads.len());
        self.visit_params(&mut |_, p, _| trains.push(c.trainable.contains(&crate::nn::param::param_address(p))));
        let kept: Vec<Option<Tensor>> = grads.into_iter().zip(&trains).map(|(g, &t)| g.filter(|_| t)).collect();
        if kept.iter().flatten().all(|g| g.gpu_tensor().is_some()) {
            let mut device: Vec<Option<cortex_wgpu::GpuTensor>> =
                kept.iter().map(|g| g.as_ref().and_then(Tensor::gpu_tensor)).collect();
            c.optimizer.clip_device_gradients(&mut device)?;
            return device
                .into_iter()
                .zip(kept)
                .map(|(d, g)| {
                    d.zip(g)
                        .map(|(d, g)| {
                            d.reshape(g.shape())
                                .map(Tensor::from_gpu)
                                .map_err(crate::device::gpu_err)
                        })
                        .transpose()
                })
                .collect();
        }
        let mut host = kept
            .iter()
            .map(|g| g.as_ref().map(|g| g.host_values().map(<[f32]>::to_vec)).transpose())
            .collect::<Result<Vec<_>>>()?;
        c.optimizer.clip_gradients(&mut host);
        host.into_iter()
            .zip(kept)
            .map(|(h, g)| h.zip(g).map(|(h, g)| Tensor::new(h, g.shape())).transpose())
            .collect()
    }

    /// Clips (the optimizer's `clipnorm` / `clipvalue`) and applies one gradient per weight, in
    /// `visit_params` order; weights that do not train or got no gradient are left alone.
    pub(crate) fn apply_gradients(&mut self, mut grads: Vec<Option<Vec<f32>>>) -> Result<()> {
        self.compiled_ref()?.optimizer.clip_gradients(&mut grads);
        // Host gradients as (flat) host tensors: the update runs on the host.
        let grads = grads
            .into_iter()
            .map(|g| {
                g.map(|g| {
                    let n = g.len();
                    Tensor::new(g, &[n])
                })
                .transpose()
            })
            .collect::<Result<Vec<_>>>()?;
        self.apply_device_gradients(grads)
    }

    /// Applies one gradient tensor per weight (`None`: no gradient) with the optimizer's device
    /// kernels for GPU weights, on the host for the
    /// others.
    pub(crate) fn apply_device_gradients(&mut self, grads: Vec<Option<Tensor>>) -> Result<()> {
        self.compiled()?;
        // Take the compile state out so weights can be visited while the optimizer mutates.
        let mut compiled = self.compiled.take().expect("checked above");
        compiled.optimizer.begin_step();
        let mut result = Ok(());
        let mut index = 0;
        self.visit_params(&mut |_, p, _| {
            let i = index;
            index += 1;
            let (true, Some(g), Ok(())) = (
                compiled.trainable.contains(&crate::nn::param::param_address(p)),
                &grads[i],
                &result,
            ) else {
                return;
            };
            let optimizer = &mut compiled.optimizer;
            result = match (p.device(), g.gpu_tensor(), p.row_signs()) {
                (crate::Device::Gpu, Some(gb), None) => p.update_on_device(|w| optimizer.update_on_device(i, w, &gb)),
                _ => g
                    .host_values()
                    .and_then(|gh| p.update(|data| optimizer.update(i, data, gh)).and_then(|r| r)),
            };
        });
        self.compiled = Some(compiled);
        result
    }

    /// The losses of `preds` against the batch's targets, and the metric counts.
    pub(crate) fn score(&self, preds: &[Tensor], batch: &Batch) -> Result<Scored> {
        let c = self.compiled_ref()?;
        if preds.len() != c.losses.len() || batch.ys.len() != c.losses.len() {
            return Err(invalid(format!(
                "model '{}' has {} outputs but got {} targets",
                self.name,
                c.losses.len(),
                batch.ys.len()
            )));
        }
        let weights = batch.sample_weight.as_deref();
        let mut total: Option<Tensor> = None;
        let mut per_output = Vec::with_capacity(preds.len());
        let mut counts = Vec::new();
        for (o, (pred, y)) in preds.iter().zip(&batch.ys).enumerate() {
            let y = &y.to(pred.device())?;
            let loss = c.losses[o].compute_weighted(pred, y, weights)?;
            per_output.push(loss.item()? as f64);
            // A single output's loss trains as it is (no extra op: bit-identical to before).
            let weighted = match c.loss_weights[o] {
                1.0 => loss,
                w => crate::ops::scale(&loss, w)?,
            };
            total = Some(match total {
                None => weighted,
                Some(t) => crate::ops::add(&t, &weighted)?,
            });
            for m in &c.metrics[o] {
                counts.push(m.count(pred.data(), pred.shape(), y.data()));
            }
        }
        let total = total.ok_or_else(|| invalid("a model needs at least one output"))?;
        let value = total.item()? as f64;
        Ok(Scored {
            total,
            value,
            per_output,
            counts,
        })
    }

    /// With an optimizer's `useEma`, replaces the trained weights by their moving averages
    /// (Keras does this when `fit` ends). Without it, does nothing.
    pub fn finalize_ema(&mut self) -> Result<()> {
        let Some(compiled) = self.compiled.take() else {
            return Ok(());
        };
        let mut result = Ok(());
        let mut index = 0;
        self.visit_params(&mut |_, p, _| {
            if result.is_ok() && compiled.trainable.contains(&crate::nn::param::param_address(p)) {
                result = compiled.optimizer.ema_values(index).and_then(|average| match average {
                    Some(average) if average.len() == p.get().len() => p.update(|data| data.copy_from_slice(&average)),
                    Some(_) => Err(invalid("useEma: an average does not match its weight's size")),
                    None => Ok(()),
                });
            }
            index += 1;
        });
        self.compiled = Some(compiled);
        result
    }

    /// Inference on one batch: on the GPU when the model is attached to one, else on the CPU.
    fn predict_batch(&self, x: &Tensor) -> Result<Tensor> {
        match self.compiled.as_ref().and_then(|c| c.gpu.as_ref()) {
            Some(gpu) => gpu.lock().unwrap_or_else(|e| e.into_inner()).predict(self, x),
            // Predictions are host data (GPU weights leave them on the device).
            None => {
                self.sync_from_device()?;
                self.forward_in_chunks(x)?.to(crate::Device::Cpu)
            }
        }
    }

    /// Inference forward on the CPU in chunks of rows whose activations fit in a core's L2
    /// cache, the chunks spread over the pool. Layer by layer over the whole batch, every
    /// activation of a batch-256 convnet went out to memory and came back (the first conv's
    /// output alone is 22 MB); a chunk of a few images keeps its activations in cache from
    /// one layer to the next. Rows are independent in inference, so the result is the same.
    fn forward_in_chunks(&self, x: &Tensor) -> Result<Tensor> {
        let n = x.shape().first().copied().unwrap_or(0);
        let per_row = self.activation_bytes_per_sample().max(1);
        let chunk = (chunk_bytes() / per_row).max(1) as usize;
        // GPU weights: one forward of the whole batch (the device parallelises it).
        let on_host = self.weights_device() == crate::Device::Cpu;
        if !on_host || chunk_bytes() == 0 || n < 2 * chunk || crate::threads::num_threads() < 2 {
            return no_grad(|| self.forward(x, false, &mut Rng::new(0)));
        }
        let starts: Vec<usize> = (0..n).step_by(chunk).collect();
        let outs = starts
            .par_iter()
            .map(|&s| no_grad(|| self.forward(&slice_rows(x, s, (s + chunk).min(n)), false, &mut Rng::new(0))))
            .collect::<Result<Vec<Tensor>>>()?;
        let mut shape = outs[0].shape().to_vec();
        shape[0] = n;
        let mut data = alloc::try_with_capacity("the predictions", numel(&shape))?;
        for o in &outs {
            data.extend_from_slice(o.data());
        }
        Tensor::new(data, &shape)
    }

    /// Bytes of every layer output of one sample (an estimate of inference memory per sample).
    pub fn activation_bytes_per_sample(&self) -> u64 {
        alloc::activation_bytes(self.shapes.values())
    }

    /// Refuses a batch whose activations cannot fit in available memory (see
    /// [`alloc::check_activations`]). `copies` is how many activation-sized buffers a sample
    /// keeps alive: 1 for inference; a training step also keeps gradients.
    pub fn check_activation_memory(&self, what: &str, batch: usize, copies: u64) -> Result<()> {
        alloc::check_activations(what, batch, self.activation_bytes_per_sample().saturating_mul(copies))
    }

    /// Predictions for `x`, in batches, without recording gradients.
    pub fn predict(&self, x: &Tensor, batch_size: usize) -> Result<Tensor> {
        self.check_input(x)?;
        let n = x.shape()[0];
        let batch_size = batch_size.max(1);
        self.check_activation_memory("predict", batch_size.min(n), 1)?;
        if n <= batch_size {
            return self.predict_batch(x);
        }
        let out_len = self.output_shape().map(|s| numel(s).saturating_mul(n)).unwrap_or(0);
        let mut out = alloc::try_with_capacity("the predictions", out_len)?;
        let mut out_shape = Vec::new();
        for start in (0..n).step_by(batch_size) {
            let end = (start + batch_size).min(n);
            let y = self.predict_batch(&slice_rows(x, start, end))?;
            out_shape = y.shape().to_vec();
            out.extend_from_slice(y.data());
        }
        out_shape[0] = n;
        Tensor::new(out, &out_shape)
    }

    /// Mean loss and metrics over `x`, `y`.
    pub fn evaluate(&self, x: &Tensor, y: &Tensor, batch_size: usize) -> Result<Logs> {
        self.evaluate_batch(&Batch::single(x.clone(), y.clone()), batch_size)
    }

    /// Mean losses and metrics over a batch of any size, in slices of `batch_size`.
    pub fn evaluate_batch(&self, data: &Batch, batch_size: usize) -> Result<Logs> {
        self.check_batch(data)?;
        let n = data.rows();
        let step = batch_size.max(1);
        self.check_activation_memory("evaluate", step.min(n), 1)?;
        let mut acc = Evaluation::default();
        for start in (0..n).step_by(step) {
            acc.add(self, &data.slice(start, (start + step).min(n)))?;
        }
        acc.logs(self)
    }

    /// Predictions of every output for a batch of any size, in slices of `batch_size`.
    pub fn predict_many(&self, xs: &[Tensor], batch_size: usize) -> Result<Vec<Tensor>> {
        if xs.len() == 1 && self.output_shapes.len() == 1 {
            return Ok(vec![self.predict(&xs[0], batch_size)?]);
        }
        self.check_inputs(xs)?;
        let n = xs[0].shape()[0];
        let step = batch_size.max(1);
        self.check_activation_memory("predict", step.min(n), 1)?;
        let mut parts: Vec<Vec<Tensor>> = vec![Vec::new(); self.output_shapes.len()];
        for start in (0..n).step_by(step) {
            let end = (start + step).min(n);
            let slice: Vec<Tensor> = xs.iter().map(|x| slice_rows(x, start, end)).collect();
            let outs = no_grad(|| self.run(&slice, &[], false, &mut Rng::new(0)))?;
            for (p, o) in parts.iter_mut().zip(outs) {
                p.push(o);
            }
        }
        parts.into_iter().map(|p| concat_rows(&p)).collect()
    }

    /// Checks one tensor per input: `[batch, ...input shape]`, the same batch, finite values.
    pub fn check_inputs(&self, xs: &[Tensor]) -> Result<()> {
        if xs.len() == 1 && self.inputs.len() <= 1 {
            return self.check_input(&xs[0]);
        }
        if xs.len() != self.inputs.len() {
            return Err(invalid(format!(
                "model '{}' takes {} inputs ({}), got {}",
                self.name,
                self.inputs.len(),
                self.input_names().join(", "),
                xs.len()
            )));
        }
        let names = self.input_names();
        let n = xs[0].shape().first().copied().unwrap_or(0);
        for ((x, want), name) in xs.iter().zip(&self.inputs).zip(&names) {
            if x.rank() < 2 || &x.shape()[1..] != want.as_slice() || x.shape()[0] != n {
                let mut expected = vec![n];
                expected.extend_from_slice(want);
                return Err(Error::shape(
                    &format!("model '{}' input '{name}'", self.name),
                    expected,
                    x.shape(),
                ));
            }
            x.check_finite(&format!("input '{name}'"))?;
        }
        Ok(())
    }

    /// Checks a whole batch: its inputs, one target per output that fits that output's loss,
    /// and one finite, non-negative weight per sample.
    pub fn check_batch(&self, batch: &Batch) -> Result<()> {
        self.check_inputs(&batch.xs)?;
        let n = batch.rows();
        let c = self.compiled_ref()?;
        let names = self.output_names();
        if batch.ys.len() != self.output_shapes.len() {
            return Err(invalid(format!(
                "model '{}' has {} outputs ({}), got {} targets",
                self.name,
                self.output_shapes.len(),
                names.join(", "),
                batch.ys.len()
            )));
        }
        for (o, y) in batch.ys.iter().enumerate() {
            let what = if names.len() > 1 {
                format!("output '{}': ", names[o])
            } else {
                String::new()
            };
            if y.rank() == 0 || y.shape()[0] != n {
                return Err(invalid(format!(
                    "{what}x has {n} samples but y has {}; expected the same number of samples",
                    y.shape().first().copied().unwrap_or(0)
                )));
            }
            let mut pred_shape = vec![n];
            pred_shape.extend_from_slice(&self.output_shapes[o]);
            c.losses[o]
                .check_targets(&pred_shape, y)
                .map_err(|e| invalid(format!("{what}{e}")))?;
        }
        if let Some(w) = &batch.sample_weight {
            if w.len() != n {
                return Err(invalid(format!(
                    "sampleWeight has {} weights for {n} samples; expected one per sample",
                    w.len()
                )));
            }
            if let Some(bad) = w.iter().find(|v| !v.is_finite() || **v < 0.0) {
                return Err(invalid(format!(
                    "sampleWeight must be finite and non-negative, got {bad}"
                )));
            }
        }
        Ok(())
    }

    /// Checks that `y` has one target per sample of `x` and fits the loss.
    pub fn check_targets(&self, x: &Tensor, y: &Tensor) -> Result<()> {
        self.check_batch(&Batch::single(x.clone(), y.clone()))
    }
}

/// The losses and metric counts of one batch.
pub(crate) struct Scored {
    /// The loss that trains: the weighted sum over outputs, with its graph.
    pub(crate) total: Tensor,
    /// Its value.
    value: f64,
    /// Each output's (unweighted by `lossWeights`) loss.
    per_output: Vec<f64>,
    /// (correct, counted) of every metric, output by output.
    counts: Vec<(f64, f64)>,
}

impl Scored {
    /// Keras' log keys and values: `loss`, then with several outputs `<output>_loss` for each,
    /// then the metrics (`accuracy`, or `<output>_accuracy`).
    pub(crate) fn logs(&self, model: &Model) -> Logs {
        let mut logs = vec![("loss".to_string(), self.value)];
        let names = model.output_names();
        let multi = self.per_output.len() > 1;
        if multi {
            for (name, v) in names.iter().zip(&self.per_output) {
                logs.push((format!("{name}_loss"), *v));
            }
        }
        for (key, (correct, total)) in metric_keys(model, &names).into_iter().zip(&self.counts) {
            logs.push((key, correct / total.max(1.0)));
        }
        logs
    }
}

/// The log key of every metric, output by output.
fn metric_keys(model: &Model, names: &[String]) -> Vec<String> {
    let Some(c) = model.compiled.as_ref() else {
        return Vec::new();
    };
    let multi = c.metrics.len() > 1;
    c.metrics
        .iter()
        .zip(names)
        .flat_map(|(ms, name)| {
            ms.iter().map(move |m| {
                if multi {
                    format!("{name}_{}", m.key())
                } else {
                    m.key().to_string()
                }
            })
        })
        .collect()
}

/// Running sums of an evaluation over batches (losses weighted by rows, metric counts).
#[derive(Default)]
pub struct Evaluation {
    rows: f64,
    loss: f64,
    per_output: Vec<f64>,
    counts: Vec<(f64, f64)>,
}

impl Evaluation {
    /// Scores one batch (checked first) without recording gradients.
    pub fn add(&mut self, model: &Model, batch: &Batch) -> Result<()> {
        model.check_batch(batch)?;
        let preds = match batch.xs.len() {
            1 if batch.ys.len() == 1 => vec![model.predict_batch(&batch.xs[0])?],
            _ => no_grad(|| model.run(&batch.xs, &[], false, &mut Rng::new(0)))?,
        };
        let scored = no_grad(|| model.score(&preds, batch))?;
        let rows = batch.rows() as f64;
        self.rows += rows;
        self.loss += scored.value * rows;
        self.per_output.resize(scored.per_output.len(), 0.0);
        for (s, v) in self.per_output.iter_mut().zip(&scored.per_output) {
            *s += v * rows;
        }
        self.counts.resize(scored.counts.len(), (0.0, 0.0));
        for (s, (a, b)) in self.counts.iter_mut().zip(&scored.counts) {
            s.0 += a;
            s.1 += b;
        }
        Ok(())
    }

    /// The mean logs, in the keys of [`Model::train_step`].
    pub fn logs(&self, model: &Model) -> Result<Logs> {
        let n = self.rows.max(1.0);
        let mut logs = vec![("loss".to_string(), self.loss / n)];
        let names = model.output_names();
        if self.per_output.len() > 1 {
            for (name, v) in names.iter().zip(&self.per_output) {
                logs.push((format!("{name}_loss"), v / n));
            }
        }
        for (key, (a, b)) in metric_keys(model, &names).into_iter().zip(&self.counts) {
            logs.push((key, a / f64::max(*b, 1.0)));
        }
        Ok(logs)
    }
}

/// Tensors of the same sample shape stacked along the first axis.
fn concat_rows(parts: &[Tensor]) -> Result<Tensor> {
    let mut shape = parts.first().map(|p| p.shape().to_vec()).unwrap_or_default();
    if shape.is_empty() {
        return Err(invalid("nothing to concatenate"));
    }
    shape[0] = parts.iter().map(|p| p.shape()[0]).sum();
    let mut data = alloc::try_with_capacity("the predictions", numel(&shape))?;
    for p in parts {
        data.extend_from_slice(p.data());
    }
    Tensor::new(data, &shape)
}
