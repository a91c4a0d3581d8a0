//! `NativeModel`: a sequential model owned by Rust. Training, evaluation, prediction and file
//! I/O run as async tasks; progress events reach JavaScript through a non-blocking
//! threadsafe function, so training never waits for the event loop.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use cortex_core::nn::callbacks::Callback;
use cortex_core::nn::layers::Layer;
use cortex_core::nn::model::Logs;
use cortex_core::nn::{io, LayerCell, Model, SharedLayer};
use cortex_core::{rng, threads, Tensor};
use napi::bindgen_prelude::{AsyncTask, Float32Array, ObjectFinalize, Unknown};
use napi::threadsafe_function::ThreadsafeFunction;
use napi::{Env, Status, Task};
use napi_derive::napi;
use serde_json::{json, Map, Value};

use crate::tensor::{to_tensor, HostTensor, TensorData};
use crate::{guarded, js_error, parse_json};

/// Receives training events as JSON strings.
pub type EventSink = ThreadsafeFunction<String, Unknown<'static>, String, Status, false>;

/// A named weight.
#[napi(object)]
pub struct WeightData {
    /// `layer/weight`.
    pub name: String,
    /// Dimensions.
    pub shape: Vec<u32>,
    /// Values.
    pub data: Float32Array,
}

type Shared = SharedLayer;
type ReadGuard<'a> = std::sync::RwLockReadGuard<'a, Box<dyn Layer>>;
type WriteGuard<'a> = std::sync::RwLockWriteGuard<'a, Box<dyn Layer>>;

/// The model inside a model cell (NativeModel only ever holds models).
pub(crate) fn model_of<'a>(guard: &'a ReadGuard<'_>) -> &'a Model {
    guard.as_model().expect("a NativeModel cell holds a model")
}

pub(crate) fn model_of_mut<'a>(guard: &'a mut WriteGuard<'_>) -> &'a mut Model {
    guard.as_model_mut().expect("a NativeModel cell holds a model")
}

pub(crate) fn logs_json(logs: &Logs) -> Value {
    Value::Object(logs.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<Map<_, _>>())
}

/// A model (sequential or functional) living in Rust.
#[napi(custom_finalize)]
pub struct NativeModel {
    inner: Shared,
    stop: Arc<AtomicBool>,
    /// Nanoseconds per row of this model's last measured small predict (0: not measured).
    predict_ns_per_row: Arc<AtomicU64>,
    /// Bytes announced to V8 as external memory, taken back when the handle is collected.
    external_bytes: i64,
}

/// What a model holds natively beyond its weights (layer objects, caches, thread-local scratch
/// it warmed), as a floor for the announcement below.
const MODEL_OVERHEAD_BYTES: i64 = 64 << 10;

/// Wraps a model, telling V8 how much native memory the handle keeps alive: a service that
/// loads models in a loop (hot reload, one model per tenant) otherwise holds hundreds of
/// collected-but-unfinalized models, because V8 sees each as a few bytes of JS.
fn wrap(env: &Env, model: Model) -> NativeModel {
    let mut weight_bytes = 0usize;
    model.visit_params(&mut |_, p, _| weight_bytes += p.shape().iter().product::<usize>() * 4);
    let external_bytes = MODEL_OVERHEAD_BYTES.saturating_add(i64::try_from(weight_bytes).unwrap_or(i64::MAX));
    // Accounting is advice to the collector; a failure must not fail the load.
    let _ = env.adjust_external_memory(external_bytes);
    NativeModel {
        inner: LayerCell::new(Box::new(model), true),
        stop: Arc::new(AtomicBool::new(false)),
        predict_ns_per_row: Arc::new(AtomicU64::new(0)),
        external_bytes,
    }
}

impl ObjectFinalize for NativeModel {
    fn finalize(self, env: Env) -> napi::Result<()> {
        let _ = env.adjust_external_memory(-self.external_bytes);
        Ok(())
    }
}

