/**
 * Dale's law layers (eiDense, the DANN layer of Cornford et al. 2021, or with inhibitoryUnits 0
 * the row-sign layer; eiRNN): weight signs at init, after fit and applyGradients, through
 * save/load; eiDense's forward pass.
 */
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

/** A 2-layer DANN: 6 inputs -> 12 excitatory units (3 interneurons) -> 3 logits (1 interneuron). */
function mlp(seed: number): Model {
  return sequential(
    [eiDense({ units: 12, inhibitoryUnits: 3, activation: "relu", inputShape: [6] }), eiDense({ units: 3 })],
    { seed },
  );
}

/** Random inputs and labels that an unconstrained model would fit with weights of both signs. */
function data(n: number, shape: number[]): { x: Tensor; y: Tensor } {
  const x = randomTensor([n, ...shape], 11);
  const labels = randomTensor([n], 12).data.map((v) => Math.floor((v + 1) * 1.5));
  return { x, y: tensor(labels, [n]) };
}

/**
 * Every weight matrix of `mlp` obeys its sign: E->E (`kernel`) and E->I (`inhibitoryKernel`)
 * >= 0, I->E (`inhibitoryOutput`) <= 0. Returns the number of zeroed weights.
 */
function checkMlp(m: Model): number {
  const w = m.getWeights();
  expect(w.map((t) => t.shape)).toEqual([[6, 12], [6, 3], [3, 12], [12], [12, 3], [12, 1], [1, 3], [3]]);
  let zeros = 0;
  for (const [i, fraction] of [
    [0, 1],
    [1, 1],
    [2, 0],
    [4, 1],
    [5, 1],
    [6, 0],
  ] as const) {
    const c = signCounts(w[i], fraction);
    expect(c.wrong).toBe(0);
    zeros += c.zero;
  }
  return zeros;
}

/** `kernel + inhibitoryKernel · inhibitoryOutput` of an eiDense's weights `[in, units]`. */
function effectiveKernel([k, ik, io]: Tensor[]): Float64Array {
  const [din, units] = k.shape;
  const ni = ik.shape[1];
  const w = Float64Array.from(k.data);
  for (let i = 0; i < din; i++)
    for (let u = 0; u < units; u++)
      for (let j = 0; j < ni; j++) w[i * units + u] += ik.data[i * ni + j] * io.data[j * units + u];
  return w;
}

