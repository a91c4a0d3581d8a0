/**
 * `Dataset`: a lazy, re-iterable stream of elements with tf.data's transformations, so data
 * larger than memory (files on disk, generators) can feed `model.fit` batch by batch.
 *
 * Each `for await` over a Dataset starts a fresh pass from its source (fit runs one pass per
 * epoch). Nothing is read ahead except what `shuffle` (its buffer) and `prefetch` (its depth)
 * hold, so memory is bounded by those sizes, never by the data set.
 */
import { Tensor } from "../tensor.ts";
import { MersenneTwister, randomSeed } from "./random.ts";

/** A leaf `batch` can stack: a Tensor, a Float32Array (a 1-D sample) or a number (a scalar). */
export type Stackable = Tensor | Float32Array | number;

/** The type `batch` turns an element into: every leaf becomes a Tensor with a batch axis. */
export type Batched<T> = T extends Stackable
  ? Tensor
  : T extends readonly unknown[]
    ? { [K in keyof T]: Batched<T[K]> }
    : T extends object
      ? { [K in keyof T]: Batched<T[K]> }
      : never;

/** A nest of Tensors: one, an array of them, or an object of them (by input/output name). */
export type TensorTree = Tensor | readonly TensorTree[] | { readonly [key: string]: TensorTree };

/** Options of {@link Dataset.batch}. */
export interface BatchOptions {
  /** Drop a last batch smaller than `size` (for models that need a fixed batch). Default false. */
  dropRemainder?: boolean;
}

/** Options of {@link Dataset.shuffle}. */
export interface ShuffleOptions {
  /** Seed of the order: the same seed gives the same sequence of permutations. Default: random. */
  seed?: number;
  /** Draw a new order on every pass (every epoch), as tf.data does by default. Default true. */
  reshuffleEachIteration?: boolean;
}

function checkCount(value: number, what: string, min: number): void {
  if (!Number.isInteger(value) || value < min) {
    throw new RangeError(`Dataset.${what} must be an integer >= ${min}, got ${value}`);
  }
}

/** A lazy stream of elements; see the file comment. */
export class Dataset<T> implements AsyncIterable<T> {
  /** `open` starts one pass over the data; it is called once per iteration. */
  protected constructor(private readonly open: () => AsyncIterator<T>) {}

  /** Starts a fresh pass over the data. */
  [Symbol.asyncIterator](): AsyncIterator<T> {
    return this.open();
  }

  /**
   * A Dataset over whatever `make` returns, called once per pass: a generator function (sync or
   * async), or a function returning an array. Errors it throws reach the consumer unchanged.
   */
  static fromGenerator<T>(make: () => AsyncIterable<T> | Iterable<T>): Dataset<T> {
    return new Dataset<T>(() => {
      const source = make();
      if (source && typeof (source as AsyncIterable<T>)[Symbol.asyncIterator] === "function") {
        return (source as AsyncIterable<T>)[Symbol.asyncIterator]();
      }
      if (source && typeof (source as Iterable<T>)[Symbol.iterator] === "function") {
        return (async function* () {
          yield* source as Iterable<T>;
        })();
      }
      throw new TypeError(`Dataset.fromGenerator: the function must return an iterable, got ${typeof source}`);
    });
  }

  /**
   * Slices in-memory tensors into per-sample elements along their first axis, keeping the
   * structure: `fromTensors({ xs, ys })` yields `{ xs: xs[i], ys: ys[i] }`; leaves may be
   * Tensors, arrays or objects of Tensors. Slices share memory with the inputs (no copy).
   */
  static fromTensors<T extends TensorTree>(tensors: T): Dataset<T> {
    const leaves: Tensor[] = [];
    collectLeaves(tensors, leaves, "fromTensors");
    if (leaves.length === 0) throw new TypeError("Dataset.fromTensors: no tensors given");
    const n = leaves[0].shape[0];
    for (const t of leaves) {
      if (t.rank === 0) throw new RangeError("Dataset.fromTensors: a scalar tensor has no samples to slice");
      if (t.shape[0] !== n) {
        throw new RangeError(
          `Dataset.fromTensors: every tensor needs the same first dimension, got ${n} and ${t.shape[0]} (${t})`,
        );
      }
    }
    return Dataset.fromGenerator(function* () {
      for (let i = 0; i < n; i++) yield sliceTree(tensors, i) as T;
    });
  }

  /** Applies `fn` (sync or async) to every element. */
  map<U>(fn: (element: T) => U | Promise<U>): Dataset<U> {
    return this.derive(async function* (source) {
      for await (const element of source) yield await fn(element);
    });
  }

  /** Keeps the elements for which `predicate` (sync or async) is true. */
  filter(predicate: (element: T) => boolean | Promise<boolean>): Dataset<T> {
    return this.derive(async function* (source) {
      for await (const element of source) if (await predicate(element)) yield element;
    });
  }

