/**
 * Listing 3 of the source material: 8-head self-attention over `(100, 10)` inputs (100 steps of
 * 10 features). The query and the value are the same tensor (Keras' MultiHeadAttention needs
 * both arguments: `mha(x, x)`, here `apply([x, x])`); the attended sequence is averaged over
 * time and classified with dense(10) softmax.
 *
 * Synthetic task: the label is the feature whose mean over the 100 steps is largest (one
 * feature per sample is shifted up by 0.5), so the loss falls from log(10) = 2.30 in a few dozen
 * steps.
 *
 *   npx tsx examples/seed/attention.ts      (STEPS=30 by default)
 */
import {
  adam,
  dense,
  globalAveragePooling1d,
  input,
  type Model,
  model,
  multiHeadAttention,
  setSeed,
  type Tensor,
  tensor,
} from "../../index.ts";
import { integers, isMain, normals, paramCount, seconds, uniforms } from "./common.ts";

/** Sequence length and features of the listing. */
export const TIME_STEPS = 100;
export const FEATURES = 10;

/** Builds and compiles the listing's model. */
export function buildAttention(): Model {
  const x = input({ shape: [TIME_STEPS, FEATURES] });
  // keyDim 64 per head, Keras' usual choice; the output is projected back to 10 features.
  const attended = multiHeadAttention({ numHeads: 8, keyDim: 64 }).apply([x, x]);
  const pooled = globalAveragePooling1d().apply(attended);
  const out = dense({ units: 10, activation: "softmax" }).apply(pooled);
  const m = model({ inputs: x, outputs: out, name: "seed_attention" });
  m.compile({ optimizer: adam({ learningRate: 1e-3 }), loss: "sparseCategoricalCrossentropy", metrics: ["accuracy"] });
  return m;
}

/** A batch `[batch, 100, 10]` of normals with feature `label` shifted by 0.5, and the labels. */
export function attentionBatch(batch: number, next: () => number): { x: Tensor; y: Tensor } {
  const labels = integers(batch, FEATURES, next);
  const data = normals(batch * TIME_STEPS * FEATURES, next);
  for (let b = 0; b < batch; b++) {
    for (let t = 0; t < TIME_STEPS; t++) data[(b * TIME_STEPS + t) * FEATURES + labels[b]] += 0.5;
  }
  return { x: tensor(data, [batch, TIME_STEPS, FEATURES]), y: tensor(labels, [batch]) };
}

/** Trains `steps` batches of 32; returns the losses and the time they took. */
export async function main(args: { steps?: number; quiet?: boolean } = {}): Promise<{
  params: number;
  losses: number[];
  seconds: number;
}> {
  const { steps = 30, quiet = false } = args;
  setSeed(3);
  const m = buildAttention();
  if (!quiet) m.summary();
  const next = uniforms(33);
  const losses: number[] = [];
  const t0 = performance.now();
  for (let s = 0; s < steps; s++) {
    const { x, y } = attentionBatch(32, next);
    const logs = await m.trainOnBatch(x, y);
    losses.push(logs.loss);
    if (!quiet && (s % 10 === 0 || s === steps - 1)) {
      console.log(
        `attention: step ${s + 1}/${steps} loss ${logs.loss.toFixed(4)} accuracy ${logs.accuracy.toFixed(3)}`,
      );
    }
  }
  const took = seconds(t0);
  if (!quiet) console.log(`attention: ${steps} steps in ${took.toFixed(1)} s`);
  return { params: paramCount(m), losses, seconds: took };
}

if (isMain(import.meta.url)) await main({ steps: Number(process.env.STEPS ?? 30) });
