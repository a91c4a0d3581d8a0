/**
 * DP-SGD through `fit({ dp })`: the logged ε is the accountant's, a target ε stops training,
 * unsupported trainable layers are refused by name, and a noisy clipped run still learns.
 * The step itself (per-sample norms against one-sample-at-a-time gradients, the no-noise
 * huge-clip step against plain SGD, the tiny-clip update bound, the noise scale) is tested in
 * Rust: crates/core/src/nn/model/dp_tests.rs.
 */
import { describe, expect, it } from "vitest";
import { batchNormalization, conv2d, dense, flatten, privacy, sequential, sgd } from "../index.ts";
import { native } from "../src/native.ts";
import { blobs, randomTensor } from "./helpers.ts";

const noGpu = native.gpuTestSkipReason();

function mlp(seed = 3) {
  const m = sequential([dense({ units: 8, activation: "tanh", inputShape: [2] }), dense({ units: 2 })], { seed });
  m.compile({
    optimizer: sgd({ learningRate: 0.5 }),
    loss: { name: "sparseCategoricalCrossentropy", fromLogits: true },
    metrics: ["accuracy"],
  });
  return m;
}

describe("fit({ dp })", () => {
  it("logs each epoch's ε as privacy.computeEpsilon gives it for the steps taken", async () => {
    const { x, y } = blobs(200);
    const dp = { l2NormClip: 1, noiseMultiplier: 1.3, delta: 1e-4 };
    const h = await mlp().fit(x, y, { epochs: 3, batchSize: 20, verbose: 0, dp });
    const eps = h.history.epsilon;
    expect(eps).toHaveLength(3);
    for (let e = 0; e < 3; e++) {
      // 200 / 20 = 10 Poisson-sampled steps an epoch.
      const want = privacy.computeEpsilon({
        datasetSize: 200,
        batchSize: 20,
        noiseMultiplier: 1.3,
        delta: 1e-4,
        steps: 10 * (e + 1),
      }).epsilon;
      expect(Math.abs(eps[e] - want)).toBeLessThan(1e-9 * want);
    }
    expect(eps[2]).toBeGreaterThan(eps[0]);
  });

  it("stops before a step would take ε past targetEpsilon", async () => {
    const { x, y } = blobs(200);
    const args = { datasetSize: 200, batchSize: 20, noiseMultiplier: 1.3, delta: 1e-4 };
    const e1 = privacy.computeEpsilon({ ...args, steps: 10 }).epsilon;
    const e2 = privacy.computeEpsilon({ ...args, steps: 20 }).epsilon;
    const target = (e1 + e2) / 2;
    const h = await mlp().fit(x, y, {
      epochs: 10,
      batchSize: 20,
      verbose: 0,
      dp: { l2NormClip: 1, noiseMultiplier: 1.3, delta: 1e-4, targetEpsilon: target },
    });
    const eps = h.history.epsilon;
    expect(eps).toHaveLength(2); // the second epoch is cut short
    const last = eps[1];
    expect(last).toBeLessThanOrEqual(target);
    // It took as many steps as the target allows: one more would pass it.
    let steps = 10;
    while (privacy.computeEpsilon({ ...args, steps: steps + 1 }).epsilon <= target) steps++;
    expect(last).toBeCloseTo(privacy.computeEpsilon({ ...args, steps }).epsilon, 12);
  });

  it("a noisy, clipped run still learns two blobs", async () => {
    const { x, y } = blobs(400);
    const m = mlp(5);
    const h = await m.fit(x, y, {
      epochs: 4,
      batchSize: 40,
      verbose: 0,
      dp: { l2NormClip: 1, noiseMultiplier: 0.8 },
    });
    expect(h.history.accuracy.at(-1)).toBeGreaterThan(0.9);
    expect(Number.isFinite(h.history.epsilon.at(-1))).toBe(true);
  });

  it("trains a conv model and refuses a trainable layer it cannot clip per sample, by name", async () => {
    const x = randomTensor([32, 6, 6, 1]);
    const { y } = blobs(32);
    const conv = sequential([
      conv2d({ filters: 2, kernelSize: 3, activation: "tanh", inputShape: [6, 6, 1] }),
      flatten(),
      dense({ units: 2 }),
    ]);
    conv.compile({ optimizer: "sgd", loss: { name: "sparseCategoricalCrossentropy", fromLogits: true } });
    const h = await conv.fit(x, y, { epochs: 1, batchSize: 8, verbose: 0, dp: { l2NormClip: 1, noiseMultiplier: 1 } });
    expect(h.history.epsilon).toHaveLength(1);

    const bn = sequential([
      dense({ units: 4, inputShape: [2] }),
      batchNormalization({ name: "norm1" }),
      dense({ units: 2 }),
    ]);
    bn.compile({ optimizer: "sgd", loss: { name: "sparseCategoricalCrossentropy", fromLogits: true } });
    const { x: bx, y: by } = blobs(32);
    await expect(
      bn.fit(bx, by, { epochs: 1, batchSize: 8, verbose: 0, dp: { l2NormClip: 1, noiseMultiplier: 1 } }),
    ).rejects.toThrow(/'norm1' \(BatchNormalization\)/);
    await expect(
      bn.fit(bx, by, { epochs: 1, batchSize: 8, verbose: 0, dp: { l2NormClip: 0, noiseMultiplier: 1 } }),
    ).rejects.toThrow(/l2NormClip/);
  });

  it.skipIf(noGpu != null)("on a GPU compile takes the CPU's steps (one seed, one noise draw)", async () => {
    const { x, y } = blobs(60);
    const dp = { l2NormClip: 0.5, noiseMultiplier: 0.9 };
    const run = async (device: "cpu" | "gpu!") => {
      const m = sequential([dense({ units: 8, activation: "tanh", inputShape: [2] }), dense({ units: 2 })], {
        seed: 4,
      });
      m.compile({
        optimizer: sgd({ learningRate: 0.5 }),
        loss: { name: "sparseCategoricalCrossentropy", fromLogits: true },
        device,
      });
      const h = await m.fit(x, y, { epochs: 2, batchSize: 15, verbose: 0, dp });
      return { m, h };
    };
    const cpu = await run("cpu");
    const gpu = await run("gpu!");
    expect(gpu.m.weightsDevice).toBe("gpu");
    expect(gpu.h.history.epsilon).toEqual(cpu.h.history.epsilon);
    const [wc, wg] = [cpu.m.getWeights(), gpu.m.getWeights()];
    for (let i = 0; i < wc.length; i++) {
      for (let j = 0; j < wc[i].data.length; j++) {
        expect(Math.abs(wg[i].data[j] - wc[i].data[j])).toBeLessThan(1e-4 * (1 + Math.abs(wc[i].data[j])));
      }
    }
  });
});