#[napi]
impl NativeModel {
    /// Creates a model from its JSON description (`{ className: 'Sequential' | 'Functional', ... }`,
    /// layers given as `{ ref: layerId }`). Without a seed, one is drawn from the global seed.
    #[napi(constructor)]
    pub fn new(env: Env, config_json: String, seed: Option<f64>) -> napi::Result<Self> {
        let config = parse_json("model config", &config_json)?;
        let seed = seed.map(|s| s as u64).unwrap_or_else(rng::next_seed);
        Ok(wrap(&env, guarded("model", || Model::from_config(&config, seed))?))
    }

    /// The flag `stopTraining` sets, which a running `fit` polls.
    pub(crate) fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// The shared cell holding the model.
    pub(crate) fn cell(&self) -> Shared {
        self.inner.clone()
    }

    /// Registry id: use it as `{ ref: id }` to nest this model in another.
    #[napi(getter)]
    pub fn id(&self) -> f64 {
        self.inner.id() as f64
    }

    /// Whether training (of models that contain this one) updates its weights.
    #[napi(getter)]
    pub fn trainable(&self) -> bool {
        self.inner.trainable()
    }

    /// Freezes or unfreezes every layer of the model; takes effect at the next compile.
    #[napi(setter)]
    pub fn set_trainable(&self, trainable: bool) {
        self.inner.set_trainable(trainable);
    }

    /// Model name.
    #[napi(getter)]
    pub fn name(&self) -> String {
        model_of(&self.inner.read()).name().to_string()
    }

    /// Sample shapes of every output, once built.
    /// Names of the model inputs (the keys of named inputs).
    #[napi(getter)]
    pub fn input_names(&self) -> Vec<String> {
        model_of(&self.inner.read()).input_names()
    }

    /// Names of the model outputs (the keys of named targets and per-output losses).
    #[napi(getter)]
    pub fn output_names(&self) -> Vec<String> {
        model_of(&self.inner.read()).output_names()
    }

    #[napi(getter)]
    pub fn output_shapes(&self) -> Vec<Vec<u32>> {
        model_of(&self.inner.read())
            .output_shapes()
            .iter()
            .map(|s| s.iter().map(|&d| d as u32).collect())
            .collect()
    }

    /// Registry ids of the model's layers, in order.
    #[napi]
    pub fn layer_ids(&self) -> Vec<f64> {
        model_of(&self.inner.read())
            .layers()
            .iter()
            .map(|l| l.id() as f64)
            .collect()
    }

    /// Sets loss, optimizer and metrics from JSON.
    #[napi]
    pub fn compile(&self, config_json: String) -> napi::Result<()> {
        let config = parse_json("compile", &config_json)?;
        guarded("compile", || model_of_mut(&mut self.inner.write()).compile(&config))
    }

    /// Switches inference (predict, evaluate, call without gradients) of the Dense and Conv2D
    /// layers to `mode`: `'int8'` (dynamic int8, per-channel weight scales, AMX, AVX-512 VNNI or
    /// AVX2 kernels chosen at run time), `'bf16'` (bf16 weights and activations, f32 sums, on
    /// AMX-BF16 or AVX512-BF16 CPUs; elsewhere an Error) or `'float32'`. Training keeps f32 and the next predict
    /// sees the new weights. Returns how many layers switched.
    #[napi]
    pub fn quantize(&self, mode: String) -> napi::Result<u32> {
        let precision = guarded("quantize", || cortex_core::nn::quantize::Precision::parse(&mode))?;
        // A model that is training holds the write lock: say so rather than block the event loop.
        let guard = self.inner.try_read().ok_or_else(|| {
            napi::Error::from_reason("quantize: the model is busy (training); call it after fit resolves")
        })?;
        let switched = guarded("quantize", || model_of(&guard).quantize(precision))?;
        Ok(switched as u32)
    }

    /// The int8 kernel this CPU runs (`'amx'`, `'vnni'`, `'avx2'` or `'portable'`).
    #[napi(getter)]
    pub fn int8_kernel(&self) -> String {
        cortex_core::cpu::int8::Int8Kernel::detect().name().to_string()
    }

    /// The bf16 kernel this CPU runs (`'amx'` or `'avx512bf16'`), or null where `quantize({ mode: 'bf16' })` is
    /// refused.
    #[napi(getter)]
    pub fn bf16_kernel(&self) -> Option<String> {
        cortex_core::cpu::bf16::Bf16Kernel::detect().map(|k| k.name().to_string())
    }

