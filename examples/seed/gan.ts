/**
 * Listing 4 of the source material: a GAN of two MLPs with four hidden layers of 256 units each,
 * trained with 5 discriminator steps per generator step. The generator maps 100 normals to a
 * 784-vector (a flattened 28x28 image, tanh); the discriminator maps a 784-vector to one logit.
 * Each step is a custom training step: `valueAndGrads` + `applyGradients` (examples/gan.ts
 * trains the same kind of pair on MNIST, and with the Keras frozen-discriminator pattern too).
 *
 * Synthetic "real" data: tanh of a fixed random pattern plus small noise, so the real samples
 * are a tight cluster the generator has to move towards. A few generator steps show the losses
 * moving; it is a smoke run of the training loop, not a trained GAN.
 *
 *   npx tsx examples/seed/gan.ts            (STEPS=20 generator steps by default)
 */
import {
  adam,
  dense,
  type Optimizer,
  type Sequential,
  sequential,
  setSeed,
  type Tensor,
  tensor,
  valueAndGrads,
} from "../../index.ts";
import { isMain, normals, paramCount, seconds, uniforms } from "./common.ts";

/** Noise size, sample size, hidden width and the discriminator steps per generator step. */
export const LATENT = 100;
export const SAMPLE = 784;
export const HIDDEN = 256;
export const D_STEPS = 5;

/** The generator: 100 -> 4 x (256, leaky ReLU) -> 784 tanh. */
export function buildGenerator(): Sequential {
  return sequential(
    [
      dense({ units: HIDDEN, activation: "leakyRelu", inputShape: [LATENT] }),
      dense({ units: HIDDEN, activation: "leakyRelu" }),
      dense({ units: HIDDEN, activation: "leakyRelu" }),
      dense({ units: HIDDEN, activation: "leakyRelu" }),
      dense({ units: SAMPLE, activation: "tanh" }),
    ],
    { name: "seed_generator" },
  );
}

/**
 * The discriminator: 784 -> 4 x (256, leaky ReLU) -> 1 logit. No sigmoid: the loss takes logits
 * (`fromLogits: true`), which is the numerically stable form of sigmoid + binary cross-entropy.
 */
export function buildDiscriminator(): Sequential {
  return sequential(
    [
      dense({ units: HIDDEN, activation: "leakyRelu", inputShape: [SAMPLE] }),
      dense({ units: HIDDEN, activation: "leakyRelu" }),
      dense({ units: HIDDEN, activation: "leakyRelu" }),
      dense({ units: HIDDEN, activation: "leakyRelu" }),
      dense({ units: 1 }),
    ],
    { name: "seed_discriminator" },
  );
}

const bce = { name: "binaryCrossentropy", fromLogits: true } as const;

/** One generator step after {@link D_STEPS} discriminator steps; returns the mean losses. */
export function ganStep(
  g: Sequential,
  d: Sequential,
  gOpt: Optimizer,
  dOpt: Optimizer,
  real: () => Tensor,
  noise: () => Tensor,
  batch: number,
): { d: number; g: number } {
  const both = tensor(
    Float32Array.from({ length: 2 * batch }, (_, i) => (i < batch ? 1 : 0)),
    [2 * batch, 1],
  );
  const ones = tensor(new Float32Array(batch).fill(1), [batch, 1]);
  let dLoss = 0;
  for (let k = 0; k < D_STEPS; k++) {
    const fake = g.call(noise(), { training: false }).toTensor();
    const r = real();
    const x = new Float32Array(2 * batch * SAMPLE);
    x.set(r.data);
    x.set(fake.data, batch * SAMPLE);
    const step = valueAndGrads(() => d.call(tensor(x, [2 * batch, SAMPLE])).loss(both, bce), d);
    dOpt.applyGradients(step.grads, d);
    dLoss += step.value / D_STEPS;
  }
  // The generator's gradients flow through the discriminator; only the generator's weights move
  // (the listing's frozen-discriminator combined model does the same in Keras).
  const z = noise();
  const gs = valueAndGrads(() => d.call(g.call(z)).loss(ones, bce), g);
  gOpt.applyGradients(gs.grads, g);
  return { d: dLoss, g: gs.value };
}

/** Trains `steps` generator steps at batch 64; returns the losses and the time they took. */
export async function main(args: { steps?: number; quiet?: boolean } = {}): Promise<{
  generatorParams: number;
  discriminatorParams: number;
  dLosses: number[];
  gLosses: number[];
  seconds: number;
}> {
  const { steps = 20, quiet = false } = args;
  const batch = 64;
  setSeed(4);
  const g = buildGenerator();
  const d = buildDiscriminator();
  if (!quiet) {
    g.summary();
    d.summary();
  }
  const next = uniforms(44);
  const pattern = normals(SAMPLE, next);
  const real = () => {
    const v = normals(batch * SAMPLE, next);
    for (let i = 0; i < v.length; i++) v[i] = Math.tanh(pattern[i % SAMPLE] + 0.1 * v[i]);
    return tensor(v, [batch, SAMPLE]);
  };
  const noise = () => tensor(normals(batch * LATENT, next), [batch, LATENT]);
  const gOpt = adam({ learningRate: 2e-4, beta1: 0.5 });
  const dOpt = adam({ learningRate: 2e-4, beta1: 0.5 });
  const dLosses: number[] = [];
  const gLosses: number[] = [];
  const t0 = performance.now();
  for (let s = 0; s < steps; s++) {
    const l = ganStep(g, d, gOpt, dOpt, real, noise, batch);
    dLosses.push(l.d);
    gLosses.push(l.g);
    if (!quiet && (s % 5 === 0 || s === steps - 1)) {
      console.log(`gan: step ${s + 1}/${steps} d_loss ${l.d.toFixed(4)} (mean of ${D_STEPS}) g_loss ${l.g.toFixed(4)}`);
    }
  }
  const took = seconds(t0);
  if (!quiet)
    console.log(`gan: ${steps} generator steps (${steps * D_STEPS} discriminator steps) in ${took.toFixed(1)} s`);
  return { generatorParams: paramCount(g), discriminatorParams: paramCount(d), dLosses, gLosses, seconds: took };
}

if (isMain(import.meta.url)) await main({ steps: Number(process.env.STEPS ?? 20) });
