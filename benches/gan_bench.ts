/**
 * One GAN training step at batch 64 (the MNIST MLP GAN of examples/gan.ts), in cortex-nn's two
 * forms, printing one JSON line (peer: benches/peers/torch_gan.py):
 *
 *   gan_custom_step_ms  valueAndGrads + optimizer.applyGradients for both networks
 *   gan_keras_step_ms   generator.predict + discriminator.trainOnBatch + combined.trainOnBatch
 *
 * One step: fake = G(z1); one discriminator update on [real; fake] (batch 128) against
 * [ones; zeros]; one generator update through the discriminator, D(G(z2)) against ones.
 * The two forms run interleaved (each on its own models) so machine load affects both alike;
 * the medians are reported.
 *
 * Usage: tsx benches/gan_bench.ts [threads]   (else $BENCH_THREADS, else 2)
 */
import {
  adam,
  dense,
  dropout,
  input,
  type Model,
  model,
  type Sequential,
  sequential,
  setNumThreads,
  setSeed,
  type Tensor,
  tensor,
  valueAndGrads,
} from "../index.ts";
import { emit, median, round } from "./peers/common.ts";

const threads = Number(process.argv[2] ?? process.env.BENCH_THREADS ?? 2);
setNumThreads(threads);
setSeed(0);
const tStart = performance.now();

const batch = 64;
const latent = 100;
const pixels = 28 * 28;
const warmup = Number(process.env.GAN_WARMUP ?? 20);
const runs = Number(process.env.GAN_RUNS ?? 200);
const bce = { name: "binaryCrossentropy", fromLogits: true } as const;
const optimizerArgs = { learningRate: 2e-4, beta1: 0.5 };

function generator(name: string): Sequential {
  return sequential(
    [
      dense({ units: 256, activation: "leakyRelu", inputShape: [latent] }),
      dense({ units: 256, activation: "leakyRelu" }),
      dense({ units: 256, activation: "leakyRelu" }),
      dense({ units: pixels, activation: "tanh" }),
    ],
    { name },
  );
}

function discriminator(name: string): Sequential {
  return sequential(
    [
      dense({ units: 256, activation: "leakyRelu", inputShape: [pixels] }),
      dropout({ rate: 0.3 }),
      dense({ units: 256, activation: "leakyRelu" }),
      dropout({ rate: 0.3 }),
      dense({ units: 256, activation: "leakyRelu" }),
      dropout({ rate: 0.3 }),
      dense({ units: 1 }),
    ],
    { name },
  );
}

function randn(n: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const r = Math.sqrt(-2 * Math.log(1 - Math.random()));
    const a = 2 * Math.PI * Math.random();
    out[i] = r * Math.cos(a);
    if (i + 1 < n) out[i + 1] = r * Math.sin(a);
  }
  return out;
}
const noise = () => tensor(randn(batch * latent), [batch, latent]);

function concatRows(a: Tensor, b: Tensor): Tensor {
  const out = new Float32Array(a.size + b.size);
  out.set(a.data);
  out.set(b.data, a.size);
  return tensor(out, [a.shape[0] + b.shape[0], ...a.shape.slice(1)]);
}

const real = tensor(
  Float32Array.from({ length: batch * pixels }, () => Math.random() * 2 - 1),
  [batch, pixels],
);
const dLabels = tensor(
  Float32Array.from({ length: 2 * batch }, (_, i) => (i < batch ? 1 : 0)),
  [2 * batch, 1],
);
const ones = tensor(new Float32Array(batch).fill(1), [batch, 1]);
// Native tensors are released by finalizers that run when the event loop turns; a training
// loop must yield once per step or memory grows with every step (both forms do the same).
const yieldToLoop = () => new Promise((resolve) => setImmediate(resolve));

// Custom step: the tape.
const gCustom = generator("generator");
const dCustom = discriminator("discriminator");
const gOptimizer = adam(optimizerArgs);
const dOptimizer = adam(optimizerArgs);
async function customStep(): Promise<void> {
  const fake = gCustom.call(noise()).toTensor();
  const x = concatRows(real, fake);
  const d = valueAndGrads(() => dCustom.call(x).loss(dLabels, bce), dCustom);
  dOptimizer.applyGradients(d.grads, dCustom);
  const z = noise();
  const g = valueAndGrads(() => dCustom.call(gCustom.call(z)).loss(ones, bce), gCustom);
  gOptimizer.applyGradients(g.grads, gCustom);
  await yieldToLoop();
}

// Keras step: compiled discriminator, frozen inside the combined model.
const gKeras = generator("generator_keras");
const dKeras = discriminator("discriminator_keras");
dKeras.compile({ optimizer: adam(optimizerArgs), loss: bce });
dKeras.trainable = false;
const z = input({ shape: [latent] });
const combined: Model = model({ inputs: z, outputs: dKeras.apply(gKeras.apply(z)) });
combined.compile({ optimizer: adam(optimizerArgs), loss: bce });
async function kerasStep(): Promise<void> {
  const fake = await gKeras.predict(noise(), { batchSize: batch });
  await dKeras.trainOnBatch(concatRows(real, fake), dLabels);
  await combined.trainOnBatch(noise(), ones);
  await yieldToLoop();
}

for (let i = 0; i < warmup; i++) {
  await customStep();
  await kerasStep();
}
const custom: number[] = [];
const keras: number[] = [];
for (let i = 0; i < runs; i++) {
  let t0 = performance.now();
  await customStep();
  custom.push(performance.now() - t0);
  t0 = performance.now();
  await kerasStep();
  keras.push(performance.now() - t0);
}

emit({
  peer: "cortex",
  threads,
  batch,
  gan_custom_step_ms: round(median(custom), 3),
  gan_keras_step_ms: round(median(keras), 3),
  gan_custom_step_min_ms: round(Math.min(...custom), 3),
  gan_keras_step_min_ms: round(Math.min(...keras), 3),
  runs,
  rss_mb: round(process.memoryUsage().rss / 2 ** 20, 1),
  wall_s: round((performance.now() - tStart) / 1000, 2),
});
