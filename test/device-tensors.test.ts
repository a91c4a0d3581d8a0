/**
 * Tape tensors on the GPU: `variable(t, { device: 'gpu' })` and `.to('gpu')` put values on the
 * device, ops run where their inputs are, and a custom training loop written once trains the
 * same on both devices. Skips with one printed line without an adapter (CI requires one: lavapipe).
 */
import { describe, expect, it } from "vitest";
import {
  activation,
  attacks,
  batchNormalization,
  constant,
  conv2d,
  type Device,
  dense,
  dropout,
  explain,
  flatten,
  input,
  maxPooling2d,
  model,
  optimizers,
  sequential,
  type TapeTensor,
  type Tensor,
  tensor,
  valueAndGrads,
  variable,
} from "../index.ts";
import { native } from "../src/native.ts";
import { randomTensor } from "./helpers.ts";

const skip = native.gpuTestSkipReason() != null;

/** A two-layer MLP trained by plain SGD in a custom loop; returns the losses and final weights. */
function train(device: Device, steps: number): { losses: number[]; weights: Float32Array[] } {
  const x = randomTensor([16, 5], 1);
  const target = randomTensor([16, 3], 2);
  let w1 = randomTensor([5, 8], 3);
  let w2 = randomTensor([8, 3], 4);
  const losses: number[] = [];
  for (let s = 0; s < steps; s++) {
    const [a, b] = [variable(w1, { device }), variable(w2, { device })];
    const { value, grads } = valueAndGrads(() => {
      const h = constant(x, { device }).matMul(a).activation("swish");
      const y = h.matMul(b).activation("logSoftmax");
      // Cross-entropy against soft targets, composed from ops: -mean(sum(target * log p)).
      const diff = y.mul(target).scale(-1);
      return diff
        .sum()
        .scale(1 / 16)
        .add(h.mul(h).mean().scale(0.01));
    }, [a, b]);
    losses.push(value);
    w1 = tensor(
      w1.data.map((v, i) => v - 0.5 * grads[0].data[i]),
      w1.shape,
    );
    w2 = tensor(
      w2.data.map((v, i) => v - 0.5 * grads[1].data[i]),
      w2.shape,
    );
  }
  return { losses, weights: [w1.data, w2.data] };
}

function maxRelDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]) / (1e-3 + Math.abs(b[i])));
  return worst;
}

/**
 * The custom form of a GAN step (the source material's fourth family): a generator and a
 * discriminator called in one tape, each updated by Adam from its own gradients. Both models'
 * weights live on `device`; the binary cross-entropy on logits is composed from ops.
 */
function ganSteps(device: Device, steps: number): { losses: number[]; weights: Float32Array[] } {
  const gen = sequential(
    [dense({ units: 16, activation: "leakyRelu", inputShape: [4] }), dense({ units: 8, activation: "tanh" })],
    { seed: 21 },
  ).to(device);
  const disc = sequential([dense({ units: 16, activation: "leakyRelu", inputShape: [8] }), dense({ units: 1 })], {
    seed: 22,
  }).to(device);
  expect(gen.weightsDevice).toBe(device);
  const [gOpt, dOpt] = [optimizers.adam({ learningRate: 0.01 }), optimizers.adam({ learningRate: 0.01 })];
  const real = randomTensor([12, 8], 23);
  const noise = randomTensor([12, 4], 24);
  const [ones, zeros] = [tensor(new Float32Array(12).fill(1), [12, 1]), tensor(new Float32Array(12), [12, 1])];
  // mean(softplus(z) - z * y): binary cross-entropy of logits z against labels y.
  const bce = (z: TapeTensor, y: Tensor) => z.activation("softplus").sub(z.mul(y)).mean();
  const losses: number[] = [];
  for (let s = 0; s < steps; s++) {
    const d = valueAndGrads(() => bce(disc.call(real), ones).add(bce(disc.call(gen.call(noise)), zeros)), disc);
    dOpt.applyGradients(d.grads, disc);
    const g = valueAndGrads(() => bce(disc.call(gen.call(noise)), ones), gen);
    gOpt.applyGradients(g.grads, gen);
    losses.push(d.value, g.value);
  }
  expect(gen.weightsDevice).toBe(device);
  const weights = [...gen.getWeights(), ...disc.getWeights()].map((w) => w.data);
  return { losses, weights };
}

/**
 * The Keras form of a GAN step: the discriminator compiled on its own, then frozen inside a
 * combined functional model D(G(z)) (nested models) that trains the generator with
 * trainOnBatch; batch normalization in the generator.
 */
