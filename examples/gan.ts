/**
 * The GAN from the source material: an MLP generator and discriminator trained against each
 * other on MNIST (scaled to [-1, 1]), two ways:
 *
 *   MODE=keras  (default) the Keras pattern: the discriminator is compiled on its own, then
 *               frozen (`trainable = false`) inside a combined model `D(G(z))` that trains the
 *               generator; every step is `trainOnBatch` calls.
 *   MODE=custom a custom training step: `valueAndGrads` + `optimizer.applyGradients` for both.
 *
 * After training it writes a grid of 64 samples to examples/output/gan-samples.png and scores
 * 1,000 samples with the Keras MNIST convnet (trained for one epoch, cached in the OS temp
 * directory): mean top-class confidence must reach 0.90 and every digit must be at least 5% of
 * the samples (no mode collapse), or the process exits non-zero.
 *
 *   npm run gan
 *   MODE=custom EPOCHS=5 npx tsx examples/gan.ts
 *   STEPS=200 EPOCHS=1 npx tsx examples/gan.ts      (quick look: 200 steps per epoch)
 */
import { existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  adam,
  conv2d,
  dense,
  dropout,
  flatten,
  input,
  loadMnist,
  loadModel,
  type Model,
  maxPooling2d,
  model,
  sequential,
  setSeed,
  type Tensor,
  tensor,
  valueAndGrads,
} from "../index.ts";
import { imageGrid, writePng } from "../src/image.ts";

const mode = process.env.MODE ?? "keras";
if (mode !== "keras" && mode !== "custom") throw new Error(`MODE must be 'keras' or 'custom', got '${mode}'`);
const epochs = Number(process.env.EPOCHS ?? 30);
const batch = 64;
const latent = 100;
const seed = Number(process.env.SEED ?? 1);
const outPath = join(dirname(fileURLToPath(import.meta.url)), "output", "gan-samples.png");
const scorerDir = process.env.SCORER_DIR ?? join(tmpdir(), "cortex-nn-gan-scorer");
const seconds = (since: number) => (performance.now() - since) / 1000;

setSeed(seed);

// ---- data ------------------------------------------------------------------------------------
let t0 = performance.now();
const mnist = await loadMnist();
const pixels = 28 * 28;
const realAll = new Float32Array(mnist.trainImages.length);
for (let i = 0; i < realAll.length; i++) realAll[i] = mnist.trainImages[i] * 2 - 1;
const stepsPerEpoch = Number(process.env.STEPS ?? Math.floor(mnist.trainCount / batch));
console.log(`MNIST loaded in ${seconds(t0).toFixed(1)} s: ${mnist.trainCount} images scaled to [-1, 1]`);

/** A seeded stream of standard normals (mulberry32 + Box-Muller). */
function normals(streamSeed: number): (n: number) => Float32Array {
  let s = streamSeed >>> 0;
  const uniform = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
  return (n) => {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i += 2) {
      const r = Math.sqrt(-2 * Math.log(1 - uniform()));
      const a = 2 * Math.PI * uniform();
      out[i] = r * Math.cos(a);
      if (i + 1 < n) out[i + 1] = r * Math.sin(a);
    }
    return out;
  };
}
const randn = normals(seed * 7919 + 13);
const noise = (n: number) => tensor(randn(n * latent), [n, latent]);

// ---- models ----------------------------------------------------------------------------------
const generator = sequential(
  [
    dense({ units: 256, activation: "leakyRelu", inputShape: [latent] }),
    dense({ units: 256, activation: "leakyRelu" }),
    dense({ units: 256, activation: "leakyRelu" }),
    dense({ units: pixels, activation: "tanh" }),
  ],
  { name: "generator" },
);
const discriminator = sequential(
  [
    dense({ units: 256, activation: "leakyRelu", inputShape: [pixels] }),
    dropout({ rate: 0.3 }),
    dense({ units: 256, activation: "leakyRelu" }),
    dropout({ rate: 0.3 }),
    dense({ units: 256, activation: "leakyRelu" }),
    dropout({ rate: 0.3 }),
    dense({ units: 1 }), // a logit
  ],
  { name: "discriminator" },
);
const bce = { name: "binaryCrossentropy", fromLogits: true } as const;
const optimizerArgs = { learningRate: 2e-4, beta1: 0.5 };