    /// The GPU adapter the compiled model trains and predicts on; null on the CPU.
    #[napi(getter)]
    pub fn device(&self) -> Option<String> {
        model_of(&self.inner.read()).device_name()
    }

    /// Where the weights live for `call` and the tape: `'cpu'` or `'gpu'`.
    #[napi(getter)]
    pub fn weights_device(&self) -> String {
        model_of(&self.inner.read()).weights_device().name().to_string()
    }

    /// Moves the weights to `device` (`'cpu'` or `'gpu'`), and those of a later build, for
    /// `call`, `fit`, `predict`, `valueAndGrads` and `applyGradients`.
    #[napi]
    pub fn to_device(&self, device: String) -> napi::Result<()> {
        let mut inner = self.inner.write();
        guarded("to", || {
            model_of_mut(&mut inner).to_device(cortex_core::Device::parse(&device)?)
        })
    }

    /// Why a GPU asked for in `compile` is not used (the model runs on the CPU); null otherwise.
    #[napi(getter)]
    pub fn device_warning(&self) -> Option<String> {
        model_of(&self.inner.read()).compiled_ref().ok()?.device_warning.clone()
    }

    /// Creates the weights for samples of `inputShape` (no batch axis).
    #[napi]
    pub fn build(&self, input_shape: Vec<u32>) -> napi::Result<()> {
        let shape: Vec<usize> = input_shape.iter().map(|&d| d as usize).collect();
        guarded("build", || model_of_mut(&mut self.inner.write()).build(&shape))
    }

    /// Whether the model has weights.
    #[napi(getter)]
    pub fn built(&self) -> bool {
        model_of(&self.inner.read()).is_built()
    }

    /// Sample input shape, once built.
    #[napi(getter)]
    pub fn input_shape(&self) -> Option<Vec<u32>> {
        model_of(&self.inner.read())
            .input_shape()
            .map(|s| s.iter().map(|&d| d as u32).collect())
    }

    /// Sample output shape, once built.
    #[napi(getter)]
    pub fn output_shape(&self) -> Option<Vec<u32>> {
        model_of(&self.inner.read())
            .output_shape()
            .map(|s| s.iter().map(|&d| d as u32).collect())
    }

    /// Keras-style summary table.
    #[napi]
    pub fn summary(&self) -> String {
        model_of(&self.inner.read()).summary()
    }

    /// Topology as JSON.
    #[napi]
    pub fn to_json(&self) -> String {
        model_of(&self.inner.read()).to_json().to_string()
    }

    /// Copies of every weight, in layer order.
    #[napi]
    pub fn get_weights(&self) -> napi::Result<Vec<WeightData>> {
        let weights = guarded("getWeights", || model_of(&self.inner.read()).get_weights())?;
        Ok(weights
            .into_iter()
            .map(|(name, shape, data)| WeightData {
                name,
                shape: shape.iter().map(|&d| d as u32).collect(),
                data: Float32Array::new(data),
            })
            .collect())
    }

    /// Replaces every weight (same order and sizes as `getWeights`).
    #[napi]
    pub fn set_weights(&self, weights: Vec<Float32Array>) -> napi::Result<()> {
        let values: Vec<Vec<f32>> = weights.iter().map(|w| w.to_vec()).collect();
        guarded("setWeights", || model_of(&self.inner.read()).set_weights(&values))
    }

