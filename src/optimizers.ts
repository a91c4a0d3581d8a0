/**
 * Optimizers with the Keras update rules. Pass an instance or a name (`'adam'`) to `compile`.
 */
import { type NativeModel, type NativeOptimizer, native } from "./native.ts";
import { expectTensor, type Tensor } from "./tensor.ts";

/** Arguments of {@link sgd}. */
export interface SgdArgs {
  /** Step size (default 0.01). */
  learningRate?: number;
  /** Momentum factor (default 0). */
  momentum?: number;
  /** Nesterov momentum (default false). */
  nesterov?: boolean;
}

/** Arguments of {@link adam}. */
export interface AdamArgs {
  /** Step size (default 0.001). */
  learningRate?: number;
  /** First-moment decay (default 0.9). */
  beta1?: number;
  /** Second-moment decay (default 0.999). */
  beta2?: number;
  /** Numerical stabiliser (default 1e-7). */
  epsilon?: number;
}

/** Arguments of {@link adamw}. */
export interface AdamWArgs extends AdamArgs {
  /** Decoupled weight decay (default 0.004). */
  weightDecay?: number;
}

/** Arguments of {@link rmsprop}. */
export interface RmsPropArgs {
  /** Step size (default 0.001). */
  learningRate?: number;
  /** Decay of the squared-gradient average (default 0.9). */
  rho?: number;
  /** Numerical stabiliser (default 1e-7). */
  epsilon?: number;
}

/** Anything whose weights an optimizer can update directly (a model). */
export interface Trainable {
  /** @internal */
  readonly native: NativeModel;
}

/**
 * An optimizer. Given to `compile`, the compiled model keeps its own state; used directly with
 * `applyGradients` (custom training loops), this object keeps the state.
 */
export class Optimizer {
  /** `sgd`, `adam`, `adamw` or `rmsprop`. */
  readonly name: string;
  /** Hyper-parameters. */
  readonly args: Readonly<Record<string, unknown>>;
  #state: NativeOptimizer | undefined;

  constructor(name: string, args: object) {
    this.name = name;
    this.args = Object.freeze({ ...args });
  }

  /** Applies gradients (one per weight, in `getWeights` order, e.g. from `valueAndGrads`) to a model's trainable weights. */
  applyGradients(grads: Tensor[], target: Trainable): void {
    if (!Array.isArray(grads)) throw new TypeError("applyGradients: expected an array of gradient Tensors");
    this.#state ??= new native.NativeOptimizer(JSON.stringify(this.toJSON()));
    this.#state.applyGradients(
      target.native,
      grads.map((g, i) => expectTensor(g, `applyGradients: gradient ${i}`).data),
    );
  }

  /** `{ name, ...args }` as sent to Rust. */
  toJSON(): Record<string, unknown> {
    return { name: this.name, ...this.args };
  }
}

/** Stochastic gradient descent, optionally with (Nesterov) momentum. */
export function sgd(args: SgdArgs = {}): Optimizer {
  return new Optimizer("sgd", args);
}

/** Adam. */
export function adam(args: AdamArgs = {}): Optimizer {
  return new Optimizer("adam", args);
}

/** Adam with decoupled weight decay. */
export function adamw(args: AdamWArgs = {}): Optimizer {
  return new Optimizer("adamw", args);
}

/** RMSprop. */
export function rmsprop(args: RmsPropArgs = {}): Optimizer {
  return new Optimizer("rmsprop", args);
}
