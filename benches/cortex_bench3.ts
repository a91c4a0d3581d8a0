/**
 * cortex-nn's side of the recurrent and attention benchmark (benches/run3.ts), through the
 * public API, printing ONE JSON line. The peers (peers/torch_bench3.py, peers/tfjs_bench3.ts)
 * run the same workloads.
 *
 * 1. LSTM text classifier: embedding(1000, 64) -> lstm(128) -> dense(10, softmax), sequences of
 *    100 random tokens, batch 32, sparse categorical cross-entropy, Adam(1e-3).
 *    - lstm_train_samples_per_s: model.trainOnBatch (forward + BPTT + Adam step), median of
 *      runs of 3 steps after 2 warm-up steps.
 *    - lstm_predict_samples_per_s: model.predict on 32 sequences with batchSize 32, median.
 * 2. Transformer attention half: x [16, 128, 256] -> y = layerNormalization(x + mha([x, x])),
 *    multiHeadAttention with 8 heads, keyDim 32 (valueDim 32, biases, no mask, no dropout).
 *    - attn_fwd_ms: model.predict(x, { batchSize: 16 }) (one forward pass of the batch,
 *      including the copies of x in and y out), median.
 *    - attn_fwd_bwd_ms: valueAndGrads(() => m.call(x).mean(), m): forward in training mode
 *      recorded on the tape, backward to every weight (no input gradient, no optimizer), and
 *      the weight gradients copied out, median. Runs synchronously on the calling thread.
 *    - attn_train_step_ms: model.trainOnBatch(x, zeros) with meanSquaredError and Adam(1e-3)
 *      (forward + backward + optimizer step), median.
 *
 *   tsx benches/cortex_bench3.ts [threads]      (default $BENCH_THREADS, else 2)
 */
import {
  adam,
  add,
  dense,
  embedding,
  getNumThreads,
  input,
  layerNormalization,
  lstm,
  model,
  multiHeadAttention,
  sequential,
  setNumThreads,
  setSeed,
  tensor,
  valueAndGrads,
} from "../index.ts";
import { emit, median, round, sample, type TimingOptions } from "./peers/common.ts";

/** At least this many timed calls per metric, even past the time budget: one stalled call must not be the median. */
const MIN_RUNS = 3;

/** Like `sample`, but the budget only cuts runs beyond the first MIN_RUNS timed calls. */
async function timings(fn: () => unknown, { warmup, runs, budgetMs = Number.POSITIVE_INFINITY }: TimingOptions) {
  const first = await sample(fn, { warmup, runs: Math.min(runs, MIN_RUNS) });
  const left = budgetMs - first.reduce((a, b) => a + b, 0);
  if (runs <= MIN_RUNS || left <= 0) return first;
  return [...first, ...(await sample(fn, { warmup: 0, runs: runs - MIN_RUNS, budgetMs: left }))];
}

const threads = Number(process.argv[2] ?? process.env.BENCH_THREADS ?? 2);
setNumThreads(threads);
setSeed(0);
const tStart = performance.now();

function uniform(n: number, lo = 0, hi = 1): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = lo + (hi - lo) * Math.random();
  return out;
}

// ---- 1. LSTM -------------------------------------------------------------------------
const VOCAB = 1000;
const SEQ = 100;
const BATCH = 32;
const STEPS = 3;

const lstmModel = sequential([
  embedding({ inputDim: VOCAB, outputDim: 64, inputShape: [SEQ] }),
  lstm({ units: 128 }),
  dense({ units: 10, activation: "softmax" }),
]);
lstmModel.compile({ optimizer: adam({ learningRate: 1e-3 }), loss: "sparseCategoricalCrossentropy" });
const tokens = tensor(
  Float32Array.from({ length: BATCH * SEQ }, () => Math.floor(Math.random() * VOCAB)),
  [BATCH, SEQ],
);
const labels = tensor(
  Float32Array.from({ length: BATCH }, () => Math.floor(Math.random() * 10)),
  [BATCH],
);
const lstmTrainMs = median(
  await timings(
    async () => {
      for (let s = 0; s < STEPS; s++) await lstmModel.trainOnBatch(tokens, labels);
    },
    { warmup: 1, runs: 7, budgetMs: 25_000 },
  ),
);
const lstmPredictMs = median(
  await timings(() => lstmModel.predict(tokens, { batchSize: BATCH }), { warmup: 10, runs: 25, budgetMs: 10_000 }),
);

// ---- 2. Attention block ---------------------------------------------------------------
const AB = 16;
const T = 128;
const D = 256;
const HEADS = 8;
const KEY_DIM = 32;

const xIn = input({ shape: [T, D] });
const attended = multiHeadAttention({ numHeads: HEADS, keyDim: KEY_DIM }).apply([xIn, xIn]);
const yOut = layerNormalization({ epsilon: 1e-5 }).apply(add().apply([xIn, attended]));
const block = model({ inputs: xIn, outputs: yOut });
block.compile({ optimizer: adam({ learningRate: 1e-3 }), loss: "meanSquaredError" });
const x = tensor(uniform(AB * T * D, -1, 1), [AB, T, D]);
const zeros = tensor(new Float32Array(AB * T * D), [AB, T, D]);

const attnFwdMs = median(
  await timings(() => block.predict(x, { batchSize: AB }), { warmup: 15, runs: 20, budgetMs: 10_000 }),
);
const attnFwdBwdMs = median(
  await timings(() => valueAndGrads(() => block.call(x).mean(), block), { warmup: 5, runs: 15, budgetMs: 12_000 }),
);
const attnTrainMs = median(
  await timings(() => block.trainOnBatch(x, zeros), { warmup: 5, runs: 15, budgetMs: 12_000 }),
);

emit({
  peer: "cortex-nn",
  threads: getNumThreads(),
  lstm_train_samples_per_s: round((BATCH * STEPS) / (lstmTrainMs * 1e-3), 1),
  lstm_predict_samples_per_s: round(BATCH / (lstmPredictMs * 1e-3), 1),
  attn_fwd_ms: round(attnFwdMs, 3),
  attn_fwd_bwd_ms: round(attnFwdBwdMs, 3),
  attn_train_step_ms: round(attnTrainMs, 3),
  wall_s: round((performance.now() - tStart) / 1e3),
});
