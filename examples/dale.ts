/**
 * Dale's law on MNIST: excitatory/inhibitory networks against their unconstrained twins, with
 * the same sizes, epochs, optimizer and seed.
 *
 *   1. an eiDense MLP 784-H-H-10 vs the dense MLP 784-H-H-10, both relu. eiDense is the DANN
 *      layer of Cornford et al. 2021: H excitatory units plus round(H / 10) inhibitory
 *      interneurons per hidden layer (1 for the 10 outputs), every weight matrix one-signed;
 *   2. an eiRNN (relu, 80% excitatory) vs a simpleRNN (relu) on row-by-row MNIST (28 steps of
 *      28 pixels), each read out by a 10-way layer. The EI network's readout is the row-sign
 *      eiDense (inhibitoryUnits: 0): its kernel's rows carry the signs of the eiRNN's units
 *      (inputExcitatoryFraction 0.8), with |glorot| initial weights, E/I-balanced by row.
 *
 *   npm run dale
 *
 * Measured (2-core CPU, all 60000 training images, 10000 test images, adam 1e-3, batch 128,
 * seed 7; test accuracy, unconstrained vs EI):
 *   epochs  MLP 784-256-256-10          RNN 128 relu
 *    3      97.49% vs 96.35% (-1.14)    95.45% vs 89.24% (-6.21)
 *   10      98.07% vs 97.60% (-0.47)    97.06% vs 94.74% (-2.32)
 *   30      97.99% vs 97.43% (-0.56)    98.10% vs 96.78% (-1.32)
 *   60                                  98.22% vs 97.88% (-0.34)
 *  100      98.64% vs 98.27% (-0.37)
 * Both EI networks are within 0.5 points of their unconstrained twins at their longest runs
 * (EPOCHS=100 ONLY=mlp, EPOCHS=60 ONLY=rnn); the eiDense MLP also at 10 epochs (0.56 short at
 * 30). The EI networks learn more slowly in the first epochs.
 * The MLP's eiDense layers are DANN. The row-sign eiDense (one sign per kernel row, so
 * non-negative weights on the non-negative pixels) measured 91.88%, 94.34%, 96.03% and 97.34%
 * at 3, 10, 30 and 100 epochs as the MLP's layers: DANN's interneurons give the effective kernel
 * both signs. The DANN MLP has 15% more weights than the dense one (309,940 vs 269,322: the
 * interneurons' input and output weights), as in the paper, which compares equal numbers of
 * excitatory and dense units.
 * After the eiRNN, whose inhibitory units already give the readout weights of both signs, the
 * row-sign readout is the better one: a DANN readout (10 units, 1 interneuron, the same E/I row
 * balancing) measured 90.77% at 3 epochs but 97.41% (-0.81) at 60; without the row balancing
 * it measured 76.58% at 3 and 96.61% at 60.
 *
 * Knobs: EPOCHS (3), TRAIN_LIMIT (60000, all), TEST_LIMIT (10000), HIDDEN (256), RNN_UNITS (128),
 * LR (1e-3, adam), BATCH (128), ONLY ('mlp' or 'rnn' to run one comparison).
 */
import {
  adam,
  dense,
  eiDense,
  eiRNN,
  type Layer,
  loadMnist,
  type Model,
  sequential,
  setSeed,
  simpleRNN,
  type Tensor,
  tensor,
} from "../index.ts";

const epochs = Number(process.env.EPOCHS ?? 3);
const trainLimit = Number(process.env.TRAIN_LIMIT ?? 60000);
const testLimit = Number(process.env.TEST_LIMIT ?? 10000);
const hidden = Number(process.env.HIDDEN ?? 256);
const rnnUnits = Number(process.env.RNN_UNITS ?? 128);
const lr = Number(process.env.LR ?? 1e-3);
const batchSize = Number(process.env.BATCH ?? 128);
const only = process.env.ONLY;

const mnist = await loadMnist({ trainLimit, testLimit });
console.log(
  `MNIST: ${mnist.trainCount} train / ${mnist.testCount} test; ${epochs} epoch(s), adam lr ${lr}, batch ${batchSize}`,
);

/** Trains a fresh model from `layers` (seeded the same for every network) and returns its test accuracy. */
async function run(
  label: string,
  layers: () => Layer[],
  x: Tensor,
  y: Tensor,
  xt: Tensor,
  yt: Tensor,
): Promise<number> {
  setSeed(7);
  const model: Model = sequential(layers(), { seed: 7 });
  model.compile({
    optimizer: adam({ learningRate: lr }),
    loss: "sparseCategoricalCrossentropy",
    metrics: ["accuracy"],
  });
  const started = performance.now();
  await model.fit(x, y, { epochs, batchSize, verbose: 0 });
  const seconds = (performance.now() - started) / 1000;
  const { accuracy } = await model.evaluate(xt, yt, { batchSize: 512 });
  console.log(`${label}: test accuracy ${(accuracy * 100).toFixed(2)}% (${seconds.toFixed(1)} s of training)`);
  return accuracy;
}

/** Prints the gap and whether it is within the 0.5-point target. */
function compare(what: string, ei: number, plain: number): boolean {
  const gap = (plain - ei) * 100;
  const ok = gap <= 0.5;
  console.log(`${what}: EI - unconstrained = ${(-gap).toFixed(2)} points (${ok ? "within" : "NOT within"} 0.5)`);
  return ok;
}

const yTrain = tensor(mnist.trainLabels, [mnist.trainCount]);
const yTest = tensor(mnist.testLabels, [mnist.testCount]);
let ok = true;

if (only !== "rnn") {
  const x = tensor(mnist.trainImages, [mnist.trainCount, 784]);
  const xt = tensor(mnist.testImages, [mnist.testCount, 784]);
  console.log(`MLP 784-${hidden}-${hidden}-10, relu`);
  const plain = await run(
    "  dense MLP  ",
    () => [
      dense({ units: hidden, activation: "relu", inputShape: [784] }),
      dense({ units: hidden, activation: "relu" }),
      dense({ units: 10, activation: "softmax" }),
    ],
    x,
    yTrain,
    xt,
    yTest,
  );
  const ei = await run(
    "  eiDense MLP",
    () => [
      eiDense({ units: hidden, activation: "relu", inputShape: [784] }),
      eiDense({ units: hidden, activation: "relu" }),
      eiDense({ units: 10, activation: "softmax" }),
    ],
    x,
    yTrain,
    xt,
    yTest,
  );
  ok = compare("MLP", ei, plain) && ok;
}

if (only !== "mlp") {
  const x = tensor(mnist.trainImages, [mnist.trainCount, 28, 28]);
  const xt = tensor(mnist.testImages, [mnist.testCount, 28, 28]);
  console.log(`RNN ${rnnUnits} units, relu, row by row (28 x 28)`);
  const plain = await run(
    "  simpleRNN",
    () => [
      simpleRNN({ units: rnnUnits, activation: "relu", inputShape: [28, 28] }),
      dense({ units: 10, activation: "softmax" }),
    ],
    x,
    yTrain,
    xt,
    yTest,
  );
  const ei = await run(
    "  eiRNN    ",
    () => [
      eiRNN({ units: rnnUnits, excitatoryFraction: 0.8, inputShape: [28, 28] }),
      eiDense({ units: 10, activation: "softmax", inhibitoryUnits: 0, inputExcitatoryFraction: 0.8 }),
    ],
    x,
    yTrain,
    xt,
    yTest,
  );
  ok = compare("RNN", ei, plain) && ok;
}

if (!ok) process.exit(1);
