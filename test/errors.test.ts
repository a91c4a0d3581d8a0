/** Every bad input gets a JS Error naming the problem, and the process stays healthy. */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { callbacks, dense, Layer, loadModel, matMul, optimizers, sequential, type Tensor, tensor } from "../index.ts";
import { blobs } from "./helpers.ts";

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function compiled() {
  const model = sequential(
    [dense({ units: 4, activation: "relu", inputShape: [2] }), dense({ units: 3, activation: "softmax" })],
    { seed: 1 },
  );
  model.compile({ optimizer: "adam", loss: "sparseCategoricalCrossentropy", metrics: ["accuracy"] });
  return model;
}

describe("bad input", () => {
  it("tensor data length not matching the shape", () => {
    expect(() => tensor(new Float32Array(5), [2, 3])).toThrow(/5 values but shape \[2, 3\] needs 6/);
    expect(() => tensor([[1, 2], [3]])).toThrow(/ragged/);
    expect(() => tensor([1, "a" as unknown as number])).toThrow(/element 1/);
  });

  it("wrong rank or shape for the model", async () => {
    const model = compiled();
    await expect(model.predict(tensor(new Float32Array(6), [2, 3]))).rejects.toThrow(/expected \[2, 2\], got \[2, 3\]/);
    await expect(model.predict(tensor(new Float32Array(2), [2]))).rejects.toThrow(/\[batch, \.\.\.sample shape\]/);
    expect(() => matMul(tensor(new Float32Array(6), [2, 3]), tensor(new Float32Array(8), [4, 2]))).toThrow(/matMul/);
  });

  it("x and y sample counts that differ", async () => {
    const model = compiled();
    await expect(
      model.fit(tensor(new Float32Array(8), [4, 2]), tensor(new Float32Array(3), [3]), { verbose: 0 }),
    ).rejects.toThrow(/x has 4 samples but y has 3/);
  });

  it("labels out of range", async () => {
    const model = compiled();
    await expect(model.fit(tensor(new Float32Array(4), [2, 2]), tensor([0, 7]), { verbose: 0 })).rejects.toThrow(
      /label 7 at index 1 is out of range; expected an integer in \[0, 3\)/,
    );
    await expect(model.evaluate(tensor(new Float32Array(4), [2, 2]), tensor([0, 1.5]))).rejects.toThrow(/label 1.5/);
  });

  it("NaN or Infinity in inputs and targets", async () => {
    const model = compiled();
    await expect(model.predict(tensor([[0, Number.NaN]]))).rejects.toThrow(/non-finite value \(NaN\) at flat index 1/);
    await expect(model.fit(tensor([[0, Number.POSITIVE_INFINITY]]), tensor([0]), { verbose: 0 })).rejects.toThrow(
      /inf/,
    );
  });

  it("a diverging loss rejects fit, or stops quietly with terminateOnNaN", async () => {
    const { x, y } = blobs(64);
    const diverging = () => {
      const m = sequential([dense({ units: 1, inputShape: [2] })], { seed: 2 });
      m.compile({ optimizer: optimizers.sgd({ learningRate: 1e6 }), loss: "meanSquaredError" });
      return m;
    };
    const big = tensor(
      Float32Array.from({ length: 64 }, () => 1e30),
      [64, 1],
    );
    await expect(diverging().fit(x, big, { epochs: 5, verbose: 0 })).rejects.toThrow(/training diverged/);
    const history = await diverging().fit(x, big, { epochs: 5, verbose: 0, callbacks: [callbacks.terminateOnNaN()] });
    expect(history.epoch.length).toBeLessThan(5);
    void y;
  });

  it("unknown layer, option, loss, optimizer and activation names", () => {
    expect(() => new Layer("Dense2", { units: 3 })).toThrow(/unknown layer class 'Dense2'/);
    expect(() => dense({ units: 3, unitz: 4 } as never)).toThrow(/unknown option 'unitz'; expected one of: .*units/);
    // Sizes are checked before anything is allocated: this used to abort the process.
    expect(() => dense({ units: 4e12 })).toThrow(/option 'units' must be .*below 2\^31, got 4000000000000/);
    expect(() => dense({ units: 3, activation: "relux" as never })).toThrow(/unknown activation 'relux'/);
    expect(() => dense({ units: -1 })).toThrow(/'units' must be a non-negative integer|positive integer/);
    const model = sequential([dense({ units: 2, inputShape: [2] })]);
    expect(() => model.compile({ loss: "hinge" as never })).toThrow(/unknown loss 'hinge'/);
    expect(() => model.compile({ loss: "meanSquaredError", optimizer: "adagrad" as never })).toThrow(
      /unknown optimizer 'adagrad'/,
    );
    expect(() => model.compile({ loss: "meanSquaredError", metrics: ["f1"] })).toThrow(/unknown metric 'f1'/);
    expect(() => model.compile({ loss: "meanSquaredError", lr: 1 } as never)).toThrow(/unknown option 'lr'/);
  });

  it("fit options that make no sense", async () => {
    const model = compiled();
    const { x } = blobs(8);
    const y = tensor(new Float32Array(8), [8]);
    await expect(model.fit(x, y, { epochs: 0 })).rejects.toThrow(/epochs must be a positive integer/);
    await expect(model.fit(x, y, { batchSize: 2.5 })).rejects.toThrow(/batchSize must be a positive integer/);
    await expect(model.fit(x, y, { epochz: 1 } as never)).rejects.toThrow(/unknown option 'epochz'/);
    await expect(model.fit(x, y, { validationSplit: 1.5, verbose: 0 })).rejects.toThrow(/validationSplit/);
    await expect(model.fit(x.data as unknown as Tensor, y)).rejects.toThrow(/fit: x must be a Tensor/);
  });

  it("fit before compile", async () => {
    const model = sequential([dense({ units: 2, inputShape: [2] })]);
    const { x, y } = blobs(4);
    await expect(model.fit(x, y, { verbose: 0 })).rejects.toThrow(
      /must be compiled before training.*call compile\(\) first/,
    );
    await expect(model.evaluate(x, y)).rejects.toThrow(/compile\(\)/);
  });

  it("loadModel on a missing, truncated or corrupt directory", async () => {
    await expect(loadModel("/nonexistent/cortex-model")).rejects.toThrow(
      /cannot read model file '\/nonexistent\/cortex-model\/model.json'/,
    );
    const model = compiled();
    const dir = mkdtempSync(join(tmpdir(), "cortex-bad-"));
    dirs.push(dir);
    await model.save(dir);
    const weights = readFileSync(join(dir, "weights.safetensors"));
    writeFileSync(join(dir, "weights.safetensors"), weights.subarray(0, weights.length - 10));
    await expect(loadModel(dir)).rejects.toThrow(/corrupt weights file/);
    writeFileSync(join(dir, "weights.safetensors"), weights);
    const topology = readFileSync(join(dir, "model.json"), "utf8");
    writeFileSync(join(dir, "model.json"), topology.slice(0, topology.length / 2));
    await expect(loadModel(dir)).rejects.toThrow(/corrupt model file \(invalid JSON\)/);
    writeFileSync(join(dir, "model.json"), topology.replace('"units": 4', '"units": 5'));
    await expect(loadModel(dir)).rejects.toThrow(/does not match the model/);
    writeFileSync(join(dir, "model.json"), JSON.stringify({ format: "keras" }));
    await expect(loadModel(dir)).rejects.toThrow(/not a cortex-nn model file/);
  });

  it("setWeights with the wrong count or size", () => {
    const model = compiled();
    const w = model.getWeights();
    expect(() => model.setWeights(w.slice(1))).toThrow(/has 4 weight tensors, got 3/);
    expect(() => model.setWeights([tensor([1, 2]), ...w.slice(1)])).toThrow(/dense(_\d+)?\/kernel/);
  });

  it("the process is still healthy after all of that", async () => {
    const { x, y } = blobs(32);
    const model = compiled();
    await model.fit(x, y, { epochs: 1, verbose: 0 });
    expect((await model.predict(x)).shape).toEqual([32, 3]);
  });
});
