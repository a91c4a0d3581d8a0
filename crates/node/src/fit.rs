//! Training and evaluation from JavaScript: in-memory batches with any number of inputs and
//! outputs, or batches streamed from a JavaScript async iterable through a [`BatchQueue`].
//!
//! Streaming: the Rust training loop asks for a pass with a `pull` event; JavaScript iterates
//! the data and pushes batches into the queue, at most as many ahead as it has credits (the
//! prefetch depth); each batch Rust takes sends a `consumed` event, which returns a credit. So
//! JavaScript prepares the next batches while Rust trains on the current one, and memory is
//! bounded by the prefetch depth, not by the data.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use cortex_core::nn::fit::{self, ArraySource, BatchSource, Event, FitConfig, Pass};
use cortex_core::nn::model::{Batch, DpConfig, Evaluation};
use cortex_core::nn::options::Options;
use cortex_core::nn::SharedLayer;
use cortex_core::rng::Rng;
use cortex_core::{threads, Error};
use napi::bindgen_prelude::{AsyncTask, Float32Array};
use napi::threadsafe_function::ThreadsafeFunctionCallMode;
use napi::{Env, Status, Task};
use napi_derive::napi;
use serde_json::{json, Map, Value};

use crate::model::{logs_json, model_of, model_of_mut, parse_callback, EventSink, NativeModel};
use crate::tensor::{to_tensor, HostTensor, TensorData};
use crate::{guarded, parse_json};

/// Batches queued ahead of the trainer are refused past this many (JavaScript keeps fewer:
/// its prefetch depth), so a runaway producer gets an Error instead of all memory.
const MAX_QUEUED: usize = 64;

/// One batch from JavaScript: a tensor per model input, a target per output (none for
/// predict), optional per-sample weights.
#[napi(object)]
pub struct BatchData {
    /// One Float32Array per model input.
    pub xs: Vec<Float32Array>,
    /// Their shapes (batch axis first).
    pub x_shapes: Vec<Vec<u32>>,
    /// One Float32Array per model output.
    pub ys: Vec<Float32Array>,
    /// Their shapes.
    pub y_shapes: Vec<Vec<u32>>,
    /// One weight per sample.
    pub sample_weight: Option<Float32Array>,
}

fn to_batch(what: &str, d: &BatchData) -> napi::Result<Batch> {
    if d.xs.len() != d.x_shapes.len() || d.ys.len() != d.y_shapes.len() {
        return Err(napi::Error::new(
            Status::InvalidArg,
            format!("{what}: one shape per array expected"),
        ));
    }
    let xs =
        d.xs.iter()
            .zip(&d.x_shapes)
            .enumerate()
            .map(|(i, (x, s))| to_tensor(&format!("{what} x[{i}]"), x, s))
            .collect::<napi::Result<_>>()?;
    let ys =
        d.ys.iter()
            .zip(&d.y_shapes)
            .enumerate()
            .map(|(i, (y, s))| to_tensor(&format!("{what} y[{i}]"), y, s))
            .collect::<napi::Result<_>>()?;
    Ok(Batch {
        xs,
        ys,
        sample_weight: d.sample_weight.as_ref().map(|w| w.to_vec()),
    })
}

/// A queued item; batches and ends carry the generation (pass) they were produced for.
enum Item {
    Batch(u32, Batch),
    End(u32),
    Fail(String),
}

#[derive(Default)]
struct QueueShared {
    items: Mutex<VecDeque<Item>>,
    ready: Condvar,
    /// The current pass: each `begin` starts a new one, and items of older passes (prefetched
    /// past a `validationSteps` limit, say) are dropped rather than trained on.
    generation: AtomicU32,
}