async function kerasGanSteps(
  device: Device,
  steps: number,
  compileDevice: "cpu" | "gpu!" = "cpu",
): Promise<{ losses: number[]; weights: Float32Array[] }> {
  const gen = sequential(
    [
      dense({ units: 16, inputShape: [4] }),
      batchNormalization({ momentum: 0.8 }),
      activation({ activation: "leakyRelu" }),
      dense({ units: 8, activation: "tanh" }),
    ],
    { seed: 31 },
  ).to(device);
  const disc = sequential([dense({ units: 16, activation: "leakyRelu", inputShape: [8] }), dense({ units: 1 })], {
    seed: 32,
  }).to(device);
  const bce = { name: "binaryCrossentropy", fromLogits: true } as const;
  // SGD with momentum: Adam's first steps move each weight by about lr * sign(gradient), so a
  // gradient within float noise of 0 can step either way and the comparison would measure that.
  disc.compile({ optimizer: optimizers.sgd({ learningRate: 0.1, momentum: 0.9 }), loss: bce, device: compileDevice });
  disc.trainable = false;
  const z = input({ shape: [4] });
  const combined = model({ inputs: z, outputs: disc.apply(gen.apply(z)) });
  combined.compile({
    optimizer: optimizers.sgd({ learningRate: 0.1, momentum: 0.9 }),
    loss: bce,
    device: compileDevice,
  });
  if (compileDevice !== "cpu") expect(combined.device).not.toBe("cpu");
  const real = randomTensor([12, 8], 33);
  const noise = randomTensor([12, 4], 34);
  const labels = tensor(
    Float32Array.from({ length: 24 }, (_, i) => (i < 12 ? 0.9 : 0)),
    [24, 1],
  );
  const ones = tensor(new Float32Array(12).fill(1), [12, 1]);
  const losses: number[] = [];
  for (let s = 0; s < steps; s++) {
    const fake = (await gen.predict(noise)) as Tensor;
    const both = tensor(Float32Array.from([...real.data, ...fake.data]), [24, 8]);
    losses.push((await disc.trainOnBatch(both, labels)).loss, (await combined.trainOnBatch(noise, ones)).loss);
  }
  // A GPU compile the planner refuses (the nested combined model) moves the weights itself.
  const expected = compileDevice === "cpu" ? device : "gpu";
  expect([gen.weightsDevice, disc.weightsDevice]).toEqual([expected, expected]);
  return { losses, weights: [...gen.getWeights(), ...disc.getWeights()].map((w) => w.data) };
}