    /// Asks a running `fit` to stop after the current batch.
    #[napi]
    pub fn stop_training(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Predictions for `x`, computed off the event loop.
    #[napi(ts_return_type = "Promise<TensorData>")]
    pub fn predict(
        &self,
        x: Float32Array,
        x_shape: Vec<u32>,
        batch_size: Option<u32>,
    ) -> napi::Result<AsyncTask<PredictTask>> {
        Ok(AsyncTask::new(PredictTask {
            model: self.inner.clone(),
            raw: Some((x, x_shape)),
            x: Tensor::zeros(&[0]),
            batch_size: batch_size.unwrap_or(32) as usize,
            ns_per_row: self.predict_ns_per_row.clone(),
        }))
    }

    /// Predictions for `x` computed right here on the calling thread, or null when they would
    /// take longer than `CORTEX_INLINE_BELOW_US` (default 100 µs; 0: never) by this model's
    /// last measured predict, or the model is busy (training), unbuilt or on a GPU: then call
    /// `predict`. A batch-1 predict of a small model computes in a few µs, and handing it to a
    /// worker thread and back cost 30-60 µs of thread wake-ups.
    #[napi]
    pub fn predict_inline(&self, x: Float32Array, x_shape: Vec<u32>, batch_size: Option<u32>) -> Option<TensorData> {
        let rows = x_shape.first().copied().unwrap_or(1).max(1) as u64;
        let ns_per_row = self.predict_ns_per_row.load(Ordering::Relaxed);
        if ns_per_row == 0 || rows.saturating_mul(ns_per_row) > inline_below_ns() {
            return None;
        }
        let guard = self.inner.try_read()?;
        let model = model_of(&guard);
        if !model.is_built() || model.device_name().is_some() {
            return None;
        }
        // A bad input is reported by `predict`, with its usual error.
        let x = to_tensor("predict x", &x, &x_shape).ok()?;
        let batch_size = batch_size.unwrap_or(32) as usize;
        let start = std::time::Instant::now();
        let y = guarded("predict", || threads::run_serial(|| model.predict(&x, batch_size))).ok()?;
        record_ns_per_row(&self.predict_ns_per_row, start, rows);
        Some(TensorData::from_tensor(y))
    }

    /// Saves topology and weights to `path`, atomically per file: format `cortex` (a
    /// directory: model.json + weights.safetensors), `keras` (a Keras 3 `.keras` zip) or `tfjs`
    /// (a TensorFlow.js layers-model directory); without a format, a path ending in `.keras`
    /// is a Keras file and anything else a cortex-nn directory.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn save(&self, path: String, format: Option<String>) -> napi::Result<AsyncTask<SaveTask>> {
        let path = PathBuf::from(path);
        let format = cortex_formats::Format::choose(format.as_deref(), &path).map_err(js_error)?;
        Ok(AsyncTask::new(SaveTask {
            model: self.inner.clone(),
            dir: path,
            format,
        }))
    }
}

/// Loads a model from `path`: a cortex-nn directory, a Keras 3 `.keras` file, or a
/// TensorFlow.js layers-model (its model.json, or the directory holding it). Weight data over
/// `maxBytes` (default 16 GiB) is refused before anything is allocated for it.
#[napi(ts_return_type = "Promise<NativeModel>")]
pub fn load_model(dir: String, seed: Option<f64>, max_bytes: Option<f64>) -> napi::Result<AsyncTask<LoadTask>> {
    let mut options = io::LoadOptions::new(seed.map(|s| s as u64).unwrap_or_else(rng::next_seed));
    if let Some(m) = max_bytes {
        if !(m.is_finite() && m >= 1.0 && m.fract() == 0.0) {
            return Err(napi::Error::new(
                napi::Status::InvalidArg,
                format!("loadModel: maxBytes must be a positive integer, got {m}"),
            ));
        }
        options.max_bytes = m as u64;
    }
    Ok(AsyncTask::new(LoadTask {
        dir: PathBuf::from(dir),
        options,
    }))
}

/// Fixes the global seed for models created afterwards.
#[napi]
pub fn set_seed(seed: f64) {
    rng::set_global_seed(seed as u64);
}

