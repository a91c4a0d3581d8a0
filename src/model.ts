/**
 * The sequential model. TypeScript describes; Rust runs: `fit`, `evaluate`, `predict` and
 * file I/O execute on Rust threads and return Promises, so the event loop stays free.
 */
import { type Callback, type CustomCallback, LearningRateScheduler, type Logs, NativeCallback } from "./callbacks.ts";
import { type ExportArgs, exportModel } from "./export.ts";
import { describeGraph, SymbolicTensor } from "./functional.ts";
import { Layer, type LayerConfig, type SymbolicInput } from "./layers.ts";
import type { LossName, LossSpec } from "./losses.ts";
import { type NativeGrads, type NativeModel, native } from "./native.ts";
import { type LearningRateSchedule, Optimizer } from "./optimizers.ts";
import { ProgressReporter } from "./progress.ts";
import { constant, TapeTensor } from "./tape.ts";
import { expectTensor, Tensor } from "./tensor.ts";

/** Arguments of {@link Sequential.compile}. */
export interface CompileArgs {
  /** An optimizer object or name: `'sgd' | 'adam' | 'adamw' | 'rmsprop'` (default rmsprop). */
  optimizer?: Optimizer | "sgd" | "adam" | "adamw" | "rmsprop";
  /** The loss to minimise. */
  loss: LossName | LossSpec;
  /** Extra metrics; `'accuracy'` picks the categorical, sparse or binary form as Keras does. */
  metrics?: string[];
  /**
   * Where training and inference run: `'cpu'` (default); `'gpu'` moves the weights and the
   * optimizer state to the best GPU adapter (see `devices()`) and falls back to the CPU with one
   * warning when there is none or the model uses something the GPU backend lacks (a layer or
   * layer option, `useEma`, or a softmax output with a loss other than a categorical
   * cross-entropy from probabilities; every loss and optimizer otherwise runs there, and so
   * does BatchNormalization, its moving statistics updated on the device and synced back with
   * the weights); `'gpu!'` throws instead of falling back.
   */
  device?: "cpu" | "gpu" | "gpu!";
  /**
   * Keras precision policy: `'float32'` (default), or `'mixed_float16'` (GPU only), where the
   * matrix products of dense layers and attention projections take float16 operands with float32
   * sums (about 1e-3 relative error) while weights, optimizer state and every other op stay
   * float32. On an adapter without SHADER_F16 it warns once and computes in float32.
   */
  precision?: "float32" | "mixed_float16";
}

/** Arguments of {@link Sequential.fit}. */
export interface FitArgs {
  /** Passes over the data (default 1). */
  epochs?: number;
  /** Samples per gradient step (default 32). */
  batchSize?: number;
  /** Data to evaluate after each epoch. */
  validationData?: [Tensor, Tensor];
  /** Fraction of the samples (the last ones, before shuffling) to hold out for validation. */
  validationSplit?: number;
  /** Reshuffle the training samples each epoch (default true). */
  shuffle?: boolean;
  /** Callbacks: built-ins from `callbacks` or plain objects with hooks. */
  callbacks?: Callback[];
  /** 0 silent, 1 progress bar (per-epoch lines without a TTY), 2 one line per epoch (default 1). */
  verbose?: 0 | 1 | 2;
}

/** Arguments of {@link Sequential.predict} and {@link Sequential.evaluate}. */
export interface BatchArgs {
  /** Samples per forward pass (default 32). */
  batchSize?: number;
}

/** What `fit` returns: per-epoch logs, as in Keras. */
export class History {
  /** Epoch indices (0-based). */
  readonly epoch: number[];
  constructor(
    /** Each log name mapped to its value per epoch, e.g. `history.loss`, `history.val_accuracy`. */
    readonly history: Record<string, number[]>,
  ) {
    const n = Object.values(history)[0]?.length ?? 0;
    this.epoch = Array.from({ length: n }, (_, i) => i);
  }
}

interface FitEvent {
  type: "trainBegin" | "batchEnd" | "epochEnd";
  epochs: number;
  steps: number;
  epoch: number;
  batch: number;
  logs: Logs;
}

function knownKeys(what: string, value: object, allowed: string[]): void {
  for (const key of Object.keys(value)) {
    if (!allowed.includes(key)) {
      throw new Error(`${what}: unknown option '${key}'; expected one of: ${allowed.join(", ")}`);
    }
  }
}

