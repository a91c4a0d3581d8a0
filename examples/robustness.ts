/**
 * Robustness of the MNIST demo convnet (examples/convnet.ts), trained plainly and adversarially:
 * clean test accuracy, accuracy under PGD-40 (L∞, random start) at several ε, and accuracy under
 * Gaussian input noise (clipped to [0, 1]). Writes a table (robustness.json) and a chart
 * (robustness.png) to OUT_DIR (default ./robustness-out).
 *
 *   npm run robustness
 *   EPOCHS=1 ADV_EPOCHS=1 TRAIN_LIMIT=6000 EVAL_LIMIT=200 npm run robustness   (quick run)
 *
 * Knobs: EPOCHS (plain training, default 3), ADV_EPOCHS (adversarial training, default 20),
 * TRAIN_EPSILON (default 0.125), TRAIN_LIMIT (training images, default all 60,000), EVAL_LIMIT
 * (test images attacked with PGD, default the first 1000), TEST_LIMIT (test images for the clean
 * and noise accuracies, default all 10,000), SEED (default 42), OUT_DIR.
 *
 * Adversarial training is FGSM with a uniform random start in the ε_train ball and a step of
 * 1.25 ε_train (Wong, Rice and Kolter 2020), through `fit({ adversarial })`. PGD evaluation:
 * 40 steps of max(0.01, 2.5 ε / 40) (0.01 is Madry et al.'s MNIST step; 2.5 ε / steps their rule
 * of thumb), one random start, seeded.
 *
 * Measured here (all 60,000 training images, clean and noise accuracy on the 10,000 test images,
 * PGD on the first 1000; a 2-core machine shared with other jobs, so times vary):
 *
 *                         clean   PGD ε 0.05  0.1     0.2     0.3     σ 0.1   0.3     0.5
 *   plain, 3 epochs       98.82%  91.40%  57.10%   0.00%   0.00%   98.76%  90.77%  45.16%
 *   adversarial, 20 ep.   98.52%  97.50%  95.30%  57.70%   0.60%   98.46%  82.59%  20.62%
 *   adversarial, 15 ep.   98.49%  97.50%  94.80%  52.10%   0.50%   98.48%  90.80%  35.87%
 *   adversarial, 10 ep.   98.23%  96.70%  93.90%  55.60%   0.30%   98.08%  86.29%  33.22%
 *
 * (the 10- and 20-epoch rows are separate runs with ADV_EPOCHS=10 and 20, whose plain models
 * measured 98.83% / 57.90% and 98.84% / 56.40% clean / PGD ε 0.1; the 20-epoch run, the
 * default, took 12 minutes in all here, 585 s of it adversarial training; the 15-epoch run 11
 * minutes with another job of ours running for 3 of them, the 10-epoch run 7.8 minutes).
 * Targets: PGD-40 ε 0.1 ≥ 94% and clean ≥ 98.5% are both met at the default 20 epochs; at 15,
 * clean accuracy missed by one image in 10,000 (98.49%). ε 0.3 is out of reach for this small network trained at ε 0.125
 * (Madry et al. reach 89% with a larger network, PGD training at ε 0.3 and far more compute).
 * Adversarial training made the model less robust to large Gaussian noise (σ 0.5: 35.9% vs 45.2%
 * at 15 epochs, 20.6% at 20).
 */
import { writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { adam, attacks, loadMnist, type Model, schedules, setSeed, Tensor, tensor, writePng } from "../index.ts";
import { mnistConvnet } from "./convnet.ts";
import { lineCharts, type Rgb } from "./plot.ts";

/** Settings of {@link main}; each defaults to its environment variable, then to the documented value. */
export interface RobustnessOptions {
  epochs?: number;
  advEpochs?: number;
  trainEpsilon?: number;
  trainLimit?: number;
  evalLimit?: number;
  testLimit?: number;
  epsilons?: number[];
  sigmas?: number[];
  seed?: number;
  outDir?: string;
  /** fit's verbosity (default 2, one line per epoch). */
  verbose?: 0 | 1 | 2;
}

/** The measurements of one model. */
export interface ModelReport {
  name: string;
  trainSeconds: number;
  /** Accuracy on the first `testLimit` test images. */
  cleanAccuracy: number;
  /** Accuracy under PGD on the first `evalLimit` test images (ε = 0 is the clean accuracy there). */
  pgd: { epsilon: number; stepSize: number; accuracy: number }[];
  /** Accuracy with Gaussian noise of standard deviation σ added (then clipped to [0, 1]). */
  noise: { sigma: number; accuracy: number }[];
}

/** What {@link main} returns and writes as JSON. */
export interface RobustnessReport {
  settings: Required<Omit<RobustnessOptions, "verbose" | "outDir" | "trainLimit">> & {
    trainImages: number;
    pgdSteps: number;
    trainAttack: string;
  };
  models: ModelReport[];
  png: string;
  json: string;
}

const num = (name: string, fallback: number) => (process.env[name] ? Number(process.env[name]) : fallback);

/** mulberry32: a small seeded generator of uniform numbers in [0, 1). */
function uniform(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `clip(x + σ z, 0, 1)` with z standard normal (Box-Muller), seeded. */
function addNoise(x: Tensor, sigma: number, seed: number): Tensor {
  const u = uniform(seed);
  const out = new Float32Array(x.data.length);
  for (let i = 0; i < out.length; i += 2) {
    const r = Math.sqrt(-2 * Math.log(1 - u()));
    const theta = 2 * Math.PI * u();
    out[i] = Math.min(1, Math.max(0, x.data[i] + sigma * r * Math.cos(theta)));
    if (i + 1 < out.length) out[i + 1] = Math.min(1, Math.max(0, x.data[i + 1] + sigma * r * Math.sin(theta)));
  }
  return new Tensor(out, x.shape);
}

const PGD_STEPS = 40;
const pgdStep = (epsilon: number) => Math.max(0.01, (2.5 * epsilon) / PGD_STEPS);

/** Trains both models, measures them, prints the table and writes robustness.json and robustness.png. */
export async function main(options: RobustnessOptions = {}): Promise<RobustnessReport> {
  const epochs = options.epochs ?? num("EPOCHS", 3);
  const advEpochs = options.advEpochs ?? num("ADV_EPOCHS", 20);
  const trainEpsilon = options.trainEpsilon ?? num("TRAIN_EPSILON", 0.125);
  const trainLimit = options.trainLimit ?? (process.env.TRAIN_LIMIT ? Number(process.env.TRAIN_LIMIT) : undefined);
  const evalLimit = options.evalLimit ?? num("EVAL_LIMIT", 1000);
  const testLimit = options.testLimit ?? num("TEST_LIMIT", 10000);
  const epsilons = options.epsilons ?? [0, 0.05, 0.1, 0.2, 0.3];
  const sigmas = options.sigmas ?? [0, 0.1, 0.2, 0.3, 0.4, 0.5];
  const seed = options.seed ?? num("SEED", 42);
  const outDir = resolve(options.outDir ?? process.env.OUT_DIR ?? "robustness-out");
  const verbose = options.verbose ?? 2;

  setSeed(seed);
  const mnist = await loadMnist({ trainLimit, testLimit: Math.max(evalLimit, testLimit) });
  const xTrain = tensor(mnist.trainImages, [mnist.trainCount, 28, 28, 1]);
  const yTrain = tensor(mnist.trainLabels, [mnist.trainCount]);
  const nTest = Math.min(testLimit, mnist.testCount);
  const nEval = Math.min(evalLimit, mnist.testCount);
  const xTest = tensor(mnist.testImages.subarray(0, nTest * 784), [nTest, 28, 28, 1]);
  const yTest = tensor(mnist.testLabels.subarray(0, nTest), [nTest]);
  const xEval = tensor(mnist.testImages.subarray(0, nEval * 784), [nEval, 28, 28, 1]);
  const yEval = tensor(mnist.testLabels.subarray(0, nEval), [nEval]);
  const trainAttack = `FGSM, random start, eps ${trainEpsilon}, step ${1.25 * trainEpsilon}`;
  console.log(
    `MNIST: ${mnist.trainCount} training images; clean and noise accuracy on the first ${nTest} test images, ` +
      `PGD-${PGD_STEPS} on the first ${nEval}`,
  );

  const train = async (name: string, epochCount: number, adversarial: boolean): Promise<[Model, number]> => {
    const m = mnistConvnet();
    const decaySteps = Math.max(1, epochCount * Math.ceil(mnist.trainCount / 128));
    m.compile({
      optimizer: adam({ learningRate: schedules.cosineDecay({ initialLearningRate: 5e-3, decaySteps }) }),
      loss: "sparseCategoricalCrossentropy",
      metrics: ["accuracy"],
    });
    console.log(`Training ${name} (${epochCount} epochs${adversarial ? `, ${trainAttack}` : ""})`);
    const started = performance.now();
    await m.fit(xTrain, yTrain, {
      epochs: epochCount,
      batchSize: 128,
      verbose,
      adversarial: adversarial
        ? { epsilon: trainEpsilon, steps: 1, stepSize: 1.25 * trainEpsilon, randomStart: true }
        : undefined,
    });
    return [m, (performance.now() - started) / 1000];
  };

  const measure = async (name: string, m: Model, trainSeconds: number): Promise<ModelReport> => {
    const accuracy = async (x: Tensor, y: Tensor) => (await m.evaluate(x, y, { batchSize: 256 })).accuracy as number;
    const pgd: ModelReport["pgd"] = [];
    for (const epsilon of epsilons) {
      const stepSize = pgdStep(epsilon);
      const x =
        epsilon === 0
          ? xEval
          : await attacks.pgd(m, xEval, yEval, { epsilon, steps: PGD_STEPS, stepSize, randomStart: true, seed });
      pgd.push({ epsilon, stepSize: epsilon === 0 ? 0 : stepSize, accuracy: await accuracy(x, yEval) });
    }
    const noise: ModelReport["noise"] = [];
    for (const sigma of sigmas) {
      const x = sigma === 0 ? xTest : addNoise(xTest, sigma, seed + Math.round(sigma * 1000));
      noise.push({ sigma, accuracy: await accuracy(x, yTest) });
    }
    return {
      name,
      trainSeconds,
      cleanAccuracy: noise.find((r) => r.sigma === 0)?.accuracy ?? (await accuracy(xTest, yTest)),
      pgd,
      noise,
    };
  };

  const models: ModelReport[] = [];
  const [plain, plainSeconds] = await train("plain", epochs, false);
  models.push(await measure("plain", plain, plainSeconds));
  const [robust, robustSeconds] = await train("adversarial", advEpochs, true);
  models.push(await measure("adversarial", robust, robustSeconds));

  const pct = (v: number) => `${(v * 100).toFixed(2)}%`.padStart(8);
  console.log(
    `\n${"".padEnd(14)}${"train s".padStart(8)}${"clean".padStart(8)}` +
      epsilons
        .filter((e) => e > 0)
        .map((e) => `PGD ${e}`.padStart(10))
        .join("") +
      sigmas
        .filter((s) => s > 0)
        .map((s) => `σ ${s}`.padStart(9))
        .join(""),
  );
  for (const r of models) {
    console.log(
      r.name.padEnd(14) +
        r.trainSeconds.toFixed(0).padStart(8) +
        pct(r.cleanAccuracy) +
        r.pgd
          .filter((p) => p.epsilon > 0)
          .map((p) => pct(p.accuracy).padStart(10))
          .join("") +
        r.noise
          .filter((p) => p.sigma > 0)
          .map((p) => pct(p.accuracy).padStart(9))
          .join(""),
    );
  }
  console.log(
    `(clean and σ: first ${nTest} test images; PGD: first ${nEval}, ${PGD_STEPS} steps of ` +
      `${epsilons
        .filter((e) => e > 0)
        .map((e) => `${pgdStep(e)} at ε ${e}`)
        .join(", ")}, random start)`,
  );

  const colors: Rgb[] = [
    [31, 119, 180],
    [214, 39, 40],
  ];
  const fmt = (v: number) => (v === 0 ? "0" : v.toFixed(2).replace(/0$/, ""));
  const chart = lineCharts([
    {
      title: `ACCURACY UNDER PGD-${PGD_STEPS} (${nEval} IMAGES)`,
      xLabel: "EPSILON (L-INF)",
      xTicks: [0, 0.1, 0.2, 0.3],
      xFormat: fmt,
      yTicks: [0, 0.2, 0.4, 0.6, 0.8, 1],
      yFormat: (v) => `${Math.round(v * 100)}%`,
      series: models.map((r, i) => ({
        label: r.name,
        color: colors[i],
        points: r.pgd.map((p) => [p.epsilon, p.accuracy] as [number, number]),
      })),
    },
    {
      title: `ACCURACY UNDER NOISE (${nTest} IMAGES)`,
      xLabel: "SIGMA",
      xTicks: [0, 0.1, 0.2, 0.3, 0.4, 0.5],
      xFormat: fmt,
      yTicks: [0, 0.2, 0.4, 0.6, 0.8, 1],
      yFormat: (v) => `${Math.round(v * 100)}%`,
      series: models.map((r, i) => ({
        label: r.name,
        color: colors[i],
        points: r.noise.map((p) => [p.sigma, p.accuracy] as [number, number]),
      })),
    },
  ]);
  const png = join(outDir, "robustness.png");
  const json = join(outDir, "robustness.json");
  await writePng(png, chart.rgb, chart.width, chart.height, 3);
  const report: RobustnessReport = {
    settings: {
      epochs,
      advEpochs,
      trainEpsilon,
      trainImages: mnist.trainCount,
      evalLimit: nEval,
      testLimit: nTest,
      epsilons,
      sigmas,
      seed,
      pgdSteps: PGD_STEPS,
      trainAttack,
    },
    models,
    png,
    json,
  };
  await writeFile(json, `${JSON.stringify(report, null, 2)}\n`);
  console.log(`Wrote ${png} and ${json}`);
  return report;
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) await main();
