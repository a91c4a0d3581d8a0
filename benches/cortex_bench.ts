/**
 * cortex-nn's side of the foundation benchmark: the same workloads as the peers
 * (GEMM 1024^3, the Keras MNIST convnet's train step at batch 128, predict latency at batch 1
 * and throughput at batch 256), through the public API, printing one JSON line.
 */
import {
  adam,
  conv2d,
  dense,
  dropout,
  flatten,
  getNumThreads,
  matMul,
  maxPooling2d,
  sequential,
  setNumThreads,
  tensor,
} from "../index.ts";
import { emit, gemmGflops, median, round, sample } from "./peers/common.ts";

const threads = Number(process.argv[2] ?? process.env.BENCH_THREADS ?? 2);
setNumThreads(threads);
const tStart = performance.now();

function random(n: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.random();
  return out;
}

const N = 1024;
const a = tensor(random(N * N), [N, N]);
const b = tensor(random(N * N), [N, N]);
const gemmMs = Math.min(...(await sample(() => matMul(a, b), { warmup: 3, runs: 15 })));

function convnet() {
  const model = sequential([
    conv2d({ filters: 32, kernelSize: 3, activation: "relu", inputShape: [28, 28, 1] }),
    maxPooling2d({ poolSize: 2 }),
    conv2d({ filters: 64, kernelSize: 3, activation: "relu" }),
    maxPooling2d({ poolSize: 2 }),
    flatten(),
    dropout({ rate: 0.5 }),
    dense({ units: 10, activation: "softmax" }),
  ]);
  model.compile({ optimizer: adam({ learningRate: 1e-3 }), loss: "sparseCategoricalCrossentropy" });
  return model;
}

const batch = 128;
const stepsPerRun = 5;
const model = convnet();
const x = tensor(random(batch * 784), [batch, 28, 28, 1]);
const y = tensor(
  Float32Array.from({ length: batch }, (_, i) => i % 10),
  [batch],
);
const trainRun = async () => {
  for (let s = 0; s < stepsPerRun; s++) await model.trainOnBatch(x, y);
};
const trainMs = median(await sample(trainRun, { warmup: 2, runs: 9 }));

const x1 = tensor(random(784), [1, 28, 28, 1]);
const x256 = tensor(random(256 * 784), [256, 28, 28, 1]);
// A long warm-up for both peers: right after training, the first few hundred small calls run
// slower while the allocator and thread pool settle.
const p1Ms = median(await sample(() => model.predict(x1), { warmup: 300, runs: 300 }));
const p256Ms = median(await sample(() => model.predict(x256, { batchSize: 256 }), { warmup: 5, runs: 40 }));

emit({
  peer: "cortex-nn",
  threads: getNumThreads(),
  gemm_gflops: round(gemmGflops(N, N, N, gemmMs)),
  train_samples_per_s: round((batch * stepsPerRun) / (trainMs * 1e-3), 1),
  predict_b1_ms: round(p1Ms, 4),
  predict_b256_samples_per_s: round(256 / (p256Ms * 1e-3), 1),
  wall_s: round((performance.now() - tStart) / 1e3),
});