  /**
   * Groups `size` consecutive elements and stacks them leaf by leaf along a new first axis:
   * elements `{ xs: Tensor[28, 28, 1], ys: 3 }` become `{ xs: Tensor[size, 28, 28, 1], ys:
   * Tensor[size] }`. Every element must have the same structure and leaf shapes.
   */
  batch(size: number, options: BatchOptions = {}): Dataset<Batched<T>> {
    checkCount(size, "batch size", 1);
    const dropRemainder = options.dropRemainder ?? false;
    return this.chunk(size, dropRemainder).map((group) => stack(group) as Batched<T>);
  }

  /**
   * Groups `size` consecutive elements into arrays without stacking them (for elements that are
   * not numeric, such as file names to decode together). The last group may be smaller.
   */
  chunk(size: number, dropRemainder = false): Dataset<T[]> {
    checkCount(size, "chunk size", 1);
    return this.derive(async function* (source) {
      let group: T[] = [];
      for await (const element of source) {
        group.push(element);
        if (group.length === size) {
          yield group;
          group = [];
        }
      }
      if (group.length > 0 && !dropRemainder) yield group;
    });
  }

  /**
   * Randomly reorders elements with tf.data's buffer algorithm: a buffer of `bufferSize`
   * elements is filled, and each output is a uniformly drawn buffer slot, refilled from the
   * source. A buffer at least as large as the data set gives a uniform permutation; a smaller one
   * bounds memory at the cost of a more local shuffle.
   */
  shuffle(bufferSize: number, options: ShuffleOptions = {}): Dataset<T> {
    checkCount(bufferSize, "shuffle bufferSize", 1);
    const seed = options.seed ?? randomSeed();
    if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) {
      throw new RangeError(`Dataset.shuffle: seed must be an integer in [0, 2^32), got ${seed}`);
    }
    const reshuffle = options.reshuffleEachIteration ?? true;
    let pass = 0;
    return this.derive(async function* (source) {
      // Pass p draws from its own stream, so pass p's order never depends on how far pass p-1 ran.
      const rng = new MersenneTwister(reshuffle ? (seed + Math.imul(pass++, 0x9e3779b9)) >>> 0 : seed);
      const buffer: T[] = [];
      for await (const element of source) {
        if (buffer.length < bufferSize) {
          buffer.push(element);
          continue;
        }
        const i = rng.interval(buffer.length - 1);
        const out = buffer[i];
        buffer[i] = element;
        yield out;
      }
      while (buffer.length > 0) {
        const i = rng.interval(buffer.length - 1);
        const out = buffer[i];
        buffer[i] = buffer[buffer.length - 1];
        buffer.pop();
        yield out;
      }
    });
  }

  /**
   * Requests up to `n` elements ahead of the consumer, so the source (file reading, decoding)
   * works while the consumer (the trainer) is busy. Never more than `n` ahead: after the consumer
   * has taken k elements, the source has been asked for at most k + n.
   */
  prefetch(n: number): Dataset<T> {
    checkCount(n, "prefetch depth", 0);
    if (n === 0) return this.derive((source) => source);
    return new Dataset<T>(() => prefetchIterator(this.open(), n));
  }

  /** The first `n` elements (stops reading the source after them). */
  take(n: number): Dataset<T> {
    checkCount(n, "take count", 0);
    return this.derive(async function* (source) {
      if (n === 0) return;
      let i = 0;
      for await (const element of source) {
        yield element;
        if (++i >= n) return;
      }
    });
  }

  /** All but the first `n` elements. */
  skip(n: number): Dataset<T> {
    checkCount(n, "skip count", 0);
    return this.derive(async function* (source) {
      let i = 0;
      for await (const element of source) if (i++ >= n) yield element;
    });
  }

  /**
   * The data set `count` times over (forever when `count` is omitted), one fresh pass each time.
   * An endless repeat of an empty data set ends instead of spinning.
   */
  repeat(count?: number): Dataset<T> {
    if (count !== undefined) checkCount(count, "repeat count", 0);
    return new Dataset<T>(() =>
      (async function* (self: Dataset<T>) {
        for (let pass = 0; count === undefined || pass < count; pass++) {
          let any = false;
          for await (const element of self) {
            any = true;
            yield element;
          }
          if (!any) return;
        }
      })(this),
    );
  }

  /**
   * Reads the whole pass into an array. Its memory grows with the data set: meant for tests and
   * small data (use `take(n).toArray()` to peek).
   */
  async toArray(): Promise<T[]> {
    const out: T[] = [];
    for await (const element of this) out.push(element);
    return out;
  }

  /** A Dataset whose each pass runs `transform` over a fresh pass of this one. */
  private derive<U>(transform: (source: AsyncIterable<T>) => AsyncIterable<U>): Dataset<U> {
    return new Dataset<U>(() => transform({ [Symbol.asyncIterator]: () => this.open() })[Symbol.asyncIterator]());
  }
}

function collectLeaves(tree: unknown, out: Tensor[], what: string): void {
  if (tree instanceof Tensor) out.push(tree);
  else if (Array.isArray(tree)) for (const t of tree) collectLeaves(t, out, what);
  else if (tree !== null && typeof tree === "object" && Object.getPrototypeOf(tree) === Object.prototype) {
    for (const t of Object.values(tree)) collectLeaves(t, out, what);
  } else {
    throw new TypeError(`Dataset.${what}: expected Tensors, arrays or objects of Tensors, got ${describe(tree)}`);
  }
}

