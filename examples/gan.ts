/**
 * The GAN from the source material: an MLP generator (noise 100 -> 256 -> 256 -> 256 -> 784,
 * tanh) and an MLP discriminator (784 -> 256 -> 256 -> 256 -> 1, leaky ReLU, a logit) trained
 * against each other on MNIST scaled to [-1, 1], with Adam 2e-4 (beta1 0.5) at batch 64, two ways:
 *
 *   MODE=keras  (default) the Keras pattern: the discriminator is compiled on its own, then
 *               frozen (`trainable = false`) inside a combined model `D(G(z))` that trains the
 *               generator; every step is `predict` + two `trainOnBatch` calls.
 *   MODE=custom a custom training step: `valueAndGrads` + `optimizer.applyGradients` for both.
 *
 * DEVICE=gpu puts both models' weights on the GPU (`model.to('gpu')`): either form then trains
 * there through the same layer and loss code.
 *
 * Details that make it train reliably: batch normalization (momentum 0.8) after each hidden
 * layer of the generator, dropout 0.3 in the discriminator, one-sided label smoothing (real
 * images labelled 0.9), and an exponential moving average of the generator's weights (decay
 * 0.999) that the samples are drawn from (the raw generator's score is printed too).
 *
 * After training it writes a grid of 64 samples to examples/output/gan-samples.png and scores
 * 1,000 samples with the Keras MNIST convnet (one epoch of training, cached in the OS temp
 * directory): the mean top-class confidence must reach 0.90 and every digit must be at least
 * 5% of the samples (no mode collapse), or the process exits non-zero.
 *
 *   npm run gan
 *   MODE=custom npx tsx examples/gan.ts
 *   EPOCHS=2 STEPS=200 npx tsx examples/gan.ts     (a quick look; misses the bars)
 *
 * Env: MODE, DEVICE (cpu or gpu), EPOCHS, STEPS (steps per epoch, default a full pass), SEED, EMA (decay, 0 = off),
 * SCORE_EVERY (also score every N epochs, 0 = only at the end), SCORER_DIR (the convnet's cache).
 */
import { existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  activation,
  adam,
  batchNormalization,
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
  type Sequential,
  sequential,
  setSeed,
  type Tensor,
  tensor,
  valueAndGrads,
} from "../index.ts";
import { imageGrid, writePng } from "../src/image.ts";

const mode = process.env.MODE ?? "keras";
if (mode !== "keras" && mode !== "custom") throw new Error(`MODE must be 'keras' or 'custom', got '${mode}'`);
const device = process.env.DEVICE ?? "cpu";
if (device !== "cpu" && device !== "gpu") throw new Error(`DEVICE must be 'cpu' or 'gpu', got '${device}'`);
const epochs = Number(process.env.EPOCHS ?? 70);
const emaDecay = Number(process.env.EMA ?? 0.999);
const scoreEvery = Number(process.env.SCORE_EVERY ?? 10);
const batch = 64;
const latent = 100;
const seed = Number(process.env.SEED ?? 1);
const outPath = join(dirname(fileURLToPath(import.meta.url)), "output", "gan-samples.png");
const scorerDir = process.env.SCORER_DIR ?? join(tmpdir(), "cortex-nn-gan-scorer-b32");
const seconds = (since: number) => (performance.now() - since) / 1000;
const runStart = performance.now();

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
// The noise of the scored samples: its own stream, so scoring leaves training unchanged.
const count = 1000;
const scoreNoise = tensor(normals(seed * 7919 + 14)(count * latent), [count, latent]);

