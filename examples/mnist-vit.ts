/**
 * A small vision transformer on MNIST: 7x7 patches (a stride-7 convolution is the linear patch
 * embedding), a learned positional embedding, 2 encoder blocks with 4 heads, model dimension 64.
 *
 *   npm run vit           (5 epochs; DEVICE=gpu to train on the GPU)
 */
import {
  adam,
  callbacks,
  conv2d,
  dense,
  globalAveragePooling1d,
  input,
  layerNormalization,
  loadMnist,
  model,
  positionalEmbedding,
  reshape,
  setSeed,
  tensor,
} from "../index.ts";
import { transformerEncoder } from "./transformer-block.ts";

const epochs = Number(process.env.EPOCHS ?? 5);
const device = () => {
  const d = process.env.DEVICE ?? "cpu";
  if (d !== "cpu" && d !== "gpu" && d !== "gpu!") throw new Error(`DEVICE must be cpu, gpu or gpu!, got '${d}'`);
  return d;
};
const trainLimit = process.env.TRAIN_LIMIT ? Number(process.env.TRAIN_LIMIT) : undefined;
const dim = 64;

setSeed(7);
const mnist = await loadMnist({ trainLimit });
const xTrain = tensor(mnist.trainImages, [mnist.trainCount, 28, 28, 1]);
const yTrain = tensor(mnist.trainLabels, [mnist.trainCount]);
const xTest = tensor(mnist.testImages, [mnist.testCount, 28, 28, 1]);
const yTest = tensor(mnist.testLabels, [mnist.testCount]);

const image = input({ shape: [28, 28, 1] });
const patches = conv2d({ filters: dim, kernelSize: 7, strides: 7, name: "patch_embedding" }).apply(image);
let tokens = reshape({ targetShape: [16, dim] }).apply(patches);
tokens = positionalEmbedding({ sequenceLength: 16 }).apply(tokens);
for (let block = 0; block < 2; block++) {
  tokens = transformerEncoder(tokens, { numHeads: 4, ffDim: 128 });
}
const pooled = globalAveragePooling1d().apply(layerNormalization({ epsilon: 1e-6 }).apply(tokens));
const vit = model({ inputs: image, outputs: dense({ units: 10, activation: "softmax" }).apply(pooled), name: "vit" });
vit.summary();
const peakLr = 2e-3;
vit.compile({
  optimizer: adam({ learningRate: peakLr }),
  // DEVICE=gpu trains on the GPU (the planned steps, or the layers' own GPU code).
  device: device(),
  loss: "sparseCategoricalCrossentropy",
  metrics: ["accuracy"],
});
// Cosine decay over the run: transformers want a high rate early and a small one to settle.
const cosine = callbacks.learningRateScheduler((epoch) => peakLr * 0.5 * (1 + Math.cos((Math.PI * epoch) / epochs)));

const started = performance.now();
await vit.fit(xTrain, yTrain, { epochs, batchSize: 128, validationSplit: 0.1, callbacks: [cosine] });
const seconds = (performance.now() - started) / 1000;
const { accuracy } = await vit.evaluate(xTest, yTest, { batchSize: 256 });
console.log(`Trained ${epochs} epoch(s) in ${seconds.toFixed(1)} s`);
console.log(`ViT test accuracy: ${(accuracy * 100).toFixed(2)}% (bar: 97.0%)`);
if (accuracy < 0.97) process.exit(1);
