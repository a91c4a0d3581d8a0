/**
 * Row-by-row MNIST: each image is a sequence of 28 rows of 28 pixels, read by an LSTM(128).
 *
 *   npm run lstm          (5 epochs; DEVICE=gpu to train on the GPU)
 */
import { adam, callbacks, dense, loadMnist, lstm, sequential, setSeed, tensor } from "../index.ts";

const epochs = Number(process.env.EPOCHS ?? 5);
const device = () => {
  const d = process.env.DEVICE ?? "cpu";
  if (d !== "cpu" && d !== "gpu" && d !== "gpu!") throw new Error(`DEVICE must be cpu, gpu or gpu!, got '${d}'`);
  return d;
};
const trainLimit = process.env.TRAIN_LIMIT ? Number(process.env.TRAIN_LIMIT) : undefined;

setSeed(3);
const mnist = await loadMnist({ trainLimit });
const xTrain = tensor(mnist.trainImages, [mnist.trainCount, 28, 28]);
const yTrain = tensor(mnist.trainLabels, [mnist.trainCount]);
const xTest = tensor(mnist.testImages, [mnist.testCount, 28, 28]);
const yTest = tensor(mnist.testLabels, [mnist.testCount]);

const model = sequential([lstm({ units: 128, inputShape: [28, 28] }), dense({ units: 10, activation: "softmax" })]);
model.summary();
const peakLr = Number(process.env.LR ?? 3e-3);
model.compile({
  optimizer: adam({ learningRate: peakLr }),
  // DEVICE=gpu trains on the GPU (the planned steps, or the layers' own GPU code).
  device: device(),
  loss: "sparseCategoricalCrossentropy",
  metrics: ["accuracy"],
});
// Cosine decay: a high rate to learn fast, a small one at the end to settle.
const cosine = callbacks.learningRateScheduler((epoch) => peakLr * 0.5 * (1 + Math.cos((Math.PI * epoch) / epochs)));

const started = performance.now();
await model.fit(xTrain, yTrain, { epochs, batchSize: 128, validationSplit: 0.1, callbacks: [cosine] });
const seconds = (performance.now() - started) / 1000;
const { accuracy } = await model.evaluate(xTest, yTest, { batchSize: 256 });
console.log(`Trained ${epochs} epoch(s) in ${seconds.toFixed(1)} s`);
console.log(`LSTM test accuracy: ${(accuracy * 100).toFixed(2)}% (bar: 98.0%)`);
if (accuracy < 0.98) process.exit(1);
