/** ONNX export: each layer family exported, run in onnxruntime-node and compared with predict. */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as ort from "onnxruntime-node";
import { afterAll, describe, expect, it } from "vitest";
import {
  activation,
  add,
  averagePooling2d,
  batchNormalization,
  bidirectional,
  concatenate,
  conv1d,
  conv2d,
  conv2dTranspose,
  dense,
  dropout,
  embedding,
  flatten,
  globalAveragePooling1d,
  globalAveragePooling2d,
  gru,
  input,
  layerNormalization,
  lstm,
  type Model,
  maxPooling2d,
  model,
  multiHeadAttention,
  multiply,
  positionalEmbedding,
  reshape,
  Sequential,
  sequential,
  simpleRNN,
  Tensor,
  tensor,
  upSampling2d,
  zeroPadding2d,
} from "../index.ts";

const dir = mkdtempSync(join(tmpdir(), "cortex-onnx-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Deterministic pseudo-random numbers in [-1, 1). */
function rand(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 31 - 1;
  };
}

/** Non-trivial weights everywhere (moving variances positive), so every parameter matters. */
function randomizeWeights(m: Model, seed: number) {
  const r = rand(seed);
  const names = m.weightNames();
  m.setWeights(
    m.getWeights().map((w, i) => {
      const positive = names[i].endsWith("moving_variance");
      const data = Float32Array.from(w.data, () => (positive ? Math.abs(0.6 * r()) + 0.5 : 0.6 * r()));
      return new Tensor(data, w.shape);
    }),
  );
}

function sampleInput(shape: number[], seed: number, ints?: number): Tensor {
  const r = rand(seed);
  const n = shape.reduce((a, b) => a * b, 1);
  const data = Float32Array.from({ length: n }, () => (ints ? Math.floor(((r() + 1) / 2) * ints) : r()));
  return tensor(data, shape);
}

/** Exports, runs batch sizes 1 and 3 in onnxruntime and compares with predict; returns the max abs diff. */
async function roundTrip(name: string, m: Model, sample: number[], ints?: number): Promise<number> {
  const path = join(dir, `${name}.onnx`);
  await m.export(path);
  const session = await ort.InferenceSession.create(path);
  expect(session.inputNames).toEqual(["input"]);
  expect(session.outputNames).toEqual(["output"]);
  let worst = 0;
  for (const batch of [1, 3]) {
    const x = sampleInput([batch, ...sample], 11 * batch + name.length, ints);
    const want = await m.predict(x);
    const out = await session.run({ input: new ort.Tensor("float32", x.data, [batch, ...sample]) });
    const got = out.output;
    expect([...got.dims]).toEqual(want.shape);
    const data = got.data as Float32Array;
    want.data.forEach((w, i) => {
      const d = Math.abs(data[i] - w);
      worst = Math.max(worst, d);
      expect(d).toBeLessThanOrEqual(1e-5 + 1e-5 * Math.abs(w));
    });
  }
  return worst;
}

const diffs: Record<string, number> = {};
afterAll(() => console.log("ONNX export max abs diff per model:", diffs));

describe("ONNX export matches predict in onnxruntime", () => {
  it("convnet: conv2d, batchNormalization, pooling, flatten, dense softmax", async () => {
    const m = sequential([
      conv2d({ filters: 4, kernelSize: 3, padding: "same", activation: "relu", inputShape: [8, 8, 3] }),
      batchNormalization(),
      maxPooling2d({ poolSize: 2 }),
      conv2d({ filters: 6, kernelSize: [3, 2], strides: 2, padding: "same" }),
      averagePooling2d({ poolSize: 2, strides: 1, padding: "same" }),
      flatten(),
      dropout({ rate: 0.5 }),
      dense({ units: 5, activation: "softmax" }),
    ]);
    randomizeWeights(m, 1);
    diffs.convnet = await roundTrip("convnet", m, [8, 8, 3]);
  });

  it("conv1d (causal, same, dilated) + globalAveragePooling1d", async () => {
    const m = sequential([
      conv1d({ filters: 4, kernelSize: 3, padding: "causal", activation: "gelu", inputShape: [10, 3] }),
      conv1d({ filters: 5, kernelSize: 2, strides: 2, padding: "same", activation: "elu" }),
      conv1d({ filters: 3, kernelSize: 2, dilationRate: 2, activation: "swish" }),
      globalAveragePooling1d(),
      dense({ units: 2, activation: "selu" }),
    ]);
    randomizeWeights(m, 2);
    diffs.conv1d = await roundTrip("conv1d", m, [10, 3]);
  });

  it("LSTM stack with goBackwards", async () => {
    const m = sequential([
      lstm({ units: 4, returnSequences: true, inputShape: [6, 3] }),
      lstm({ units: 5, goBackwards: true, returnSequences: true }),
      lstm({ units: 3 }),
      dense({ units: 1 }),
    ]);
    randomizeWeights(m, 3);
    diffs.lstm = await roundTrip("lstm", m, [6, 3]);
  });

  it("GRU (resetAfter) with goBackwards", async () => {
    const m = sequential([
      gru({ units: 4, returnSequences: true, inputShape: [5, 3] }),
      gru({ units: 3, goBackwards: true }),
    ]);
    randomizeWeights(m, 4);
    diffs.gru = await roundTrip("gru", m, [5, 3]);
  });

  it("SimpleRNN (relu, backwards sequences)", async () => {
    const m = sequential([
      simpleRNN({ units: 4, returnSequences: true, activation: "relu", inputShape: [5, 3] }),
      simpleRNN({ units: 3, goBackwards: true, returnSequences: true }),
      flatten(),
    ]);
    randomizeWeights(m, 5);
    diffs.simpleRNN = await roundTrip("simple_rnn", m, [5, 3]);
  });

  it("bidirectional LSTM / GRU / SimpleRNN with each merge mode", async () => {
    const m = sequential([
      bidirectional({ layer: lstm({ units: 4, returnSequences: true }), inputShape: [5, 3] }),
      bidirectional({ layer: gru({ units: 3, returnSequences: true }), mergeMode: "ave" }),
      bidirectional({ layer: simpleRNN({ units: 3, returnSequences: true }), mergeMode: "sum" }),
      bidirectional({ layer: simpleRNN({ units: 3, goBackwards: true }), mergeMode: "mul" }),
    ]);
    randomizeWeights(m, 6);
    diffs.bidirectional = await roundTrip("bidirectional", m, [5, 3]);
  });

  it("attention block: multiHeadAttention (plain and causal), add, layerNormalization", async () => {
    const x = input({ shape: [6, 8] });
    const a = multiHeadAttention({ numHeads: 2, keyDim: 4 }).apply([x, x]);
    const n = layerNormalization({ epsilon: 1e-5 }).apply(add().apply([x, a]));
    const c = multiHeadAttention({ numHeads: 3, keyDim: 2, valueDim: 5, useCausalMask: true, outputShape: 7 }).apply([
      n,
      n,
    ]);
    const m = model({ inputs: x, outputs: dense({ units: 2 }).apply(c) });
    randomizeWeights(m, 7);
    diffs.attention = await roundTrip("attention", m, [6, 8]);
  });

  it("embedding + positionalEmbedding (and a maskZero mask through attention and pooling)", async () => {
    const plain = sequential([
      embedding({ inputDim: 20, outputDim: 8, inputShape: [7] }),
      positionalEmbedding({ sequenceLength: 10 }),
      layerNormalization(),
      globalAveragePooling1d(),
    ]);
    randomizeWeights(plain, 8);
    diffs.embedding = await roundTrip("embedding", plain, [7], 20);

    const ids = input({ shape: [7] });
    const e = embedding({ inputDim: 4, outputDim: 8, maskZero: true }).apply(ids);
    const att = multiHeadAttention({ numHeads: 2, keyDim: 4 }).apply([e, e]);
    const masked = model({ inputs: ids, outputs: globalAveragePooling1d().apply(att) });
    randomizeWeights(masked, 9);
    diffs.maskedEmbedding = await roundTrip("masked_embedding", masked, [7], 4);
  });

  it("zeroPadding2d, conv2dTranspose (same/valid/dilated), upSampling2d", async () => {
    const m = sequential([
      zeroPadding2d({
        padding: [
          [1, 0],
          [2, 1],
        ],
        inputShape: [4, 5, 2],
      }),
      conv2dTranspose({ filters: 3, kernelSize: 3, strides: 2, padding: "same", activation: "tanh" }),
      upSampling2d({ size: [2, 1] }),
      conv2dTranspose({ filters: 2, kernelSize: [2, 3], strides: [1, 2] }),
      conv2dTranspose({ filters: 2, kernelSize: 3, dilationRate: 2, padding: "same" }),
      conv2d({ filters: 2, kernelSize: 3, dilationRate: 2, padding: "same", activation: "leakyRelu" }),
      globalAveragePooling2d(),
    ]);
    randomizeWeights(m, 10);
    diffs.deconv = await roundTrip("deconv", m, [4, 5, 2]);
  });

  it("functional branches with multiply and concatenate, reshape", async () => {
    const x = input({ shape: [4] });
    const p = dense({ units: 6 }).apply(x);
    const q = dense({ units: 6, activation: "softplus" }).apply(x);
    const joined = concatenate().apply([multiply().apply([p, q]), x]);
    const r = reshape({ targetShape: [5, 2] }).apply(joined);
    const m = model({ inputs: x, outputs: flatten().apply(r) });
    randomizeWeights(m, 11);
    diffs.functional = await roundTrip("functional", m, [4]);
  });

  it("a nested model is inlined", async () => {
    const inner = sequential([
      dense({ units: 5, activation: "geluTanh", inputShape: [3] }),
      dense({ units: 4, activation: "logSoftmax" }),
    ]);
    const outer = sequential([inner, dense({ units: 2 })]);
    outer.build([3]);
    randomizeWeights(outer, 12);
    diffs.nested = await roundTrip("nested", outer, [3]);
  });

  it("every activation name", async () => {
    const names = [
      "linear",
      "relu",
      "sigmoid",
      "tanh",
      "softmax",
      "logSoftmax",
      "gelu",
      "geluTanh",
      "elu",
      "selu",
      "leakyRelu",
      "swish",
      "softplus",
    ] as const;
    let worst = 0;
    for (const a of names) {
      const m = sequential([dense({ units: 6, inputShape: [4] }), activation({ activation: a })]);
      randomizeWeights(m, 13);
      worst = Math.max(worst, await roundTrip(`act_${a}`, m, [4]));
    }
    diffs.activations = worst;
  });
});

describe("ONNX export: graph and errors", () => {
  it("multi-input / multi-output models get input_k / output_k names and run", async () => {
    const a = input({ shape: [4] });
    const b = input({ shape: [6] });
    const h = dense({ units: 6 }).apply(a);
    const m = model({
      inputs: [a, b],
      outputs: [dense({ units: 3 }).apply(concatenate().apply([h, b])), multiply().apply([h, b])],
    });
    const path = join(dir, "multi.onnx");
    await m.export(path, { format: "onnx" });
    const session = await ort.InferenceSession.create(path);
    expect(session.inputNames).toEqual(["input_0", "input_1"]);
    expect(session.outputNames).toEqual(["output_0", "output_1"]);
    const out = await session.run({
      input_0: new ort.Tensor("float32", new Float32Array(8).fill(0.5), [2, 4]),
      input_1: new ort.Tensor("float32", new Float32Array(12).fill(1), [2, 6]),
    });
    expect([...out.output_0.dims]).toEqual([2, 3]);
    expect([...out.output_1.dims]).toEqual([2, 6]);
  });

  it("writes a ModelProto with opset 17, input 'input' and a symbolic batch axis", async () => {
    const m = sequential([dense({ units: 2, inputShape: [3] })]);
    const path = join(dir, "small.onnx");
    await m.export(path);
    const bytes = readFileSync(path);
    // ModelProto field 1 (ir_version) = 8 first; opset_import (field 8) { version (2) = 17 } last.
    expect([...bytes.subarray(0, 2)]).toEqual([0x08, 0x08]);
    expect([...bytes.subarray(bytes.length - 4)]).toEqual([0x42, 0x02, 0x10, 17]);
    const text = bytes.toString("latin1");
    expect(text).toContain("batch");
    expect(text).toContain("input");

    // The reference checker, when Python's onnx package is installed.
    let python = true;
    try {
      execFileSync("python3", ["-c", "import onnx"], { stdio: "ignore" });
    } catch {
      python = false;
    }
    if (python) {
      const script =
        "import onnx,sys; m=onnx.load(sys.argv[1]); onnx.checker.check_model(m, full_check=True); " +
        "i=m.graph.input[0]; print(m.opset_import[0].version, i.name, i.type.tensor_type.shape.dim[0].dim_param)";
      expect(execFileSync("python3", ["-c", script, path], { encoding: "utf8" }).trim()).toBe("17 input batch");
    }
  });

  it("accepts a newer opset", async () => {
    const m = sequential([dense({ units: 2, inputShape: [3] })]);
    const path = join(dir, "opset18.onnx");
    await m.export(path, { format: "onnx", opset: 18 });
    const bytes = readFileSync(path);
    expect([...bytes.subarray(bytes.length - 4)]).toEqual([0x42, 0x02, 0x10, 18]);
  });

  it("rejects bad arguments and unsupported models with clear errors", async () => {
    const m = sequential([dense({ units: 2, inputShape: [3] })]);
    const path = join(dir, "bad.onnx");
    await expect(m.export(path, { format: "tflite" } as never)).rejects.toThrow(/unknown format 'tflite'/);
    await expect(m.export(path, { format: "onnx", opset: 13 })).rejects.toThrow(/opset 13 is too old/);
    await expect(m.export(path, { format: "onnx", opset: 99 })).rejects.toThrow(/opset 99/);

    // A Keras mask feeding a recurrent layer has no faithful ONNX form: the error names the layer.
    const masked = sequential([
      embedding({ inputDim: 5, outputDim: 4, maskZero: true, inputShape: [6] }),
      lstm({ units: 3, name: "masked_lstm" }),
    ]);
    await expect(masked.export(path)).rejects.toThrow(/'masked_lstm' \(LSTM\).*mask/);

    const unbuilt = sequential([dense({ units: 2 })]);
    await expect(unbuilt.export(path)).rejects.toThrow(/not built/);
    expect(unbuilt).toBeInstanceOf(Sequential);
  });
});
