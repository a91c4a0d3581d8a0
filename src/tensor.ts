/**
 * Tensors: a Float32Array plus a shape. They are plain data on the JavaScript side; all
 * computation happens in Rust.
 */

/** Nested number arrays, as accepted by {@link tensor}. */
export type NestedArray = number | NestedArray[];

function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return `an array of length ${value.length}`;
  if (ArrayBuffer.isView(value)) return `a ${value.constructor.name} of length ${(value as Float32Array).length}`;
  return typeof value;
}

function checkShape(shape: readonly number[], what: string): void {
  if (!Array.isArray(shape) || shape.some((d) => !Number.isInteger(d) || d < 0)) {
    throw new TypeError(`${what}: shape must be an array of non-negative integers, got ${JSON.stringify(shape)}`);
  }
}

/** An immutable n-dimensional array of 32-bit floats (row-major). */
export class Tensor {
  /** The values, row-major. */
  readonly data: Float32Array;
  /** The dimensions. */
  readonly shape: readonly number[];

  /** Wraps `data` (not copied) with `shape`; throws when the sizes disagree. */
  constructor(data: Float32Array, shape: readonly number[]) {
    if (!(data instanceof Float32Array)) {
      throw new TypeError(`Tensor: data must be a Float32Array, got ${describe(data)}`);
    }
    checkShape(shape, "Tensor");
    const size = shape.reduce((a, b) => a * b, 1);
    if (size !== data.length) {
      throw new Error(`Tensor: data has ${data.length} values but shape [${shape.join(", ")}] needs ${size}`);
    }
    this.data = data;
    this.shape = Object.freeze([...shape]);
  }

  /** Number of elements. */
  get size(): number {
    return this.data.length;
  }

  /** Number of dimensions. */
  get rank(): number {
    return this.shape.length;
  }

  /** Same data under a new shape of equal size (no copy). */
  reshape(shape: readonly number[]): Tensor {
    return new Tensor(this.data, shape);
  }

  /** Samples `start..end` along the first axis (no copy). */
  slice(start: number, end: number = this.shape[0] ?? 0): Tensor {
    const n = this.shape[0] ?? 0;
    if (!Number.isInteger(start) || !Number.isInteger(end) || start < 0 || end > n || start > end) {
      throw new RangeError(`Tensor.slice: expected 0 <= start <= end <= ${n}, got ${start}, ${end}`);
    }
    const row = n === 0 ? 0 : this.size / n;
    return new Tensor(this.data.subarray(start * row, end * row), [end - start, ...this.shape.slice(1)]);
  }

  /** Index of the largest value along the last axis, as a tensor of the leading shape. */
  argMax(): Tensor {
    const cols = this.shape[this.shape.length - 1] ?? 1;
    const rows = cols === 0 ? 0 : this.size / cols;
    const out = new Float32Array(rows);
    for (let r = 0; r < rows; r++) {
      let best = 0;
      for (let c = 1; c < cols; c++) {
        if (this.data[r * cols + c] > this.data[r * cols + best]) best = c;
      }
      out[r] = best;
    }
    return new Tensor(out, this.shape.slice(0, -1));
  }

  /** The values as nested arrays. */
  toArray(): NestedArray {
    const build = (offset: number, dim: number): NestedArray => {
      if (dim === this.shape.length) return this.data[offset];
      const stride = this.shape.slice(dim + 1).reduce((a, b) => a * b, 1);
      return Array.from({ length: this.shape[dim] }, (_, i) => build(offset + i * stride, dim + 1));
    };
    return build(0, 0);
  }

  /** A short description, e.g. `Tensor[128, 10]`. */
  toString(): string {
    return `Tensor[${this.shape.join(", ")}]`;
  }
}

function inferShape(value: NestedArray): number[] {
  const shape: number[] = [];
  let v: NestedArray = value;
  while (Array.isArray(v)) {
    shape.push(v.length);
    v = v[0] as NestedArray;
  }
  return shape;
}

/**
 * Makes a tensor from a Float32Array, a flat number array or nested arrays. The shape is
 * inferred from nested arrays when not given.
 */
export function tensor(data: Float32Array | NestedArray, shape?: readonly number[]): Tensor {
  if (data instanceof Float32Array) {
    return new Tensor(data, shape ?? [data.length]);
  }
  if (ArrayBuffer.isView(data)) {
    return new Tensor(
      Float32Array.from(data as unknown as ArrayLike<number>),
      shape ?? [(data as unknown as ArrayLike<number>).length],
    );
  }
  if (typeof data === "number") {
    return new Tensor(Float32Array.of(data), shape ?? []);
  }
  if (!Array.isArray(data)) {
    throw new TypeError(`tensor: expected a Float32Array or (nested) number array, got ${describe(data)}`);
  }
  const inferred = inferShape(data);
  const flat = (data as unknown[]).flat(Number.POSITIVE_INFINITY) as unknown[];
  flat.forEach((v, i) => {
    if (typeof v !== "number") throw new TypeError(`tensor: element ${i} is ${describe(v)}, expected a number`);
  });
  const values = Float32Array.from(flat as number[]);
  const finalShape = shape ?? inferred;
  if (!shape && values.length !== inferred.reduce((a, b) => a * b, 1)) {
    throw new Error(`tensor: ragged nested array; shape [${inferred.join(", ")}] does not fit ${values.length} values`);
  }
  return new Tensor(values, finalShape);
}

/** Throws a TypeError naming `what` unless `value` is a Tensor. */
export function expectTensor(value: unknown, what: string): Tensor {
  if (!(value instanceof Tensor)) {
    throw new TypeError(`${what} must be a Tensor (make one with tensor(data, shape)), got ${describe(value)}`);
  }
  return value;
}