// Labels for one discriminator batch (real images first, then fakes) and for the generator.
// One-sided label smoothing (real = 0.9) keeps the discriminator from becoming so confident
// that the generator's gradients vanish (without it, runs can collapse after a few epochs).
const realLabel = Number(process.env.REAL_LABEL ?? 0.9);
const dLabels = tensor(
  Float32Array.from({ length: 2 * batch }, (_, i) => (i < batch ? realLabel : 0)),
  [2 * batch, 1],
);
const ones = tensor(new Float32Array(batch).fill(1), [batch, 1]);

function concatRows(a: Tensor, b: Tensor): Tensor {
  const out = new Float32Array(a.size + b.size);
  out.set(a.data);
  out.set(b.data, a.size);
  return tensor(out, [a.shape[0] + b.shape[0], ...a.shape.slice(1)]);
}

interface StepLosses {
  d: number;
  g: number;
}
let step: (real: Tensor) => Promise<StepLosses>;

if (mode === "keras") {
  discriminator.compile({ optimizer: adam(optimizerArgs), loss: bce });
  // Keras semantics: the flag is read at compile time, so the discriminator compiled above
  // still trains, while the combined model compiled below only trains the generator.
  discriminator.trainable = false;
  const z = input({ shape: [latent] });
  const combined = model({ inputs: z, outputs: discriminator.apply(generator.apply(z)), name: "combined" });
  combined.compile({ optimizer: adam(optimizerArgs), loss: bce });
  step = async (real) => {
    const fake = await generator.predict(noise(batch), { batchSize: batch });
    const d = await discriminator.trainOnBatch(concatRows(real, fake), dLabels);
    const g = await combined.trainOnBatch(noise(batch), ones);
    return { d: d.loss, g: g.loss };
  };
} else {
  const dOptimizer = adam(optimizerArgs);
  const gOptimizer = adam(optimizerArgs);
  step = async (real) => {
    const fake = generator.call(noise(batch)).toTensor();
    const x = concatRows(real, fake);
    const d = valueAndGrads(() => discriminator.call(x).loss(dLabels, bce), discriminator);
    dOptimizer.applyGradients(d.grads, discriminator);
    const z = noise(batch);
    // Gradients flow through the discriminator into the generator; only the generator steps.
    const g = valueAndGrads(() => discriminator.call(generator.call(z)).loss(ones, bce), generator);
    gOptimizer.applyGradients(g.grads, generator);
    return { d: d.value, g: g.value };
  };
}

// ---- training --------------------------------------------------------------------------------
console.log(
  `Training the GAN (MODE=${mode}): ${epochs} epoch(s) x ${stepsPerEpoch} steps, batch ${batch}, Adam 2e-4 (beta1 0.5)`,
);
const order = Int32Array.from({ length: mnist.trainCount }, (_, i) => i);
let shuffleState = seed >>> 0;
const nextIndex = (n: number) => {
  shuffleState = (Math.imul(shuffleState, 1664525) + 1013904223) >>> 0;
  return Math.floor((shuffleState / 2 ** 32) * n);
};
const trainStart = performance.now();
const epochSeconds: number[] = [];
let cursor = mnist.trainCount; // forces a shuffle on the first batch
for (let epoch = 0; epoch < epochs; epoch++) {
  const epochStart = performance.now();
  let dSum = 0;
  let gSum = 0;
  for (let s = 0; s < stepsPerEpoch; s++) {
    if (cursor + batch > mnist.trainCount) {
      for (let i = order.length - 1; i > 0; i--) {
        const j = nextIndex(i + 1);
        [order[i], order[j]] = [order[j], order[i]];
      }
      cursor = 0;
    }
    const real = new Float32Array(batch * pixels);
    for (let i = 0; i < batch; i++) {
      const k = order[cursor + i];
      real.set(realAll.subarray(k * pixels, (k + 1) * pixels), i * pixels);
    }
    cursor += batch;
    const losses = await step(tensor(real, [batch, pixels]));
    // Let the event loop turn: native tensors of finished steps are released by finalizers
    // that run there. A loop that never yields (custom steps are synchronous) keeps every
    // step's graph alive: memory grows ~20 MB per step and steps get several times slower.
    await new Promise((resolve) => setImmediate(resolve));
    dSum += losses.d;
    gSum += losses.g;
  }
  const took = seconds(epochStart);
  epochSeconds.push(took);
  console.log(
    `epoch ${epoch + 1}/${epochs}: d_loss ${(dSum / stepsPerEpoch).toFixed(4)}  g_loss ${(gSum / stepsPerEpoch).toFixed(4)}  ` +
      `${took.toFixed(1)} s (${((took * 1000) / stepsPerEpoch).toFixed(2)} ms/step)`,
  );
}
const trainSeconds = seconds(trainStart);
const meanEpoch = epochSeconds.reduce((a, b) => a + b, 0) / Math.max(1, epochSeconds.length);
console.log(`GAN trained in ${trainSeconds.toFixed(1)} s (${meanEpoch.toFixed(1)} s per epoch)`);

