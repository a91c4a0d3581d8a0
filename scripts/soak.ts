/**
 * Soak test: mixed load for a while, resident memory sampled at a fixed interval; the memory
 * after warm-up (the first third) must stay flat: the median of the second half of the samples
 * at most 5% above the median of the first half. `npm run soak -- [minutes] [interval seconds]`
 * (default 10 minutes, samples every 60 s); CI runs a short version.
 *
 * The load, all at once on one process: 16 concurrent predict callers on a small CNN, a fit loop
 * on the same architecture, and a save/load cycle of a third model, each repeating until the end.
 * A garbage collection runs before each sample (node --expose-gc), so the numbers show native
 * memory held, not JS garbage not yet collected. `npm run soak` fixes V8's young generation at
 * 16 MiB semispaces: left to itself, V8 grows it once mid-run under the allocation rate of
 * millions of predicts, a +16 MiB step of JS heap *capacity* (heapUsed flat at 6 MiB) that the
 * RSS check read as a leak. It also runs with mimalloc's transparent huge pages off
 * (MIMALLOC_ALLOW_THP=0): with them, khugepaged (max_ptes_none 511 on the CI host) collapses
 * sparsely touched 2 MiB ranges of the allocator's arena into whole huge pages minutes into a
 * run, steps of +5-12 MiB of RSS with no allocation behind them, which failed two of three
 * 2-minute CI soaks; at 4 KiB pages RSS counts what the process touched.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { conv2d, dense, flatten, loadModel, maxPooling2d, sequential, type Tensor, tensor } from "../index.ts";

const minutes = Number(process.argv[2] ?? 10);
const intervalSeconds = Number(process.argv[3] ?? 60);
const allowedGrowth = 0.05;

function cnn(seed: number) {
  const m = sequential(
    [
      conv2d({ filters: 8, kernelSize: 3, activation: "relu", inputShape: [28, 28, 1] }),
      maxPooling2d({ poolSize: 2 }),
      flatten(),
      dense({ units: 10, activation: "softmax" }),
    ],
    { seed },
  );
  m.compile({ optimizer: "adam", loss: "sparseCategoricalCrossentropy" });
  return m;
}

function images(n: number, seed: number): Tensor {
  const data = new Float32Array(n * 784);
  for (let i = 0; i < data.length; i++) data[i] = (Math.sin(i * 0.37 + seed) + 1) / 2;
  return tensor(data, [n, 28, 28, 1]);
}

const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error("run with node --expose-gc (npm run soak does)");
const rssMiB = () => {
  gc();
  return process.memoryUsage().rss / 2 ** 20;
};

const served = cnn(1);
const trained = cnn(2);
const dir = mkdtempSync(join(tmpdir(), "cortex-soak-"));
const counts = { predicts: 0, fits: 0, saveLoads: 0 };
const end = Date.now() + minutes * 60_000;
const running = () => Date.now() < end;

async function predictCaller(i: number) {
  const x = images(1 + (i % 8), i);
  while (running()) {
    await served.predict(x);
    counts.predicts++;
  }
}

async function fitLoop() {
  const x = images(256, 99);
  const y = tensor(
    Float32Array.from({ length: 256 }, (_, i) => i % 10),
    [256],
  );
  while (running()) {
    await trained.fit(x, y, { epochs: 1, batchSize: 32, verbose: 0 });
    counts.fits++;
  }
}

async function saveLoadLoop() {
  const x = images(4, 7);
  while (running()) {
    await trained.save(dir);
    const loaded = await loadModel(dir);
    await loaded.predict(x);
    counts.saveLoads++;
  }
}

const samples: number[] = [];
const sampler = setInterval(() => {
  const rss = rssMiB();
  samples.push(rss);
  const minute = ((samples.length * intervalSeconds) / 60).toFixed(1);
  console.log(
    `t=${minute} min  rss ${rss.toFixed(1)} MiB  predicts ${counts.predicts}  fits ${counts.fits}  save/loads ${counts.saveLoads}`,
  );
}, intervalSeconds * 1000);

console.log(`soak: ${minutes} min, RSS every ${intervalSeconds} s, start ${rssMiB().toFixed(1)} MiB`);
await Promise.all([...Array.from({ length: 16 }, (_, i) => predictCaller(i)), fitLoop(), saveLoadLoop()]);
clearInterval(sampler);
rmSync(dir, { recursive: true, force: true });

// The first third of the samples is warm-up (allocator arenas, JIT, thread-local scratch fill
// up over the first ~45 s); the rest is split in halves and their medians compared, so one noisy
// sample neither hides a leak nor fakes one.
const afterWarmup = samples.slice(Math.max(2, Math.floor(samples.length / 3)));
if (afterWarmup.length < 4) {
  console.log("soak: too short to judge (need warm-up plus four samples)");
  console.log("soak: 0 passed, 1 failed");
  process.exit(1);
}
const medianOf = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const half = Math.floor(afterWarmup.length / 2);
const base = medianOf(afterWarmup.slice(0, half));
const last = medianOf(afterWarmup.slice(half));
const peak = Math.max(...afterWarmup);
const growth = (last - base) / base;
const ok = growth < allowedGrowth && counts.fits > 0 && counts.saveLoads > 0;
console.log(
  `soak: median RSS after warm-up, first half ${base.toFixed(1)} -> second half ${last.toFixed(1)} MiB (${(growth * 100).toFixed(1)}%, ` +
    `peak ${peak.toFixed(1)} MiB, limit +${allowedGrowth * 100}%); ${counts.predicts} predicts, ` +
    `${counts.fits} fits, ${counts.saveLoads} save/loads`,
);
console.log(`soak: ${ok ? 1 : 0} passed, ${ok ? 0 : 1} failed`);
process.exit(ok ? 0 : 1);
