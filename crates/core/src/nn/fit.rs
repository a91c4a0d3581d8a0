//! The training loop: batches from a [`BatchSource`] (in-memory tensors, or a stream fed from
//! JavaScript), metric accumulation, validation, learning-rate schedules and callbacks, all in
//! Rust. Progress leaves through an event sink that must not block (the Node binding forwards
//! events to JavaScript through a threadsafe function).

use std::sync::atomic::{AtomicBool, Ordering};

use super::callbacks::Callback;
use super::model::{Batch, DpConfig, Evaluation, Logs, Model};
use crate::rng::Rng;
use crate::{Error, Result, Tensor};

/// Options of `fit`.
pub struct FitConfig {
    /// The epoch to stop before (Keras: `epochs` counts from 0, not from `initial_epoch`).
    pub epochs: usize,
    /// The epoch to start at (resuming a run; per-epoch learning rates are indexed by epoch).
    pub initial_epoch: usize,
    /// Samples per gradient step (in-memory data).
    pub batch_size: usize,
    /// Reshuffle the training samples every epoch (in-memory data).
    pub shuffle: bool,
    /// Fraction of the samples (taken from the end, before shuffling) held out for validation.
    pub validation_split: f32,
    /// Batches per epoch; by default one pass over the data.
    pub steps_per_epoch: Option<usize>,
    /// Batches per validation; by default one pass over the validation data.
    pub validation_steps: Option<usize>,
    /// Validate every this many epochs (Keras `validation_freq`).
    pub validation_freq: usize,
    /// Keras `class_weight`: a weight per class index, turned into per-sample weights.
    pub class_weight: Option<Vec<(usize, f32)>>,
    /// Adversarial training: each batch's inputs are replaced by this attack's adversarial
    /// examples before the step (Madry et al. 2018 with PGD; Wong et al. 2020 with FGSM from a
    /// random start).
    pub adversarial: Option<super::explain::Attack>,
    /// Learning rate for each epoch, precomputed from a schedule.
    pub learning_rates: Option<Vec<f32>>,
    /// Rust-side callbacks.
    pub callbacks: Vec<Callback>,
    /// Differentially private training (DP-SGD): Poisson-sampled batches, per-sample clipping,
    /// Gaussian noise; ε is logged each epoch as `epsilon`.
    pub dp: Option<DpConfig>,
}

impl Default for FitConfig {
    fn default() -> Self {
        FitConfig {
            epochs: 1,
            initial_epoch: 0,
            batch_size: 32,
            shuffle: true,
            validation_split: 0.0,
            steps_per_epoch: None,
            validation_steps: None,
            validation_freq: 1,
            class_weight: None,
            adversarial: None,
            learning_rates: None,
            callbacks: Vec::new(),
            dp: None,
        }
    }
}

/// Progress reported while training.
pub enum Event<'a> {
    /// Training starts: epochs and steps per epoch (0 when the data does not say).
    TrainBegin { epochs: usize, steps: usize },
    /// A batch finished, with running averages over the epoch so far.
    BatchEnd { epoch: usize, batch: usize, logs: &'a Logs },
    /// An epoch finished, with its final logs (validation included).
    EpochEnd { epoch: usize, logs: &'a Logs },
}

/// Per-epoch logs by name, in Keras's `History.history` layout.
pub type History = Vec<(String, Vec<f64>)>;

/// Which pass a [`BatchSource`] is asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    /// The training batches of an epoch.
    Train(usize),
    /// The validation batches after an epoch.
    Validate(usize),
}

/// Where `fit` takes its batches from.
pub trait BatchSource {
    /// Starts a pass; returns its number of batches when known.
    fn begin(&mut self, pass: Pass, rng: &mut Rng) -> Result<Option<usize>>;
    /// The next batch of the current pass, or `None` when the pass has no more.
    fn next_batch(&mut self) -> Result<Option<Batch>>;
    /// Whether batches were checked against the model already (in-memory data is checked
    /// once as a whole instead of once per batch).
    fn checked(&self) -> bool {
        false
    }
    /// With Poisson sampling (DP-SGD): the sampling rate q and the dataset size N.
    fn poisson(&self) -> Option<(f64, usize)> {
        None
    }
}

/// DP-SGD's batches: each of the N samples joins each batch independently with probability
/// q = batchSize / N, for round(N / batchSize) batches an epoch (the sampling that the privacy
/// accounting assumes; batch sizes vary around batchSize).
pub struct PoissonSource {
    data: Batch,
    rate: f64,
    steps: usize,
    step: usize,
    rng: Rng,
}

