/**
 * `compile({ device: 'gpu' })` on whatever adapter wgpu finds: on a machine without a GPU that
 * is Mesa's software Vulkan driver (lavapipe), so CI checks the GPU code paths for correctness.
 * It skips, with one printed line, under CORTEX_SKIP_GPU_TESTS=1 or when wgpu finds no adapter;
 * CORTEX_REQUIRE_GPU=1 (set by CI) makes a missing adapter fail instead: the Rust suites' rule.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import {
  adam,
  conv1d,
  conv2d,
  conv2dTranspose,
  dense,
  devices,
  dropout,
  embedding,
  flatten,
  globalAveragePooling1d,
  loadMnist,
  loadModel,
  lstm,
  maxPooling2d,
  reshape,
  sequential,
  tensor,
} from "../index.ts";
import { native } from "../src/native.ts";

// The rule and the printed reason live in Rust (cortex_wgpu::gpu_test_skip_reason).
const skip = native.gpuTestSkipReason() != null;

describe.skipIf(skip)("GPU device", () => {
  it("lists at least one adapter", () => {
    const list = devices();
    expect(list.length).toBeGreaterThan(0);
    expect(typeof list[0].name).toBe("string");
    expect(typeof list[0].shaderF16).toBe("boolean");
  });

  it("smoke-trains the MNIST convnet on the GPU; the saved model predicts the same on the CPU", async () => {
    const mnist = await loadMnist({ trainLimit: 1536, testLimit: 500 });
    const model = sequential(
      [
        conv2d({ filters: 8, kernelSize: 3, activation: "relu", inputShape: [28, 28, 1] }),
        maxPooling2d({ poolSize: 2 }),
        flatten(),
        dropout({ rate: 0.25 }),
        dense({ units: 10, activation: "softmax" }),
      ],
      { seed: 5 },
    );
    model.compile({
      optimizer: adam({ learningRate: 3e-3 }),
      loss: "sparseCategoricalCrossentropy",
      metrics: ["accuracy"],
      device: "gpu!",
    });
    expect(model.device).not.toBe("cpu");
    const history = await model.fit(tensor(mnist.trainImages, [1536, 28, 28, 1]), tensor(mnist.trainLabels, [1536]), {
      epochs: 2,
      batchSize: 128,
      verbose: 0,
    });
    expect(history.history.loss[1]).toBeLessThan(history.history.loss[0]);
    const xTest = tensor(mnist.testImages, [500, 28, 28, 1]);
    const { accuracy } = await model.evaluate(xTest, tensor(mnist.testLabels, [500]));
    // A working backward pass gets well past 0.6 here (lavapipe is slow, so the run is short);
    // a broken one stays near 0.1.
    expect(accuracy).toBeGreaterThan(0.6);

    const dir = mkdtempSync(join(tmpdir(), "cortex-gpu-"));
    try {
      await model.save(dir);
      const onCpu = await loadModel(dir);
      const [a, b] = [await model.predict(xTest), await onCpu.predict(xTest)];
      let worst = 0;
      for (let i = 0; i < a.data.length; i++) worst = Math.max(worst, Math.abs(a.data[i] - b.data[i]));
      expect(worst).toBeLessThan(1e-4);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("trains Conv1D and Conv2DTranspose models on the GPU as on the CPU", async () => {
    // Causal dilated and strided Conv1D, then a strided `same` Conv2DTranspose up to [2, 4, 2].
    const make = () =>
      sequential(
        [
          conv1d({ filters: 5, kernelSize: 3, padding: "causal", dilationRate: 2, inputShape: [9, 2] }),
          conv1d({ filters: 4, kernelSize: 2, strides: 2, padding: "same", activation: "relu" }),
          flatten(),
          dense({ units: 6 }),
          reshape({ targetShape: [1, 2, 3] }),
          conv2dTranspose({ filters: 2, kernelSize: 3, strides: 2, padding: "same", activation: "tanh" }),
          flatten(),
        ],
        { seed: 7 },
      );
    const [cpu, gpu] = [make(), make()];
    cpu.compile({ optimizer: "adam", loss: "meanSquaredError" });
    gpu.compile({ optimizer: "adam", loss: "meanSquaredError", device: "gpu!" });
    expect(gpu.device).not.toBe("cpu");
    const x = tensor(
      Float32Array.from({ length: 8 * 18 }, (_, i) => Math.sin(i * 0.37)),
      [8, 9, 2],
    );
    const y = tensor(
      Float32Array.from({ length: 8 * 16 }, (_, i) => Math.cos(i * 0.11)),
      [8, 16],
    );
    const opts = { epochs: 3, batchSize: 8, shuffle: false, verbose: 0 as const };
    const [a, b] = [(await cpu.fit(x, y, opts)).history.loss, (await gpu.fit(x, y, opts)).history.loss];
    expect(b.length).toBe(3);
    for (let i = 0; i < a.length; i++) expect(Math.abs(a[i] - b[i])).toBeLessThan(1e-4 * a[i]);
    expect(a[2]).toBeLessThan(a[0]);
  });

  it("falls back to the CPU with one warning, or throws with 'gpu!'", async () => {
    const warnings: Error[] = [];
    const onWarning = (w: Error) => warnings.push(w);
    process.on("warning", onWarning);
    try {
      // The planner has only tanh / sigmoid cells; the layers' own GPU ops have gelu cells
      // but not mixed precision: neither path takes this model.
      const model = sequential([lstm({ units: 2, activation: "gelu", inputShape: [5, 1] }), dense({ units: 2 })], {
        seed: 1,
      });
      model.compile({ optimizer: "adam", loss: "meanSquaredError", device: "gpu", precision: "mixed_float16" });
      expect(model.device).toBe("cpu");
      const x = tensor(
        Float32Array.from({ length: 20 }, (_, i) => ((i * 7) % 9) / 9),
        [4, 5, 1],
      );
      await model.fit(x, tensor(new Float32Array(8), [4, 2]), { epochs: 1, verbose: 0 });
      await new Promise((resolve) => setImmediate(resolve));
      const ours = warnings.filter((w) => (w as { code?: string }).code === "CORTEX_GPU_FALLBACK");
      expect(ours.length).toBe(1);
      expect(ours[0].message).toMatch(/activations other than tanh \/ sigmoid/);
      expect(() =>
        model.compile({ optimizer: "adam", loss: "meanSquaredError", device: "gpu!", precision: "mixed_float16" }),
      ).toThrow(/activations other than tanh \/ sigmoid.*'mixed_float16' runs on the planned GPU models only/);
      // An embedding's mask reaching GlobalAveragePooling1D: the planner refuses it, the
      // layers' own GPU ops run it (a masked mean from device ops), so 'gpu!' trains it there.
      const masked = sequential(
        [
          embedding({ inputDim: 9, outputDim: 4, maskZero: true, inputShape: [5] }),
          globalAveragePooling1d(),
          dense({ units: 2 }),
        ],
        { seed: 1 },
      );
      masked.compile({ optimizer: "adam", loss: "meanSquaredError", device: "gpu!" });
      const ids = tensor(
        Float32Array.from({ length: 20 }, (_, i) => (i * 7) % 9),
        [4, 5],
      );
      await masked.fit(ids, tensor(new Float32Array(8), [4, 2]), { epochs: 1, verbose: 0 });
      expect(masked.device).not.toBe("cpu");
    } finally {
      process.off("warning", onWarning);
    }
  });

  it("trains with the mixed_float16 precision policy on the GPU only", async () => {
    const make = () =>
      sequential([dense({ units: 16, activation: "relu", inputShape: [8] }), dense({ units: 4 })], { seed: 3 });
    const model = make();
    expect(() => model.compile({ loss: "meanSquaredError", precision: "mixed_float16" })).toThrow(/GPU only/);
    expect(() => model.compile({ loss: "meanSquaredError", device: "gpu", precision: "half" as "float32" })).toThrow(
      /'float32' or 'mixed_float16'/,
    );
    model.compile({ optimizer: "adam", loss: "meanSquaredError", device: "gpu!", precision: "mixed_float16" });
    expect(model.device).not.toBe("cpu");
    const x = tensor(
      Float32Array.from({ length: 64 * 8 }, (_, i) => Math.sin(i)),
      [64, 8],
    );
    const y = tensor(
      Float32Array.from({ length: 64 * 4 }, (_, i) => Math.cos(i)),
      [64, 4],
    );
    const history = await model.fit(x, y, { epochs: 20, batchSize: 64, verbose: 0 });
    const losses = history.history.loss;
    expect(losses[losses.length - 1]).toBeLessThan(0.9 * losses[0]);
  });
});
