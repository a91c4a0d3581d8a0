/**
 * Inference side by side with onnxruntime-node (ORT), in one process, alternating engines:
 * the same architectures with the same weights (benches/peers/export_onnx.py exports the ONNX
 * models and their weights in Keras layout; run it first, it needs `pip install torch onnx
 * onnxscript`). Checks that both engines give the same outputs, then measures batch-1 latency
 * and large-batch throughput, prints a table and writes it as a section of benches/RESULTS.md.
 *
 * `npm run bench:infer [-- threads]` (default 2 threads for both engines).
 */
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { join } from "node:path";
import * as ort from "onnxruntime-node";
import {
  add,
  conv2d,
  dense,
  embedding,
  flatten,
  input,
  layerNormalization,
  lstm,
  type Model,
  maxPooling2d,
  model,
  multiHeadAttention,
  sequential,
  setNumThreads,
  type Tensor,
  tensor,
} from "../index.ts";

const threads = Number(process.argv[2] ?? 2);
const dir = join(import.meta.dirname, ".onnx");
setNumThreads(threads);

if (!existsSync(join(dir, "attention.onnx"))) {
  console.log("exporting the ONNX peers (benches/peers/export_onnx.py)...");
  execFileSync("python3", [join(import.meta.dirname, "peers/export_onnx.py"), dir], { stdio: "inherit" });
}

interface Workload {
  name: string;
  build: () => Model;
  /** Sample shape (no batch axis). */
  sample: number[];
  /** Values of one input element. */
  value: (i: number) => number;
  batches: number[];
}

const workloads: Workload[] = [
  {
    name: "convnet",
    build: () =>
      sequential([
        conv2d({ filters: 32, kernelSize: 3, activation: "relu", inputShape: [28, 28, 1] }),
        maxPooling2d({ poolSize: 2 }),
        conv2d({ filters: 64, kernelSize: 3, activation: "relu" }),
        maxPooling2d({ poolSize: 2 }),
        flatten(),
        dense({ units: 10, activation: "softmax" }),
      ]),
    sample: [28, 28, 1],
    value: (i) => (Math.sin(i * 0.37) + 1) / 2,
    batches: [1, 256],
  },
  {
    name: "lstm",
    build: () =>
      sequential([
        embedding({ inputDim: 1000, outputDim: 64, inputShape: [100] }),
        lstm({ units: 128 }),
        dense({ units: 10, activation: "softmax" }),
      ]),
    sample: [100],
    value: (i) => (i * 7919) % 1000,
    batches: [1, 32],
  },
  {
    name: "generator",
    build: () =>
      sequential([
        dense({ units: 256, activation: "leakyRelu", inputShape: [100] }),
        dense({ units: 256, activation: "leakyRelu" }),
        dense({ units: 256, activation: "leakyRelu" }),
        dense({ units: 784, activation: "tanh" }),
      ]),
    sample: [100],
    value: (i) => Math.sin(i * 1.7),
    batches: [1, 256],
  },
  {
    name: "attention",
    build: () => {
      const x = input({ shape: [128, 256] });
      const attended = multiHeadAttention({ numHeads: 8, keyDim: 32 }).apply([x, x]);
      return model({ inputs: x, outputs: layerNormalization({ epsilon: 1e-5 }).apply(add().apply([x, attended])) });
    },
    sample: [128, 256],
    value: (i) => Math.sin(i * 0.013),
    batches: [1, 16],
  },
];

function loadWeights(name: string): Tensor[] {
  const shapes = JSON.parse(readFileSync(join(dir, `${name}.weights.json`), "utf8")) as { shape: number[] }[];
  const bytes = readFileSync(join(dir, `${name}.weights.bin`));
  const all = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
  let offset = 0;
  return shapes.map(({ shape }) => {
    const n = shape.reduce((a, b) => a * b, 1);
    const t = tensor(all.slice(offset, offset + n), shape);
    offset += n;
    return t;
  });
}

/**
 * Median seconds of `fn` over runs after a warm-up, bounded by a time budget, and the event
 * loop's busy time per call in ms (`performance.eventLoopUtilization`): how long each call kept
 * the main thread from serving anything else.
 */
async function median(fn: () => Promise<unknown>, budgetMs: number, maxRuns = 200): Promise<[number, number]> {
  for (let i = 0; i < 3; i++) await fn();
  const times: number[] = [];
  const start = performance.now();
  const loopBefore = performance.eventLoopUtilization();
  while (times.length < maxRuns && (times.length < 5 || performance.now() - start < budgetMs)) {
    const t0 = performance.now();
    await fn();
    times.push(performance.now() - t0);
  }
  const loopBusyMs = performance.eventLoopUtilization(loopBefore).active / times.length;
  times.sort((a, b) => a - b);
  return [times[Math.floor(times.length / 2)] / 1000, loopBusyMs];
}

interface Row {
  workload: string;
  batch: number;
  cortexMs: number;
  ortMs: number;
  /** Event-loop busy ms per call. */
  cortexLoopMs: number;
  ortLoopMs: number;
  maxDiff: number;
}