impl QueueShared {
    fn put(&self, item: Item) -> napi::Result<()> {
        let mut items = self.items.lock().unwrap_or_else(|e| e.into_inner());
        if items.len() >= MAX_QUEUED {
            return Err(napi::Error::new(
                Status::GenericFailure,
                format!("batch queue: more than {MAX_QUEUED} batches pushed ahead of training"),
            ));
        }
        items.push_back(item);
        self.ready.notify_all();
        Ok(())
    }
}

/// Batches pushed from JavaScript for a streaming `fit` or `evaluate`.
#[napi]
pub struct BatchQueue {
    shared: Arc<QueueShared>,
}

#[napi]
impl BatchQueue {
    /// An empty queue.
    #[napi(constructor)]
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        BatchQueue { shared: Arc::default() }
    }

    /// Queues one batch of pass `generation` (copied; shapes checked against the data lengths).
    #[napi]
    pub fn push(&self, batch: BatchData, generation: u32) -> napi::Result<()> {
        let batch = to_batch("batch", &batch)?;
        self.shared.put(Item::Batch(generation, batch))
    }

    /// Marks the end of pass `generation` over the data.
    #[napi]
    pub fn end(&self, generation: u32) -> napi::Result<()> {
        self.shared.put(Item::End(generation))
    }

    /// Makes the consumer fail with `message` (the data source threw).
    #[napi]
    pub fn fail(&self, message: String) -> napi::Result<()> {
        let mut items = self.shared.items.lock().unwrap_or_else(|e| e.into_inner());
        items.push_back(Item::Fail(message));
        self.shared.ready.notify_all();
        Ok(())
    }
}

/// The Rust side of a [`BatchQueue`].
struct QueueSource {
    shared: Arc<QueueShared>,
    name: &'static str,
    /// With `stepsPerEpoch`, the iteration continues from epoch to epoch (as in Keras): passes
    /// after the first keep their generation, so batches prefetched across an epoch boundary
    /// still count.
    continuing: bool,
    sink: Arc<Option<EventSink>>,
    stop: Arc<AtomicBool>,
}

impl QueueSource {
    fn send(&self, message: Value) {
        if let Some(sink) = self.sink.as_ref() {
            sink.call(message.to_string(), ThreadsafeFunctionCallMode::NonBlocking);
        }
    }
}

impl BatchSource for QueueSource {
    fn begin(&mut self, pass: Pass, _rng: &mut Rng) -> cortex_core::Result<Option<usize>> {
        let epoch = match pass {
            Pass::Train(e) | Pass::Validate(e) => e,
        };
        let started = self.shared.generation.load(Ordering::SeqCst) > 0;
        let generation = if self.continuing && started {
            self.shared.generation.load(Ordering::SeqCst)
        } else {
            self.shared.generation.fetch_add(1, Ordering::SeqCst) + 1
        };
        self.send(json!({"type": "pull", "queue": self.name, "epoch": epoch, "generation": generation}));
        Ok(None)
    }