function positiveInt(what: string, value: unknown, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !Number.isInteger(value) || value <= 0) {
    throw new RangeError(`${what} must be a positive integer, got ${JSON.stringify(value)}`);
  }
  return value;
}

/**
 * Inline predicts (a few µs each, on the main thread) allowed per event-loop turn. Callers that
 * `await predict()` in a loop chain through microtasks without ever yielding, so without a cap
 * they starve timers, I/O and every other request; past it, predicts go to a worker thread and
 * the turn ends. 16 x the 100 µs inline limit bounds the main thread's share to ~1.6 ms a turn.
 */
const INLINE_PREDICTS_PER_TURN = 16;
let inlineThisTurn = 0;

function takeInlineTurn(): boolean {
  if (inlineThisTurn >= INLINE_PREDICTS_PER_TURN) return false;
  if (inlineThisTurn++ === 0) {
    setImmediate(() => {
      inlineThisTurn = 0;
    });
  }
  return true;
}

/** A trainable graph of layers. Create with {@link sequential} or {@link model}. */
export class Model {
  /** The layers, in order (shared: their weights are this model's weights). */
  readonly layers: Layer[];
  readonly #native: NativeModel;
  #compileArgs: CompileArgs | undefined;
  #stopRequested = false;

  /** @internal Use {@link sequential}, {@link model} or {@link loadModel}. */
  constructor(layers: Layer[], nativeModel: NativeModel) {
    this.layers = layers;
    this.#native = nativeModel;
  }

  /** @internal The native handle (its `id` lets other models nest this one). */
  get native(): NativeModel {
    return this.#native;
  }

  /** Model name. */
  get name(): string {
    return this.#native.name;
  }

  /** Whether models that contain this one train its weights; set before compiling them. */
  get trainable(): boolean {
    return this.#native.trainable;
  }
  set trainable(value: boolean) {
    this.#native.trainable = value;
  }

  /**
   * Uses the model as a layer inside another model: records a call on symbolic tensors (from
   * `input()`), sharing this model's weights. For data, use `predict` (or `call` on the tape).
   */
  apply(x: SymbolicInput): SymbolicTensor {
    const inputs = Array.isArray(x) ? x : [x];
    if (!inputs.every((t) => t instanceof SymbolicTensor)) {
      throw new TypeError("Model.apply takes symbolic tensors (from input()); use predict() for data");
    }
    const shapes = this.#native.outputShapes;
    if (shapes.length !== 1) throw new Error(`Model.apply: '${this.name}' has ${shapes.length} outputs; expected one`);
    return new SymbolicTensor(shapes[0], { layer: this, inputs, index: 0 });
  }

  /** Sample input shape (no batch axis), once known. */
  get inputShape(): number[] | null {
    return this.#native.inputShape ?? null;
  }

  /** Sample output shape (no batch axis), once known. */
  get outputShape(): number[] | null {
    return this.#native.outputShape ?? null;
  }

  /** Set to true (e.g. from a callback) to stop `fit` after the current batch. */
  get stopTraining(): boolean {
    return this.#stopRequested;
  }
  set stopTraining(value: boolean) {
    this.#stopRequested = value;
    if (value) this.#native.stopTraining();
  }

  /** Creates the weights for samples of `inputShape` (no batch axis). */
  build(inputShape: number[]): void {
    this.#native.build(inputShape);
  }