impl PoissonSource {
    /// Poisson-sampled batches of expected size `batch_size` from `data`.
    pub fn new(data: Batch, batch_size: usize) -> Self {
        let n = data.rows().max(1);
        let batch_size = batch_size.clamp(1, n);
        PoissonSource {
            data,
            rate: batch_size as f64 / n as f64,
            steps: ((n as f64 / batch_size as f64).round() as usize).max(1),
            step: 0,
            rng: Rng::new(0),
        }
    }
}

impl BatchSource for PoissonSource {
    fn begin(&mut self, _pass: Pass, rng: &mut Rng) -> Result<Option<usize>> {
        self.rng = rng.fork();
        self.step = 0;
        Ok(Some(self.steps))
    }

    fn next_batch(&mut self) -> Result<Option<Batch>> {
        if self.step >= self.steps {
            return Ok(None);
        }
        self.step += 1;
        let q = self.rate as f32;
        let idx: Vec<usize> = (0..self.data.rows()).filter(|_| self.rng.uniform() < q).collect();
        Ok(Some(self.data.gather(&idx)))
    }

    fn checked(&self) -> bool {
        true
    }

    fn poisson(&self) -> Option<(f64, usize)> {
        Some((self.rate, self.data.rows()))
    }
}

/// Batches of in-memory tensors, reshuffled each epoch from the model's random stream.
pub struct ArraySource {
    data: Batch,
    batch_size: usize,
    shuffle: bool,
    order: Vec<usize>,
    position: usize,
}

impl ArraySource {
    /// Batches of `batch_size` rows of `data`, shuffled each training pass when `shuffle`.
    pub fn new(data: Batch, batch_size: usize, shuffle: bool) -> Self {
        ArraySource {
            data,
            batch_size: batch_size.max(1),
            shuffle,
            order: Vec::new(),
            position: 0,
        }
    }
}

impl BatchSource for ArraySource {
    fn begin(&mut self, pass: Pass, rng: &mut Rng) -> Result<Option<usize>> {
        // A fresh order each epoch (not a reshuffle of the last one), so an epoch's batches
        // depend only on the random state at its start: a resumed run sees the same batches.
        self.order = (0..self.data.rows()).collect();
        if self.shuffle && matches!(pass, Pass::Train(_)) {
            rng.shuffle(&mut self.order);
        }
        self.position = 0;
        Ok(Some(self.order.len().div_ceil(self.batch_size)))
    }

    fn next_batch(&mut self) -> Result<Option<Batch>> {
        if self.position >= self.order.len() {
            return Ok(None);
        }
        let end = (self.position + self.batch_size).min(self.order.len());
        let idx = &self.order[self.position..end];
        self.position = end;
        Ok(Some(if self.shuffle {
            self.data.gather(idx)
        } else {
            self.data.slice(idx[0], end)
        }))
    }

    fn checked(&self) -> bool {
        true
    }
}

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
    cfg: FitConfig,
    on_event: &mut dyn FnMut(Event),
    stop: &AtomicBool,
) -> Result<History> {
    let data = Batch::single(x.clone(), y.clone());
    let validation = validation.map(|(a, b)| Batch::single(a.clone(), b.clone()));
    fit_arrays(model, data, validation, cfg, on_event, stop)
}

