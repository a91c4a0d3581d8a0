/**
 * Losses. Pass a name (`'sparseCategoricalCrossentropy'`) or an object from these helpers
 * to `compile`. All reduce by the mean over the batch.
 */

/** Loss names accepted by `compile`. */
export type LossName =
  | "categoricalCrossentropy"
  | "sparseCategoricalCrossentropy"
  | "binaryCrossentropy"
  | "meanSquaredError"
  | "meanAbsoluteError"
  | "mse"
  | "mae";

/** A loss with options. */
export interface LossSpec {
  name: LossName;
  /** Predictions are logits rather than probabilities (crossentropies only). */
  fromLogits?: boolean;
}

/** Crossentropy against one-hot targets shaped like the predictions. */
export function categoricalCrossentropy(args: { fromLogits?: boolean } = {}): LossSpec {
  return { name: "categoricalCrossentropy", ...args };
}

/** Crossentropy against integer class labels (`[batch]` or `[batch, 1]`). */
export function sparseCategoricalCrossentropy(args: { fromLogits?: boolean } = {}): LossSpec {
  return { name: "sparseCategoricalCrossentropy", ...args };
}

/** Binary crossentropy against 0/1 targets. */
export function binaryCrossentropy(args: { fromLogits?: boolean } = {}): LossSpec {
  return { name: "binaryCrossentropy", ...args };
}

/** Mean of squared differences. */
export function meanSquaredError(): LossSpec {
  return { name: "meanSquaredError" };
}

/** Mean of absolute differences. */
export function meanAbsoluteError(): LossSpec {
  return { name: "meanAbsoluteError" };
}
