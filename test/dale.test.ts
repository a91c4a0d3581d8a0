/** Dale's law layers (eiDense, eiRNN): weight signs at init, after fit and applyGradients, through save/load. */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { eiDense, eiRNN, grads, loadModel, type Model, optimizers, sequential, type Tensor, tensor } from "../index.ts";
import { randomTensor } from "./helpers.ts";

/** Sign pattern of a kernel: rows before `round(fraction * rows)` must be >= 0, the rest <= 0. */
function signCounts(w: Tensor, fraction: number): { wrong: number; zero: number; excitatory: number } {
  const [rows, cols] = w.shape;
  const excitatory = Math.round(fraction * rows);
  let wrong = 0;
  let zero = 0;
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const v = w.data[r * cols + c];
      if (v === 0) zero++;
      else if (r < excitatory ? v < 0 : v > 0) wrong++;
    }
  }
  return { wrong, zero, excitatory };
}

/** A 2-layer E/I MLP: 6 non-negative-weighted inputs -> 12 units (75% E) -> 3 logits. */
function mlp(seed: number): Model {
  return sequential(
    [
      eiDense({ units: 12, activation: "relu", excitatoryFraction: 0.75, inputShape: [6] }),
      eiDense({ units: 3, inputExcitatoryFraction: 0.75 }),
    ],
    { seed },
  );
}

/** Random inputs and labels that an unconstrained model would fit with weights of both signs. */
function data(n: number, shape: number[]): { x: Tensor; y: Tensor } {
  const x = randomTensor([n, ...shape], 11);
  const labels = randomTensor([n], 12).data.map((v) => Math.floor((v + 1) * 1.5));
  return { x, y: tensor(labels, [n]) };
}

/** Every kernel of `mlp` obeys its sign pattern; returns the number of zeroed weights. */
function checkMlp(m: Model): number {
  const [k1, , k2] = m.getWeights();
  const a = signCounts(k1, 1);
  const b = signCounts(k2, 0.75);
  expect(a.wrong).toBe(0);
  expect(b.wrong).toBe(0);
  expect(b.excitatory).toBe(9);
  return a.zero + b.zero;
}

describe("Dale's law layers", () => {
  it("eiDense starts with strictly signed weights per presynaptic population", () => {
    const m = mlp(1);
    expect(checkMlp(m)).toBe(0);
    expect(m.toJSON().layers.map((l) => l.className)).toEqual(["EIDense", "EIDense"]);
  });

  it("fit with adam keeps every sign (the projection is active: some weights pin at 0)", async () => {
    const m = mlp(2);
    const { x, y } = data(96, [6]);
    m.compile({ optimizer: optimizers.adam({ learningRate: 0.05 }), loss: "sparseCategoricalCrossentropy" });
    const history = await m.fit(x, y, { epochs: 8, batchSize: 16, verbose: 0 });
    const losses = history.history.loss;
    expect(losses[losses.length - 1]).toBeLessThan(losses[0]);
    expect(checkMlp(m)).toBeGreaterThan(0);
  });

  it("applyGradients keeps the signs of eiRNN and eiDense weights", () => {
    const m = sequential(
      [
        eiRNN({ units: 8, excitatoryFraction: 0.75, inputShape: [5, 3] }),
        eiDense({ units: 3, inputExcitatoryFraction: 0.75 }),
      ],
      { seed: 3 },
    );
    const [kernel, recurrent, , readout] = m.getWeights();
    expect(recurrent.shape).toEqual([8, 8]);
    for (const [w, f] of [
      [kernel, 1],
      [recurrent, 0.75],
      [readout, 0.75],
    ] as const) {
      expect(signCounts(w, f)).toMatchObject({ wrong: 0, zero: 0 });
    }
    const { x, y } = data(64, [5, 3]);
    const opt = optimizers.adam({ learningRate: 0.05 });
    const lossOf = () => m.call(x).loss(y, { name: "sparseCategoricalCrossentropy", fromLogits: true });
    const first = lossOf().toTensor().data[0];
    for (let step = 0; step < 30; step++) opt.applyGradients(grads(lossOf, m), m);
    expect(lossOf().toTensor().data[0]).toBeLessThan(first);
    const after = m.getWeights();
    let zeros = 0;
    for (const [i, f] of [
      [0, 1],
      [1, 0.75],
      [3, 0.75],
    ] as const) {
      const c = signCounts(after[i], f);
      expect(c.wrong).toBe(0);
      zeros += c.zero;
    }
    expect(zeros).toBeGreaterThan(0);
  });

  it("save/load keeps the layers, weights and the constraint", async () => {
    const dir = await mkdtemp(join(tmpdir(), "cortex-dale-"));
    try {
      const m = sequential(
        [
          eiRNN({ units: 6, excitatoryFraction: 0.5, inputShape: [4, 2] }),
          eiDense({ units: 3, inputExcitatoryFraction: 0.5, excitatoryFraction: 0.5 }),
        ],
        { seed: 4 },
      );
      await m.save(dir);
      const loaded = await loadModel(dir);
      expect(loaded.toJSON().layers.map((l) => [l.className, l.config])).toEqual(
        m.toJSON().layers.map((l) => [l.className, l.config]),
      );
      expect(loaded.toJSON().layers[0].config).toMatchObject({
        activation: "relu",
        excitatoryFraction: 0.5,
        inputExcitatoryFraction: 1,
      });
      const { x, y } = data(32, [4, 2]);
      const before = (await m.predict(x)) as Tensor;
      expect(Array.from(((await loaded.predict(x)) as Tensor).data)).toEqual(Array.from(before.data));
      // The reloaded model trains under the constraint too.
      loaded.compile({ optimizer: optimizers.adam({ learningRate: 0.1 }), loss: "sparseCategoricalCrossentropy" });
      await loaded.fit(x, y, { epochs: 5, batchSize: 8, verbose: 0 });
      const w = loaded.getWeights();
      expect(signCounts(w[0], 1).wrong).toBe(0);
      expect(signCounts(w[1], 0.5).wrong).toBe(0);
      expect(signCounts(w[3], 0.5).wrong).toBe(0);
      await expect(m.save(join(dir, "m.keras"))).rejects.toThrow(/EIRNN .*Dale/);
      await expect(m.export(join(dir, "m.onnx"))).rejects.toThrow(/EIRNN/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("rejects fractions outside [0, 1]", () => {
    expect(() => eiDense({ units: 2, excitatoryFraction: 1.5 })).toThrow(
      /excitatoryFraction' must be a fraction in \[0, 1\], got 1.5/,
    );
    expect(() => eiRNN({ units: 2, inputExcitatoryFraction: -0.1 })).toThrow(
      /EIRNN .*inputExcitatoryFraction' must be a fraction in \[0, 1\]/,
    );
  });
});