    fn next_batch(&mut self) -> cortex_core::Result<Option<Batch>> {
        let current = self.shared.generation.load(Ordering::SeqCst);
        let mut items = self.shared.items.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            match items.pop_front() {
                Some(Item::Batch(generation, b)) => {
                    // Every batch taken, stale or not, returns a prefetch credit.
                    self.send(json!({"type": "consumed", "queue": self.name}));
                    if generation == current {
                        return Ok(Some(b));
                    }
                }
                Some(Item::End(generation)) if generation == current => return Ok(None),
                Some(Item::End(_)) => {}
                Some(Item::Fail(message)) => return Err(Error::Invalid(message)),
                None if self.stop.load(Ordering::Relaxed) => return Ok(None),
                None => {
                    items = self
                        .shared
                        .ready
                        .wait_timeout(items, Duration::from_millis(50))
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
    }
}

fn parse_fit_config(v: &Value) -> cortex_core::Result<FitConfig> {
    let mut o = Options::new("fit", v)?;
    let positive = |name: &str, value: Option<usize>| -> cortex_core::Result<Option<usize>> {
        match value {
            Some(0) => Err(Error::Invalid(format!("fit: {name} must be a positive integer"))),
            other => Ok(other),
        }
    };
    let epochs = o.usize("epochs")?.unwrap_or(1);
    let initial_epoch = o.usize("initialEpoch")?.unwrap_or(0);
    let batch_size = o.usize("batchSize")?.unwrap_or(32);
    let shuffle = o.bool("shuffle")?.unwrap_or(true);
    let validation_split = o.f32("validationSplit")?.unwrap_or(0.0);
    let steps_per_epoch = positive("stepsPerEpoch", o.usize("stepsPerEpoch")?)?;
    let validation_steps = positive("validationSteps", o.usize("validationSteps")?)?;
    let validation_freq = positive("validationFreq", o.usize("validationFreq")?)?.unwrap_or(1);
    let class_weight = match o.value("classWeight") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(
            m.iter()
                .map(|(k, v)| {
                    let class = k.parse::<usize>().ok();
                    let weight = v.as_f64().filter(|w| w.is_finite() && *w >= 0.0);
                    match (class, weight) {
                        (Some(c), Some(w)) => Ok((c, w as f32)),
                        _ => Err(Error::Invalid(format!(
                            "fit: classWeight maps class indices to non-negative numbers, got '{k}': {v}"
                        ))),
                    }
                })
                .collect::<cortex_core::Result<_>>()?,
        ),
        Some(other) => {
            return Err(Error::Invalid(format!(
                "fit: classWeight must be an object {{ classIndex: weight }}, got {other}"
            )))
        }
    };
    let adversarial = match o.value("adversarial") {
        None | Some(Value::Null) => None,
        Some(spec) => Some(crate::explain::parse_attack(&spec)?),
    };
    let dp = match o.value("dp") {
        None | Some(Value::Null) => None,
        Some(spec) => Some(parse_dp(&spec)?),
    };
    let learning_rates = match o.value("learningRates") {
        None => None,
        Some(Value::Array(a)) => Some(
            a.iter()
                .map(|v| v.as_f64().filter(|f| f.is_finite() && *f > 0.0).map(|f| f as f32))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| Error::Invalid("learning-rate schedule must return positive numbers".into()))?,
        ),
        Some(other) => return Err(Error::Invalid(format!("learningRates must be an array, got {other}"))),
    };
    let callbacks = match o.value("callbacks") {
        None => Vec::new(),
        Some(Value::Array(a)) => a.iter().map(parse_callback).collect::<cortex_core::Result<_>>()?,
        Some(other) => return Err(Error::Invalid(format!("callbacks must be an array, got {other}"))),
    };
    o.finish()?;
    Ok(FitConfig {
        epochs,
        initial_epoch,
        batch_size,
        shuffle,
        validation_split,
        steps_per_epoch,
        validation_steps,
        validation_freq,
        class_weight,
        adversarial,
        learning_rates,
        callbacks,
        dp,
    })
}

/// `fit`'s `dp`: `{ l2NormClip, noiseMultiplier, delta = 1e-5, targetEpsilon? }`.
fn parse_dp(v: &Value) -> cortex_core::Result<DpConfig> {
    let mut o = Options::new("fit dp", v)?;
    let required = |name: &str, v: Option<f64>| v.ok_or_else(|| Error::Invalid(format!("fit: dp.{name} is required")));
    let dp = DpConfig {
        l2_norm_clip: required("l2NormClip", o.f64("l2NormClip")?)? as f32,
        noise_multiplier: required("noiseMultiplier", o.f64("noiseMultiplier")?)?,
        delta: o.f64("delta")?.unwrap_or(1e-5),
        target_epsilon: o.f64("targetEpsilon")?,
    };
    o.finish()?;
    dp.validate()?;
    Ok(dp)
}

/// Where a fit's batches come from.
enum Source {
    Arrays(Batch),
    Stream(Arc<QueueShared>),
}

