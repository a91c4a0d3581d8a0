/** Eager layers through the public API: build, setWeights, apply; checked against the PyTorch fixtures. */
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import {
  activation,
  conv2d,
  dense,
  dropout,
  flatten,
  globalAveragePooling2d,
  maxPooling2d,
  reshape,
  tensor,
} from "../index.ts";

interface Blob {
  shape: number[];
  data: number[];
}
interface Case {
  name: string;
  op: string;
  attrs: Record<string, unknown>;
  inputs: Record<string, Blob>;
  params: Record<string, Blob>;
  outputs: Record<string, Blob>;
}
const fixtures = JSON.parse(readFileSync(new URL("./fixtures/fixtures.json", import.meta.url), "utf8")) as {
  cases: Case[];
};
const byName = (name: string) => fixtures.cases.find((c) => c.name === name) as Case;
const t = (b: Blob) => tensor(Float32Array.from(b.data), b.shape);

function expectClose(got: Float32Array, want: number[]) {
  expect(got.length).toBe(want.length);
  got.forEach((g, i) => {
    expect(Math.abs(g - want[i])).toBeLessThanOrEqual(1e-5 + 1e-4 * Math.abs(want[i]));
  });
}

describe("layers used eagerly", () => {
  it("dense matches PyTorch", () => {
    for (const c of fixtures.cases.filter((k) => k.op === "dense")) {
      const layer = dense({ units: c.params.kernel.shape[1] });
      expect(layer.build(c.inputs.x.shape.slice(1))).toEqual([c.params.kernel.shape[1]]);
      layer.setWeights([t(c.params.kernel), t(c.params.bias)]);
      const y = layer.apply(t(c.inputs.x));
      expect(y.shape).toEqual(c.outputs.y.shape);
      expectClose(y.data, c.outputs.y.data);
    }
  });

  it("conv2d with same padding, strides and dilation matches PyTorch", () => {
    for (const name of ["conv2d_1x8x8x3_k3x3x2_s22_same_d11", "conv2d_1x7x7x2_k3x3x3_s11_same_d22"]) {
      const c = byName(name);
      const a = c.attrs as {
        filters: number;
        kernel_size: [number, number];
        strides: [number, number];
        dilation_rate: [number, number];
      };
      const layer = conv2d({
        filters: a.filters,
        kernelSize: a.kernel_size,
        strides: a.strides,
        dilationRate: a.dilation_rate,
        padding: "same",
      });
      layer.build(c.inputs.x.shape.slice(1));
      layer.setWeights([t(c.params.kernel), t(c.params.bias)]);
      expectClose(layer.apply(t(c.inputs.x)).data, c.outputs.y.data);
    }
  });

  it("activations match PyTorch", () => {
    for (const name of ["gelu", "selu", "swish", "softmax"]) {
      const c = byName(`activation_${name}`);
      const layer = activation({ activation: name as "gelu" });
      layer.build(c.inputs.x.shape.slice(1));
      expectClose(layer.apply(t(c.inputs.x)).data, c.outputs.y.data);
    }
  });

  it("shapes, weight counts and config round trips", () => {
    const pool = maxPooling2d({ poolSize: 2 });
    expect(pool.build([7, 7, 3])).toEqual([3, 3, 3]);
    expect(pool.getWeights()).toEqual([]);
    expect(flatten().build([3, 3, 3])).toEqual([27]);
    expect(reshape({ targetShape: [9, 3] }).build([3, 3, 3])).toEqual([9, 3]);
    expect(() => reshape({ targetShape: [5] }).build([3, 3])).toThrow(/9 values per sample|5 values/);
    expect(globalAveragePooling2d().build([4, 4, 8])).toEqual([8]);
    const conv = conv2d({ filters: 4, kernelSize: [3, 2], padding: "same" });
    expect(conv.build([5, 5, 2])).toEqual([5, 5, 4]);
    expect(conv.getWeights().map((w) => w.shape)).toEqual([[3, 2, 2, 4], [4]]);
    const d = dense({ units: 3, useBias: false, kernelInitializer: "zeros" });
    d.build([2]);
    expect(d.getWeights().map((w) => Array.from(w.data))).toEqual([[0, 0, 0, 0, 0, 0]]);
    expect(d.toJSON()).toEqual({
      className: "Dense",
      config: { units: 3, useBias: false, kernelInitializer: "zeros" },
    });
  });

  it("dropout is active only in training, and scales kept values", () => {
    const layer = dropout({ rate: 0.5 });
    layer.build([1000]);
    const x = tensor(new Float32Array(1000).fill(1), [1, 1000]);
    expect(Array.from(layer.apply(x).data)).toEqual(Array.from(x.data));
    const y = layer.apply(x, { training: true });
    const kept = y.data.filter((v) => v !== 0);
    expect(kept.every((v) => v === 2)).toBe(true);
    expect(kept.length).toBeGreaterThan(400);
    expect(kept.length).toBeLessThan(600);
  });

  it("apply before build is an error", () => {
    expect(() => dense({ units: 2 }).apply(tensor([[1, 2]]))).toThrow(/not built; call build\(inputShape\) first/);
  });
});