function sliceTree(tree: TensorTree, i: number): TensorTree {
  if (tree instanceof Tensor) {
    const row = tree.size / tree.shape[0];
    return new Tensor(tree.data.subarray(i * row, (i + 1) * row), tree.shape.slice(1));
  }
  if (Array.isArray(tree)) return tree.map((t) => sliceTree(t, i));
  const out: Record<string, TensorTree> = {};
  for (const [k, v] of Object.entries(tree)) out[k] = sliceTree(v, i);
  return out;
}

function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  if (typeof value === "object") return `a ${(value as object).constructor?.name ?? "object"}`;
  return typeof value;
}

/** Stacks a group of same-structured elements leaf by leaf; `path` names the leaf in errors. */
function stack(group: unknown[], path = "element"): unknown {
  const first = group[0];
  if (typeof first === "number" || first instanceof Float32Array || first instanceof Tensor) {
    const shape = leafShape(first);
    const size = shape.reduce((a, b) => a * b, 1);
    const out = new Float32Array(group.length * size);
    group.forEach((leaf, i) => {
      const got = leafShape(leaf as Stackable, path);
      if (got.length !== shape.length || got.some((d, k) => d !== shape[k])) {
        throw new RangeError(
          `Dataset.batch: ${path} has shape [${got.join(", ")}] in sample ${i} but [${shape.join(", ")}] in sample 0`,
        );
      }
      if (typeof leaf === "number") out[i] = leaf;
      else out.set(leaf instanceof Tensor ? leaf.data : (leaf as Float32Array), i * size);
    });
    return new Tensor(out, [group.length, ...shape]);
  }
  if (Array.isArray(first)) {
    for (const [i, e] of group.entries()) {
      if (!Array.isArray(e) || e.length !== first.length) {
        throw new TypeError(`Dataset.batch: ${path} is an array of ${first.length} in sample 0 but not in sample ${i}`);
      }
    }
    return first.map((_, k) =>
      stack(
        group.map((e) => (e as unknown[])[k]),
        `${path}[${k}]`,
      ),
    );
  }
  if (first !== null && typeof first === "object" && Object.getPrototypeOf(first) === Object.prototype) {
    const keys = Object.keys(first);
    const out: Record<string, unknown> = {};
    for (const key of keys) {
      const column = group.map((e, i) => {
        if (e === null || typeof e !== "object" || !(key in e)) {
          throw new TypeError(`Dataset.batch: ${path}.${key} is missing in sample ${i}`);
        }
        return (e as Record<string, unknown>)[key];
      });
      out[key] = stack(column, `${path}.${key}`);
    }
    return out;
  }
  throw new TypeError(
    `Dataset.batch: ${path} is ${describe(first)}; batch stacks Tensors, Float32Arrays and numbers ` +
      "(in arrays or plain objects)",
  );
}

function leafShape(leaf: Stackable, path = "element"): readonly number[] {
  if (typeof leaf === "number") return [];
  if (leaf instanceof Float32Array) return [leaf.length];
  if (leaf instanceof Tensor) return leaf.shape;
  throw new TypeError(`Dataset.batch: ${path} is ${describe(leaf)} in one sample but a number or tensor in another`);
}

/** The iterator of {@link Dataset.prefetch}: a producer loop that stays at most `n` ahead. */
function prefetchIterator<T>(upstream: AsyncIterator<T>, n: number): AsyncIterator<T> {
  const buffer: T[] = [];
  let failure: { error: unknown } | undefined;
  let finished = false;
  let closed = false;
  let pumping = false;
  let pulled = 0;
  let delivered = 0;
  let waiters: (() => void)[] = [];
  const wake = () => {
    const ready = waiters;
    waiters = [];
    for (const w of ready) w();
  };
  const pump = async () => {
    if (pumping) return;
    pumping = true;
    try {
      while (!finished && !closed && pulled < delivered + n) {
        pulled++;
        let result: IteratorResult<T>;
        try {
          result = await upstream.next();
        } catch (error) {
          failure = { error };
          finished = true;
          break;
        }
        if (result.done) finished = true;
        else buffer.push(result.value);
        wake();
      }
    } finally {
      pumping = false;
      wake();
    }
  };
  return {
    async next(): Promise<IteratorResult<T>> {
      for (;;) {
        if (buffer.length > 0) {
          delivered++;
          const value = buffer.shift() as T;
          void pump();
          return { value, done: false };
        }
        if (failure) {
          const { error } = failure;
          failure = undefined;
          throw error;
        }
        if (finished || closed) return { value: undefined, done: true };
        const ready = new Promise<void>((resolve) => waiters.push(resolve));
        void pump();
        await ready;
      }
    },
    async return(): Promise<IteratorResult<T>> {
      closed = true;
      buffer.length = 0;
      wake();
      await upstream.return?.();
      return { value: undefined, done: true };
    },
  };
}
