/**
 * `npm run bench:stream`: one epoch of the demo's MNIST convnet from in-memory tensors against
 * the same epoch streamed from the IDX files through a Dataset (shuffle(10000), batch(128),
 * prefetch), each mode in its own process so its peak RSS is its own. Modes alternate, ROUNDS
 * times each (default 3); the median epoch times and the peak RSS go into benches/RESULTS.md.
 * Also records the largest event-loop timer gap during the streamed epoch.
 */
import { execFileSync } from "node:child_process";
import { cpus } from "node:os";
import {
  adam,
  conv2d,
  type Dataset,
  data,
  dense,
  dropout,
  flatten,
  loadMnist,
  maxPooling2d,
  sequential,
  setSeed,
  tensor,
} from "../index.ts";
import { writeSection } from "./results.ts";

const BATCH = 128;

function convnet() {
  setSeed(42);
  const m = sequential([
    conv2d({ filters: 32, kernelSize: 3, activation: "relu", inputShape: [28, 28, 1] }),
    maxPooling2d({ poolSize: 2 }),
    conv2d({ filters: 64, kernelSize: 3, activation: "relu" }),
    maxPooling2d({ poolSize: 2 }),
    flatten(),
    dropout({ rate: 0.5 }),
    dense({ units: 10, activation: "softmax" }),
  ]);
  m.compile({ optimizer: adam({ learningRate: 2e-3 }), loss: "sparseCategoricalCrossentropy", metrics: ["accuracy"] });
  return m;
}

async function child(mode: string): Promise<void> {
  const m = convnet();
  let gap = 0;
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    gap = Math.max(gap, now - last);
    last = now;
  }, 5);
  let seconds: number;
  let accuracy: number;
  if (mode === "memory") {
    const mnist = await loadMnist();
    const x = tensor(mnist.trainImages, [mnist.trainCount, 28, 28, 1]);
    const y = tensor(mnist.trainLabels, [mnist.trainCount]);
    gap = 0; // loading the files is not the training's
    last = performance.now();
    const t0 = performance.now();
    const h = await m.fit(x, y, { epochs: 1, batchSize: BATCH, verbose: 0 });
    seconds = (performance.now() - t0) / 1000;
    accuracy = h.history.accuracy[0];
  } else {
    const ds: Dataset<unknown> = data.mnistDataset("train").shuffle(10000, { seed: 1 }).batch(BATCH).prefetch(4);
    const t0 = performance.now();
    const h = await m.fit(ds as never, { epochs: 1, verbose: 0, prefetch: 4 });
    seconds = (performance.now() - t0) / 1000;
    accuracy = h.history.accuracy[0];
  }
  clearInterval(timer);
  const rss = process.resourceUsage().maxRSS / 1024;
  console.log(JSON.stringify({ mode, seconds, accuracy, rss, gap }));
}

async function main(): Promise<void> {
  const rounds = Number(process.env.ROUNDS ?? 3);
  const runs: Record<string, { seconds: number; accuracy: number; rss: number; gap: number }[]> = {
    memory: [],
    stream: [],
  };
  for (let r = 0; r < rounds; r++) {
    for (const mode of ["memory", "stream"]) {
      const out = execFileSync(process.execPath, ["--import", "tsx", "benches/stream.ts", mode], { encoding: "utf8" });
      const result = JSON.parse(out.trim().split("\n").at(-1) as string);
      runs[mode].push(result);
      console.log(result);
    }
  }
  const median = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];
  const row = (mode: string) => {
    const r = runs[mode];
    return `| ${mode === "memory" ? "tensors in memory (loadMnist)" : "streamed from IDX: shuffle(10000).batch(128).prefetch(4)"} | ${median(r.map((x) => x.seconds)).toFixed(2)} | ${Math.max(...r.map((x) => x.rss)).toFixed(0)} | ${Math.max(...r.map((x) => x.gap)).toFixed(1)} | ${median(r.map((x) => x.accuracy)).toFixed(4)} |`;
  };
  const ratio = median(runs.stream.map((x) => x.seconds)) / median(runs.memory.map((x) => x.seconds));
  writeSection(
    "stream",
    `## Streaming fit (\`npm run bench:stream\`)

One epoch of the demo's MNIST convnet (60,000 images, batch ${BATCH}, Adam), each mode in its own
process, alternating, median of ${rounds}. ${cpus()[0]?.model ?? "CPU"}, ${cpus().length} threads.

| data | epoch (s) | peak RSS (MiB) | largest timer gap (ms) | train accuracy |
|---|---|---|---|---|
${row("memory")}
${row("stream")}

Streamed epoch time / in-memory epoch time: **${ratio.toFixed(3)}**.`,
  );
  console.log(`stream / memory epoch time: ${ratio.toFixed(3)}`);
}

const mode = process.argv[2];
if (mode) await child(mode);
else await main();
