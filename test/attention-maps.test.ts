/** explain.attentionMaps: a multiHeadAttention layer's probabilities, against softmax(QK^T / sqrt(d)) from its weights. */
import { describe, expect, it } from "vitest";
import { dense, explain, flatten, input, type Model, model, multiHeadAttention, type Tensor } from "../index.ts";
import { randomTensor } from "./helpers.ts";

/** Replaces every weight of `m` by random values (biases included, so they are tested too). */
function randomise(m: Model, seed: number): void {
  m.setWeights(m.getWeights().map((w, i) => randomTensor([...w.shape], seed + i)));
}

/**
 * softmax(q k^T / sqrt(keyDim)) per head in f64, from the Keras weights `[d, heads, keyDim]`
 * and biases `[heads, keyDim]` of the query and key projections; `[b, heads, tq, tk]`.
 */
function reference(
  query: Tensor,
  key: Tensor,
  [wq, bq, wk, bk]: Tensor[],
  heads: number,
  keyDim: number,
  causal = false,
): Float64Array {
  const [b, tq] = query.shape;
  const tk = key.shape[1];
  const project = (x: Tensor, t: number, w: Tensor, bias: Tensor, i: number, s: number, h: number) => {
    const d = x.shape[2];
    const out = new Float64Array(keyDim);
    for (let e = 0; e < keyDim; e++) {
      let v = bias.data[h * keyDim + e];
      for (let c = 0; c < d; c++) v += x.data[(i * t + s) * d + c] * w.data[(c * heads + h) * keyDim + e];
      out[e] = v;
    }
    return out;
  };
  const out = new Float64Array(b * heads * tq * tk);
  for (let i = 0; i < b; i++) {
    for (let h = 0; h < heads; h++) {
      for (let s = 0; s < tq; s++) {
        const q = project(query, tq, wq, bq, i, s, h);
        const logits = Array.from({ length: tk }, (_, u) => {
          if (causal && u > s) return Number.NEGATIVE_INFINITY;
          const k = project(key, tk, wk, bk, i, u, h);
          return q.reduce((acc, v, e) => acc + v * k[e], 0) / Math.sqrt(keyDim);
        });
        const max = Math.max(...logits);
        const exps = logits.map((l) => Math.exp(l - max));
        const sum = exps.reduce((a, v) => a + v, 0);
        exps.forEach((v, u) => {
          out[((i * heads + h) * tq + s) * tk + u] = v / sum;
        });
      }
    }
  }
  return out;
}

/** Every probability is >= 0 and each `[.., q, :]` row sums to 1. */
function expectDistributions(maps: Tensor): void {
  const tk = maps.shape[maps.shape.length - 1];
  for (let r = 0; r < maps.data.length / tk; r++) {
    const row = Array.from(maps.data.subarray(r * tk, (r + 1) * tk));
    expect(Math.min(...row)).toBeGreaterThanOrEqual(0);
    expect(row.reduce((a, v) => a + v, 0)).toBeCloseTo(1, 5);
  }
}

describe("explain.attentionMaps", () => {
  it("self-attention: shape, distributions, softmax(QK^T / sqrt(d)) from the weights", async () => {
    const inp = input({ shape: [4, 5] });
    const att = multiHeadAttention({ numHeads: 2, keyDim: 3, valueDim: 2, name: "mha" }).apply([inp, inp]);
    const m = model({ inputs: inp, outputs: dense({ units: 3, name: "head" }).apply(flatten().apply(att)) });
    randomise(m, 10);
    const x = randomTensor([3, 4, 5], 3);
    const before = await m.predict(x);
    const maps = await explain.attentionMaps(m, x, { layer: "mha" });
    expect(maps.shape).toEqual([3, 2, 4, 4]);
    expectDistributions(maps);
    const want = reference(x, x, m.getWeights().slice(0, 4), 2, 3);
    let worst = 0;
    for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(maps.data[i] - want[i]));
    expect(worst).toBeLessThan(1e-5);
    // The maps are not uniform (the test would be vacuous otherwise), and predict is unchanged.
    expect(Math.max(...maps.data)).toBeGreaterThan(0.4);
    expect(Array.from((await m.predict(x)).data)).toEqual(Array.from(before.data));
  });

  it("cross-attention with a causal mask in a nested functional model", async () => {
    const q = input({ shape: [3, 4] });
    const v = input({ shape: [3, 2] });
    const mha = multiHeadAttention({ numHeads: 3, keyDim: 2, useCausalMask: true, name: "cross" });
    const inner = model({ inputs: [q, v], outputs: mha.apply([q, v]), name: "inner" });
    const q2 = input({ shape: [3, 4] });
    const v2 = input({ shape: [3, 2] });
    const outer = model({ inputs: [q2, v2], outputs: inner.apply([q2, v2]) });
    randomise(outer, 20);
    const [xq, xv] = [randomTensor([2, 3, 4], 5), randomTensor([2, 3, 2], 6)];
    const maps = await explain.attentionMaps(outer, [xq, xv], { layer: "cross" });
    expect(maps.shape).toEqual([2, 3, 3, 3]);
    expectDistributions(maps);
    const want = reference(xq, xv, outer.getWeights().slice(0, 4), 3, 2, true);
    for (let i = 0; i < want.length; i++) expect(maps.data[i]).toBeCloseTo(want[i], 5);
  });

  it("names the layers when the layer is missing or not an attention layer", async () => {
    const inp = input({ shape: [2, 2] });
    const att = multiHeadAttention({ numHeads: 1, keyDim: 2, name: "att" }).apply([inp, inp]);
    const m = model({ inputs: inp, outputs: dense({ units: 1, name: "out" }).apply(att) });
    const x = randomTensor([1, 2, 2], 1);
    await expect(explain.attentionMaps(m, x, { layer: "nope" })).rejects.toThrow(/no layer 'nope'.*att, out/);
    await expect(explain.attentionMaps(m, x, { layer: "out" })).rejects.toThrow(
      /'out' is a Dense, not a MultiHeadAttention/,
    );
  });
});