/// Predictions whose activations are at most this many bytes run serially on the libuv worker
/// (see `threads::run_serial`); `CORTEX_SERIAL_BELOW_BYTES` overrides it.
fn serial_below_bytes() -> u64 {
    static BYTES: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *BYTES.get_or_init(|| {
        std::env::var("CORTEX_SERIAL_BELOW_BYTES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(64 << 10)
    })
}

/// Predictions measured under this many ns run on the calling thread (`predictInline`).
fn inline_below_ns() -> u64 {
    static NS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *NS.get_or_init(|| {
        std::env::var("CORTEX_INLINE_BELOW_US")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(100)
            .saturating_mul(1000)
    })
}

/// Stores the time per row of a predict that started at `start` (at least 1 ns, so a
/// measured model never reads as unmeasured).
fn record_ns_per_row(slot: &AtomicU64, start: std::time::Instant, rows: u64) {
    let ns = start.elapsed().as_nanos().min(u64::MAX as u128) as u64;
    slot.store((ns / rows.max(1)).max(1), Ordering::Relaxed);
}

/// Background prediction.
pub struct PredictTask {
    model: Shared,
    /// The input as JavaScript gave it, copied on the worker thread (a large batch's copy
    /// would stall the event loop).
    raw: Option<(Float32Array, Vec<u32>)>,
    x: Tensor,
    batch_size: usize,
    ns_per_row: Arc<AtomicU64>,
}

impl Task for PredictTask {
    type Output = HostTensor;
    type JsValue = TensorData;

    fn compute(&mut self) -> napi::Result<HostTensor> {
        if let Some((data, shape)) = self.raw.take() {
            self.x = to_tensor("predict x", &data, &shape)?;
        }
        guarded("predict", || {
            if !model_of(&self.model.read()).is_built() {
                model_of_mut(&mut self.model.write()).ensure_built(&self.x)?;
            }
            let guard = self.model.read();
            let model = model_of(&guard);
            let rows = self.x.shape().first().copied().unwrap_or(1);
            let batch = rows.min(self.batch_size.max(1)) as u64;
            let start = std::time::Instant::now();
            let y = if batch.saturating_mul(model.activation_bytes_per_sample()) <= serial_below_bytes() {
                threads::run_serial(|| model.predict(&self.x, self.batch_size))
            } else {
                threads::run(|| model.predict(&self.x, self.batch_size))
            };
            record_ns_per_row(&self.ns_per_row, start, rows as u64);
            y
        })
        .map(HostTensor::take)
    }

    fn resolve(&mut self, _env: Env, output: HostTensor) -> napi::Result<TensorData> {
        Ok(output.into())
    }
}

/// An engine callback from its spec; `tensorBoard` (weight histograms, written where the
/// weights are while fit holds the model) is built here because its writer lives in
/// cortex-formats, which the engine does not depend on.
pub(crate) fn parse_callback(v: &Value) -> cortex_core::Result<Callback> {
    if v.get("type").and_then(Value::as_str) != Some("tensorBoard") {
        return Callback::parse(v);
    }
    let log_dir = v.get("logDir").and_then(Value::as_str).unwrap_or("");
    let every = v
        .get("histogramFreq")
        .and_then(Value::as_u64)
        .filter(|&f| f > 0)
        .ok_or_else(|| {
            cortex_core::Error::Invalid(format!(
                "tensorBoard: histogramFreq must be a positive integer, got {v}"
            ))
        })? as usize;
    let host = v.get("hostname").and_then(Value::as_str).unwrap_or("localhost");
    let mut writer = cortex_formats::tensorboard::EventWriter::create(std::path::Path::new(log_dir), host)?;
    Ok(Callback::Custom(Box::new(move |epoch, _logs, model| {
        if epoch % every == 0 {
            writer.weight_histograms(model, epoch as i64)?;
        }
        Ok(false)
    })))
}

/// Background save.
pub struct SaveTask {
    model: Shared,
    dir: PathBuf,
    format: cortex_formats::Format,
}

impl Task for SaveTask {
    type Output = ();
    type JsValue = ();

    fn compute(&mut self) -> napi::Result<()> {
        guarded("save", || {
            cortex_formats::save(model_of(&self.model.read()), &self.dir, self.format)
        })
    }

    fn resolve(&mut self, _env: Env, _output: ()) -> napi::Result<()> {
        Ok(())
    }
}

/// Background load.
pub struct LoadTask {
    dir: PathBuf,
    options: io::LoadOptions,
}

impl Task for LoadTask {
    type Output = Model;
    type JsValue = NativeModel;

    fn compute(&mut self) -> napi::Result<Model> {
        guarded("loadModel", || cortex_formats::load(&self.dir, &self.options))
    }

    fn resolve(&mut self, env: Env, output: Model) -> napi::Result<NativeModel> {
        Ok(wrap(&env, output))
    }
}