/// A [`Source`] as JavaScript gave it: arrays are not copied yet, because copying a large data
/// set takes hundreds of ms (fresh pages) and must happen on the worker thread.
enum Input {
    Raw(&'static str, BatchData),
    Queue(Arc<QueueShared>),
}

impl Input {
    /// Copies raw JavaScript arrays into tensors (call on the worker thread).
    fn ready(self) -> napi::Result<Source> {
        match self {
            Input::Raw(what, d) => Ok(Source::Arrays(to_batch(what, &d)?)),
            Input::Queue(q) => Ok(Source::Stream(q)),
        }
    }
}

fn source_of(what: &'static str, data: Option<BatchData>, queue: Option<&BatchQueue>) -> napi::Result<Option<Input>> {
    Ok(match (data, queue) {
        (Some(d), None) => Some(Input::Raw(what, d)),
        (None, Some(q)) => Some(Input::Queue(q.shared.clone())),
        (None, None) => None,
        (Some(_), Some(_)) => {
            return Err(napi::Error::new(
                Status::InvalidArg,
                format!("{what}: give arrays or a queue, not both"),
            ))
        }
    })
}

#[napi]
impl NativeModel {
    /// Trains; resolves to the History as JSON. `data` (arrays) or `queue` (streamed batches)
    /// is the training data; `validation` / `validationQueue` the optional validation data.
    /// Options JSON: `{ epochs, initialEpoch, batchSize, shuffle, validationSplit, stepsPerEpoch,
    /// validationSteps, validationFreq, classWeight, learningRates, callbacks }`. Events go to
    /// `onEvent` as JSON strings.
    #[napi(ts_return_type = "Promise<string>")]
    #[allow(clippy::too_many_arguments)]
    pub fn fit(
        &self,
        data: Option<BatchData>,
        queue: Option<&BatchQueue>,
        validation: Option<BatchData>,
        validation_queue: Option<&BatchQueue>,
        options_json: String,
        // napi-rs does not expand type aliases in typings: spell the callback out.
        #[napi(ts_arg_type = "((event: string) => void) | undefined | null")] on_event: Option<EventSink>,
    ) -> napi::Result<AsyncTask<FitTask>> {
        let train = source_of("fit data", data, queue)?
            .ok_or_else(|| napi::Error::new(Status::InvalidArg, "fit: no training data".to_string()))?;
        let validation = source_of("validationData", validation, validation_queue)?;
        let options = parse_json("fit options", &options_json)?;
        let config = guarded("fit", || parse_fit_config(&options))?;
        let stop = self.stop_flag();
        stop.store(false, Ordering::Relaxed);
        Ok(AsyncTask::new(FitTask {
            model: self.cell(),
            stop,
            train: Some(train),
            validation,
            config: Some(config),
            sink: Arc::new(on_event),
        }))
    }

    /// Loss and metrics over `data` (arrays, in slices of `batchSize`) or the batches pushed
    /// into `queue`; resolves to JSON logs. `onEvent` receives the queue's pull/consumed events.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn evaluate(
        &self,
        data: Option<BatchData>,
        queue: Option<&BatchQueue>,
        batch_size: Option<u32>,
        #[napi(ts_arg_type = "((event: string) => void) | undefined | null")] on_event: Option<EventSink>,
    ) -> napi::Result<AsyncTask<EvaluateTask>> {
        let source = source_of("evaluate data", data, queue)?
            .ok_or_else(|| napi::Error::new(Status::InvalidArg, "evaluate: no data".to_string()))?;
        Ok(AsyncTask::new(EvaluateTask {
            model: self.cell(),
            source: Some(source),
            batch_size: batch_size.unwrap_or(32) as usize,
            train: false,
            sink: Arc::new(on_event),
            stop: self.stop_flag(),
        }))
    }

