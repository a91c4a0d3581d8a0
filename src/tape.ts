/**
 * Gradients for custom losses and training loops. Inside `valueAndGrads(f, targets)`, `f`
 * computes a scalar from {@link TapeTensor}s (model calls, variables, ops, losses); the graph
 * is recorded and differentiated in Rust, and the gradients come back per target.
 */
import type { LossName, LossSpec } from "./losses.ts";
import { type NativeGradScope, type NativeTensor, native } from "./native.ts";
import { expectTensor, Tensor } from "./tensor.ts";

/**
 * Native tensors made inside each active `valueAndGrads`, innermost last. Node runs native
 * finalizers only between event-loop turns, so a synchronous training loop would keep every
 * step's tensors alive until it yields; the scope frees them as soon as the gradients are out.
 */
const scopes: NativeTensor[][] = [];

/** A tensor that lives in Rust and remembers how it was computed. */
export class TapeTensor {
  /**
   * @internal `scoped: false` for variables, which outlive the `valueAndGrads` they are made in.
   */
  constructor(
    readonly native: NativeTensor,
    scoped = true,
  ) {
    if (scoped) scopes.at(-1)?.push(native);
  }

  /** Frees the native memory now; using the tensor afterwards throws. */
  dispose(): void {
    this.native.dispose();
  }

  /** Dimensions. */
  get shape(): number[] {
    return this.native.shape;
  }

  /** Where the values live: `'cpu'` or `'gpu'`. */
  get device(): Device {
    return this.native.device as Device;
  }

  /**
   * The same values on `device`: this tensor when it is there already, else a copy that
   * gradients flow back through. Ops run on the device of their inputs (all inputs on one
   * device); on the GPU today: add, sub, mul, matMul, scale, sum, mean, reshape, every
   * activation, softmax and logSoftmax. Anything else throws and names itself rather than
   * running on the CPU.
   */
  to(device: Device): TapeTensor {
    return new TapeTensor(this.native.to(checkDevice(device, "to")));
  }

  /** A plain Tensor with a copy of the values. */
  toTensor(): Tensor {
    return new Tensor(this.native.data, this.native.shape);
  }

  /** Elementwise `this + other`. */
  add(other: TapeTensor | Tensor): TapeTensor {
    return new TapeTensor(this.native.binary("add", lift(other, this.device).native));
  }
  /** Elementwise `this - other`. */
  sub(other: TapeTensor | Tensor): TapeTensor {
    return new TapeTensor(this.native.binary("sub", lift(other, this.device).native));
  }
  /** Elementwise `this * other`. */
  mul(other: TapeTensor | Tensor): TapeTensor {
    return new TapeTensor(this.native.binary("mul", lift(other, this.device).native));
  }
  /** Matrix product with `[k, n]`. */
  matMul(other: TapeTensor | Tensor): TapeTensor {
    return new TapeTensor(this.native.binary("matMul", lift(other, this.device).native));
  }
  /** `this * factor`. */
  scale(factor: number): TapeTensor {
    return new TapeTensor(this.native.unary("scale", JSON.stringify({ factor })));
  }
  /** Sum of all elements. */
  sum(): TapeTensor {
    return new TapeTensor(this.native.unary("sum"));
  }
  /** Mean of all elements. */
  mean(): TapeTensor {
    return new TapeTensor(this.native.unary("mean"));
  }
  /** Same values, new shape. */
  reshape(shape: number[]): TapeTensor {
    return new TapeTensor(this.native.unary("reshape", JSON.stringify({ shape })));
  }
  /** An activation by name (`relu`, `sigmoid`, `tanh`, `gelu`, `softmax`, `logSoftmax`, ...). */
  activation(name: string): TapeTensor {
    return new TapeTensor(this.native.unary(name));
  }
  /** A Keras loss of these predictions against `target` (a scalar). */
  loss(target: TapeTensor | Tensor, spec: LossName | LossSpec): TapeTensor {
    return new TapeTensor(this.native.loss(lift(target, this.device).native, JSON.stringify(spec)));
  }
}

/** A device tensors can live on (see {@link TapeTensor.to}). */
export type Device = "cpu" | "gpu";

/** Options of {@link constant} and {@link variable}. */
export interface TapeTensorOptions {
  /** Where the values live (default `'cpu'`); `'gpu'` needs an adapter (see `devices()`). */
  device?: Device;
}

function checkDevice(device: unknown, what: string): Device {
  if (device !== "cpu" && device !== "gpu") {
    throw new TypeError(`${what}: device must be 'cpu' or 'gpu', got ${JSON.stringify(device)}`);
  }
  return device;
}

