/** Optimizers through the public API: Lion and LAMB train, configs survive save/load, and the
 * clipping options change the applied gradient exactly as Keras defines them. */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { dense, lamb, lion, loadModel, type Optimizer, optimizers, sequential, type Tensor, tensor } from "../index.ts";
import { blobs } from "./helpers.ts";

const dirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), "cortex-optim-"));
  dirs.push(d);
  return d;
}
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function mlp(seed = 1) {
  return sequential(
    [dense({ units: 16, activation: "relu", inputShape: [2] }), dense({ units: 2, activation: "softmax" })],
    { seed },
  );
}

describe("lion and lamb", () => {
  for (const [name, opt] of [
    ["lion", () => lion({ learningRate: 0.003 })],
    ["lamb", () => lamb({ learningRate: 0.01 })],
  ] as const) {
    it(`${name} trains a small model`, async () => {
      const { x, y } = blobs(128);
      const model = mlp(3);
      model.compile({ optimizer: opt(), loss: "sparseCategoricalCrossentropy" });
      const history = await model.fit(x, y, { epochs: 6, batchSize: 16, verbose: 0 });
      const loss = history.history.loss;
      expect(loss[loss.length - 1]).toBeLessThan(loss[0] * 0.8);
    });
  }

  it("optimizer configs, clipping included, survive save and loadModel", async () => {
    const { x, y } = blobs(32);
    for (const [opt, want] of [
      [
        lion({ learningRate: 0.01, beta1: 0.8, clipnorm: 0.5 }),
        { name: "lion", learningRate: 0.01, beta1: 0.8, beta2: 0.99, clipnorm: 0.5 },
      ],
      [
        lamb({ learningRate: 0.02, epsilon: 1e-5, globalClipnorm: 0.3 }),
        { name: "lamb", learningRate: 0.02, beta1: 0.9, beta2: 0.999, epsilon: 1e-5, globalClipnorm: 0.3 },
      ],
      [
        optimizers.adam({ clipvalue: 0.01 }),
        { name: "adam", learningRate: 0.001, beta1: 0.9, beta2: 0.999, epsilon: 1e-7, clipvalue: 0.01 },
      ],
    ] as const) {
      const model = mlp(5);
      model.compile({ optimizer: opt, loss: "sparseCategoricalCrossentropy" });
      const dir = tempDir();
      await model.save(dir);
      const saved = JSON.parse(readFileSync(join(dir, "model.json"), "utf8")).compile.optimizer;
      // Every option is written, and nothing else (numbers as f32 values, hence toBeCloseTo).
      expect(Object.keys(saved).sort()).toEqual(Object.keys(want).sort());
      for (const [key, value] of Object.entries(want)) {
        if (typeof value === "number") expect(saved[key], key).toBeCloseTo(value, 6);
        else expect(saved[key], key).toBe(value);
      }
      // And the loaded model takes the same steps as the original.
      const loaded = await loadModel(dir);
      for (let step = 0; step < 3; step++) {
        await model.trainOnBatch(x, y);
        await loaded.trainOnBatch(x, y);
      }
      const a = model.getWeights();
      const b = loaded.getWeights();
      for (let i = 0; i < a.length; i++) expect(Array.from(b[i].data)).toEqual(Array.from(a[i].data));
    }
  });
});

describe("gradient clipping through applyGradients", () => {
  // One dense layer, kernel [2, 2] and bias [2], starting at zero; plain SGD with rate 1, so
  // the weights after one step are minus the gradient the optimizer applied.
  function zeroModel() {
    const m = sequential([dense({ units: 2, inputShape: [2] })]);
    m.setWeights([tensor(new Float32Array(4), [2, 2]), tensor(new Float32Array(2), [2])]);
    return m;
  }
  // Norms 3 (kernel) and 4 (bias); 5 together.
  const grads = (): Tensor[] => [tensor([-3, 0, 0, 0], [2, 2]), tensor([0, 4], [2])];
  const applied = (opt: Optimizer) => {
    const m = zeroModel();
    opt.applyGradients(grads(), m);
    return m.getWeights().map((w) => Array.from(w.data, (v) => (v === 0 ? 0 : -v)));
  };

  it("without clipping applies the gradient itself", () => {
    expect(applied(optimizers.sgd({ learningRate: 1 }))).toEqual([
      [-3, 0, 0, 0],
      [0, 4],
    ]);
  });

  it("clipvalue clamps each value", () => {
    expect(applied(optimizers.sgd({ learningRate: 1, clipvalue: 1 }))).toEqual([
      [-1, 0, 0, 0],
      [0, 1],
    ]);
  });

  it("clipnorm scales each tensor longer than the limit on its own", () => {
    expect(applied(optimizers.sgd({ learningRate: 1, clipnorm: 3.5 }))).toEqual([
      [-3, 0, 0, 0],
      [0, 3.5],
    ]);
  });

  it("globalClipnorm scales all tensors by one factor", () => {
    expect(applied(optimizers.sgd({ learningRate: 1, globalClipnorm: 2.5 }))).toEqual([
      [-1.5, 0, 0, 0],
      [0, 2],
    ]);
    expect(applied(optimizers.sgd({ learningRate: 1, globalClipnorm: 5 }))).toEqual([
      [-3, 0, 0, 0],
      [0, 4],
    ]);
  });

  it("globalClipnorm counts only the weights being trained", () => {
    const frozen = dense({ units: 2, inputShape: [2] });
    const m = sequential([frozen, dense({ units: 2 })]);
    const zeros = m.getWeights().map((w) => tensor(new Float32Array(w.size), [...w.shape]));
    m.setWeights(zeros);
    frozen.trainable = false;
    // The frozen layer's huge gradient must not shrink the trained layer's (norm 5, limit 10).
    const g = [tensor([100, 100, 100, 100], [2, 2]), tensor([100, 100], [2]), ...grads()];
    optimizers.sgd({ learningRate: 1, globalClipnorm: 10 }).applyGradients(g, m);
    const after = m.getWeights().map((w) => Array.from(w.data, (v) => (v === 0 ? 0 : -v)));
    expect(after).toEqual([
      [0, 0, 0, 0],
      [0, 0],
      [-3, 0, 0, 0],
      [0, 4],
    ]);
  });

  it("refuses two clipping options, and bad limits, with a clear error", () => {
    const both = optimizers.sgd({ clipnorm: 1, globalClipnorm: 1 });
    const message = /only one of clipnorm, clipvalue and globalClipnorm can be set/;
    expect(() => both.applyGradients(grads(), zeroModel())).toThrow(message);
    expect(() => mlp().compile({ optimizer: both, loss: "meanSquaredError" })).toThrow(message);
    expect(() => mlp().compile({ optimizer: optimizers.adam({ clipvalue: -1 }), loss: "meanSquaredError" })).toThrow(
      /clipvalue must be a positive number/,
    );
  });
});