    /// One gradient step on one batch; resolves to JSON logs.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn train_on_batch(&self, data: BatchData) -> napi::Result<AsyncTask<EvaluateTask>> {
        Ok(AsyncTask::new(EvaluateTask {
            model: self.cell(),
            source: Some(Input::Raw("trainOnBatch", data)),
            batch_size: 0,
            train: true,
            sink: Arc::new(None),
            stop: self.stop_flag(),
        }))
    }

    /// Predictions of every output for one tensor per input, computed off the event loop.
    #[napi(ts_return_type = "Promise<TensorData[]>")]
    pub fn predict_many(
        &self,
        xs: Vec<Float32Array>,
        x_shapes: Vec<Vec<u32>>,
        batch_size: Option<u32>,
    ) -> napi::Result<AsyncTask<PredictManyTask>> {
        let data = BatchData {
            xs,
            x_shapes,
            ys: Vec::new(),
            y_shapes: Vec::new(),
            sample_weight: None,
        };
        Ok(AsyncTask::new(PredictManyTask {
            model: self.cell(),
            batch: to_batch("predict", &data)?,
            batch_size: batch_size.unwrap_or(32) as usize,
        }))
    }
}

fn event_json(event: Event) -> Value {
    match event {
        Event::TrainBegin { epochs, steps } => json!({"type": "trainBegin", "epochs": epochs, "steps": steps}),
        Event::BatchEnd { epoch, batch, logs } => {
            json!({"type": "batchEnd", "epoch": epoch, "batch": batch, "logs": logs_json(logs)})
        }
        Event::EpochEnd { epoch, logs } => json!({"type": "epochEnd", "epoch": epoch, "logs": logs_json(logs)}),
    }
}

/// Background training.
pub struct FitTask {
    model: SharedLayer,
    stop: Arc<AtomicBool>,
    train: Option<Input>,
    validation: Option<Input>,
    config: Option<FitConfig>,
    sink: Arc<Option<EventSink>>,
}

/// A batch source for `source`: streamed batches, or in-memory ones in `batch_size` slices.
fn batch_source(
    source: Source,
    name: &'static str,
    continuing: bool,
    batch_size: usize,
    sink: &Arc<Option<EventSink>>,
    stop: &Arc<AtomicBool>,
) -> Box<dyn BatchSource> {
    match source {
        Source::Arrays(b) => Box::new(ArraySource::new(b, batch_size, false)),
        Source::Stream(shared) => Box::new(QueueSource {
            shared,
            name,
            continuing,
            sink: sink.clone(),
            stop: stop.clone(),
        }),
    }
}

impl Task for FitTask {
    type Output = String;
    type JsValue = String;

    fn compute(&mut self) -> napi::Result<String> {
        let config = self.config.take().expect("fit runs once");
        let sink = self.sink.clone();
        let events = sink.clone();
        let mut send = move |event: Event| {
            if let Some(sink) = events.as_ref() {
                // NonBlocking: a busy event loop queues events; training never waits for it.
                sink.call(event_json(event).to_string(), ThreadsafeFunctionCallMode::NonBlocking);
            }
        };
        let train = self.train.take().expect("fit runs once").ready()?;
        let validation = self.validation.take().map(Input::ready).transpose()?;
        let stop = self.stop.clone();
        let history = guarded("fit", || {
            let mut guard = self.model.write();
            let model = model_of_mut(&mut guard);
            threads::run(|| match train {
                // In-memory data is checked (and validationSplit applied) as a whole.
                Source::Arrays(data) => {
                    let validation = match validation {
                        Some(Source::Arrays(v)) => Some(v),
                        None => None,
                        Some(Source::Stream(_)) => {
                            return Err(Error::Invalid(
                                "fit: with in-memory training data, give validationData as tensors".into(),
                            ))
                        }
                    };
                    fit::fit_arrays(model, data, validation, config, &mut send, &stop)
                }
                Source::Stream(shared) => {
                    if config.validation_split > 0.0 {
                        return Err(Error::Invalid(
                            "fit: validationSplit needs in-memory data; give validationData instead".into(),
                        ));
                    }
                    let continuing = config.steps_per_epoch.is_some();
                    let mut train = batch_source(
                        Source::Stream(shared),
                        "train",
                        continuing,
                        config.batch_size,
                        &sink,
                        &stop,
                    );
                    let mut val =
                        validation.map(|v| batch_source(v, "validation", false, config.batch_size, &sink, &stop));
                    let val = val.as_mut().map(|v| &mut **v as &mut dyn BatchSource);
                    fit::fit_source(model, train.as_mut(), val, config, &mut send, &stop)
                }
            })
        })?;
        let map: Map<String, Value> = history.into_iter().map(|(k, v)| (k, json!(v))).collect();
        Ok(Value::Object(map).to_string())
    }

