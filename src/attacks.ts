/**
 * Adversarial examples under an L∞ budget, computed in Rust from the input gradients of the
 * model's compiled loss: FGSM (Goodfellow et al. 2015) and PGD (Madry et al. 2018). Use them to
 * measure robustness, or pass `adversarial` to `fit` to train on them.
 */
import type { Tensors } from "./feed.ts";
import { orderTensors } from "./feed.ts";
import type { Model } from "./model.ts";
import { expectTensor, Tensor } from "./tensor.ts";

/** Options of {@link fgsm}. */
export interface FgsmArgs {
  /** Radius of the L∞ ball around each input. */
  epsilon: number;
  /** Valid input range (default `[0, 1]`, images); `false` for none. */
  clip?: [number, number] | false;
  /** Samples per gradient pass (default 256). */
  batchSize?: number;
}

/** Options of {@link pgd}. */
export interface PgdArgs extends FgsmArgs {
  /** Gradient steps (default 40). */
  steps?: number;
  /** Size of each step (default `2.5 * epsilon / steps`, Madry et al.). */
  stepSize?: number;
  /** Start at a uniform random point of the ball (default true). */
  randomStart?: boolean;
  /** Seed of the random start. */
  seed?: number;
}

async function run(model: Model, x: Tensor, y: Tensors, spec: object, seed: number): Promise<Tensor> {
  expectTensor(x, "attack: x");
  const ys = orderTensors("attack: y", y, model.outputNames);
  const out = await model.native.attack(
    x.data,
    [...x.shape],
    ys.map((t) => t.data),
    ys.map((t) => [...t.shape]),
    JSON.stringify(spec),
    seed,
  );
  const t = out.tensors[0];
  return new Tensor(t.data, t.shape);
}

/** One signed-gradient step of size `epsilon` up the loss: `clip(x + epsilon * sign(grad))`. */
export function fgsm(model: Model, x: Tensor, y: Tensors, args: FgsmArgs): Promise<Tensor> {
  return run(model, x, y, { ...args, steps: 1, stepSize: args.epsilon, randomStart: false }, 0);
}

/** Projected gradient descent (ascent on the loss) within the L∞ ball of radius `epsilon`. */
export function pgd(model: Model, x: Tensor, y: Tensors, args: PgdArgs): Promise<Tensor> {
  const { seed, ...rest } = args;
  return run(model, x, y, { steps: 40, randomStart: true, ...rest }, seed ?? 0);
}