/// Trains on in-memory batches (any number of inputs and outputs, optional sample weights).
pub fn fit_arrays(
    model: &mut Model,
    data: Batch,
    validation: Option<Batch>,
    cfg: FitConfig,
    on_event: &mut dyn FnMut(Event),
    stop: &AtomicBool,
) -> Result<History> {
    model.compiled()?;
    check_config(&cfg)?;
    if !(0.0..1.0).contains(&cfg.validation_split) {
        return Err(Error::Invalid(format!(
            "fit: validationSplit must be in [0, 1), got {}",
            cfg.validation_split
        )));
    }
    if let Some(x) = data.xs.first() {
        model.ensure_built(x)?;
    }
    model.check_batch(&data)?;
    let n_all = data.rows();
    let (train, val) = if cfg.validation_split > 0.0 {
        let n_val = ((n_all as f64) * cfg.validation_split as f64).floor() as usize;
        if n_val == 0 || n_val == n_all {
            return Err(Error::Invalid(format!(
                "fit: validationSplit {} of {n_all} samples leaves an empty training or validation set",
                cfg.validation_split
            )));
        }
        let cut = n_all - n_val;
        (data.slice(0, cut), Some(data.slice(cut, n_all)))
    } else {
        (data, validation)
    };
    if let Some(v) = &val {
        model
            .check_batch(v)
            .map_err(|e| Error::Invalid(format!("validation data: {e}")))?;
    }
    if let Some(steps) = cfg.steps_per_epoch {
        let available = train.rows().div_ceil(cfg.batch_size);
        if steps > available {
            return Err(Error::Invalid(format!(
                "fit: stepsPerEpoch is {steps}, but {} samples in batches of {} make {available} batches",
                train.rows(),
                cfg.batch_size
            )));
        }
    }
    if cfg.dp.is_some() {
        if cfg.batch_size > train.rows() {
            return Err(Error::Invalid(format!(
                "fit: dp needs batchSize ({}) at most the number of training samples ({})",
                cfg.batch_size,
                train.rows()
            )));
        }
        let mut source = PoissonSource::new(train, cfg.batch_size);
        let mut val_source = val.map(|v| ArraySource::new(v, cfg.batch_size, false));
        return fit_source(
            model,
            &mut source,
            val_source.as_mut().map(|v| v as &mut dyn BatchSource),
            cfg,
            on_event,
            stop,
        );
    }
    let mut source = ArraySource::new(train, cfg.batch_size, cfg.shuffle);
    let mut val_source = val.map(|v| ArraySource::new(v, cfg.batch_size, false));
    fit_source(
        model,
        &mut source,
        val_source.as_mut().map(|v| v as &mut dyn BatchSource),
        cfg,
        on_event,
        stop,
    )
}

fn check_config(cfg: &FitConfig) -> Result<()> {
    if cfg.epochs == 0 || cfg.batch_size == 0 {
        return Err(Error::Invalid(format!(
            "fit: epochs and batchSize must be positive integers, got epochs={} batchSize={}",
            cfg.epochs, cfg.batch_size
        )));
    }
    if cfg.initial_epoch >= cfg.epochs {
        return Err(Error::Invalid(format!(
            "fit: initialEpoch ({}) must be below epochs ({}): epochs counts from 0, as in Keras",
            cfg.initial_epoch, cfg.epochs
        )));
    }
    if cfg.validation_freq == 0 || cfg.steps_per_epoch == Some(0) || cfg.validation_steps == Some(0) {
        return Err(Error::Invalid(
            "fit: validationFreq, stepsPerEpoch and validationSteps must be positive integers".into(),
        ));
    }
    Ok(())
}

/// Per-sample weights from `class_weight` (single-output models; sparse or one-hot targets).
fn class_weights(model: &Model, batch: &mut Batch, weights: &[(usize, f32)]) -> Result<()> {
    if batch.ys.len() != 1 {
        return Err(Error::Invalid(
            "fit: classWeight is for single-output models (Keras refuses it too); use sampleWeight".into(),
        ));
    }
    if batch.sample_weight.is_some() {
        return Err(Error::Invalid(
            "fit: classWeight and sampleWeight cannot be used together (as in Keras)".into(),
        ));
    }
    let y = &batch.ys[0];
    let rows = batch.rows().max(1);
    let per_row = y.len() / rows;
    let classes = model.output_shape().and_then(|s| s.last().copied()).unwrap_or(1);
    let mut out = Vec::with_capacity(rows);
    for row in y.data().chunks(per_row.max(1)) {
        let class = if per_row == classes && classes > 1 {
            // One-hot (or soft) targets: the most likely class.
            row.iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |b, (i, &v)| if v > b.1 { (i, v) } else { b })
                .0
        } else if per_row == 1 {
            row[0] as usize
        } else {
            return Err(Error::Invalid(format!(
                "fit: classWeight needs one class per sample (sparse labels or one-hot rows), got targets of shape {:?}",
                y.shape()
            )));
        };
        out.push(weights.iter().find(|(c, _)| *c == class).map_or(1.0, |(_, w)| *w));
    }
    batch.sample_weight = Some(out);
    Ok(())
}