const rows: Row[] = [];
for (const w of workloads) {
  const cortexModel = w.build();
  const weights = loadWeights(w.name);
  cortexModel.setWeights(weights);
  const session = await ort.InferenceSession.create(join(dir, `${w.name}.onnx`), {
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    executionMode: "sequential",
    graphOptimizationLevel: "all",
  });
  for (const batch of w.batches) {
    const shape = [batch, ...w.sample];
    const data = Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, (_, i) => w.value(i));
    const x = tensor(data, shape);
    const feeds = { x: new ort.Tensor("float32", data, shape) };
    const ours = await cortexModel.predict(x, { batchSize: batch });
    const theirs = (await session.run(feeds)).y.data as Float32Array;
    let maxDiff = 0;
    for (let i = 0; i < theirs.length; i++) maxDiff = Math.max(maxDiff, Math.abs(theirs[i] - ours.data[i]));
    // Alternate the engines, twice each, and keep each engine's best median.
    const budget = batch === 1 ? 1500 : 3000;
    let [cortexMs, ortMs] = [Number.POSITIVE_INFINITY, Number.POSITIVE_INFINITY];
    let [cortexLoopMs, ortLoopMs] = [0, 0];
    for (let round = 0; round < 2; round++) {
      const [c, cLoop] = await median(() => cortexModel.predict(x, { batchSize: batch }), budget);
      const [o, oLoop] = await median(() => session.run(feeds), budget);
      [cortexMs, ortMs] = [Math.min(cortexMs, 1000 * c), Math.min(ortMs, 1000 * o)];
      [cortexLoopMs, ortLoopMs] = [Math.max(cortexLoopMs, cLoop), Math.max(ortLoopMs, oLoop)];
    }
    rows.push({ workload: w.name, batch, cortexMs, ortMs, cortexLoopMs, ortLoopMs, maxDiff });
    console.log(
      `${w.name} batch ${batch}: cortex-nn ${cortexMs.toFixed(3)} ms, onnxruntime-node ${ortMs.toFixed(3)} ms, ` +
        `${(ortMs / cortexMs).toFixed(2)}x; event loop busy per call ${cortexLoopMs.toFixed(3)} / ` +
        `${ortLoopMs.toFixed(3)} ms; max |diff| ${maxDiff.toExponential(2)}`,
    );
  }
  await session.release();
}

const cpu = cpus()[0]?.model ?? "unknown CPU";
const flags = readFileSync("/proc/cpuinfo", "utf8").match(/^flags\s*:(.*)$/m)?.[1] ?? "";
const isa = ["avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile"].filter((f) => flags.includes(` ${f}`));
const table = [
  `## Inference vs onnxruntime-node (bench:infer)`,
  "",
  `${cpu} (${cpus().length} cores; ${isa.join(", ")}), ${threads} threads each, Node ${process.version}, ` +
    `onnxruntime-node ${ort.env.versions.common}, ${new Date().toISOString().slice(0, 10)}. Same weights in both ` +
    "engines (benches/peers/export_onnx.py); median ms per `predict` / `session.run` call, best of two " +
    "alternating rounds; ratio = ORT time / cortex-nn time (above 1: cortex-nn is faster). " +
    "Loop ms: the event loop's busy time per call (`performance.eventLoopUtilization`, the larger of " +
    "the two rounds), the time a Node service could not answer anything else: onnxruntime-node's " +
    "`session.run` computes on the main thread (inside a `setImmediate`), cortex-nn's `predict` on " +
    "worker threads except calls it measured under 100 µs (`CORTEX_INLINE_BELOW_US`).",
  "",
  "| workload | batch | cortex-nn ms | onnxruntime-node ms | ratio | loop ms cortex-nn | loop ms ORT | max abs diff |",
  "|---|---|---|---|---|---|---|---|",
  ...rows.map(
    (r) =>
      `| ${r.workload} | ${r.batch} | ${r.cortexMs.toFixed(3)} | ${r.ortMs.toFixed(3)} | ${(r.ortMs / r.cortexMs).toFixed(2)}x | ${r.cortexLoopMs.toFixed(3)} | ${r.ortLoopMs.toFixed(3)} | ${r.maxDiff.toExponential(1)} |`,
  ),
  "",
].join("\n");
console.log(`\n${table}`);
const resultsPath = join(import.meta.dirname, "RESULTS.md");
const results = readFileSync(resultsPath, "utf8");
const start = results.indexOf("## Inference vs onnxruntime-node");
const next = start < 0 ? -1 : results.indexOf("\n## ", start + 1);
const updated =
  start < 0
    ? `${results.trimEnd()}\n\n${table}`
    : `${results.slice(0, start)}${table}${next < 0 ? "" : results.slice(next + 1)}`;
writeFileSync(resultsPath, updated);
const worst = rows.reduce((a, b) => (b.maxDiff > a.maxDiff ? b : a));
if (worst.maxDiff > 1e-3) {
  console.error(`outputs disagree: ${worst.workload} batch ${worst.batch} max |diff| ${worst.maxDiff}`);
  process.exit(1);
}
