/**
 * The sequential model. TypeScript describes; Rust runs: `fit`, `evaluate`, `predict` and
 * file I/O execute on Rust threads and return Promises, so the event loop stays free.
 */

import type { PgdArgs } from "./attacks.ts";
import { type Callback, type CustomCallback, LearningRateScheduler, type Logs, NativeCallback } from "./callbacks.ts";
import { type ExportArgs, exportModel } from "./export.ts";
import { type BatchIterable, type FeedEvent, Feeder, isBatchIterable, type Tensors, toArrays } from "./feed.ts";
import { describeGraph, SymbolicTensor } from "./functional.ts";
import { Layer, type LayerConfig, type SymbolicInput } from "./layers.ts";
import type { LossName, LossSpec } from "./losses.ts";
import { type NativeGradScope, type NativeGrads, type NativeModel, native } from "./native.ts";
import { type LearningRateSchedule, Optimizer } from "./optimizers.ts";
import { ProgressReporter } from "./progress.ts";
import { constant, type Device, TapeTensor } from "./tape.ts";
import { expectTensor, Tensor } from "./tensor.ts";

/** Arguments of {@link Sequential.compile}. */
export interface CompileArgs {
  /** An optimizer object or name (default rmsprop). */
  optimizer?: Optimizer | "sgd" | "adam" | "adamw" | "rmsprop" | "lion" | "lamb";
  /**
   * The loss to minimise. With several outputs: one loss for all of them, a list in output
   * order, or an object keyed by output name (`model.outputNames`); the loss that trains is
   * the sum of each output's loss times its `lossWeights` entry.
   */
  loss: LossSpecOrName | LossSpecOrName[] | Record<string, LossSpecOrName>;
  /** Weights of the outputs' losses (default 1 each): a list in output order or an object by name. */
  lossWeights?: number[] | Record<string, number>;
  /**
   * Extra metrics; `'accuracy'` picks the categorical, sparse or binary form as Keras does. A
   * flat list applies to every output; or give one list per output (a list of lists, or an
   * object keyed by output name). Multi-output logs are named `<output>_loss`, `<output>_accuracy`.
   */
  metrics?: string[] | string[][] | Record<string, string[]>;
  /**
   * Where training and inference run: `'cpu'` (default); `'gpu'` moves the weights and the
   * optimizer state to the best GPU adapter (see `devices()`): planned onto fused GPU steps,
   * or, for what the planner refuses (nested models, several outputs, softmax inside a model),
   * through the layers' own GPU ops when every layer, the loss and the optimizer have them
   * (see {@link Model.to}). It falls back to the CPU with one warning when there is no adapter
   * or neither path has what the model uses (the warning names it); `'gpu!'` throws instead of
   * falling back.
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

/** A loss name or `{ name, ...options }`. */
export type LossSpecOrName = LossName | LossSpec;

/** Arguments of {@link Model.fit}. */
/** Options of `fit`'s `dp` (DP-SGD). */
export interface DpArgs {
  /** C: the L2 norm each sample's gradient is clipped to. */
  l2NormClip: number;
  /** σ: the noise standard deviation is σC (0 trains with clipping only, ε = Infinity). */
  noiseMultiplier: number;
  /** δ of the reported (ε, δ) guarantee (default 1e-5). */
  delta?: number;
  /** Stop training before a step would take ε past this. */
  targetEpsilon?: number;
}

export interface FitArgs {
  /** The epoch to end before, counted from 0 as in Keras (default 1). */
  epochs?: number;
  /** The epoch to start at, to resume a run (default 0). */
  initialEpoch?: number;
  /** Samples per gradient step, for tensors (default 32; a stream's batches are its own). */
  batchSize?: number;
  /**
   * Data to evaluate after each epoch: `[x, y]` or `[x, y, sampleWeight]` tensors (lists or
   * objects of them for several inputs or outputs), or a stream of batches.
   */
  validationData?: [Tensors, Tensors] | [Tensors, Tensors, Tensor] | BatchIterable;
  /** Batches per epoch (default: one pass over the data). With a stream, its iteration then continues from epoch to epoch. */
  stepsPerEpoch?: number;
  /** Validation batches per evaluation (default: all). */
  validationSteps?: number;
  /** Validate every this many epochs (default 1). */
  validationFreq?: number;
  /** Weight of each class index in the loss, e.g. `{ 0: 1, 1: 5 }` (single-output models). */
  classWeight?: Record<number, number>;
  /** One weight per training sample (tensors only; a stream's batches carry their own). */
  sampleWeight?: Tensor;
  /** Batches a stream keeps queued ahead of training (default 2). */
  prefetch?: number;
  /**
   * Adversarial training: every batch's inputs are replaced by adversarial examples before
   * its step, e.g. `{ epsilon: 0.1, steps: 1, stepSize: 0.125, randomStart: true }` (FGSM with
   * a random start, Wong et al. 2020) or `{ epsilon: 0.3, steps: 40, stepSize: 0.01,
   * randomStart: true }` (PGD, Madry et al. 2018). Inputs are clipped to `clip` (default [0, 1]).
   */
  adversarial?: PgdArgs;
  /**
   * Differentially private training (DP-SGD, Abadi et al. 2016). Batches are Poisson-sampled
   * (each sample joins each step with probability batchSize / N; N / batchSize steps an epoch),
   * each sample's gradient is clipped to L2 norm `l2NormClip`, Gaussian noise of standard
   * deviation `noiseMultiplier * l2NormClip` is added to the sum, which is divided by batchSize.
   * Each epoch's logs carry `epsilon`, the ε spent so far at `delta` (the RDP accountant of
   * {@link privacy.computeEpsilon}). Trainable layers must be Dense or Conv2D (others may be
   * frozen); x and y must be in-memory tensors. On a GPU-compiled model both passes and the
   * update run on the GPU (the per-sample norms are reduced on the host); a model the GPU
   * planner compiled leaves its plan for the layers' own GPU ops, and its optimizer restarts.
   */
  dp?: DpArgs;
  /** Fraction of the samples (the last ones, before shuffling) to hold out for validation. */
  validationSplit?: number;
  /** Reshuffle the training samples each epoch (default true). */
  shuffle?: boolean;
  /** Callbacks: built-ins from `callbacks` or plain objects with hooks. */
  callbacks?: Callback[];
  /** 0 silent, 1 progress bar (per-epoch lines without a TTY), 2 one line per epoch (default 1). */
  verbose?: 0 | 1 | 2;
}

/** Arguments of {@link Model.predict}. */
export interface BatchArgs {
  /** Samples per forward pass (default 32). */
  batchSize?: number;
}

/** Arguments of {@link Model.evaluate}. */
export interface EvaluateArgs extends BatchArgs {
  /** One weight per sample (tensors only). */
  sampleWeight?: Tensor;
  /** Batches a stream keeps queued ahead (default 2). */
  prefetch?: number;
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
    // A plain Tensor goes where the weights are.
    const input = x instanceof TapeTensor ? x : constant(expectTensor(x, "call: x"), { device: this.weightsDevice });
    return new TapeTensor(native.modelCall(this.#native, input.native, options.training ?? true));
  }

  /** @internal Gradients of this model's weights from a backward pass (for `valueAndGrads`). */
  gradsFrom(grads: NativeGrads): Tensor[] {
    return grads.ofModel(this.#native).map((g) => new Tensor(g.data, g.shape));
  }

  /** @internal Adds this model's weights to a `valueAndGrads` scope. */
  addToGradScope(scope: NativeGradScope): void {
    scope.addModel(this.#native);
  }

  /** Sets the loss, optimizer and metrics. */
  compile(args: CompileArgs): void {
    if (args === null || typeof args !== "object")
      throw new TypeError("compile: expected { optimizer, loss, metrics }");
    knownKeys("compile", args, ["optimizer", "loss", "lossWeights", "metrics", "device", "precision"]);
    const optimizer = args.optimizer instanceof Optimizer ? args.optimizer.toJSON() : (args.optimizer ?? "rmsprop");
    this.#native.compile(
      JSON.stringify({
        optimizer,
        loss: args.loss,
        lossWeights: args.lossWeights,
        metrics: args.metrics ?? [],
        device: args.device ?? "cpu",
        precision: args.precision ?? "float32",
      }),
    );
    this.#compileArgs = args;
    this.#warnedDevice = false;
    this.#reportDevice();
  }

  /**
   * Opt-in reduced-precision inference. `quantize({ mode: 'int8' })` runs the Dense and Conv2D
   * layers of `predict`, `evaluate` and gradient-free calls in dynamic int8: weights quantized
   * per output channel (packed once, repacked after training or `setWeights` changes them),
   * activations per sample, AMX, AVX-512 VNNI or AVX2 kernels chosen at run time (see
   * `int8Kernel`). `{ mode: 'bf16' }` rounds weights and activations to bfloat16 and sums in
   * f32 on Intel AMX or AVX512-BF16 (see `bf16Kernel`; an Error on CPUs with neither). Training, attacks
   * and explanations keep f32. `{ mode: 'float32' }` switches back. The mode is not saved with
   * the model. Returns how many layers switched.
   */
  quantize(args: { mode: QuantizeMode }): number {
    if (args === null || typeof args !== "object")
      throw new TypeError("quantize: expected { mode: 'int8' | 'bf16' | 'float32' }");
    knownKeys("quantize", args, ["mode"]);
    return this.#native.quantize(args.mode);
  }

  /** The int8 kernel this CPU runs: `'amx'`, `'vnni'` (AVX-512 VNNI), `'avx2'` or `'portable'`. */
  get int8Kernel(): string {
    return this.#native.int8Kernel;
  }

  /**
   * The bf16 kernel this CPU runs (`'amx'` or `'avx512bf16'`), or null where
   * `quantize({ mode: 'bf16' })` is refused.
   */
  get bf16Kernel(): string | null {
    return this.#native.bf16Kernel ?? null;
  }

  /** `'cpu'`, or the name of the GPU adapter the model runs on (compiled for it, or moved with {@link Model.to}). */
  get device(): string {
    return this.#native.device ?? "cpu";
  }

  /**
   * Moves the weights to `device` for {@link Model.call}, `valueAndGrads` and
   * `optimizer.applyGradients`: the layers' ops then run there, on inputs moved there with
   * `TapeTensor.to` (or `constant(t, { device })`). On the GPU today: dense, conv2d, the
   * pooling layers, dropout, activation, flatten and reshape; other layers throw and name the op.
   * `compile({ device })` is separate: it plans `fit`/`predict` onto the GPU with weights of its own.
   */
  to(device: Device): this {
    this.#native.toDevice(device);
    return this;
  }

  /** Where the weights live for {@link Model.call}: `'cpu'` or `'gpu'` (see {@link Model.to}). */
  get weightsDevice(): Device {
    return this.#native.weightsDevice as Device;
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

  /**
   * Trains; resolves to the History. Runs on Rust threads. Give tensors (`x`, `y`: a Tensor,
   * a list of Tensors in input/output order, or an object keyed by input/output name), or one
   * stream of batches `{ xs, ys, sampleWeight? }` (a `Dataset`, an async generator, ...).
   */
  fit(x: Tensors, y: Tensors, args?: FitArgs): Promise<History>;
  fit(data: BatchIterable, args?: FitArgs): Promise<History>;
  async fit(a: Tensors | BatchIterable, b?: Tensors | FitArgs, c?: FitArgs): Promise<History> {
    const stream = isBatchIterable(a);
    const args = ((stream ? b : c) ?? {}) as FitArgs;
    knownKeys("fit", args, [
      "epochs",
      "initialEpoch",
      "batchSize",
      "validationData",
      "validationSplit",
      "validationSteps",
      "validationFreq",
      "stepsPerEpoch",
      "classWeight",
      "sampleWeight",
      "shuffle",
      "callbacks",
      "verbose",
      "prefetch",
      "adversarial",
      "dp",
    ]);
    const epochs = positiveInt("fit: epochs", args.epochs, 1);
    const batchSize = positiveInt("fit: batchSize", args.batchSize, 32);
    const prefetch = positiveInt("fit: prefetch", args.prefetch, 2);
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
    const names = [this.#native.inputNames, this.#native.outputNames] as const;
    const convert = (what: string) => (batch: { xs: Tensors; ys?: Tensors; sampleWeight?: Tensor | Float32Array }) =>
      toArrays(what, batch.xs, batch.ys, batch.sampleWeight, ...names);
    const feeders = new Map<string, Feeder>();
    let train: ReturnType<typeof toArrays> | undefined;
    if (stream) {
      if (args.sampleWeight !== undefined) throw new TypeError("fit: with a stream, give sampleWeight in its batches");
      feeders.set("train", new Feeder(a, convert("fit batch"), prefetch, args.stepsPerEpoch !== undefined));
    } else {
      if (b === undefined) throw new TypeError("fit: expected (x, y, args) or (dataset, args)");
      train = toArrays("fit", a as Tensors, b as Tensors, args.sampleWeight, ...names);
    }
    let validation: ReturnType<typeof toArrays> | undefined;
    const v = args.validationData;
    if (v !== undefined) {
      if (isBatchIterable(v)) {
        feeders.set("validation", new Feeder(v, convert("validation batch"), prefetch, false));
      } else if (Array.isArray(v) && (v.length === 2 || v.length === 3)) {
        validation = toArrays("fit: validationData", v[0], v[1], v[2], ...names);
      } else {
        throw new TypeError("fit: validationData must be [x, y], [x, y, sampleWeight] or a stream of batches");
      }
    }
    const progress = new ProgressReporter(verbose);
    let lastLogs: Logs = {};
    const onEvent = (json: string) => {
      const parsed = JSON.parse(json) as FitEvent | FeedEvent;
      if (parsed.type === "pull" || parsed.type === "consumed") {
        feeders.get((parsed as FeedEvent).queue)?.handle(parsed as FeedEvent);
        return;
      }
      const event = parsed as FitEvent;
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
      initialEpoch: args.initialEpoch ?? 0,
      batchSize,
      shuffle: args.shuffle ?? true,
      validationSplit: args.validationSplit ?? 0,
      stepsPerEpoch: args.stepsPerEpoch,
      validationSteps: args.validationSteps,
      validationFreq: args.validationFreq,
      classWeight: args.classWeight,
      adversarial: args.adversarial && (({ seed: _seed, ...rest }) => rest)(args.adversarial),
      learningRates,
      callbacks: nativeSpecs,
      dp: args.dp,
    };
    let historyJson: string;
    try {
      historyJson = await this.#native.fit(
        train,
        feeders.get("train")?.queue,
        validation,
        feeders.get("validation")?.queue,
        JSON.stringify(options),
        onEvent,
      );
    } catch (error) {
      // A data source that threw: reject with its own error, not the engine's copy of it.
      for (const f of feeders.values()) if (f.error !== undefined) throw f.error;
      throw error;
    } finally {
      for (const f of feeders.values()) f.close();
    }
    // A model built by this fit attaches to the GPU only now.
    this.#reportDevice();
    // Let events still queued on the event loop reach the callbacks before we resolve.
    await new Promise((resolve) => setImmediate(resolve));
    for (const h of hooks) h.onTrainEnd?.(lastLogs);
    return new History(JSON.parse(historyJson));
  }

  /** Names of the model inputs (keys for named inputs). */
  get inputNames(): string[] {
    return this.#native.inputNames;
  }

  /** Names of the model outputs (keys for named targets, per-output losses and metrics). */
  get outputNames(): string[] {
    return this.#native.outputNames;
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

  /**
   * Loss and metrics over `x`, `y` (tensors, lists or objects of them), or over a stream of
   * batches, e.g. `{ loss, accuracy }`.
   */
  evaluate(x: Tensors, y: Tensors, args?: EvaluateArgs): Promise<Logs>;
  evaluate(data: BatchIterable, args?: EvaluateArgs): Promise<Logs>;
  async evaluate(a: Tensors | BatchIterable, b?: Tensors | EvaluateArgs, c?: EvaluateArgs): Promise<Logs> {
    const stream = isBatchIterable(a);
    const args = ((stream ? b : c) ?? {}) as EvaluateArgs;
    knownKeys("evaluate", args, ["batchSize", "sampleWeight", "prefetch"]);
    const batchSize = positiveInt("evaluate: batchSize", args.batchSize, 32);
    const names = [this.#native.inputNames, this.#native.outputNames] as const;
    if (!stream) {
      if (b === undefined) throw new TypeError("evaluate: expected (x, y, args) or (dataset, args)");
      const data = toArrays("evaluate", a as Tensors, b as Tensors, args.sampleWeight, ...names);
      return JSON.parse(await this.#native.evaluate(data, undefined, batchSize));
    }
    const prefetch = positiveInt("evaluate: prefetch", args.prefetch, 2);
    const feeder = new Feeder(
      a,
      (batch) => toArrays("evaluate batch", batch.xs, batch.ys, batch.sampleWeight, ...names),
      prefetch,
      false,
    );
    try {
      const onEvent = (json: string) => feeder.handle(JSON.parse(json) as FeedEvent);
      return JSON.parse(await this.#native.evaluate(undefined, feeder.queue, batchSize, onEvent));
    } catch (error) {
      if (feeder.error !== undefined) throw feeder.error;
      throw error;
    } finally {
      feeder.close();
    }
  }

  /**
   * Model outputs for `x`: a Tensor for a single-output model, else one Tensor per output (in
   * `outputNames` order). Several inputs go as a list or an object keyed by input name.
   */
  predict(x: Tensor, args?: BatchArgs): Promise<Tensor>;
  predict(x: Tensors, args?: BatchArgs): Promise<Tensor | Tensor[]>;
  async predict(x: Tensors, args: BatchArgs = {}): Promise<Tensor | Tensor[]> {
    knownKeys("predict", args, ["batchSize"]);
    const batchSize = positiveInt("predict: batchSize", args.batchSize, 32);
    if (!(x instanceof Tensor) || this.#native.outputShapes.length > 1) {
      const inputs = toArrays("predict", x, undefined, undefined, this.#native.inputNames, []);
      const outs = await this.#native.predictMany(inputs.xs, inputs.xShapes, batchSize);
      const tensors = outs.map((o) => new Tensor(o.data, o.shape));
      return tensors.length === 1 ? tensors[0] : tensors;
    }
    expectTensor(x, "predict: x");
    const out =
      (takeInlineTurn() ? this.#native.predictInline(x.data, [...x.shape], batchSize) : null) ??
      (await this.#native.predict(x.data, [...x.shape], batchSize));
    return new Tensor(out.data, out.shape);
  }

  /** One gradient step on one batch (tensors, lists or objects of them); resolves to its loss and metrics. */
  async trainOnBatch(x: Tensors, y: Tensors, sampleWeight?: Tensor): Promise<Logs> {
    const data = toArrays("trainOnBatch", x, y, sampleWeight, this.#native.inputNames, this.#native.outputNames);
    return JSON.parse(await this.#native.trainOnBatch(data));
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
/** Inference precision of {@link Model.quantize}. */
export type QuantizeMode = "int8" | "bf16" | "float32";

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
  /** Inference precision of the loaded model: `'int8'` or `'bf16'` calls {@link Model.quantize} on it. */
  quantize?: QuantizeMode;
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
  const model = isSequential ? new Sequential(layers, nativeModel) : new Model(layers, nativeModel);
  if (args.quantize !== undefined) model.quantize({ mode: args.quantize });
  return model;
}
