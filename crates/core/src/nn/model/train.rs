//! Training, prediction and evaluation on whole batches (the `fit` loop in `fit.rs` drives these).

use super::*;
use rayon::prelude::*;

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
    /// One gradient step on one batch; returns the batch's loss and metrics.
    pub fn train_on_batch(&mut self, x: &Tensor, y: &Tensor) -> Result<Logs> {
        self.compiled()?;
        self.check_activation_memory("training", x.shape().first().copied().unwrap_or(0), 2)?;
        let mut rng = self.rng.fork();
        if self.compiled.as_ref().is_some_and(|c| c.gpu.is_some()) {
            let mut compiled = self.compiled.take().expect("checked above");
            let gpu = compiled.gpu.as_mut().expect("checked above");
            let gpu = gpu.get_mut().unwrap_or_else(|e| e.into_inner());
            let logs = gpu.train_on_batch(self, x, y, &mut compiled.optimizer, &compiled.metrics, &mut rng);
            self.compiled = Some(compiled);
            return logs;
        }
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
        let mut grads: Vec<Option<Vec<f32>>> = leaves.iter().map(|t| grads.remove(t)).collect();
        drop(leaves);
        // Take the compile state out so weights can be visited while the optimizer mutates.
        let mut compiled = self.compiled.take().expect("checked above");
        compiled.optimizer.clip_gradients(&mut grads);
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

    /// With an optimizer's `useEma`, replaces the trained weights by their moving averages
    /// (Keras does this when `fit` ends). Without it, does nothing.
    pub fn finalize_ema(&mut self) -> Result<()> {
        let Some(compiled) = self.compiled.take() else {
            return Ok(());
        };
        let mut result = Ok(());
        let mut index = 0;
        self.visit_params(&mut |_, p, _| {
            if let (Some(average), Ok(())) = (compiled.optimizer.ema_of(index), &result) {
                if compiled.trainable.contains(&(p as *const Param as usize)) {
                    result = p.update(|data| {
                        data.copy_from_slice(average);
                        Ok(())
                    });
                }
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
            None => self.forward_in_chunks(x),
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
        if chunk_bytes() == 0 || n < 2 * chunk || crate::threads::num_threads() < 2 {
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
        self.check_input(x)?;
        self.check_targets(x, y)?;
        let n = x.shape()[0];
        self.check_activation_memory("evaluate", batch_size.max(1).min(n), 1)?;
        let compiled = self.compiled_ref()?;
        let mut loss_sum = 0.0;
        let mut counts = vec![(0.0, 0.0); compiled.metrics.len()];
        for start in (0..n).step_by(batch_size.max(1)) {
            let end = (start + batch_size.max(1)).min(n);
            let (xb, yb) = (slice_rows(x, start, end), slice_rows(y, start, end));
            let pred = self.predict_batch(&xb)?;
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
}