/** A constant (no gradient) from a Tensor. */
export function constant(t: Tensor, options: TapeTensorOptions = {}): TapeTensor {
  const x = expectTensor(t, "constant");
  const device = options.device === undefined ? undefined : checkDevice(options.device, "constant");
  return new TapeTensor(native.NativeTensor.fromData(x.data, [...x.shape], false, device));
}

/**
 * A variable: gradients with respect to it can be requested. With `{ device: 'gpu' }` its
 * values and its gradients stay on the GPU until read.
 */
export function variable(t: Tensor, options: TapeTensorOptions = {}): TapeTensor {
  const x = expectTensor(t, "variable");
  const device = options.device === undefined ? undefined : checkDevice(options.device, "variable");
  return new TapeTensor(native.NativeTensor.fromData(x.data, [...x.shape], true, device), false);
}

/** A plain Tensor operand becomes a constant on `device` (the other operand's). */
function lift(v: TapeTensor | Tensor, device?: Device): TapeTensor {
  return v instanceof TapeTensor ? v : constant(v, device === "gpu" ? { device } : {});
}

/** Something gradients can be taken with respect to: a model or layer (all its weights) or a variable. */
export interface GradTarget {
  /** @internal */
  gradsFrom(grads: import("./native.ts").NativeGrads): Tensor | Tensor[];
  /** @internal Adds the target's weights to the scope of weights that get gradients. */
  addToGradScope?(scope: import("./native.ts").NativeGradScope): void;
}

/** What {@link valueAndGrads} returns. */
export interface ValueAndGrads<G> {
  /** The scalar `f` returned. */
  value: number;
  /** Gradients, shaped like the targets (a model gives one Tensor per weight, in `getWeights` order). */
  grads: G;
}

type GradsOf<T> = T extends TapeTensor
  ? Tensor
  : T extends readonly unknown[]
    ? { [K in keyof T]: GradsOf<T[K]> }
    : Tensor[];

function gradsFor(target: unknown, grads: import("./native.ts").NativeGrads): unknown {
  if (Array.isArray(target)) return target.map((t) => gradsFor(t, grads));
  if (target instanceof TapeTensor) {
    return new Tensor(grads.ofTensor(target.native), target.native.shape);
  }
  if (target && typeof (target as GradTarget).gradsFrom === "function") return (target as GradTarget).gradsFrom(grads);
  throw new TypeError("valueAndGrads: targets must be models, layers, variables or arrays of them");
}

/**
 * Runs `f` (which must return a scalar TapeTensor) and returns its value and its gradients
 * with respect to `targets`. Tensors made inside `f` (other than variables) are freed when it
 * returns: copy out what you need with `toTensor()` inside `f`.
 */
export function valueAndGrads<T>(f: () => TapeTensor, targets: T): ValueAndGrads<GradsOf<T>> {
  const made: NativeTensor[] = [];
  scopes.push(made);
  // Weights that are not targets are read as constants while f runs: the backward then
  // computes no gradient for them (the discriminator's weights in a GAN's generator step).
  const weights = gradScopeFor(targets);
  weights?.enter();
  try {
    const out = f();
    if (!(out instanceof TapeTensor)) throw new TypeError("valueAndGrads: f must return a TapeTensor (e.g. a loss)");
    // backward frees the recorded graph as it goes; the gradients are copied out, then the
    // tensors made by `f` and the gradient map are freed without waiting for the collector.
    const g = out.native.backward();
    try {
      const value = out.native.data[0];
      return { value, grads: gradsFor(targets, g) as GradsOf<T> };
    } finally {
      g.dispose();
    }
  } finally {
    weights?.exit();
    scopes.pop();
    for (const t of made) t.dispose();
  }
}

/** The weights of the models and layers among `targets`, or undefined (no scope: every weight
 * gets gradients) when a target cannot say which weights it has. */
function gradScopeFor(targets: unknown): NativeGradScope | undefined {
  const scope = new native.NativeGradScope();
  const add = (target: unknown): boolean => {
    if (Array.isArray(target)) return target.every(add);
    if (target instanceof TapeTensor) return true;
    const addToScope = (target as GradTarget | null)?.addToGradScope;
    if (typeof addToScope !== "function") return false;
    addToScope.call(target, scope);
    return true;
  };
  return add(targets) ? scope : undefined;
}

/** Like {@link valueAndGrads}, returning only the gradients. */
export function grads<T>(f: () => TapeTensor, targets: T): GradsOf<T> {
  return valueAndGrads(f, targets).grads;
}
