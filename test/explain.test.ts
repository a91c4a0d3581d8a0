/**
 * Explanations and robustness (issue 16 parts 2 and 3): input gradients against finite
 * differences, integrated gradients' completeness, Grad-CAM against the CAM formula, the
 * randomisation sanity check, FGSM/PGD within their budget, adversarial training, and the
 * Gaussian noise layers.
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import {
  attacks,
  conv2d,
  dense,
  explain,
  flatten,
  gaussianDropout,
  gaussianNoise,
  globalAveragePooling2d,
  loadModel,
  sequential,
  tensor,
} from "../index.ts";
import { PNG_SIGNATURE } from "../src/image.ts";
import { blobs, randomTensor } from "./helpers.ts";

const work = mkdtempSync(join(tmpdir(), "cortex-explain-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));

function smallConvnet(seed: number) {
  const conv = conv2d({ filters: 4, kernelSize: 3, activation: "relu", inputShape: [8, 8, 1], name: "conv" });
  const head = dense({ units: 3, name: "head" });
  const m = sequential([conv, globalAveragePooling2d({}), head], { seed });
  m.compile({ optimizer: "adam", loss: { name: "sparseCategoricalCrossentropy", fromLogits: true } });
  return { m, conv, head };
}

describe("input gradients", () => {
  it("saliency is |d score / d x|, as central finite differences give it", async () => {
    const m = sequential([dense({ units: 5, activation: "tanh", inputShape: [4] }), dense({ units: 3 })], { seed: 2 });
    const x = randomTensor([2, 4], 3);
    const s = await explain.saliency(m, x, { target: [1, 2] });
    expect(s.shape).toEqual([2, 4]);
    const h = 1e-2;
    for (let i = 0; i < 2; i++) {
      for (let j = 0; j < 4; j++) {
        const at = async (d: number) => {
          const v = Float32Array.from(x.data);
          v[i * 4 + j] += d;
          const y = (await m.predict(tensor(v, [2, 4]))).data;
          return y[i * 3 + [1, 2][i]];
        };
        const fd = ((await at(h)) - (await at(-h))) / (2 * h);
        expect(s.data[i * 4 + j]).toBeCloseTo(Math.abs(fd), 3);
      }
    }
  });

  it("integrated gradients sum to f(x) - f(baseline) within 1% at 256 steps", async () => {
    const { m } = smallConvnet(4);
    const x = randomTensor([3, 8, 8, 1], 5);
    const a = await explain.integratedGradients(m, x, { target: 0, steps: 256 });
    expect(a.shape).toEqual([3, 8, 8, 1]);
    const fx = (await m.predict(x)).data;
    const f0 = (await m.predict(tensor(new Float32Array(3 * 64), [3, 8, 8, 1]))).data;
    for (let i = 0; i < 3; i++) {
      const sum = a.data.subarray(i * 64, (i + 1) * 64).reduce((s, v) => s + v, 0);
      const delta = fx[i * 3] - f0[i * 3];
      expect(Math.abs(sum - delta)).toBeLessThanOrEqual(0.01 * Math.abs(delta) + 1e-6);
    }
  });

  it("Grad-CAM of conv -> global average pooling -> dense is relu(sum_k w_kc A_k) / positions", async () => {
    const { m, conv, head } = smallConvnet(6);
    const x = randomTensor([2, 8, 8, 1], 7);
    const cam = await explain.gradCam(m, x, { layer: "conv", target: [0, 2] });
    expect(cam.shape).toEqual([2, 6, 6]);
    const features = sequential([conv]); // the same layer object: the same weights
    const a = (await features.predict(x)).data;
    const w = head.getWeights()[0].data; // [4, 3]
    for (let i = 0; i < 2; i++) {
      const c = [0, 2][i];
      for (let p = 0; p < 36; p++) {
        let v = 0;
        for (let k = 0; k < 4; k++) v += (w[k * 3 + c] / 36) * a[(i * 36 + p) * 4 + k];
        expect(cam.data[i * 36 + p]).toBeCloseTo(Math.max(0, v), 5);
      }
    }
    await expect(explain.gradCam(m, x, { layer: "nope" })).rejects.toThrow(/no layer 'nope'.*conv/);
  });

  it("the randomisation check: a trained model's saliency differs from a re-initialised copy's", async () => {
    const { x, y } = blobs(200, 8);
    const m = sequential([dense({ units: 16, activation: "relu", inputShape: [2] }), dense({ units: 2 })], { seed: 9 });
    m.compile({ optimizer: "adam", loss: { name: "sparseCategoricalCrossentropy", fromLogits: true } });
    await m.fit(x, y, { epochs: 5, verbose: 0 });
    const self = explain.rankCorrelation([1, 2, 3, 4], [2, 4, 6, 8]);
    expect(self).toBeCloseTo(1, 10);
    expect(explain.rankCorrelation([1, 2, 3], [3, 2, 1])).toBeCloseTo(-1, 10);
    const check = await explain.randomizationCheck(m, tensor(x.data.slice(0, 20), [10, 2]));
    expect(check.correlations.length).toBe(10);
    for (const c of check.correlations) expect(Math.abs(c)).toBeLessThanOrEqual(1);
  });

  it("heatmap grids are RGB PNGs", async () => {
    const { m } = smallConvnet(10);
    const x = randomTensor([4, 8, 8, 1], 11);
    const cam = await explain.gradCam(m, x, { layer: "conv" });
    const file = join(work, "cam.png");
    await explain.writeHeatmapGrid(file, x, cam, { columns: 2, range: [-1, 1] });
    const bytes = readFileSync(file);
    expect([...bytes.subarray(0, 8)]).toEqual([...PNG_SIGNATURE]);
    expect(bytes[25]).toBe(2); // color type RGB
  });
});

describe("attacks", () => {
  it("FGSM on a linear model moves each input by epsilon along the sign of the loss gradient", async () => {
    const m = sequential([dense({ units: 1, inputShape: [3] })], { seed: 1 });
    m.compile({ optimizer: "sgd", loss: "meanSquaredError" });
    m.setWeights([tensor(Float32Array.of(1, -2, 0.5), [3, 1]), tensor(Float32Array.of(0), [1])]);
    const x = tensor(Float32Array.of(0.5, 0.5, 0.5, 0.2, 0.9, 0.4), [2, 3]);
    const y = tensor(Float32Array.of(10, -10), [2, 1]); // first prediction too low, second too high
    const adv = await attacks.fgsm(m, x, y, { epsilon: 0.1, clip: false });
    // d loss / d x = 2 (wx - y) w / n: -sign(w) for the first sample (too low), sign(w) for the second.
    const want = [0.4, 0.6, 0.4, 0.3, 0.8, 0.5];
    for (const [i, v] of want.entries()) expect(adv.data[i]).toBeCloseTo(v, 6);
    const clipped = await attacks.fgsm(m, x, y, { epsilon: 0.2 });
    expect(Math.max(...clipped.data)).toBeLessThanOrEqual(1);
  });

  it("PGD stays within its budget and hurts a trained classifier more than FGSM; adversarial training helps", async () => {
    const { x, y } = blobs(400, 12);
    // Inputs in [0, 1] like images.
    const scaled = tensor(
      x.data.map((v) => (v + 2) / 4),
      x.shape,
    );
    const build = () => {
      const m = sequential([dense({ units: 32, activation: "relu", inputShape: [2] }), dense({ units: 2 })], {
        seed: 13,
      });
      m.compile({
        optimizer: "adam",
        loss: { name: "sparseCategoricalCrossentropy", fromLogits: true },
        metrics: ["accuracy"],
      });
      return m;
    };
    const plain = build();
    await plain.fit(scaled, y, { epochs: 30, verbose: 0 });
    const eps = 0.12;
    const f = await attacks.fgsm(plain, scaled, y, { epsilon: eps });
    const p = await attacks.pgd(plain, scaled, y, { epsilon: eps, steps: 20 });
    for (let i = 0; i < scaled.data.length; i++) {
      expect(Math.abs(p.data[i] - scaled.data[i])).toBeLessThanOrEqual(eps + 1e-6);
      expect(p.data[i]).toBeGreaterThanOrEqual(0);
    }
    const acc = async (m: typeof plain, v: typeof scaled) => (await m.evaluate(v, y)).accuracy;
    const clean = await acc(plain, scaled);
    expect(await acc(plain, p)).toBeLessThanOrEqual(await acc(plain, f));
    expect(await acc(plain, p)).toBeLessThan(clean);
    const robust = build();
    await robust.fit(scaled, y, {
      epochs: 30,
      verbose: 0,
      adversarial: { epsilon: eps, steps: 1, stepSize: 1.25 * eps, randomStart: true },
    });
    const pRobust = await attacks.pgd(robust, scaled, y, { epsilon: eps, steps: 20 });
    expect(await acc(robust, pRobust)).toBeGreaterThan(await acc(plain, p));
  });
});

describe("noise layers", () => {
  it("gaussianNoise and gaussianDropout are the identity in inference, train, and survive save/load", async () => {
    const m = sequential(
      [
        gaussianNoise({ stddev: 0.3, inputShape: [2] }),
        dense({ units: 8, activation: "relu" }),
        gaussianDropout({ rate: 0.2 }),
        flatten({}),
        dense({ units: 2 }),
      ],
      { seed: 3 },
    );
    m.compile({ optimizer: "adam", loss: { name: "sparseCategoricalCrossentropy", fromLogits: true } });
    const { x, y } = blobs(100, 14);
    const before = await m.predict(x);
    const again = await m.predict(x);
    expect(again.data).toEqual(before.data);
    const h = await m.fit(x, y, { epochs: 5, verbose: 0 });
    expect(h.history.loss[4]).toBeLessThan(h.history.loss[0]);
    await m.save(join(work, "noisy"));
    const loaded = await loadModel(join(work, "noisy"));
    expect((await loaded.predict(x)).data).toEqual((await m.predict(x)).data);
    expect(() => gaussianDropout({ rate: 1 })).toThrow(/\[0, 1\)/);
  });
});