describe("Dale's law layers", () => {
  it("eiDense starts with strictly signed weights, balanced E and I, and the default interneuron count", () => {
    const m = mlp(1);
    expect(checkMlp(m)).toBe(0);
    expect(m.toJSON().layers.map((l) => [l.className, l.config.inhibitoryUnits])).toEqual([
      ["EIDense", 3],
      ["EIDense", 1],
    ]);
    // The interneurons make the effective kernel signed both ways: each input's column mean is
    // ~0 (exactly 0 with one interneuron, whose weights are the mean of the E weights).
    const w = m.getWeights();
    const k2 = effectiveKernel(w.slice(4, 7));
    for (let i = 0; i < 12; i++) {
      const row = k2.subarray(i * 3, i * 3 + 3);
      expect(row.reduce((a, v) => a + v, 0)).toBeCloseTo(0, 5);
      expect(Math.min(...row)).toBeLessThan(0);
    }
    expect(Math.min(...effectiveKernel(w.slice(0, 3)))).toBeLessThan(0);
  });

  it("eiDense computes activation(x · (W_EE + W_IE W_EI) + b)", async () => {
    const m = sequential([eiDense({ units: 5, inhibitoryUnits: 2, activation: "relu", inputShape: [4] })], { seed: 9 });
    const w = m.getWeights();
    m.setWeights([w[0], w[1], w[2], randomTensor([5], 4)]);
    const [k, , , b] = m.getWeights();
    const x = randomTensor([3, 4], 8);
    const y = (await m.predict(x)) as Tensor;
    const kernel = effectiveKernel(m.getWeights());
    expect(k.shape).toEqual([4, 5]);
    for (let n = 0; n < 3; n++)
      for (let u = 0; u < 5; u++) {
        let z = b.data[u];
        for (let i = 0; i < 4; i++) z += x.data[n * 4 + i] * kernel[i * 5 + u];
        expect(y.data[n * 5 + u]).toBeCloseTo(Math.max(z, 0), 5);
      }
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
    const [kernel, recurrent, , readout, readoutInhibitory, inhibitoryOutput] = m.getWeights();
    expect(recurrent.shape).toEqual([8, 8]);
    for (const [w, f] of [
      [kernel, 1],
      [recurrent, 0.75],
      [readout, 0.75],
      [readoutInhibitory, 0.75],
      [inhibitoryOutput, 0],
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
      [4, 0.75],
      [5, 0],
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
          eiDense({ units: 3, inputExcitatoryFraction: 0.5, inhibitoryUnits: 2 }),
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
      expect(signCounts(w[4], 0.5).wrong).toBe(0);
      expect(signCounts(w[5], 0).wrong).toBe(0);
      await expect(m.save(join(dir, "m.keras"))).rejects.toThrow(/EIRNN .*Dale/);
      await expect(m.export(join(dir, "m.onnx"))).rejects.toThrow(/EIRNN/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("inhibitoryUnits 0 is the row-sign layer: x · (|W| * D) + b, D by presynaptic population", async () => {
    const m = sequential([eiDense({ units: 3, inhibitoryUnits: 0, inputExcitatoryFraction: 0.5, inputShape: [4] })], {
      seed: 6,
    });
    const [k] = m.getWeights();
    expect(m.getWeights().map((t) => t.shape)).toEqual([[4, 3], [3]]);
    expect(m.toJSON().layers[0].config).toMatchObject({ inhibitoryUnits: 0, inputExcitatoryFraction: 0.5 });
    expect(signCounts(k, 0.5)).toMatchObject({ wrong: 0, zero: 0 });
    m.setWeights([k, randomTensor([3], 4)]);
    const bias = m.getWeights()[1];
    const x = randomTensor([3, 4], 8);
    const y = (await m.predict(x)) as Tensor;
    for (let n = 0; n < 3; n++)
      for (let u = 0; u < 3; u++) {
        let z = bias.data[u];
        for (let i = 0; i < 4; i++) z += x.data[n * 4 + i] * k.data[i * 3 + u];
        expect(y.data[n * 3 + u]).toBeCloseTo(z, 5);
      }
  });

  it("the row-sign eiDense after an eiRNN starts E/I-balanced and keeps its signs through fit and save/load", async () => {
    const m = sequential(
      [
        eiRNN({ units: 8, excitatoryFraction: 0.75, inputShape: [5, 3] }),
        eiDense({ units: 3, inhibitoryUnits: 0, inputExcitatoryFraction: 0.75 }),
      ],
      { seed: 5 },
    );
    const w = m.getWeights();
    expect(w.map((t) => t.shape)).toEqual([[3, 8], [8, 8], [8], [8, 3], [3]]);
    expect(signCounts(w[3], 0.75)).toMatchObject({ wrong: 0, zero: 0 });
    // |glorotUniform| magnitudes: the 6 E rows scaled by sqrt(2/6), the 2 I rows by sqrt(6/2).
    const limit = Math.sqrt(6 / (8 + 3));
    const rows = (from: number, to: number) => Array.from(w[3].data.subarray(from * 3, to * 3), Math.abs);
    expect(Math.max(...rows(0, 6))).toBeLessThanOrEqual(limit * Math.sqrt(2 / 6) + 1e-6);
    expect(Math.max(...rows(6, 8))).toBeLessThanOrEqual(limit * Math.sqrt(6 / 2) + 1e-6);
    expect(Math.max(...rows(6, 8))).toBeGreaterThan(limit * Math.sqrt(2 / 6));
    const { x, y } = data(64, [5, 3]);
    m.compile({ optimizer: optimizers.adam({ learningRate: 0.05 }), loss: "sparseCategoricalCrossentropy" });
    const history = await m.fit(x, y, { epochs: 8, batchSize: 16, verbose: 0 });
    const losses = history.history.loss;
    expect(losses[losses.length - 1]).toBeLessThan(losses[0]);
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
    const dir = await mkdtemp(join(tmpdir(), "cortex-dale-"));
    try {
      await m.save(dir);
      const loaded = await loadModel(dir);
      expect(loaded.toJSON().layers[1].config).toMatchObject({ inhibitoryUnits: 0, inputExcitatoryFraction: 0.75 });
      expect(Array.from(((await loaded.predict(x)) as Tensor).data)).toEqual(
        Array.from(((await m.predict(x)) as Tensor).data),
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("rejects fractions outside [0, 1] and the old row-sign layer's excitatoryFraction", () => {
    expect(() => eiDense({ units: 2, inputExcitatoryFraction: 1.5 })).toThrow(
      /inputExcitatoryFraction' must be a fraction in \[0, 1\], got 1.5/,
    );
    expect(() => eiDense({ units: 2, excitatoryFraction: 0.8 } as never)).toThrow(/excitatoryFraction/);
    expect(() => eiRNN({ units: 2, inputExcitatoryFraction: -0.1 })).toThrow(
      /EIRNN .*inputExcitatoryFraction' must be a fraction in \[0, 1\]/,
    );
  });
});
