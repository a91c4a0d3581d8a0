/**
 * Listing 2 of the source material: a sequence model that labels every step. Embedding(10, 64)
 * -> LSTM(128, returnSequences) -> dense(10) softmax at each step. The inputs are sequences of
 * 100 integer token ids from a vocabulary of 10 (`[batch, 100]`); the printed code fed
 * `(100, 10)`-shaped float inputs to the Embedding, which only takes ids (see README.md).
 *
 * Synthetic task: at each step, output the previous step's token (0 at the first step), which
 * the LSTM must carry one step in its state; the loss falls well below log(10) = 2.30 within a
 * few dozen steps.
 *
 *   npx tsx examples/seed/rnn.ts            (STEPS=30 by default)
 */
import {
  adam,
  dense,
  embedding,
  lstm,
  type Sequential,
  sequential,
  setSeed,
  type Tensor,
  tensor,
} from "../../index.ts";
import { integers, isMain, paramCount, seconds, uniforms } from "./common.ts";

/** Sequence length and vocabulary of the listing. */
export const TIME_STEPS = 100;
export const VOCAB = 10;

/** Builds and compiles the listing's model. */
export function buildRnn(): Sequential {
  const m = sequential(
    [
      embedding({ inputDim: VOCAB, outputDim: 64, inputShape: [TIME_STEPS] }),
      lstm({ units: 128, returnSequences: true }),
      // Dense on a [batch, time, 128] input acts on the last axis: one softmax per step, which is
      // what Keras' TimeDistributed(Dense) did before Dense handled 3-D inputs itself.
      dense({ units: VOCAB, activation: "softmax" }),
    ],
    { name: "seed_rnn" },
  );
  m.compile({ optimizer: adam({ learningRate: 1e-2 }), loss: "sparseCategoricalCrossentropy", metrics: ["accuracy"] });
  return m;
}

/** A batch of token ids `[batch, 100]` and the previous-token targets `[batch, 100]`. */
export function rnnBatch(batch: number, next: () => number): { x: Tensor; y: Tensor } {
  const ids = integers(batch * TIME_STEPS, VOCAB, next);
  const prev = new Float32Array(ids.length);
  for (let b = 0; b < batch; b++) {
    for (let t = 1; t < TIME_STEPS; t++) prev[b * TIME_STEPS + t] = ids[b * TIME_STEPS + t - 1];
  }
  return { x: tensor(ids, [batch, TIME_STEPS]), y: tensor(prev, [batch, TIME_STEPS]) };
}

/** Trains `steps` batches of 32; returns the losses and the time per step. */
export async function main(args: { steps?: number; quiet?: boolean } = {}): Promise<{
  params: number;
  losses: number[];
  seconds: number;
}> {
  const { steps = 30, quiet = false } = args;
  setSeed(2);
  const m = buildRnn();
  if (!quiet) m.summary();
  const next = uniforms(22);
  const losses: number[] = [];
  const t0 = performance.now();
  for (let s = 0; s < steps; s++) {
    const { x, y } = rnnBatch(32, next);
    const logs = await m.trainOnBatch(x, y);
    losses.push(logs.loss);
    if (!quiet && (s % 10 === 0 || s === steps - 1)) {
      console.log(`rnn: step ${s + 1}/${steps} loss ${logs.loss.toFixed(4)} accuracy ${logs.accuracy.toFixed(3)}`);
    }
  }
  const took = seconds(t0);
  if (!quiet) console.log(`rnn: ${steps} steps in ${took.toFixed(1)} s`);
  return { params: paramCount(m), losses, seconds: took };
}

if (isMain(import.meta.url)) await main({ steps: Number(process.env.STEPS ?? 30) });
