/**
 * The inference paths agree with each other: inline (on the calling thread) and async
 * (worker) predicts, chunked and unchunked batches, SIMD kernels and the portable ones, give the
 * same numbers; and a predict after setWeights or fit sees the new weights (nothing serves
 * stale packed weights). The switches are read once per process, so each runs in a child.
 */
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { conv2d, dense, flatten, optimizers, sequential, type Tensor, tensor, valueAndGrads } from "../index.ts";
import { randomTensor } from "./helpers.ts";

const root = join(import.meta.dirname, "..");

/** Predictions of a fixed convnet under the given environment, from a child process. */
function predictIn(env: Record<string, string>): number[][] {
  const script = `
    import { conv2d, dense, flatten, maxPooling2d, sequential } from "./index.ts";
    import { randomTensor } from "./test/helpers.ts";
    const m = sequential([
      conv2d({ filters: 16, kernelSize: 3, activation: "relu", inputShape: [28, 28, 1] }),
      maxPooling2d({ poolSize: 2 }),
      conv2d({ filters: 8, kernelSize: 3, padding: "same", activation: "relu" }),
      flatten(),
      dense({ units: 10, activation: "softmax" }),
    ], { seed: 42 });
    const out = [];
    for (const n of [1, 3, 200]) {
      const x = randomTensor([n, 28, 28, 1], n);
      await m.predict(x); // measures, so the next small one may run inline
      out.push(Array.from((await m.predict(x)).data));
    }
    console.log(JSON.stringify(out));`;
  const stdout = execFileSync(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], {
    cwd: root,
    env: { ...process.env, ...env },
    encoding: "utf8",
  });
  return JSON.parse(stdout.trim().split("\n").at(-1) as string);
}

function maxDiff(a: number[], b: number[]): number {
  expect(a.length).toBe(b.length);
  return a.reduce((d, v, i) => Math.max(d, Math.abs(v - b[i])), 0);
}

describe("inference paths", () => {
  // Inline and async run the same kernels: bit-identical. Chunks change the GEMM's row count,
  // so its blocking and summation order: equal to float rounding.
  it("inline and async predicts, chunked and whole batches, SIMD and portable kernels agree", () => {
    const base = predictIn({});
    const variants: [string, Record<string, string>, number][] = [
      ["async only", { CORTEX_INLINE_BELOW_US: "0" }, 0],
      ["no chunking", { CORTEX_PREDICT_CHUNK_BYTES: "0" }, 1e-6],
      ["tiny chunks", { CORTEX_PREDICT_CHUNK_BYTES: "4096" }, 1e-6],
      ["portable kernels", { CORTEX_NO_SIMD_KERNELS: "1" }, 1e-5],
    ];
    for (const [label, env, tolerance] of variants) {
      const got = predictIn(env);
      for (let i = 0; i < base.length; i++) {
        expect(maxDiff(got[i], base[i]), `${label}, batch ${i}`).toBeLessThanOrEqual(tolerance);
      }
    }
  }, 120_000);

  it("a predict after setWeights, fit or applyGradients sees the new weights", async () => {
    // 8 channels in and out, a batch of 4: the Winograd path with its cached kernel transform
    // (on CPUs with AVX2 or AVX-512). Each check compares with a fresh model given the same
    // weights, which has nothing cached; only the convolution's kernel changes in the first.
    const build = () =>
      sequential(
        [
          conv2d({ filters: 8, kernelSize: 3, activation: "relu", inputShape: [6, 6, 8] }),
          flatten(),
          dense({ units: 2 }),
        ],
        { seed: 1 },
      );
    const m = build();
    const x = randomTensor([4, 6, 6, 8]);
    const fresh = async (weights: Tensor[]) => {
      const other = build();
      other.setWeights(weights);
      return Array.from((await other.predict(x)).data);
    };
    const before = Array.from((await m.predict(x)).data);
    await m.predict(x);
    const weights = m.getWeights();
    const changed = weights.map((w: Tensor, i: number) =>
      i === 0
        ? tensor(
            w.data.map((v) => -v),
            w.shape,
          )
        : w,
    );
    m.setWeights(changed);
    const after = Array.from((await m.predict(x)).data);
    expect(maxDiff(after, before)).toBeGreaterThan(1e-3);
    expect(after).toEqual(await fresh(changed));
    m.setWeights(weights);
    expect(Array.from((await m.predict(x)).data)).toEqual(before);
    m.compile({ optimizer: "sgd", loss: "meanSquaredError" });
    await m.fit(randomTensor([8, 6, 6, 8], 3), randomTensor([8, 2], 4), { epochs: 1, verbose: 0 });
    const fitted = Array.from((await m.predict(x)).data);
    expect(maxDiff(fitted, before)).toBeGreaterThan(1e-6);
    expect(fitted).toEqual(await fresh(m.getWeights()));
    const [xs, ys] = [randomTensor([4, 6, 6, 8], 5), randomTensor([4, 2], 6)];
    const { grads } = valueAndGrads(() => m.call(xs).loss(ys, "meanSquaredError"), m);
    optimizers.sgd({ learningRate: 0.1 }).applyGradients(grads, m);
    expect(Array.from((await m.predict(x)).data)).toEqual(await fresh(m.getWeights()));
  });
});
