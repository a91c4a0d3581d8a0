/**
 * Optimizers with the Keras update rules. Pass an instance or a name (`'adam'`) to `compile`.
 */
import { type NativeModel, type NativeOptimizer, native } from "./native.ts";
import { expectTensor, type Tensor } from "./tensor.ts";

/** Arguments of {@link schedules.cosineDecay} (Keras `CosineDecay`). */
export interface CosineDecayArgs {
  /** Rate at the first step. */
  initialLearningRate: number;
  /** Steps of the cosine, after the warm-up. */
  decaySteps: number;
  /** Final rate as a fraction of the peak (default 0). */
  alpha?: number;
  /** Peak rate reached by a linear warm-up from `initialLearningRate` (default: no warm-up). */
  warmupTarget?: number;
  /** Steps of the warm-up (default 0). */
  warmupSteps?: number;
}

/** Arguments of {@link schedules.exponentialDecay} (Keras `ExponentialDecay`). */
export interface ExponentialDecayArgs {
  /** Rate at the first step. */
  initialLearningRate: number;
  /** Steps per factor of `decayRate`. */
  decaySteps: number;
  /** Factor per `decaySteps`. */
  decayRate: number;
  /** Decay in whole steps of `decaySteps` (default false). */
  staircase?: boolean;
}

/** A per-step learning rate, computed in Rust at every optimizer update. */
export type LearningRateSchedule =
  | ({ name: "cosineDecay" } & CosineDecayArgs)
  | ({ name: "exponentialDecay" } & ExponentialDecayArgs);

/** Learning-rate schedules to pass as an optimizer's `learningRate`. */
export const schedules = {
  /** Cosine decay from the (warmed-up) peak to `alpha * peak` over `decaySteps` steps. */
  cosineDecay(args: CosineDecayArgs): LearningRateSchedule {
    return { name: "cosineDecay", ...args };
  },
  /** `initialLearningRate * decayRate ^ (step / decaySteps)`. */
  exponentialDecay(args: ExponentialDecayArgs): LearningRateSchedule {
    return { name: "exponentialDecay", ...args };
  },
};

/** Options every optimizer takes. */
export interface CommonOptimizerArgs {
  /**
   * Keep an exponential moving average of the weights and, when `fit` ends, replace the
   * weights by it (Keras `use_ema`; default false).
   */
  useEma?: boolean;
  /** Momentum of that average (default 0.99). */
  emaMomentum?: number;
  /**
   * Scale each weight's gradient down so that its L2 norm is at most this (Keras `clipnorm`).
   * At most one of `clipnorm`, `clipvalue` and `globalClipnorm` may be set. On the GPU the
   * norms are computed and applied on the device.
   */
  clipnorm?: number;
  /** Clamp every gradient value to `[-clipvalue, clipvalue]` (Keras `clipvalue`). */
  clipvalue?: number;
  /**
   * Scale all gradients of a step by one factor so that their joint L2 norm is at most this
   * (Keras `global_clipnorm`): the direction of the whole step is kept.
   */
  globalClipnorm?: number;
}

/** Arguments of {@link sgd}. */
export interface SgdArgs extends CommonOptimizerArgs {
  /** Step size (default 0.01), or a per-step schedule. */
  learningRate?: number | LearningRateSchedule;
  /** Momentum factor (default 0). */
  momentum?: number;
  /** Nesterov momentum (default false). */
  nesterov?: boolean;
}

/** Arguments of {@link adam}. */
export interface AdamArgs extends CommonOptimizerArgs {
  /** Step size (default 0.001), or a per-step schedule. */
  learningRate?: number | LearningRateSchedule;
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
export interface RmsPropArgs extends CommonOptimizerArgs {
  /** Step size (default 0.001), or a per-step schedule. */
  learningRate?: number | LearningRateSchedule;
  /** Decay of the squared-gradient average (default 0.9). */
  rho?: number;
  /** Numerical stabiliser (default 1e-7). */
  epsilon?: number;
}

/** Arguments of {@link lion}. */
export interface LionArgs extends CommonOptimizerArgs {
  /**
   * Step size (default 0.001), or a per-step schedule. Every weight moves by exactly this
   * much per step, so it is usually 3 to 10 times smaller than Adam's.
   */
  learningRate?: number | LearningRateSchedule;
  /** Weight of the momentum in the step's sign, in (0, 1] (default 0.9). */
  beta1?: number;
  /** Decay of the momentum itself (default 0.99). */
  beta2?: number;
}

/** Arguments of {@link lamb}. */
export interface LambArgs extends CommonOptimizerArgs {
  /** Step size (default 0.001), or a per-step schedule. */
  learningRate?: number | LearningRateSchedule;
  /** First-moment decay (default 0.9). */
  beta1?: number;
  /** Second-moment decay (default 0.999). */
  beta2?: number;
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
  /** `sgd`, `adam`, `adamw`, `rmsprop`, `lion` or `lamb`. */
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

/**
 * Lion (Chen et al. 2023, Keras `Lion`): steps by the sign of an interpolation between the
 * momentum and the gradient, so every weight moves by the learning rate; it keeps one slot per
 * weight where Adam keeps two.
 */
export function lion(args: LionArgs = {}): Optimizer {
  return new Optimizer("lion", args);
}

/**
 * LAMB (You et al. 2020, Keras `Lamb`): Adam's step rescaled per weight tensor by the ratio of
 * the weight's norm to the step's norm, which keeps large-batch training stable.
 */
export function lamb(args: LambArgs = {}): Optimizer {
  return new Optimizer("lamb", args);
}