/// Mean logs over one validation pass.
fn validate(model: &Model, source: &mut dyn BatchSource, epoch: usize, cfg: &FitConfig) -> Result<Logs> {
    source.begin(Pass::Validate(epoch), &mut Rng::new(0))?;
    let mut acc = Evaluation::default();
    let mut steps = 0;
    while cfg.validation_steps.is_none_or(|s| steps < s) {
        let Some(batch) = source.next_batch()? else {
            if let Some(s) = cfg.validation_steps {
                return Err(Error::Invalid(format!(
                    "fit: the validation data ended after {steps} batches, but validationSteps is {s}"
                )));
            }
            break;
        };
        acc.add(model, &batch)
            .map_err(|e| Error::Invalid(format!("validation data: {e}")))?;
        steps += 1;
    }
    if steps == 0 {
        return Err(Error::Invalid("fit: the validation data has no batches".into()));
    }
    acc.logs(model)
}

/// DP-SGD's accounting during `fit`: steps taken and the RDP of one step.
struct Privacy {
    expected_batch: f64,
    steps_per_epoch: usize,
    steps: usize,
    rdp: Vec<f64>,
    orders: Vec<f64>,
    reached_target: bool,
}

impl Privacy {
    fn new(model: &Model, train: &dyn BatchSource, dp: &DpConfig, cfg: &FitConfig) -> Result<Privacy> {
        dp.validate()?;
        model.check_dp_layers()?;
        let Some((q, n)) = train.poisson() else {
            return Err(Error::Invalid(
                "fit: dp (DP-SGD) needs in-memory x and y, so that batches can be Poisson-sampled".into(),
            ));
        };
        if cfg.adversarial.is_some() || cfg.steps_per_epoch.is_some() {
            return Err(Error::Invalid(
                "fit: dp cannot be combined with adversarial training or stepsPerEpoch".into(),
            ));
        }
        let orders = super::privacy::default_orders();
        let sigma = dp.noise_multiplier;
        Ok(Privacy {
            expected_batch: q * n as f64,
            steps_per_epoch: ((1.0 / q).round() as usize).max(1),
            steps: 0,
            rdp: super::privacy::rdp_of_step_at_orders(q, sigma, &orders),
            orders,
            reached_target: false,
        })
    }

    fn epsilon(&self, steps: usize, dp: &DpConfig) -> f64 {
        super::privacy::epsilon_from_rdp(&self.rdp, &self.orders, steps as f64, dp.delta)
    }

    fn would_pass_target(&self, dp: &DpConfig) -> bool {
        dp.target_epsilon.is_some_and(|t| self.epsilon(self.steps + 1, dp) > t)
    }
}

