//! The training loop: shuffling, batching, metric accumulation, validation, learning-rate
//! schedules and callbacks, all in Rust. Progress leaves through an event sink that must not
//! block (the Node binding forwards events to JavaScript through a threadsafe function).

use std::sync::atomic::{AtomicBool, Ordering};

use super::callbacks::Callback;
use super::model::{gather_rows, slice_rows, Logs, Model};
use crate::{Error, Result, Tensor};

/// Options of `fit`.
pub struct FitConfig {
    /// Number of passes over the data.
    pub epochs: usize,
    /// Samples per gradient step.
    pub batch_size: usize,
    /// Reshuffle the training samples every epoch.
    pub shuffle: bool,
    /// Fraction of the samples (taken from the end, before shuffling) held out for validation.
    pub validation_split: f32,
    /// Learning rate for each epoch, precomputed from a schedule.
    pub learning_rates: Option<Vec<f32>>,
    /// Rust-side callbacks.
    pub callbacks: Vec<Callback>,
}

/// Progress reported while training.
pub enum Event<'a> {
    /// Training starts: epochs and steps per epoch.
    TrainBegin { epochs: usize, steps: usize },
    /// A batch finished, with running averages over the epoch so far.
    BatchEnd { epoch: usize, batch: usize, logs: &'a Logs },
    /// An epoch finished, with its final logs (validation included).
    EpochEnd { epoch: usize, logs: &'a Logs },
}

/// Per-epoch logs by name, in Keras's `History.history` layout.
pub type History = Vec<(String, Vec<f64>)>;

fn record(history: &mut History, logs: &Logs) {
    for (k, v) in logs {
        match history.iter_mut().find(|(name, _)| name == k) {
            Some((_, values)) => values.push(*v),
            None => history.push((k.clone(), vec![*v])),
        }
    }
}

/// Trains `model` on `x`, `y`; returns the history. `stop` may be set from any thread to end
/// training after the current batch.
pub fn fit(
    model: &mut Model,
    x: &Tensor,
    y: &Tensor,
    validation: Option<(&Tensor, &Tensor)>,
    mut cfg: FitConfig,
    on_event: &mut dyn FnMut(Event),
    stop: &AtomicBool,
) -> Result<History> {
    model.compiled()?;
    if cfg.epochs == 0 || cfg.batch_size == 0 {
        return Err(Error::Invalid(format!(
            "fit: epochs and batchSize must be positive integers, got epochs={} batchSize={}",
            cfg.epochs, cfg.batch_size
        )));
    }
    if !(0.0..1.0).contains(&cfg.validation_split) {
        return Err(Error::Invalid(format!(
            "fit: validationSplit must be in [0, 1), got {}",
            cfg.validation_split
        )));
    }
    model.ensure_built(x)?;
    model.check_input(x)?;
    model.check_targets(x, y)?;
    let n_all = x.shape()[0];
    let (train_x, train_y, val) = if cfg.validation_split > 0.0 {
        let n_val = ((n_all as f64) * cfg.validation_split as f64).floor() as usize;
        if n_val == 0 || n_val == n_all {
            return Err(Error::Invalid(format!(
                "fit: validationSplit {} of {n_all} samples leaves an empty training or validation set",
                cfg.validation_split
            )));
        }
        let cut = n_all - n_val;
        let v = (slice_rows(x, cut, n_all), slice_rows(y, cut, n_all));
        (slice_rows(x, 0, cut), slice_rows(y, 0, cut), Some(v))
    } else {
        (x.clone(), y.clone(), validation.map(|(a, b)| (a.clone(), b.clone())))
    };
    if let Some((vx, vy)) = &val {
        model
            .check_input(vx)
            .map_err(|e| Error::Invalid(format!("validation data: {e}")))?;
        model
            .check_targets(vx, vy)
            .map_err(|e| Error::Invalid(format!("validation data: {e}")))?;
    }
    let n = train_x.shape()[0];
    let steps = n.div_ceil(cfg.batch_size);
    let terminate_on_nan = cfg.callbacks.iter().any(Callback::is_terminate_on_nan);
    let mut history = History::new();
    let mut order: Vec<usize> = (0..n).collect();
    on_event(Event::TrainBegin {
        epochs: cfg.epochs,
        steps,
    });
    'epochs: for epoch in 0..cfg.epochs {
        if let Some(lr) = cfg.learning_rates.as_ref().and_then(|l| l.get(epoch)) {
            let optimizer = &mut model.compiled()?.optimizer;
            // A per-epoch scheduler callback replaces a per-step schedule (Keras refuses the mix).
            optimizer.schedule = None;
            optimizer.learning_rate = *lr;
        }
        if cfg.shuffle {
            model.rng.shuffle(&mut order);
        }
        let mut sums: Logs = Vec::new();
        let mut seen = 0usize;
        for (batch, idx) in order.chunks(cfg.batch_size).enumerate() {
            if stop.load(Ordering::Relaxed) {
                break 'epochs;
            }
            let (xb, yb) = (gather_rows(&train_x, idx), gather_rows(&train_y, idx));
            let logs = model.train_on_batch(&xb, &yb)?;
            let loss = logs[0].1;
            if !loss.is_finite() {
                if terminate_on_nan {
                    break 'epochs;
                }
                return Err(Error::Diverged(format!(
                    "training diverged: the loss became {loss} at epoch {} batch {batch}; lower the learning rate \
                     or check the data (add terminateOnNaN() to stop quietly instead)",
                    epoch + 1
                )));
            }
            seen += idx.len();
            if sums.is_empty() {
                sums = logs.iter().map(|(k, _)| (k.clone(), 0.0)).collect();
            }
            for ((_, s), (_, v)) in sums.iter_mut().zip(&logs) {
                *s += v * idx.len() as f64;
            }
            let running: Logs = sums.iter().map(|(k, s)| (k.clone(), s / seen as f64)).collect();
            on_event(Event::BatchEnd {
                epoch,
                batch,
                logs: &running,
            });
        }
        let mut logs: Logs = sums.iter().map(|(k, s)| (k.clone(), s / seen.max(1) as f64)).collect();
        if let Some((vx, vy)) = &val {
            for (k, v) in model.evaluate(vx, vy, cfg.batch_size)? {
                logs.push((format!("val_{k}"), v));
            }
        }
        record(&mut history, &logs);
        on_event(Event::EpochEnd { epoch, logs: &logs });
        let mut halt = false;
        for cb in &mut cfg.callbacks {
            halt |= cb.on_epoch_end(epoch, &logs, model)?;
        }
        if halt || stop.load(Ordering::Relaxed) {
            break;
        }
    }
    model.finalize_ema()?;
    model.sync_from_device()?;
    Ok(history)
}