// ---- models ----------------------------------------------------------------------------------
function makeGenerator(name: string): Sequential {
  const hidden = (first: boolean) => [
    dense({ units: 256, ...(first ? { inputShape: [latent] } : {}) }),
    batchNormalization({ momentum: 0.8 }),
    activation({ activation: "leakyRelu" }),
  ];
  return sequential(
    [...hidden(true), ...hidden(false), ...hidden(false), dense({ units: pixels, activation: "tanh" })],
    {
      name,
    },
  );
}
const generator = makeGenerator("generator");
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
// DEVICE=gpu: both models' weights on the GPU; their layers, the losses and both training
// forms run there through the same code (the EMA copy and the scorer stay on the CPU).
generator.to(device);
discriminator.to(device);
const bce = { name: "binaryCrossentropy", fromLogits: true } as const;
const optimizerArgs = { learningRate: 2e-4, beta1: 0.5 };

// Labels for one discriminator batch (real images first, then fakes) and for the generator.
// One-sided label smoothing (real = 0.9) keeps the discriminator from becoming so confident
// that the generator's gradients vanish (without it, runs can collapse after a few epochs).
const realLabel = 0.9;
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
    // Fakes for the discriminator in inference mode, as `predict` makes them in MODE=keras.
    const fake = generator.call(noise(batch), { training: false }).toTensor();
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

// An exponential moving average of the generator's weights (batch-norm statistics included).
const averaged = makeGenerator("generator_ema");
let emaWeights: Float32Array[] | undefined;
function updateEma(): void {
  const current = generator.getWeights();
  if (emaWeights === undefined) {
    emaWeights = current.map((w) => w.data.slice());
    return;
  }
  for (let k = 0; k < current.length; k++) {
    const e = emaWeights[k];
    const w = current[k].data;
    for (let i = 0; i < e.length; i++) e[i] += (1 - emaDecay) * (w[i] - e[i]);
  }
}

// ---- scoring ---------------------------------------------------------------------------------
async function scorer(): Promise<Model> {
  if (existsSync(join(scorerDir, "model.json"))) {
    const cached = await loadModel(scorerDir);
    console.log(`Scorer: the MNIST convnet loaded from ${scorerDir}`);
    return cached;
  }
  // examples/mnist-cnn.ts's architecture, one epoch at Keras's default batch size.
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
      batchSize: 32,
      verbose: 0,
    },
  );
  console.log(`Scorer: the MNIST convnet trained for 1 epoch in ${seconds(started).toFixed(1)} s`);
  await cnn.save(scorerDir);
  return cnn;
}

/** Mean top-class probability and the per-class count of arg-maxes, for `[n, 10]` probabilities. */
function summarize(probs: Tensor): { confidence: number; histogram: number[] } {
  const n = probs.shape[0];
  const histogram = new Array<number>(10).fill(0);
  let confidence = 0;
  for (let i = 0; i < n; i++) {
    const row = probs.data.subarray(i * 10, (i + 1) * 10);
    let best = 0;
    for (let c = 1; c < 10; c++) if (row[c] > row[best]) best = c;
    histogram[best]++;
    confidence += row[best];
  }
  return { confidence: confidence / n, histogram };
}

t0 = performance.now();
const cnn = await scorer();
const testImages = tensor(mnist.testImages, [mnist.testCount, 28, 28, 1]);
const { accuracy } = await cnn.evaluate(testImages, tensor(mnist.testLabels, [mnist.testCount]), { batchSize: 256 });
const reference = summarize(await cnn.predict(testImages.slice(0, 1000), { batchSize: 250 }));
console.log(
  `Scorer test accuracy: ${(accuracy * 100).toFixed(2)}%; mean top-class confidence on 1,000 real test digits: ` +
    `${reference.confidence.toFixed(4)} (ready in ${seconds(t0).toFixed(1)} s)`,
);

async function score(g: Model): Promise<{ confidence: number; histogram: number[] }> {
  const samples = await g.predict(scoreNoise, { batchSize: 250 });
  const unit = samples.data.map((v) => (v + 1) / 2);
  return summarize(await cnn.predict(tensor(unit, [count, 28, 28, 1]), { batchSize: 250 }));
}
const formatScore = (s: { confidence: number; histogram: number[] }) =>
  `confidence ${s.confidence.toFixed(4)}, histogram ${s.histogram.join(" ")}`;