/// Trains on batches from `train` (validating on `validation` after epochs); returns the
/// history. `stop` may be set from any thread to end training after the current batch.
pub fn fit_source(
    model: &mut Model,
    train: &mut dyn BatchSource,
    mut validation: Option<&mut dyn BatchSource>,
    mut cfg: FitConfig,
    on_event: &mut dyn FnMut(Event),
    stop: &AtomicBool,
) -> Result<History> {
    model.compiled()?;
    check_config(&cfg)?;
    let terminate_on_nan = cfg.callbacks.iter().any(Callback::is_terminate_on_nan);
    let mut history = History::new();
    let mut first_epoch = cfg.initial_epoch;
    for cb in &mut cfg.callbacks {
        if let Some(resumed) = cb.on_train_begin(model)? {
            first_epoch = first_epoch.max(resumed);
        }
    }
    let mut privacy = match &cfg.dp {
        Some(dp) => Some(Privacy::new(model, train, dp, &cfg)?),
        None => None,
    };
    if let Some(p) = &mut privacy {
        p.steps = first_epoch * p.steps_per_epoch;
    }
    let mut began = false;
    'epochs: for epoch in first_epoch..cfg.epochs {
        if let Some(lr) = cfg.learning_rates.as_ref().and_then(|l| l.get(epoch)) {
            let optimizer = &mut model.compiled()?.optimizer;
            // A per-epoch scheduler callback replaces a per-step schedule (Keras refuses the mix).
            optimizer.schedule = None;
            optimizer.learning_rate = *lr;
        }
        let known = train.begin(Pass::Train(epoch), &mut model.rng)?;
        if !began {
            began = true;
            on_event(Event::TrainBegin {
                epochs: cfg.epochs,
                steps: cfg.steps_per_epoch.or(known).unwrap_or(0),
            });
        }
        let mut sums: Logs = Vec::new();
        let mut seen = 0usize;
        let mut batch_index = 0usize;
        while cfg.steps_per_epoch.is_none_or(|s| batch_index < s) {
            if stop.load(Ordering::Relaxed) {
                break 'epochs;
            }
            let Some(mut batch) = train.next_batch()? else {
                if stop.load(Ordering::Relaxed) {
                    break 'epochs;
                }
                if let Some(s) = cfg.steps_per_epoch {
                    return Err(Error::Invalid(format!(
                        "fit: the data ended after {batch_index} batches of epoch {}, but stepsPerEpoch is {s}; \
                         give fewer steps, or data that lasts (e.g. dataset.repeat())",
                        epoch + 1
                    )));
                }
                break;
            };
            if !model.is_built() {
                if let Some(x) = batch.xs.first() {
                    model.ensure_built(x)?;
                }
            }
            if let Some(weights) = &cfg.class_weight {
                class_weights(model, &mut batch, weights)?;
            }
            if !train.checked() {
                model
                    .check_batch(&batch)
                    .map_err(|e| Error::Invalid(format!("batch {} of epoch {}: {e}", batch_index + 1, epoch + 1)))?;
            }
            if let Some(attack) = &cfg.adversarial {
                if batch.xs.len() != 1 {
                    return Err(Error::Invalid(
                        "fit: adversarial training needs a single-input model".into(),
                    ));
                }
                let mut rng = model.rng.fork();
                batch.xs[0] = model.adversarial(&batch.xs[0], &batch.ys, attack, &mut rng)?;
            }
            let rows = batch.rows();
            let logs = match (&mut privacy, &cfg.dp) {
                (Some(p), Some(dp)) => {
                    if p.would_pass_target(dp) {
                        p.reached_target = true;
                        break;
                    }
                    p.steps += 1;
                    model.dp_train_step(&batch, dp, p.expected_batch)?
                }
                _ => model.train_step(&batch)?,
            };
            drop(batch);
            if logs.is_empty() {
                // An empty Poisson batch: a noise-only step, nothing to average.
                batch_index += 1;
                continue;
            }
            let loss = logs[0].1;
            if !loss.is_finite() {
                if terminate_on_nan {
                    break 'epochs;
                }
                return Err(Error::Diverged(format!(
                    "training diverged: the loss became {loss} at epoch {} batch {batch_index}; lower the learning \
                     rate or check the data (add terminateOnNaN() to stop quietly instead)",
                    epoch + 1
                )));
            }
            seen += rows;
            if sums.is_empty() {
                sums = logs.iter().map(|(k, _)| (k.clone(), 0.0)).collect();
            }
            for ((_, s), (_, v)) in sums.iter_mut().zip(&logs) {
                *s += v * rows as f64;
            }
            let running: Logs = sums.iter().map(|(k, s)| (k.clone(), s / seen as f64)).collect();
            on_event(Event::BatchEnd {
                epoch,
                batch: batch_index,
                logs: &running,
            });
            batch_index += 1;
        }
        let stop_at_target = privacy.as_ref().is_some_and(|p| p.reached_target);
        if batch_index == 0 && stop_at_target {
            break;
        }
        if batch_index == 0 {
            return Err(Error::Invalid(format!(
                "fit: epoch {} got no batches; the data is empty, or a one-shot iterator that the previous \
                 epoch used up (pass a re-iterable dataset, or stepsPerEpoch with data that lasts)",
                epoch + 1
            )));
        }
        let mut logs: Logs = sums.iter().map(|(k, s)| (k.clone(), s / seen.max(1) as f64)).collect();
        if let Some(v) = validation.as_deref_mut() {
            if (epoch + 1) % cfg.validation_freq == 0 {
                for (k, value) in validate(model, v, epoch, &cfg)? {
                    logs.push((format!("val_{k}"), value));
                }
            }
        }
        if let (Some(p), Some(dp)) = (&privacy, &cfg.dp) {
            logs.push(("epsilon".to_string(), p.epsilon(p.steps, dp)));
        }
        let mut halt = stop_at_target;
        for cb in &mut cfg.callbacks {
            halt |= cb.on_epoch_end(epoch, &mut logs, model)?;
        }
        record(&mut history, &logs);
        on_event(Event::EpochEnd { epoch, logs: &logs });
        if halt || stop.load(Ordering::Relaxed) {
            break;
        }
    }
    for cb in &mut cfg.callbacks {
        cb.on_train_end(model)?;
    }
    model.finalize_ema()?;
    model.sync_from_device()?;
    Ok(history)
}