  /**
   * Runs the model with gradients recorded, for custom training steps inside `valueAndGrads`
   * (training mode unless `training: false`). Runs on the calling thread.
   */
  call(x: Tensor | TapeTensor, options: { training?: boolean } = {}): TapeTensor {
    const input = x instanceof TapeTensor ? x : constant(expectTensor(x, "call: x"));
    return new TapeTensor(native.modelCall(this.#native, input.native, options.training ?? true));
  }

  /** @internal Gradients of this model's weights from a backward pass (for `valueAndGrads`). */
  gradsFrom(grads: NativeGrads): Tensor[] {
    return grads.ofModel(this.#native).map((g) => new Tensor(g.data, g.shape));
  }

  /** Sets the loss, optimizer and metrics. */
  compile(args: CompileArgs): void {
    if (args === null || typeof args !== "object")
      throw new TypeError("compile: expected { optimizer, loss, metrics }");
    knownKeys("compile", args, ["optimizer", "loss", "metrics", "device", "precision"]);
    const optimizer = args.optimizer instanceof Optimizer ? args.optimizer.toJSON() : (args.optimizer ?? "rmsprop");
    this.#native.compile(
      JSON.stringify({
        optimizer,
        loss: args.loss,
        metrics: args.metrics ?? [],
        device: args.device ?? "cpu",
        precision: args.precision ?? "float32",
      }),
    );
    this.#compileArgs = args;
    this.#warnedDevice = false;
    this.#reportDevice();
  }

  /** `'cpu'`, or the name of the GPU adapter the compiled model runs on. */
  get device(): string {
    return this.#native.device ?? "cpu";
  }

  #warnedDevice = false;

  /** Emits the GPU fallback warning once per compile. */
  #reportDevice(): void {
    const warning = this.#native.deviceWarning;
    if (warning && !this.#warnedDevice) {
      this.#warnedDevice = true;
      process.emitWarning(warning, { code: "CORTEX_GPU_FALLBACK" });
    }
  }

  /** Trains for a number of epochs; resolves to the History. Runs on Rust threads. */
  async fit(x: Tensor, y: Tensor, args: FitArgs = {}): Promise<History> {
    expectTensor(x, "fit: x");
    expectTensor(y, "fit: y");
    knownKeys("fit", args, [
      "epochs",
      "batchSize",
      "validationData",
      "validationSplit",
      "shuffle",
      "callbacks",
      "verbose",
    ]);
    const epochs = positiveInt("fit: epochs", args.epochs, 1);
    const batchSize = positiveInt("fit: batchSize", args.batchSize, 32);
    const verbose = args.verbose ?? 1;
    if (![0, 1, 2].includes(verbose)) throw new RangeError(`fit: verbose must be 0, 1 or 2, got ${verbose}`);
    const callbacks = args.callbacks ?? [];
    // Engine callbacks: NativeCallback objects, and hooks objects that also need the model's
    // weights while fit holds it (tensorBoard's histograms) through their `nativeSpec`.
    const nativeSpecs = [
      ...callbacks.filter((c) => c instanceof NativeCallback).map((c) => c.spec),
      ...callbacks.flatMap((c) => {
        const spec = (c as { nativeSpec?: unknown }).nativeSpec;
        return spec && !(c instanceof NativeCallback) ? [spec] : [];
      }),
    ];
    const scheduler = callbacks.find((c) => c instanceof LearningRateScheduler);
    const hooks = callbacks.filter(
      (c) => !(c instanceof NativeCallback) && !(c instanceof LearningRateScheduler),
    ) as CustomCallback[];
    let learningRates: number[] | undefined;
    if (scheduler) {
      let lr = this.#learningRate();
      learningRates = [];
      for (let epoch = 0; epoch < epochs; epoch++) {
        lr = scheduler.schedule(epoch, lr);
        if (typeof lr !== "number" || !Number.isFinite(lr) || lr <= 0) {
          throw new RangeError(`learningRateScheduler returned ${lr} for epoch ${epoch}; expected a positive number`);
        }
        learningRates.push(lr);
      }
    }
    let validation: Float32Array[] | undefined;
    let validationShapes: number[][] | undefined;
    if (args.validationData !== undefined) {
      const [vx, vy] = args.validationData;
      expectTensor(vx, "fit: validationData[0]");
      expectTensor(vy, "fit: validationData[1]");
      validation = [vx.data, vy.data];
      validationShapes = [[...vx.shape], [...vy.shape]];
    }
    const progress = new ProgressReporter(verbose);
    let lastLogs: Logs = {};
    const onEvent = (json: string) => {
      const event = JSON.parse(json) as FitEvent;
      if (event.type === "trainBegin") {
        progress.trainBegin(event.epochs, event.steps);
        for (const h of hooks) h.onTrainBegin?.({ epochs: event.epochs, steps: event.steps });
      } else if (event.type === "batchEnd") {
        progress.batchEnd(event.epoch, event.batch, event.logs);
        for (const h of hooks) h.onBatchEnd?.(event.batch, event.logs);
      } else {
        lastLogs = event.logs;
        progress.epochEnd(event.epoch, event.logs);
        for (const h of hooks) h.onEpochEnd?.(event.epoch, event.logs);
      }
    };
    this.#stopRequested = false;
    const options = {
      epochs,
      batchSize,
      shuffle: args.shuffle ?? true,
      validationSplit: args.validationSplit ?? 0,
      learningRates,
      callbacks: nativeSpecs,
    };
    const historyJson = await this.#native.fit(
      x.data,
      [...x.shape],
      y.data,
      [...y.shape],
      validation,
      validationShapes,
      JSON.stringify(options),
      onEvent,
    );
    // A model built by this fit attaches to the GPU only now.
    this.#reportDevice();
    // Let events still queued on the event loop reach the callbacks before we resolve.
    await new Promise((resolve) => setImmediate(resolve));
    for (const h of hooks) h.onTrainEnd?.(lastLogs);
    return new History(JSON.parse(historyJson));
  }

