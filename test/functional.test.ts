/** Functional API: residual and multi-input graphs, nested models sharing weights, trainable flags. */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { add, concatenate, dense, input, loadModel, model, optimizers, sequential, tensor } from "../index.ts";
import { blobs, randomTensor } from "./helpers.ts";

describe("functional models", () => {
  it("a residual block trains and matches a hand computation", async () => {
    const x = input({ shape: [4] });
    const h = dense({ units: 4, activation: "relu" }).apply(x);
    const y = add().apply([x, h]);
    const out = dense({ units: 2, activation: "softmax" }).apply(y);
    const m = model({ inputs: x, outputs: out, seed: 3 });
    expect(m.layers.map((l) => l.className)).toEqual(["Dense", "Add", "Dense"]);
    expect(m.outputShape).toEqual([2]);
    // y = x + relu(x W1 + b1): check with the weights the model holds.
    const [w1, b1, w2, b2] = m.getWeights();
    const data = randomTensor([3, 4], 11);
    const pred = await m.predict(data);
    for (let r = 0; r < 3; r++) {
      const yv = [0, 1, 2, 3].map((j) => {
        let s = b1.data[j];
        for (let i = 0; i < 4; i++) s += data.data[r * 4 + i] * w1.data[i * 4 + j];
        return data.data[r * 4 + j] + Math.max(s, 0);
      });
      const logits = [0, 1].map((k) => b2.data[k] + yv.reduce((acc, v, j) => acc + v * w2.data[j * 2 + k], 0));
      const z = Math.exp(logits[0]) + Math.exp(logits[1]);
      expect(pred.data[r * 2]).toBeCloseTo(Math.exp(logits[0]) / z, 5);
    }
    m.compile({
      optimizer: optimizers.adam({ learningRate: 0.05 }),
      loss: "sparseCategoricalCrossentropy",
      metrics: ["accuracy"],
    });
    const four = tensor(
      Float32Array.from({ length: 256 * 4 }, (_, i) => ((i * 7919) % 13) / 13 - 0.5),
      [256, 4],
    );
    const labels = tensor(
      Float32Array.from({ length: 256 }, (_, i) => (four.data[i * 4] > 0 ? 1 : 0)),
      [256],
    );
    await m.fit(four, labels, { epochs: 20, verbose: 0 });
    expect((await m.evaluate(four, labels)).accuracy).toBeGreaterThan(0.95);
  });

  it("multi-input with concatenate, and errors for incompatible shapes", async () => {
    const a = input({ shape: [3] });
    const b = input({ shape: [2] });
    const joined = concatenate().apply([a, b]);
    expect(joined.shape).toEqual([5]);
    const m = model({ inputs: [a, b], outputs: dense({ units: 1 }).apply(joined) });
    expect(m.outputShape).toEqual([1]);
    expect(() => add().apply([a, b])).toThrow(/\[3\].*\[2\]/);
    expect(() => model({ inputs: a, outputs: joined })).toThrow(/not listed in 'inputs'/);
  });

  it("unnamed models get distinct Keras-style names, so two nest in one model", async () => {
    const first = sequential([dense({ units: 4, activation: "relu", inputShape: [2] })]);
    const second = sequential([dense({ units: 2, inputShape: [4] })]);
    expect(first.name).toMatch(/^sequential(_\d+)?$/);
    expect(second.name).not.toBe(first.name);
    const inp = input({ shape: [2] });
    const both = model({ inputs: inp, outputs: second.apply(first.apply(inp)) });
    expect(both.name).toMatch(/^model(_\d+)?$/);
    const y = await both.predict(randomTensor([3, 2]));
    expect(y.shape).toEqual([3, 2]);
  });

  it("nested models share weights, and trainable=false freezes them at compile", async () => {
    const { x, y } = blobs(128);
    const encoder = sequential([dense({ units: 8, activation: "relu", inputShape: [2] })], { name: "encoder" });
    const inp = input({ shape: [2] });
    const head = dense({ units: 2, activation: "softmax" });
    const classifier = model({ inputs: inp, outputs: head.apply(encoder.apply(inp)), name: "classifier" });
    expect(classifier.getWeights().length).toBe(4);
    // Shared: changing the encoder's weights changes the classifier's.
    const zeros = encoder.getWeights().map((w) => tensor(new Float32Array(w.size), [...w.shape]));
    encoder.setWeights(zeros);
    expect(Array.from(classifier.getWeights()[0].data).every((v) => v === 0)).toBe(true);
    encoder.setWeights(
      zeros.map((w) =>
        tensor(
          w.data.map((_, i) => Math.sin(i + 1)),
          [...w.shape],
        ),
      ),
    );

    encoder.trainable = false;
    classifier.compile({ optimizer: optimizers.sgd({ learningRate: 0.5 }), loss: "sparseCategoricalCrossentropy" });
    const frozen = encoder.getWeights()[0].data.slice();
    const headBefore = head.getWeights()[0].data.slice();
    await classifier.fit(x, y, { epochs: 2, verbose: 0 });
    expect(Array.from(encoder.getWeights()[0].data)).toEqual(Array.from(frozen));
    expect(Array.from(head.getWeights()[0].data)).not.toEqual(Array.from(headBefore));
    expect(classifier.summary(false)).toMatch(/Non-trainable params: 24/);

    // Recompiling after unfreezing trains the encoder too.
    encoder.trainable = true;
    classifier.compile({ optimizer: optimizers.sgd({ learningRate: 0.5 }), loss: "sparseCategoricalCrossentropy" });
    await classifier.fit(x, y, { epochs: 1, verbose: 0 });
    expect(Array.from(encoder.getWeights()[0].data)).not.toEqual(Array.from(frozen));
  });

  it("saves and reloads a functional model with a nested model", async () => {
    const inner = sequential([dense({ units: 3, activation: "tanh", inputShape: [2] })]);
    const inp = input({ shape: [2] });
    const out = add().apply([inner.apply(inp), dense({ units: 3 }).apply(inp)]);
    const m = model({ inputs: inp, outputs: out });
    const dir = mkdtempSync(join(tmpdir(), "cortex-functional-"));
    try {
      await m.save(dir);
      const loaded = await loadModel(dir);
      const data = randomTensor([5, 2], 3);
      expect(Array.from((await loaded.predict(data)).data)).toEqual(Array.from((await m.predict(data)).data));
      expect(loaded.layers.map((l) => l.className)).toEqual(["Sequential", "Dense", "Add"]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
