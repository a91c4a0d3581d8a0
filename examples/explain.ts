/**
 * Explanations of MNIST classifiers: saliency, integrated gradients and Grad-CAM heatmaps of the
 * demo convnet (examples/convnet.ts) for ten test digits (the first of each class), the
 * integrated-gradients completeness error, the model-randomisation sanity check, and the
 * attention a small vision transformer (as examples/mnist-vit.ts) pays to each 7x7 patch.
 * Writes PNG grids and explain.json to OUT_DIR (default ./explain-out).
 *
 *   npm run explain
 *   EPOCHS=1 TRAIN_LIMIT=6000 VIT_EPOCHS=1 npm run explain   (quick run)
 *
 * Knobs: EPOCHS (convnet, default 1), VIT_EPOCHS (default 2), TRAIN_LIMIT (training images for
 * both, default all 60,000), TEST_LIMIT (test images for the accuracies, default 10,000), IG_STEPS (default 64), SEED (default 42), OUT_DIR.
 *
 * Measured here (defaults, 2-core machine shared with other jobs, about 3 minutes): convnet 98.23-98.24%
 * after 1 epoch, ViT 97.44-97.52% after 2 (two runs); IG completeness error 0.02-0.48% of
 * f(x) - f(0) per digit at 64 steps; randomisation check: saliency 0.56, IG 0.99 over all pixels,
 * but 0.07 and 0.43 over the ink pixels only (IG is zero on the black background for both models);
 * Grad-CAM of conv_last is zero everywhere for the 9.
 *
 * The attention maps come from `explain.attentionMaps(vit, x, { layer })`: the probabilities of
 * each named multiHeadAttention layer of the trained classifier, as it is.
 */
import { writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import {
  adam,
  add,
  conv2d,
  dense,
  explain,
  globalAveragePooling1d,
  input,
  layerNormalization,
  loadMnist,
  type Model,
  model,
  multiHeadAttention,
  positionalEmbedding,
  reshape,
  type SymbolicTensor,
  schedules,
  setSeed,
  Tensor,
  tensor,
} from "../index.ts";
import { mnistConvnet } from "./convnet.ts";

/** Settings of {@link main}; each defaults to its environment variable, then to the documented value. */
export interface ExplainOptions {
  epochs?: number;
  vitEpochs?: number;
  trainLimit?: number;
  testLimit?: number;
  igSteps?: number;
  seed?: number;
  outDir?: string;
  /** fit's verbosity (default 2, one line per epoch). */
  verbose?: 0 | 1 | 2;
}

/** What {@link main} returns and writes as JSON. */
export interface ExplainReport {
  settings: {
    epochs: number;
    vitEpochs: number;
    trainImages: number;
    testImages: number;
    igSteps: number;
    seed: number;
  };
  /** Test-set indices of the ten digits explained (the first of each class). */
  indices: number[];
  convnetAccuracy: number;
  vitAccuracy: number;
  /** Per digit: sum of the IG attributions, f(x) - f(baseline) of the true class, and |difference| / |f(x) - f(baseline)|. */
  completeness: { label: number; sum: number; delta: number; relativeError: number }[];
  /** Mean Spearman correlation between explanations of the model and of a re-initialised copy. */
  randomization: { saliency: number; integratedGradients: number };
  /** The same correlation over the digit's nonzero pixels only, against another freshly initialised convnet. */
  randomizationInkOnly: { saliency: number; integratedGradients: number };
  /** Digits whose Grad-CAM map is zero everywhere (no position where the weighted activations are positive). */
  emptyGradCams: number[];
  files: string[];
}

const num = (name: string, fallback: number) => (process.env[name] ? Number(process.env[name]) : fallback);

/** A pre-norm encoder block (examples/transformer-block.ts) with its attention layer named `name`. */
function encoderBlock(x: SymbolicTensor, numHeads: number, ffDim: number, name: string): SymbolicTensor {
  const dim = x.shape[x.shape.length - 1];
  const normed = layerNormalization({ epsilon: 1e-6 }).apply(x);
  const attended = multiHeadAttention({ numHeads, keyDim: dim / numHeads, name }).apply([normed, normed]);
  const h = add().apply([x, attended]);
  const ff = dense({ units: ffDim, activation: "gelu" }).apply(layerNormalization({ epsilon: 1e-6 }).apply(h));
  return add().apply([h, dense({ units: dim }).apply(ff)]);
}

/** The attention layers' names in {@link vit}, block by block. */
const attentionLayers = ["vit_attention_1", "vit_attention_2"];

/** The ViT of examples/mnist-vit.ts (7x7 patches, dimension 64, 2 blocks of 4 heads). */
function vit(): Model {
  const dim = 64;
  const image = input({ shape: [28, 28, 1] });
  const patches = conv2d({ filters: dim, kernelSize: 7, strides: 7 }).apply(image);
  let tokens = positionalEmbedding({ sequenceLength: 16 }).apply(reshape({ targetShape: [16, dim] }).apply(patches));
  for (const name of attentionLayers) tokens = encoderBlock(tokens, 4, 128, name);
  const pooled = globalAveragePooling1d().apply(layerNormalization({ epsilon: 1e-6 }).apply(tokens));
  const probs = dense({ units: 10, activation: "softmax" }).apply(pooled);
  return model({ inputs: image, outputs: probs });
}

/** `[n, heads, q, k]` attention probabilities -> `[n, 4, 4]`: attention each patch receives, averaged over heads and queries. */
function patchAttention(scores: Tensor): Tensor {
  const [n, heads, q, k] = scores.shape;
  const out = new Float32Array(n * k);
  for (let i = 0; i < n; i++) {
    for (let h = 0; h < heads; h++) {
      for (let r = 0; r < q; r++) {
        for (let c = 0; c < k; c++) out[i * k + c] += scores.data[((i * heads + h) * q + r) * k + c] / (heads * q);
      }
    }
  }
  const side = Math.round(Math.sqrt(k));
  return new Tensor(out, [n, side, side]);
}

const squeeze = (t: Tensor) => new Tensor(t.data, t.shape.slice(0, 3));

/** Trains both models briefly, writes the heatmap grids and explain.json, prints the checks. */
export async function main(options: ExplainOptions = {}): Promise<ExplainReport> {
  const epochs = options.epochs ?? num("EPOCHS", 1);
  const vitEpochs = options.vitEpochs ?? num("VIT_EPOCHS", 2);
  const trainLimit = options.trainLimit ?? (process.env.TRAIN_LIMIT ? Number(process.env.TRAIN_LIMIT) : undefined);
  const testLimit = options.testLimit ?? num("TEST_LIMIT", 10000);
  const igSteps = options.igSteps ?? num("IG_STEPS", 64);
  const seed = options.seed ?? num("SEED", 42);
  const outDir = resolve(options.outDir ?? process.env.OUT_DIR ?? "explain-out");
  const verbose = options.verbose ?? 2;

  setSeed(seed);
  const mnist = await loadMnist({ trainLimit, testLimit });
  const xTrain = tensor(mnist.trainImages, [mnist.trainCount, 28, 28, 1]);
  const yTrain = tensor(mnist.trainLabels, [mnist.trainCount]);
  const xTest = tensor(mnist.testImages, [mnist.testCount, 28, 28, 1]);
  const yTest = tensor(mnist.testLabels, [mnist.testCount]);
  const indices = Array.from({ length: 10 }, (_, c) => mnist.testLabels.indexOf(c));
  if (indices.includes(-1)) throw new RangeError(`explain: the first ${testLimit} test images lack a class`);
  const x = new Tensor(new Float32Array(10 * 784), [10, 28, 28, 1]);
  for (const [c, idx] of indices.entries()) x.data.set(mnist.testImages.subarray(idx * 784, (idx + 1) * 784), c * 784);
  const labels = Array.from({ length: 10 }, (_, c) => c);
  const compileArgs = (steps: number) => ({
    optimizer: adam({
      learningRate: schedules.cosineDecay({ initialLearningRate: 3e-3, decaySteps: Math.max(1, steps) }),
    }),
    loss: "sparseCategoricalCrossentropy" as const,
    metrics: ["accuracy"],
  });
  const stepsPerEpoch = Math.ceil(mnist.trainCount / 128);

  const convnet = mnistConvnet();
  convnet.compile(compileArgs(epochs * stepsPerEpoch));
  console.log(`Training the convnet (${epochs} epoch(s), ${mnist.trainCount} images)`);
  await convnet.fit(xTrain, yTrain, { epochs, batchSize: 128, verbose });
  const convnetAccuracy = (await convnet.evaluate(xTest, yTest, { batchSize: 256 })).accuracy as number;
  console.log(`Convnet test accuracy: ${(convnetAccuracy * 100).toFixed(2)}% (${mnist.testCount} images)`);

  const files: string[] = [];
  const grid = async (name: string, heat: Tensor) => {
    const path = join(outDir, name);
    await explain.writeHeatmapGrid(path, squeeze(x), heat);
    files.push(path);
  };
  const sal = await explain.saliency(convnet, x, { target: labels });
  await grid("saliency.png", squeeze(sal));
  const ig = await explain.integratedGradients(convnet, x, { target: labels, steps: igSteps });
  // Signed attributions; the grid shows their magnitude.
  await grid("integrated-gradients.png", squeeze(ig));
  const cam = await explain.gradCam(convnet, x, { layer: "conv_last", target: labels });
  await grid("grad-cam.png", cam);

  const fx = await convnet.predict(x);
  const f0 = await convnet.predict(new Tensor(new Float32Array(10 * 784), [10, 28, 28, 1]));
  const completeness = labels.map((c) => {
    const sum = ig.data.subarray(c * 784, (c + 1) * 784).reduce((s, v) => s + v, 0);
    const delta = fx.data[c * 10 + c] - f0.data[c * 10 + c];
    return { label: c, sum, delta, relativeError: Math.abs(sum - delta) / Math.abs(delta) };
  });
  console.log(`Integrated gradients (${igSteps} steps, black baseline): completeness per digit`);
  console.log("digit   sum(attr)   f(x)-f(0)   |error|/|f(x)-f(0)|");
  for (const r of completeness) {
    console.log(
      `${String(r.label).padStart(5)}${r.sum.toFixed(4).padStart(12)}${r.delta.toFixed(4).padStart(12)}` +
        `${(r.relativeError * 100).toFixed(3).padStart(20)}%`,
    );
  }
  const randomization = {
    saliency: (await explain.randomizationCheck(convnet, x, { target: labels, seed: seed + 1 })).mean,
    integratedGradients: (
      await explain.randomizationCheck(convnet, x, { target: labels, seed: seed + 1, method: "integratedGradients" })
    ).mean,
  };
  // With a black baseline, IG is zero wherever the image is (most of an MNIST digit's pixels):
  // those tied zeros alone make any two IG maps rank-correlate. Over the ink pixels only:
  const random = mnistConvnet();
  random.compile(compileArgs(1));
  const [salRandom, igRandom] = [
    await explain.saliency(random, x, { target: labels }),
    await explain.integratedGradients(random, x, { target: labels, steps: igSteps }),
  ];
  const inkCorrelation = (a: Tensor, b: Tensor) => {
    let total = 0;
    for (let i = 0; i < 10; i++) {
      const ink = [...x.data.subarray(i * 784, (i + 1) * 784).keys()].filter((p) => x.data[i * 784 + p] > 0);
      total += explain.rankCorrelation(
        ink.map((p) => Math.abs(a.data[i * 784 + p])),
        ink.map((p) => Math.abs(b.data[i * 784 + p])),
      );
    }
    return total / 10;
  };
  const inkOnly = { saliency: inkCorrelation(sal, salRandom), integratedGradients: inkCorrelation(ig, igRandom) };
  console.log(
    `Randomisation check (mean Spearman correlation with a re-initialised copy; low = depends on the weights): ` +
      `saliency ${randomization.saliency.toFixed(3)}, integrated gradients ${randomization.integratedGradients.toFixed(3)}; ` +
      `over the ink pixels only: saliency ${inkOnly.saliency.toFixed(3)}, integrated gradients ${inkOnly.integratedGradients.toFixed(3)}`,
  );
  const camSize = cam.data.length / 10;
  const emptyCams = labels.filter((c) => cam.data.subarray(c * camSize, (c + 1) * camSize).every((v) => v === 0));
  console.log(
    `Grad-CAM (layer conv_last, ${cam.shape.slice(1).join("x")}): all-zero maps for digit(s) [${emptyCams.join(", ")}]`,
  );

  const classifier = vit();
  classifier.compile(compileArgs(vitEpochs * stepsPerEpoch));
  console.log(`Training the ViT (${vitEpochs} epoch(s), ${mnist.trainCount} images)`);
  await classifier.fit(xTrain, yTrain, { epochs: vitEpochs, batchSize: 128, verbose });
  const vitAccuracy = (await classifier.evaluate(xTest, yTest, { batchSize: 256 })).accuracy as number;
  console.log(`ViT test accuracy: ${(vitAccuracy * 100).toFixed(2)}% (${mnist.testCount} images)`);
  for (const [b, layer] of attentionLayers.entries()) {
    const maps = await explain.attentionMaps(classifier, x, { layer });
    await grid(`vit-attention-block${b + 1}.png`, patchAttention(maps));
  }

  const report: ExplainReport = {
    settings: { epochs, vitEpochs, trainImages: mnist.trainCount, testImages: mnist.testCount, igSteps, seed },
    indices,
    convnetAccuracy,
    vitAccuracy,
    completeness,
    randomization,
    randomizationInkOnly: inkOnly,
    emptyGradCams: emptyCams,
    files,
  };
  const json = join(outDir, "explain.json");
  await writeFile(json, `${JSON.stringify(report, null, 2)}\n`);
  files.push(json);
  console.log(`Wrote ${files.join(", ")}`);
  return report;
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) await main();
