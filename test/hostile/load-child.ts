/**
 * Child process of hostile.test.ts: loads every crafted model listed in the JSON file argv[2]
 * (and predicts with it when asked), then prints one JSON line with each outcome and the
 * process's peak resident memory, which the parent checks.
 */
import { readFileSync } from "node:fs";
import { loadModel, tensor } from "../../index.ts";

interface Case {
  name: string;
  dir: string;
  maxBytes?: number;
  /** Predict on zeros of this shape after loading. */
  predict?: number[];
}

const cases = JSON.parse(readFileSync(process.argv[2], "utf8")) as Case[];
const results = [];
for (const c of cases) {
  const started = performance.now();
  let error: string | null = null;
  try {
    const model = await loadModel(c.dir, { maxBytes: c.maxBytes });
    if (c.predict) {
      const n = c.predict.reduce((a, b) => a * b, 1);
      await model.predict(tensor(new Float32Array(n), c.predict));
    }
  } catch (e) {
    error = e instanceof Error ? e.message : String(e);
  }
  results.push({ name: c.name, error, ms: performance.now() - started });
}
const status = readFileSync("/proc/self/status", "utf8");
const peakKib = Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? Number.NaN);
console.log(JSON.stringify({ results, peakRssBytes: peakKib * 1024 }));