function emaModel(): Model {
  if (emaWeights === undefined) return generator;
  const shapes = generator.getWeights().map((w) => w.shape);
  averaged.setWeights(emaWeights.map((e, k) => tensor(e, [...shapes[k]])));
  return averaged;
}

// ---- training --------------------------------------------------------------------------------
console.log(
  `Training the GAN (MODE=${mode}, DEVICE=${device}): ${epochs} epoch(s) x ${stepsPerEpoch} steps, batch ${batch}, Adam 2e-4 (beta1 0.5)` +
    (emaDecay > 0 ? `, weight EMA ${emaDecay}` : ""),
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
    dSum += losses.d;
    gSum += losses.g;
    if (emaDecay > 0) updateEma();
    // Let the event loop turn: native tensors of finished steps are released by finalizers
    // that run there. A loop that never yields (custom steps are synchronous) keeps every
    // step's graph alive: memory grows ~20 MB per step and steps get several times slower.
    await new Promise((resolve) => setImmediate(resolve));
  }
  const took = seconds(epochStart);
  epochSeconds.push(took);
  console.log(
    `epoch ${epoch + 1}/${epochs}: d_loss ${(dSum / stepsPerEpoch).toFixed(4)}  g_loss ${(gSum / stepsPerEpoch).toFixed(4)}  ` +
      `${took.toFixed(1)} s (${((took * 1000) / stepsPerEpoch).toFixed(2)} ms/step)`,
  );
  if (scoreEvery > 0 && (epoch + 1) % scoreEvery === 0 && epoch + 1 < epochs) {
    const raw = await score(generator);
    const avg = emaWeights !== undefined ? `; averaged: ${formatScore(await score(emaModel()))}` : "";
    console.log(`  score after epoch ${epoch + 1}: ${formatScore(raw)}${avg}`);
  }
}
const trainSeconds = seconds(trainStart);
const meanEpoch = epochSeconds.reduce((a, b) => a + b, 0) / Math.max(1, epochSeconds.length);
console.log(`GAN trained in ${trainSeconds.toFixed(1)} s (${meanEpoch.toFixed(1)} s per epoch)`);
const sampler = emaModel();

// ---- samples ---------------------------------------------------------------------------------
const shown = await sampler.predict(noise(64), { batchSize: 64 });
const grid = imageGrid(shown.data, 64, 28, 28, 8, { range: [-1, 1], padding: 2 });
await writePng(outPath, grid.data, grid.width, grid.height);
console.log(`Wrote 64 samples to ${outPath} (${grid.width} x ${grid.height})`);

// ---- score -----------------------------------------------------------------------------------
if (sampler !== generator) console.log(`Raw generator (for reference): ${formatScore(await score(generator))}`);
const { confidence, histogram } = await score(sampler);
const minShare = Math.min(...histogram) / count;
const which = sampler === generator ? "the generator" : "the averaged generator";
console.log(`Mean top-class confidence on ${count} samples of ${which}: ${confidence.toFixed(4)} (bar: >= 0.90)`);
console.log(
  `Class histogram: ${histogram.map((n, digit) => `${digit}:${n}`).join("  ")}  (smallest ${(minShare * 100).toFixed(1)}%, bar: >= 5%)`,
);
const pass = confidence >= 0.9 && minShare >= 0.05;
console.log(
  `${pass ? "PASS" : "FAIL"}: MODE=${mode}, ${epochs} epoch(s) x ${stepsPerEpoch} steps, ${meanEpoch.toFixed(1)} s per epoch ` +
    `(${((meanEpoch * 1000) / stepsPerEpoch).toFixed(2)} ms per step), ${seconds(runStart).toFixed(0)} s in all`,
);
if (!pass) process.exit(1);