  #learningRate(): number {
    const opt = this.#compileArgs?.optimizer;
    const given =
      opt instanceof Optimizer ? (opt.args.learningRate as number | LearningRateSchedule | undefined) : undefined;
    if (typeof given === "number") return given;
    if (given !== undefined) return given.initialLearningRate;
    const name = opt instanceof Optimizer ? opt.name : (opt ?? "rmsprop");
    return name === "sgd" ? 0.01 : 0.001;
  }

  /** Loss and metrics over `x`, `y`, e.g. `{ loss, accuracy }`. */
  async evaluate(x: Tensor, y: Tensor, args: BatchArgs = {}): Promise<Logs> {
    expectTensor(x, "evaluate: x");
    expectTensor(y, "evaluate: y");
    knownKeys("evaluate", args, ["batchSize"]);
    const batchSize = positiveInt("evaluate: batchSize", args.batchSize, 32);
    return JSON.parse(await this.#native.evaluate(x.data, [...x.shape], y.data, [...y.shape], batchSize));
  }

  /** Model outputs for `x`. */
  async predict(x: Tensor, args: BatchArgs = {}): Promise<Tensor> {
    expectTensor(x, "predict: x");
    knownKeys("predict", args, ["batchSize"]);
    const batchSize = positiveInt("predict: batchSize", args.batchSize, 32);
    const out =
      (takeInlineTurn() ? this.#native.predictInline(x.data, [...x.shape], batchSize) : null) ??
      (await this.#native.predict(x.data, [...x.shape], batchSize));
    return new Tensor(out.data, out.shape);
  }

  /** One gradient step on one batch; resolves to its loss and metrics. */
  async trainOnBatch(x: Tensor, y: Tensor): Promise<Logs> {
    expectTensor(x, "trainOnBatch: x");
    expectTensor(y, "trainOnBatch: y");
    return JSON.parse(await this.#native.trainOnBatch(x.data, [...x.shape], y.data, [...y.shape]));
  }

  /** Keras-style table of layers, output shapes and parameter counts; printed unless `print` is false. */
  summary(print = true): string {
    const text = this.#native.summary();
    if (print) console.log(text);
    return text;
  }

  /** Copies of every weight, in layer order. */
  getWeights(): Tensor[] {
    return this.#native.getWeights().map((w) => new Tensor(w.data, w.shape));
  }

  /** Names of the weights, in `getWeights` order (`layer/kernel`, `layer/bias`, ...). */
  weightNames(): string[] {
    return this.#native.getWeights().map((w) => w.name);
  }

  /** Replaces every weight, in `getWeights` order. */
  setWeights(weights: Tensor[]): void {
    if (!Array.isArray(weights)) throw new TypeError("setWeights: expected an array of Tensors");
    this.#native.setWeights(weights.map((w, i) => expectTensor(w, `setWeights: weight ${i}`).data));
  }

  /**
   * Saves the model. By default `path` is a cortex-nn directory (`model.json` +
   * `weights.safetensors`, kill-safe, compile settings kept); a path ending in `.keras` writes a
   * Keras 3 file that `keras.saving.load_model` opens; `{ format: 'tfjs' }` writes a
   * TensorFlow.js layers-model directory (`model.json` + `.bin` shards) for `tf.loadLayersModel`.
   */
  async save(path: string, args: SaveArgs = {}): Promise<void> {
    if (typeof path !== "string" || path === "") throw new TypeError("save: expected a path");
    knownKeys("save", args, ["format"]);
    await this.#native.save(path, args.format);
  }

  /** Writes the model in an interchange format; `{ format: 'onnx' }` (opset 17, dynamic batch axis). */
  async export(path: string, args: ExportArgs = { format: "onnx" }): Promise<void> {
    return exportModel(this.#native, path, args);
  }

  /** Topology as `{ className, name, layers: [{ className, config }], ... }`. */
  toJSON(): { className: string; name: string; layers: LayerConfig[] } {
    return JSON.parse(this.#native.toJson());
  }
}

/** Arguments of {@link Model.save}. */
export interface SaveArgs {
  /** `'cortex'` (default; `'keras'` when the path ends in `.keras`), `'keras'` or `'tfjs'`. */
  format?: "cortex" | "keras" | "tfjs";
}

/** Arguments of {@link sequential}. */
export interface SequentialArgs {
  /** Model name (default `sequential`, then `sequential_1`, ... as in Keras). */
  name?: string;
  /** Seed for initialisation, shuffling and dropout (default: drawn from `setSeed`'s global stream). */
  seed?: number;
}

/** A linear stack of layers (Keras `Sequential`). */
export class Sequential extends Model {}

/** A model that applies `layers` (or models) in order. Give the first layer an `inputShape`, or it is built on first use. */
export function sequential(layers: (Layer | Model)[], args: SequentialArgs = {}): Sequential {
  if (!Array.isArray(layers) || layers.length === 0) {
    throw new TypeError("sequential: expected a non-empty array of layers");
  }
  layers.forEach((l, i) => {
    if (!(l instanceof Layer) && !(l instanceof Model)) {
      throw new TypeError(`sequential: element ${i} is not a layer (use dense(), conv2d(), ...)`);
    }
  });
  knownKeys("sequential", args, ["name", "seed"]);
  const config = { className: "Sequential", name: args.name, layers: layers.map((l) => ({ ref: l.native.id })) };
  const nativeModel = new native.NativeModel(JSON.stringify(config), args.seed);
  return new Sequential(wrapLayers(nativeModel), nativeModel);
}

function wrapLayers(nativeModel: NativeModel): Layer[] {
  return nativeModel.layerIds().map((id) => Layer.fromNative(native.NativeLayer.fromId(id)));
}

/** Arguments of {@link model}. */
export interface ModelArgs {
  /** The model's input(s), from `input({ shape })`. */
  inputs: SymbolicTensor | SymbolicTensor[];
  /** The output(s), symbolic tensors computed from the inputs. */
  outputs: SymbolicTensor | SymbolicTensor[];
  /** Model name (default `model`). */
  name?: string;
  /** Seed for shuffling and dropout. */
  seed?: number;
}

/** A functional model: any graph of layer calls from `inputs` to `outputs` (residual, multi-input, nested). */
export function model(args: ModelArgs): Model {
  knownKeys("model", args, ["inputs", "outputs", "name", "seed"]);
  const inputs = Array.isArray(args.inputs) ? args.inputs : [args.inputs];
  const outputs = Array.isArray(args.outputs) ? args.outputs : [args.outputs];
  for (const t of [...inputs, ...outputs]) {
    if (!(t instanceof SymbolicTensor)) throw new TypeError("model: inputs and outputs must be symbolic tensors");
  }
  const graph = describeGraph(inputs, outputs, args.name);
  const nativeModel = new native.NativeModel(JSON.stringify(graph), args.seed);
  return new Model(wrapLayers(nativeModel), nativeModel);
}

/** Options of {@link loadModel}. */
export interface LoadModelArgs {
  /** Seed of the loaded model's random state (dropout). */
  seed?: number;
  /**
   * Largest weight data accepted, in bytes (default: {@link getMaxModelBytes}, 16 GiB unless
   * changed). A file, or a config, declaring more
   * is refused with an Error before anything is allocated: set it to what your service can hold
   * when the model files come from outside.
   */
  maxBytes?: number;
}

/**
 * Loads a model: a directory written by `model.save(dir)` (compiled as it was saved), a Keras 3
 * `.keras` file (compiled when its optimizer and loss have cortex-nn counterparts; the
 * optimizer's state is not restored), or a TensorFlow.js layers-model (its `model.json`, or the
 * directory holding it; quantized weights are dequantized).
 */
export async function loadModel(path: string, args: LoadModelArgs = {}): Promise<Model> {
  if (typeof path !== "string" || path === "") throw new TypeError("loadModel: expected a path");
  const nativeModel = await native.loadModel(path, args.seed, args.maxBytes);
  const layers = wrapLayers(nativeModel);
  const isSequential = (JSON.parse(nativeModel.toJson()) as { className: string }).className === "Sequential";
  return isSequential ? new Sequential(layers, nativeModel) : new Model(layers, nativeModel);
}