describe.skipIf(skip)("tape tensors on the GPU", () => {
  it("compile({ device: 'gpu!' }) trains the Keras-form GAN there: nested models through their layers", async () => {
    const cpu = await kerasGanSteps("cpu", 4);
    const gpu = await kerasGanSteps("cpu", 4, "gpu!");
    expect(maxRelDiff(gpu.losses, cpu.losses)).toBeLessThan(1e-4);
    for (const [i, w] of gpu.weights.entries()) expect(maxRelDiff(w, cpu.weights[i])).toBeLessThan(1e-4);
  });

  it("train the Keras form of a GAN (nested, frozen, batch-normalized) as on the CPU", async () => {
    const cpu = await kerasGanSteps("cpu", 4);
    const gpu = await kerasGanSteps("gpu", 4);
    expect(maxRelDiff(gpu.losses, cpu.losses)).toBeLessThan(1e-4);
    for (const [i, w] of gpu.weights.entries()) expect(maxRelDiff(w, cpu.weights[i])).toBeLessThan(1e-4);
  });

  it("fit, evaluate and predict a convnet with its weights on the GPU as on the CPU", async () => {
    const x = randomTensor([24, 8, 8, 2], 31);
    const y = tensor(
      Float32Array.from({ length: 24 }, (_, i) => i % 3),
      [24],
    );
    const run = async (device: Device) => {
      const m = sequential(
        [
          conv2d({ filters: 4, kernelSize: 3, padding: "same", activation: "relu", inputShape: [8, 8, 2] }),
          maxPooling2d({ poolSize: 2 }),
          flatten(),
          dropout({ rate: 0 }),
          dense({ units: 3, activation: "softmax" }),
        ],
        { seed: 5 },
      ).to(device);
      m.compile({ optimizer: "adam", loss: "sparseCategoricalCrossentropy", metrics: ["accuracy"] });
      const history = await m.fit(x, y, { epochs: 3, batchSize: 8, shuffle: false, verbose: 0 });
      expect(m.weightsDevice).toBe(device);
      const pred = (await m.predict(x)) as Tensor;
      return { loss: history.history.loss, eval: await m.evaluate(x, y), pred, weights: m.getWeights() };
    };
    const [cpu, gpu] = [await run("cpu"), await run("gpu")];
    expect(maxRelDiff(gpu.loss, cpu.loss)).toBeLessThan(1e-4);
    expect(gpu.loss.at(-1)).toBeLessThan(gpu.loss[0]);
    expect(maxRelDiff(gpu.pred.data, cpu.pred.data)).toBeLessThan(1e-4);
    expect(Math.abs(gpu.eval.loss - cpu.eval.loss)).toBeLessThan(1e-4 * cpu.eval.loss);
    for (const [i, w] of gpu.weights.entries()) expect(maxRelDiff(w.data, cpu.weights[i].data)).toBeLessThan(1e-4);
  });

  it("train both models of a custom-form GAN step as on the CPU", () => {
    const cpu = ganSteps("cpu", 5);
    const gpu = ganSteps("gpu", 5);
    expect(maxRelDiff(gpu.losses, cpu.losses)).toBeLessThan(1e-4);
    for (const [i, w] of gpu.weights.entries()) expect(maxRelDiff(w, cpu.weights[i])).toBeLessThan(1e-4);
  });

  it("run a custom training loop as on the CPU", () => {
    const cpu = train("cpu", 12);
    const gpu = train("gpu", 12);
    expect(gpu.losses.at(-1)).toBeLessThan(gpu.losses[0]);
    expect(maxRelDiff(gpu.losses, cpu.losses)).toBeLessThan(1e-4);
    for (let i = 0; i < 2; i++) expect(maxRelDiff(gpu.weights[i], cpu.weights[i])).toBeLessThan(1e-4);
  });

  it("put the weights of a model built later where model.to() asked", async () => {
    const m = sequential([dense({ units: 3, activation: "relu" }), dense({ units: 1 })]).to("gpu");
    expect(m.weightsDevice).toBe("cpu"); // no weights yet
    m.compile({ optimizer: "sgd", loss: "meanSquaredError" });
    await m.fit(randomTensor([8, 4], 40), randomTensor([8, 1], 41), { epochs: 1, verbose: 0 });
    expect(m.weightsDevice).toBe("gpu");
    expect(m.device).not.toBe("cpu");
  });

  it("explain and attack a model whose weights are on the GPU as on the CPU", async () => {
    const m = sequential(
      [
        conv2d({ filters: 2, kernelSize: 3, activation: "relu", inputShape: [6, 6, 1], name: "features" }),
        flatten(),
        dense({ units: 3, activation: "softmax" }),
      ],
      { seed: 1 },
    );
    m.compile({ optimizer: "adam", loss: "sparseCategoricalCrossentropy" });
    const x = randomTensor([2, 6, 6, 1], 42);
    const y = tensor([0, 2], [2]);
    const run = async () => ({
      saliency: (await explain.saliency(m, x, { target: [0, 2] })).data,
      cam: (await explain.gradCam(m, x, { target: [0, 2], layer: "features" })).data,
      fgsm: (await attacks.fgsm(m, x, y, { epsilon: 0.1, clip: false })).data,
    });
    const cpu = await run();
    m.to("gpu");
    const gpu = await run();
    expect(maxRelDiff(gpu.saliency, cpu.saliency)).toBeLessThan(1e-4);
    expect(maxRelDiff(gpu.cam, cpu.cam)).toBeLessThan(1e-4);
    expect(maxRelDiff(gpu.fgsm, cpu.fgsm)).toBeLessThan(1e-4);
  });

  it("keep values on the device they were put on, and read them back", () => {
    const t = randomTensor([3, 4], 5);
    const g = constant(t).to("gpu");
    expect(g.device).toBe("gpu");
    const y = g.add(t).activation("relu");
    expect(y.device).toBe("gpu");
    const back = y.to("cpu");
    expect(back.device).toBe("cpu");
    const want = t.data.map((v) => Math.max(2 * v, 0));
    expect(Array.from(back.toTensor().data)).toEqual(Array.from(want));
    expect(Array.from(y.toTensor().data)).toEqual(Array.from(want));
  });

  it("send gradients back across .to() to a CPU variable", () => {
    const w = variable(tensor([1, -2, 3], [3]));
    const { grads } = valueAndGrads(() => {
      const g = w.to("gpu");
      return g.mul(g).sum();
    }, [w]);
    expect(Array.from(grads[0].data)).toEqual([2, -4, 6]);
  });

  it("name what has no GPU kernel instead of running it on the CPU", async () => {
    const g = variable(randomTensor([4, 3], 6), { device: "gpu" });
    expect(() => g.add(variable(randomTensor([4, 3], 7)))).toThrow(/different devices \(gpu, cpu\)/);
    // int8 inference is a CPU kernel: a quantized model whose weights were moved says so.
    const q = sequential([dense({ units: 2, inputShape: [40] })]);
    q.quantize({ mode: "int8" });
    q.to("gpu");
    await expect(q.predict(randomTensor([2, 40], 8))).rejects.toThrow(/Int8 inference has no GPU kernel yet/);
    // A CPU model moves a GPU input to its weights (a differentiable copy).
    const m = sequential([dense({ units: 2, inputShape: [3] })]);
    const { grads } = valueAndGrads(() => m.call(g).sum(), [g]);
    expect(grads[0].shape).toEqual([4, 3]);
    expect(() => g.to("tpu" as Device)).toThrow(/device must be 'cpu' or 'gpu'/);
  });
});