// ---- samples ---------------------------------------------------------------------------------
const shown = await generator.predict(noise(64), { batchSize: 64 });
const grid = imageGrid(shown.data, 64, 28, 28, 8, { range: [-1, 1], padding: 2 });
await writePng(outPath, grid.data, grid.width, grid.height);
console.log(`Wrote 64 samples to ${outPath} (${grid.width} x ${grid.height})`);

// ---- scoring ---------------------------------------------------------------------------------
async function scorer(): Promise<Model> {
  if (existsSync(join(scorerDir, "model.json"))) {
    const cached = await loadModel(scorerDir);
    console.log(`Scorer: the MNIST convnet loaded from ${scorerDir}`);
    return cached;
  }
  const cnn = sequential([
    conv2d({ filters: 32, kernelSize: 3, activation: "relu", inputShape: [28, 28, 1] }),
    maxPooling2d({ poolSize: 2 }),
    conv2d({ filters: 64, kernelSize: 3, activation: "relu" }),
    maxPooling2d({ poolSize: 2 }),
    flatten(),
    dropout({ rate: 0.5 }),
    dense({ units: 10, activation: "softmax" }),
  ]);
  cnn.compile({
    optimizer: adam({ learningRate: 1e-3 }),
    loss: "sparseCategoricalCrossentropy",
    metrics: ["accuracy"],
  });
  const started = performance.now();
  await cnn.fit(
    tensor(mnist.trainImages, [mnist.trainCount, 28, 28, 1]),
    tensor(mnist.trainLabels, [mnist.trainCount]),
    {
      epochs: 1,
      batchSize: 128,
      verbose: 0,
    },
  );
  console.log(`Scorer: the MNIST convnet trained for 1 epoch in ${seconds(started).toFixed(1)} s`);
  await cnn.save(scorerDir);
  return cnn;
}
t0 = performance.now();
const cnn = await scorer();
const { accuracy } = await cnn.evaluate(
  tensor(mnist.testImages, [mnist.testCount, 28, 28, 1]),
  tensor(mnist.testLabels, [mnist.testCount]),
  { batchSize: 256 },
);
console.log(`Scorer test accuracy: ${(accuracy * 100).toFixed(2)}% (ready in ${seconds(t0).toFixed(1)} s)`);

const count = 1000;
const samples = await generator.predict(noise(count), { batchSize: 250 });
const unit = samples.data.map((v) => (v + 1) / 2);
const probs = await cnn.predict(tensor(unit, [count, 28, 28, 1]), { batchSize: 250 });
const histogram = new Array<number>(10).fill(0);
let confidence = 0;
for (let i = 0; i < count; i++) {
  const row = probs.data.subarray(i * 10, (i + 1) * 10);
  let best = 0;
  for (let c = 1; c < 10; c++) if (row[c] > row[best]) best = c;
  histogram[best]++;
  confidence += row[best];
}
confidence /= count;
const minShare = Math.min(...histogram) / count;
console.log(`Mean top-class confidence on ${count} samples: ${confidence.toFixed(4)} (bar: >= 0.90)`);
console.log(
  `Class histogram: ${histogram.map((n, digit) => `${digit}:${n}`).join("  ")}  (smallest ${(minShare * 100).toFixed(1)}%, bar: >= 5%)`,
);
const pass = confidence >= 0.9 && minShare >= 0.05;
console.log(
  `${pass ? "PASS" : "FAIL"}: MODE=${mode}, ${epochs} epoch(s) x ${stepsPerEpoch} steps, ${meanEpoch.toFixed(1)} s per epoch, ` +
    `${((meanEpoch * 1000) / stepsPerEpoch).toFixed(2)} ms per step`,
);
if (!pass) process.exit(1);
