/** The tape API: gradients of composed functions against finite differences, and custom training steps. */
import { describe, expect, it } from "vitest";
import {
  constant,
  dense,
  grads,
  input,
  model,
  optimizers,
  sequential,
  type TapeTensor,
  tensor,
  valueAndGrads,
  variable,
} from "../index.ts";
import { blobs, randomTensor } from "./helpers.ts";

function finiteDifference(f: (x: Float32Array) => number, x: Float32Array, i: number, h = 1e-2): number {
  const plus = x.slice();
  const minus = x.slice();
  plus[i] += h;
  minus[i] -= h;
  return (f(plus) - f(minus)) / (2 * h);
}

describe("tape gradients", () => {
  it("match finite differences for a composed function of variables", () => {
    const a0 = randomTensor([3, 4], 1);
    const b0 = randomTensor([4, 2], 2);
    const c = randomTensor([3, 2], 3);
    const f = (a: TapeTensor, b: TapeTensor) =>
      a.matMul(b).activation("tanh").mul(c).add(a.matMul(b).activation("sigmoid")).scale(0.5).sum();
    const a = variable(a0);
    const b = variable(b0);
    const { value, grads: g } = valueAndGrads(() => f(a, b), [a, b]);
    const evalAt = (av: Float32Array, bv: Float32Array) =>
      f(constant(tensor(av, [3, 4])), constant(tensor(bv, [4, 2]))).toTensor().data[0];
    expect(value).toBeCloseTo(evalAt(a0.data, b0.data), 5);
    for (let i = 0; i < 12; i++) {
      const fd = finiteDifference((v) => evalAt(v, b0.data), a0.data, i);
      expect(g[0].data[i]).toBeCloseTo(fd, 3);
    }
    for (let i = 0; i < 8; i++) {
      const fd = finiteDifference((v) => evalAt(a0.data, v), b0.data, i);
      expect(g[1].data[i]).toBeCloseTo(fd, 3);
    }
  });

  it("match finite differences for a model's weights under a custom loss", () => {
    const m = sequential([dense({ units: 3, activation: "tanh", inputShape: [2] }), dense({ units: 1 })], { seed: 4 });
    const x = randomTensor([5, 2], 5);
    const target = randomTensor([5, 1], 6);
    // A custom loss: mean squared error plus an L2 penalty on the output.
    const loss = () => {
      const y = m.call(x);
      return y.loss(target, "meanSquaredError").add(y.mul(y).mean().scale(0.1));
    };
    const { grads: g } = valueAndGrads(loss, m);
    const weights = m.getWeights();
    expect(g.map((t) => t.shape)).toEqual(weights.map((w) => w.shape));
    const k = weights[0];
    for (let i = 0; i < k.size; i++) {
      const fd = finiteDifference(
        (v) => {
          m.setWeights([tensor(v, [...k.shape]), ...weights.slice(1)]);
          return loss().toTensor().data[0];
        },
        k.data,
        i,
      );
      expect(g[0].data[i]).toBeCloseTo(fd, 3);
    }
    m.setWeights(weights);
  });

  it("weights outside the targets are constants while f runs; the targets' gradients do not change", () => {
    const g = sequential([dense({ units: 4, activation: "tanh", inputShape: [3] })], { seed: 1 });
    const d = sequential([dense({ units: 2, activation: "tanh", inputShape: [4] }), dense({ units: 1 })], { seed: 2 });
    const z = randomTensor([5, 3], 7);
    const target = randomTensor([5, 1], 8);
    const probe = randomTensor([5, 4], 9);
    // D on a constant input records a graph only when D's weights are gradient leaves.
    const dTracks = () => d.call(constant(probe)).native.tracks;
    let dTracksInside: boolean | undefined;
    const loss = () => {
      dTracksInside = dTracks();
      return d.call(g.call(z)).loss(target, "meanSquaredError");
    };
    const generatorOnly = valueAndGrads(loss, g);
    expect(dTracksInside).toBe(false);
    const both = valueAndGrads(loss, [g, d]);
    expect(dTracksInside).toBe(true);
    expect(generatorOnly.value).toBe(both.value);
    expect(generatorOnly.grads.map((t) => Array.from(t.data))).toEqual(both.grads[0].map((t) => Array.from(t.data)));
    expect(both.grads[1].some((t) => t.data.some((v) => v !== 0))).toBe(true);
    // The scope ends with valueAndGrads, also when f throws.
    expect(dTracks()).toBe(true);
    expect(() =>
      valueAndGrads(() => {
        throw new Error("inside f");
      }, g),
    ).toThrow("inside f");
    expect(dTracks()).toBe(true);
  });

  it("a custom training loop with applyGradients learns", async () => {
    const { x, y } = blobs(128);
    const m = sequential([dense({ units: 8, activation: "relu", inputShape: [2] }), dense({ units: 2 })], { seed: 9 });
    const opt = optimizers.adam({ learningRate: 0.05 });
    const lossOf = () => m.call(x).loss(y, { name: "sparseCategoricalCrossentropy", fromLogits: true });
    const first = lossOf().toTensor().data[0];
    for (let step = 0; step < 40; step++) {
      opt.applyGradients(grads(lossOf, m), m);
    }
    const last = lossOf().toTensor().data[0];
    expect(last).toBeLessThan(first * 0.3);
    expect(() => opt.applyGradients([], m)).toThrow(/has 4 weights, got 0 gradients/);
  });

  it("layer and nested-model targets, and frozen weights stay put", () => {
    const inner = dense({ units: 2 });
    const inp = input({ shape: [3] });
    const m = model({ inputs: inp, outputs: inner.apply(inp) });
    const x = randomTensor([4, 3], 8);
    const { grads: g } = valueAndGrads(() => m.call(x).mean(), inner);
    expect(g.map((t) => t.shape)).toEqual([[3, 2], [2]]);
    // d mean / d bias = 1 / (number of outputs per bias entry * 2) ... = 4 rows / 8 values = 0.5
    expect(Array.from(g[1].data)).toEqual([0.5, 0.5]);
    inner.trainable = false;
    const before = inner.getWeights()[0].data.slice();
    optimizers.sgd({ learningRate: 1 }).applyGradients(
      grads(() => m.call(x).mean(), m),
      m,
    );
    expect(Array.from(inner.getWeights()[0].data)).toEqual(Array.from(before));
  });
});