    fn resolve(&mut self, _env: Env, output: String) -> napi::Result<String> {
        Ok(output)
    }
}

/// Background evaluation (arrays or a stream) or single training step.
pub struct EvaluateTask {
    model: SharedLayer,
    source: Option<Input>,
    batch_size: usize,
    train: bool,
    sink: Arc<Option<EventSink>>,
    stop: Arc<AtomicBool>,
}

impl Task for EvaluateTask {
    type Output = String;
    type JsValue = String;

    fn compute(&mut self) -> napi::Result<String> {
        let source = self.source.take().expect("runs once").ready()?;
        let logs = guarded(if self.train { "trainOnBatch" } else { "evaluate" }, || match source {
            Source::Arrays(batch) if self.train => {
                let mut guard = self.model.write();
                let model = model_of_mut(&mut guard);
                if let Some(x) = batch.xs.first() {
                    model.ensure_built(x)?;
                }
                model.check_batch(&batch)?;
                threads::run(|| model.train_step(&batch))
            }
            Source::Arrays(batch) => {
                let guard = self.model.read();
                threads::run(|| model_of(&guard).evaluate_batch(&batch, self.batch_size))
            }
            Source::Stream(shared) => {
                let guard = self.model.read();
                let model = model_of(&guard);
                let mut queue = QueueSource {
                    shared,
                    name: "evaluate",
                    continuing: false,
                    sink: self.sink.clone(),
                    stop: self.stop.clone(),
                };
                queue.begin(Pass::Validate(0), &mut Rng::new(0))?;
                let mut acc = Evaluation::default();
                let mut any = false;
                while let Some(batch) = queue.next_batch()? {
                    threads::run(|| acc.add(model, &batch))?;
                    any = true;
                }
                if !any {
                    return Err(Error::Invalid("evaluate: the data has no batches".into()));
                }
                acc.logs(model)
            }
        })?;
        Ok(logs_json(&logs).to_string())
    }

    fn resolve(&mut self, _env: Env, output: String) -> napi::Result<String> {
        Ok(output)
    }
}

/// Background multi-input / multi-output prediction.
pub struct PredictManyTask {
    model: SharedLayer,
    batch: Batch,
    batch_size: usize,
}

impl Task for PredictManyTask {
    type Output = Vec<HostTensor>;
    type JsValue = Vec<TensorData>;

    fn compute(&mut self) -> napi::Result<Self::Output> {
        guarded("predict", || {
            if let Some(x) = self.batch.xs.first() {
                if !model_of(&self.model.read()).is_built() {
                    model_of_mut(&mut self.model.write()).ensure_built(x)?;
                }
            }
            let guard = self.model.read();
            threads::run(|| model_of(&guard).predict_many(&self.batch.xs, self.batch_size))
        })
        .map(|ys| ys.into_iter().map(HostTensor::take).collect())
    }

    fn resolve(&mut self, _env: Env, output: Self::Output) -> napi::Result<Self::JsValue> {
        Ok(output.into_iter().map(TensorData::from).collect())
    }
}
