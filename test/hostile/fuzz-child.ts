/**
 * Child process of fuzz.test.ts: calls the native entry points with hostile tensor and shape
 * arguments for `argv[3]` seconds from seed `argv[2]`, and prints one JSON summary line. With
 * CORTEX_FUZZ_TRACE=1 it writes every call to stderr first (synchronously), so a replay of a
 * seed that crashed shows the call that did it.
 */
import { writeSync } from "node:fs";
import { native } from "../../src/native.ts";
import { lcg } from "../helpers.ts";

const seed = Number(process.argv[2]);
const seconds = Number(process.argv[3]);
const trace = process.env.CORTEX_FUZZ_TRACE === "1";
const rand = lcg(seed);
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)];

const dims = [0, 1, 2, 3, 4, 7, 2 ** 16, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1, -1, Number.NaN, 1.5, 1e20] as const;
const small = [1, 2, 3, 4] as const;
// Config values leave out 2^16: a valid 65536-wide kernel costs output x kernel time (tens of
// seconds), which is work, not a fault; the huge values are refused before any work.
const configValues = dims.filter((d) => d !== 2 ** 16);

function shape(): number[] {
  const rank = Math.floor(rand() * 5);
  return Array.from({ length: rank }, () => (rand() < 0.7 ? pick(small) : pick(dims)));
}

function data(s: number[]): Float32Array {
  const n = s.reduce((a, b) => a * b, 1);
  // Mostly the right length when it is small, else something small and wrong.
  const len = Number.isSafeInteger(n) && n >= 0 && n < 4096 && rand() < 0.7 ? n : Math.floor(rand() * 64);
  return Float32Array.from({ length: len }, () => (rand() < 0.05 ? pick([Number.NaN, Infinity, -1e38]) : rand() - 0.5));
}

const layerConfigs: [string, Record<string, unknown>][] = [
  ["Dense", { units: 3 }],
  ["Conv2D", { filters: 2, kernelSize: 2 }],
  ["Conv1D", { filters: 2, kernelSize: 2 }],
  ["Conv2DTranspose", { filters: 2, kernelSize: 2 }],
  ["MaxPooling2D", { poolSize: 2 }],
  ["UpSampling2D", { size: 2 }],
  ["ZeroPadding2D", { padding: 1 }],
  ["LSTM", { units: 2 }],
  ["GRU", { units: 2 }],
  ["SimpleRNN", { units: 2 }],
  ["Embedding", { inputDim: 5, outputDim: 2 }],
  ["MultiHeadAttention", { numHeads: 2, keyDim: 2 }],
  ["LayerNormalization", {}],
  ["BatchNormalization", {}],
  ["Reshape", { targetShape: [2, 2] }],
  ["Flatten", {}],
];

function mutateConfig(config: Record<string, unknown>): Record<string, unknown> {
  const out = { ...config };
  const keys = Object.keys(out);
  if (keys.length > 0 && rand() < 0.5)
    out[pick(keys)] = rand() < 0.5 ? pick(configValues) : [pick(configValues), pick(configValues)];
  return out;
}

const slowest = { ms: 0, what: "" };

/** Runs `f`; anything thrown must be an Error. */
async function call(outcomes: Map<string, number>, name: string, f: () => unknown) {
  const started = performance.now();
  if (trace) writeSync(2, `${name} ${currentArgs}\n`);
  try {
    await f();
    outcomes.set(`${name} ok`, (outcomes.get(`${name} ok`) ?? 0) + 1);
  } catch (e) {
    if (!(e instanceof Error)) throw new Error(`${name} threw a non-Error: ${String(e)}`);
    if (/internal error|panic/i.test(e.message)) throw new Error(`${name}: a Rust panic reached JS: ${e.message}`);
    outcomes.set(`${name} error`, (outcomes.get(`${name} error`) ?? 0) + 1);
  } finally {
    const ms = performance.now() - started;
    if (ms > slowest.ms) Object.assign(slowest, { ms, what: `${name} ${currentArgs}` });
  }
}

