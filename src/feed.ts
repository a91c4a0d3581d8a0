/**
 * Feeding `fit` and `evaluate`: tensors for models with several inputs or outputs (arrays, or
 * objects keyed by input/output name), and batches streamed from any async iterable (a
 * `Dataset`, a generator) into the Rust training loop.
 *
 * Streaming keeps at most `prefetch` batches queued in Rust: Rust asks for a pass with a `pull`
 * event and returns a credit with each `consumed` event, and the feeder pulls the next batch
 * from the iterable while Rust trains on the ones it has. So the trainer does not wait on a
 * fast source, and memory is bounded by the prefetch depth, not by the data.
 */
import { type BatchQueue, native } from "./native.ts";
import { Tensor } from "./tensor.ts";

/** One tensor, a list in input (output) order, or an object keyed by input (output) name. */
export type Tensors = Tensor | Tensor[] | Record<string, Tensor>;

/** A batch of a streamed data set: first axis = batch. */
export interface DataBatch {
  /** The model inputs. */
  xs: Tensors;
  /** The targets (not needed by `predict`). */
  ys?: Tensors;
  /** One weight per sample. */
  sampleWeight?: Tensor | Float32Array;
}

/** What `fit` and `evaluate` accept instead of tensors: a `Dataset`, an async generator, ... */
export type BatchIterable = AsyncIterable<DataBatch> | Iterable<DataBatch>;

/** The arrays and shapes the native side takes. */
export interface BatchArrays {
  xs: Float32Array[];
  xShapes: number[][];
  ys: Float32Array[];
  yShapes: number[][];
  sampleWeight?: Float32Array;
}

/** Whether `value` is a stream of batches rather than tensors. */
export function isBatchIterable(value: unknown): value is BatchIterable {
  if (value === null || typeof value !== "object" || value instanceof Tensor || Array.isArray(value)) return false;
  if (ArrayBuffer.isView(value)) return false;
  return Symbol.asyncIterator in value || Symbol.iterator in value;
}

/** Tensors in `names` order, from any of the forms of {@link Tensors}. */
export function orderTensors(what: string, value: Tensors, names: string[]): Tensor[] {
  if (ArrayBuffer.isView(value)) {
    throw new TypeError(`${what} must be a Tensor, got a ${value.constructor.name} (wrap it: tensor(data, shape))`);
  }
  if (value instanceof Tensor) {
    if (names.length > 1) {
      throw new TypeError(`${what}: the model has ${names.length} (${names.join(", ")}); give a list or an object`);
    }
    return [value];
  }
  if (Array.isArray(value)) {
    if (value.length !== names.length) {
      throw new TypeError(`${what}: expected ${names.length} tensors (${names.join(", ")}), got ${value.length}`);
    }
    return value.map((t, i) => expectTensorIn(`${what}[${i}]`, t));
  }
  if (value !== null && typeof value === "object") {
    const unknown = Object.keys(value).filter((k) => !names.includes(k));
    if (unknown.length > 0) {
      throw new TypeError(`${what}: unknown name '${unknown[0]}'; expected: ${names.join(", ")}`);
    }
    return names.map((n) => {
      if (!(n in value)) throw new TypeError(`${what}: missing '${n}' (expected: ${names.join(", ")})`);
      return expectTensorIn(`${what}.${n}`, value[n]);
    });
  }
  throw new TypeError(`${what} must be a Tensor, a list of Tensors or an object of Tensors`);
}

function expectTensorIn(what: string, value: unknown): Tensor {
  if (!(value instanceof Tensor)) throw new TypeError(`${what} must be a Tensor`);
  return value;
}

/** The native form of a batch. */
export function toArrays(
  what: string,
  xs: Tensors,
  ys: Tensors | undefined,
  sampleWeight: Tensor | Float32Array | undefined,
  inputNames: string[],
  outputNames: string[],
): BatchArrays {
  const x = orderTensors(`${what}: x`, xs, inputNames);
  const y = ys === undefined ? [] : orderTensors(`${what}: y`, ys, outputNames);
  let weights: Float32Array | undefined;
  if (sampleWeight !== undefined) {
    weights = sampleWeight instanceof Tensor ? sampleWeight.data : sampleWeight;
    if (!(weights instanceof Float32Array))
      throw new TypeError(`${what}: sampleWeight must be a Tensor or Float32Array`);
  }
  return {
    xs: x.map((t) => t.data),
    xShapes: x.map((t) => [...t.shape]),
    ys: y.map((t) => t.data),
    yShapes: y.map((t) => [...t.shape]),
    sampleWeight: weights,
  };
}

type AnyIterator = AsyncIterator<DataBatch> | Iterator<DataBatch>;

function open(data: BatchIterable): AnyIterator {
  return Symbol.asyncIterator in data
    ? (data as AsyncIterable<DataBatch>)[Symbol.asyncIterator]()
    : (data as Iterable<DataBatch>)[Symbol.iterator]();
}

/** A native event of a streaming pass. */
export interface FeedEvent {
  type: "pull" | "consumed";
  queue: string;
  generation?: number;
}

/** Pushes one iterable's batches into one native queue, `prefetch` at most ahead of Rust. */
export class Feeder {
  /** The native queue Rust reads. */
  readonly queue: BatchQueue = new native.BatchQueue();
  /** What the data source threw, if it did (fit rejects with this very error). */
  error: unknown;
  #iterator: AnyIterator | undefined;
  #generation = 0;
  #credits: number;
  #running = false;
  #closed = false;

  constructor(
    private readonly data: BatchIterable,
    private readonly convert: (batch: DataBatch) => BatchArrays,
    prefetch: number,
    /** With stepsPerEpoch, one iteration continues across epochs (Keras' behaviour). */
    private readonly continuing: boolean,
  ) {
    this.#credits = prefetch;
  }

  /** Routes a native event; returns false when it is not a feed event. */
  handle(event: FeedEvent): void {
    if (event.type === "pull") {
      this.#generation = event.generation ?? this.#generation + 1;
      if (!this.continuing || this.#iterator === undefined) {
        const old = this.#iterator;
        this.#iterator = undefined;
        void old?.return?.();
        this.#iterator = this.#open();
      }
    } else {
      this.#credits++;
    }
    void this.#pump();
  }

  #open(): AnyIterator | undefined {
    try {
      return open(this.data);
    } catch (error) {
      this.#fail(error);
      return undefined;
    }
  }

  async #pump(): Promise<void> {
    if (this.#running) return;
    this.#running = true;
    try {
      while (this.#credits > 0 && !this.#closed && this.#iterator !== undefined) {
        const iterator = this.#iterator;
        const generation = this.#generation;
        const result = await iterator.next();
        // A new pass began while this batch was being made: it belongs to the old one.
        if (this.#closed || iterator !== this.#iterator) continue;
        if (result.done) {
          this.#iterator = undefined;
          this.queue.end(generation);
          break;
        }
        const value = result.value;
        if (value === null || typeof value !== "object" || !("xs" in value)) {
          throw new TypeError("fit: each batch must be an object { xs, ys, sampleWeight? }");
        }
        this.queue.push(this.convert(value), generation);
        this.#credits--;
      }
    } catch (error) {
      this.#fail(error);
    } finally {
      this.#running = false;
    }
  }

  #fail(error: unknown): void {
    if (this.#closed) return;
    this.error = error;
    this.#closed = true;
    this.queue.fail(error instanceof Error ? error.message : String(error));
  }

  /** Stops feeding and lets the iterator clean up (its `return`). */
  close(): void {
    this.#closed = true;
    const it = this.#iterator;
    this.#iterator = undefined;
    void it?.return?.();
  }
}