let currentArgs = "";

const outcomes = new Map<string, number>();
// Layers of 2^31 units are valid up to the 16 GiB default; the fuzzer only wants to know
// that they are refused or built, not to spend seconds initialising gigabytes.
const cap = native.getMaxModelBytes();
native.setMaxModelBytes(64 << 20);
const model = new native.NativeModel(
  JSON.stringify({
    className: "Sequential",
    layers: [{ className: "Dense", config: { units: 3, inputShape: [4] } }],
  }),
  1,
);
model.compile(JSON.stringify({ optimizer: "sgd", loss: "meanSquaredError" }));
// argv[4]: stop after this many calls instead (the replay of a run that died: the calls depend
// only on the seed, so the same count reaches the same call however slow tracing makes it).
const maxCalls = process.argv[4] === undefined ? Number.POSITIVE_INFINITY : Number(process.argv[4]);
const deadline = Number.isFinite(maxCalls) ? Number.POSITIVE_INFINITY : performance.now() + seconds * 1000;
let calls = 0;
while (performance.now() < deadline && calls < maxCalls) {
  // Progress for the parent: a run that is killed still says how far it got.
  if (calls % 1000 === 0) process.stdout.write(`progress ${calls}\n`);
  const [xs, ys] = [shape(), shape()];
  const [x, y] = [data(xs), data(ys)];
  currentArgs = JSON.stringify({ xs, ys, x: x.length, y: y.length });
  switch (Math.floor(rand() * 8)) {
    case 0:
      await call(outcomes, "matMul", () => native.matMul(x, xs, y, ys));
      break;
    case 1:
      await call(outcomes, "predict", () => model.predict(x, xs, rand() < 0.5 ? undefined : pick(dims)));
      break;
    case 2:
      await call(outcomes, "evaluate", () =>
        model.evaluate({ xs: [x], xShapes: [xs], ys: [y], yShapes: [ys] }, undefined, pick(dims)),
      );
      break;
    case 3:
      await call(outcomes, "trainOnBatch", () =>
        model.trainOnBatch({ xs: [x], xShapes: [xs], ys: [y], yShapes: [ys] }),
      );
      break;
    case 4: {
      const [name, config] = pick(layerConfigs);
      const mutated = JSON.stringify(mutateConfig(config));
      currentArgs += ` ${mutated}`;
      await call(outcomes, `layer ${name}`, () => {
        const layer = new native.NativeLayer(name, mutated);
        layer.build(xs.slice(1));
        return layer.apply(x, xs);
      });
      break;
    }
    case 5:
      await call(outcomes, "tensor ops", () => {
        const a = native.NativeTensor.fromData(x, xs, rand() < 0.5);
        const b = native.NativeTensor.fromData(y, ys);
        const op = pick(["add", "sub", "mul", "matMul"]);
        const r = a
          .binary(op, b)
          .unary(pick(["sum", "relu", "softmax", "reshape"]), JSON.stringify({ shape: shape() }));
        return r.backward();
      });
      break;
    case 6:
      await call(outcomes, "setWeights", () => model.setWeights([x, y]));
      break;
    default:
      await call(outcomes, "model build", () => {
        const m = new native.NativeModel(
          JSON.stringify({ className: "Sequential", layers: [{ className: "Dense", config: { units: 2 } }] }),
          1,
        );
        m.build(xs);
        return m.predict(x, [1, ...xs]);
      });
  }
  calls++;
}
native.setMaxModelBytes(cap);
// The process is still healthy: a normal predict works.
const ok = await model.predict(new Float32Array(8), [2, 4]);
console.log(
  JSON.stringify({
    calls,
    healthy: ok.shape.join() === "2,3",
    slowest,
    outcomes: Object.fromEntries([...outcomes].sort()),
  }),
);
