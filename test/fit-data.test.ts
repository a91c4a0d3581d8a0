/**
 * Training on real data (issue 17): multi-input/multi-output and weighted fit against real
 * Keras 3 runs, streamed batches (async iterables) against the same data as tensors, fit's
 * control options, resumable checkpoints (bit-exact), and the Rust callbacks csvLogger,
 * reduceLROnPlateau and backupAndRestore.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import {
  adam,
  callbacks,
  type DataBatch,
  dense,
  dropout,
  input,
  loadModel,
  type Model,
  model,
  sequential,
  sgd,
  type Tensor,
  tensor,
} from "../index.ts";
import { blobs, randomTensor } from "./helpers.ts";

const fixtures = join(import.meta.dirname, "fixtures", "keras_fit");
const work = mkdtempSync(join(tmpdir(), "cortex-fit-data-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));

interface Arr {
  shape: number[];
  data: number[];
}
interface KerasRun {
  x: Arr[];
  y: Arr[];
  batchSize: number;
  epochs: number;
  history: Record<string, number[]>;
  weights: Arr[];
  sample_weight?: Arr;
  class_weight?: Record<string, number>;
}

const t = (a: Arr) => tensor(Float32Array.from(a.data), a.shape);
const read = (name: string) => JSON.parse(readFileSync(join(fixtures, `${name}.json`), "utf8")) as KerasRun;

function expectClose(actual: ArrayLike<number>, expected: ArrayLike<number>, what: string, tol = 1e-4): void {
  expect(actual.length, what).toBe(expected.length);
  for (let i = 0; i < actual.length; i++) {
    const scale = Math.max(1, Math.abs(expected[i]));
    if (Math.abs(actual[i] - expected[i]) > tol * scale) {
      throw new Error(`${what}[${i}]: ${actual[i]} vs Keras ${expected[i]}`);
    }
  }
}

function expectSameWeights(a: Model, b: Model): void {
  const wa = a.getWeights();
  const wb = b.getWeights();
  expect(wa.length).toBe(wb.length);
  for (const [i, w] of wa.entries()) {
    expect(Buffer.from(w.data.buffer).equals(Buffer.from(wb[i].data.buffer)), `weight ${i}`).toBe(true);
  }
}

async function kerasRun(name: string, fitExtra: object = {}): Promise<void> {
  const run = read(name);
  const m = await loadModel(join(fixtures, `${name}.keras`));
  const xs = run.x.map(t);
  const ys = run.y.map(t);
  const history = await m.fit(xs.length === 1 ? xs[0] : xs, ys.length === 1 ? ys[0] : ys, {
    batchSize: run.batchSize,
    epochs: run.epochs,
    shuffle: false,
    verbose: 0,
    ...fitExtra,
  });
  for (const [key, values] of Object.entries(run.history)) {
    expect(history.history[key], `history key ${key}`).toBeDefined();
    expectClose(history.history[key], values, key);
  }
  for (const [i, w] of m.getWeights().entries()) expectClose(w.data, run.weights[i].data, `weight ${i}`);
}

describe("fit matches Keras 3", () => {
  it("two inputs, two outputs, a loss per output with loss weights, per-output metrics", async () => {
    await kerasRun("multi_io");
  });

  it("classWeight", async () => {
    const run = read("class_weight");
    await kerasRun("class_weight", { classWeight: run.class_weight });
  });

  it("sampleWeight", async () => {
    const run = read("sample_weight");
    await kerasRun("sample_weight", { sampleWeight: t(run.sample_weight as Arr) });
  });

  it("named inputs and targets, evaluate and predict of a multi-output model", async () => {
    const run = read("multi_io");
    const m = await loadModel(join(fixtures, "multi_io.keras"));
    expect(m.inputNames).toEqual(["features", "context"]);
    expect(m.outputNames).toEqual(["label", "score"]);
    const [features, context] = run.x.map(t);
    const [label, score] = run.y.map(t);
    const byName = await m.evaluate({ features, context }, { score, label });
    const byList = await m.evaluate([features, context], [label, score]);
    expect(byName).toEqual(byList);
    expect(Object.keys(byName).sort()).toEqual(["label_accuracy", "label_loss", "loss", "score_loss"]);
    expectClose([byName.loss], [byName.label_loss + 0.5 * byName.score_loss], "weighted total", 1e-6);
    const out = (await m.predict({ features, context })) as Tensor[];
    expect(out.map((o) => o.shape)).toEqual([
      [24, 3],
      [24, 2],
    ]);
    await expect(m.evaluate({ features }, [label, score])).rejects.toThrow(/missing 'context'/);
    await expect(m.fit([features, context], [label], { verbose: 0 })).rejects.toThrow(/expected 2 tensors/);
  });
});

/** Batches of `batch` rows of x, y, in order, from an async generator (a fresh pass each call). */
function stream(x: Tensor, y: Tensor, batch: number): AsyncIterable<DataBatch> {
  const rows = x.shape[0];
  const slice = (v: Tensor, a: number, b: number) => {
    const row = v.data.length / rows;
    return tensor(v.data.slice(a * row, b * row), [b - a, ...v.shape.slice(1)]);
  };
  return {
    async *[Symbol.asyncIterator]() {
      for (let s = 0; s < rows; s += batch) {
        await new Promise((r) => setImmediate(r));
        yield { xs: slice(x, s, Math.min(rows, s + batch)), ys: slice(y, s, Math.min(rows, s + batch)) };
      }
    },
  };
}

function classifier(seed: number): Model {
  const m = sequential(
    [
      dense({ units: 8, activation: "relu", inputShape: [2] }),
      dropout({ rate: 0.2 }),
      dense({ units: 2, activation: "softmax" }),
    ],
    { seed },
  );
  m.compile({ optimizer: adam({ learningRate: 0.01 }), loss: "sparseCategoricalCrossentropy", metrics: ["accuracy"] });
  return m;
}

describe("streamed batches", () => {
  const { x, y } = blobs(200, 3);

  it("train exactly as the same batches given as tensors (validation too)", async () => {
    const a = classifier(5);
    const b = classifier(5);
    const ha = await a.fit(x, y, { epochs: 3, batchSize: 16, shuffle: false, validationData: [x, y], verbose: 0 });
    const hb = await b.fit(stream(x, y, 16), { epochs: 3, validationData: stream(x, y, 16), verbose: 0 });
    expectSameWeights(a, b);
    expect(hb.history).toEqual(ha.history);
    expect(await b.evaluate(stream(x, y, 7))).toEqual(await b.evaluate(x, y, { batchSize: 7 }));
  });

  it("stepsPerEpoch continues one iteration across epochs; validationSteps and validationFreq", async () => {
    const m = classifier(6);
    let passes = 0;
    const counted = {
      [Symbol.asyncIterator]: () => {
        passes++;
        return stream(x, y, 10)[Symbol.asyncIterator]();
      },
    };
    const h = await m.fit(counted, {
      epochs: 4,
      stepsPerEpoch: 5,
      validationData: stream(x, y, 20),
      validationSteps: 2,
      validationFreq: 2,
      verbose: 0,
    });
    expect(passes).toBe(1); // 4 epochs x 5 steps = the 20 batches of one pass
    expect(h.history.loss.length).toBe(4);
    expect(h.history.val_loss.length).toBe(2);
  });

  it("rejects with the source's own error mid-epoch, and the model stays usable", async () => {
    const m = classifier(7);
    const boom = new Error("disk went away");
    const failing = {
      async *[Symbol.asyncIterator]() {
        let i = 0;
        for await (const b of stream(x, y, 20)) {
          if (++i === 4) throw boom;
          yield b;
        }
      },
    };
    await expect(m.fit(failing, { epochs: 2, verbose: 0 })).rejects.toBe(boom);
    expect((await m.predict(x)).shape).toEqual([200, 2]);
    const h = await m.fit(stream(x, y, 20), { epochs: 1, verbose: 0 });
    expect(h.history.loss[0]).toBeLessThan(1);
  });

  it("clear errors: a batch of the wrong shape, data that ends before stepsPerEpoch, a used-up iterator", async () => {
    const m = classifier(8);
    const bad = (async function* () {
      yield { xs: x, ys: y };
      yield { xs: randomTensor([4, 3]), ys: tensor(new Float32Array(4), [4]) };
    })();
    await expect(m.fit(bad, { verbose: 0 })).rejects.toThrow(/batch 2 of epoch 1.*\[4, 3\]/s);
    await expect(m.fit(stream(x, y, 50), { epochs: 1, stepsPerEpoch: 6, verbose: 0 })).rejects.toThrow(
      /ended after 4 batches of epoch 1, but stepsPerEpoch is 6/,
    );
    const once = (async function* () {
      yield { xs: x, ys: y };
    })();
    await expect(m.fit(once, { epochs: 2, verbose: 0 })).rejects.toThrow(/epoch 2 got no batches/);
    await expect(m.fit(x, y, { epochs: 1, stepsPerEpoch: 99, verbose: 0 })).rejects.toThrow(/makes? \d+ batches/);
    await expect(m.fit(x, y, { epochs: 2, initialEpoch: 2, verbose: 0 })).rejects.toThrow(/initialEpoch/);
  });

  it("keeps at most `prefetch` batches queued ahead of the trainer", async () => {
    const m = classifier(9);
    let produced = 0;
    let maxAhead = 0;
    let trained = 0;
    const counting = {
      async *[Symbol.asyncIterator]() {
        for await (const b of stream(x, y, 4)) {
          produced++;
          maxAhead = Math.max(maxAhead, produced - trained);
          yield b;
        }
      },
    };
    await m.fit(counting, {
      epochs: 1,
      prefetch: 3,
      verbose: 0,
      callbacks: [{ onBatchEnd: () => trained++ }],
    });
    expect(produced).toBe(50);
    // Queued (3) + the batch in training + events in flight.
    expect(maxAhead).toBeLessThanOrEqual(3 + 2 + 2);
  });
});

describe("resuming", () => {
  const { x, y } = blobs(120, 4);

  it("1 epoch + save + load + 1 epoch equals 2 epochs, bit for bit (Adam, dropout, shuffling)", async () => {
    const straight = classifier(11);
    await straight.fit(x, y, { epochs: 2, batchSize: 16, verbose: 0 });
    const first = classifier(11);
    await first.fit(x, y, { epochs: 1, batchSize: 16, verbose: 0 });
    await first.save(join(work, "resume"));
    const resumed = await loadModel(join(work, "resume"));
    await resumed.fit(x, y, { epochs: 2, initialEpoch: 1, batchSize: 16, verbose: 0 });
    expectSameWeights(straight, resumed);
  });

  it("backupAndRestore resumes an interrupted run exactly where it stopped, then removes the backup", async () => {
    const backupDir = join(work, "backup");
    const crashing = classifier(12);
    let batches = 0;
    const crashAt = 6 * 2 + 3; // in the third epoch
    const flaky = {
      async *[Symbol.asyncIterator]() {
        for await (const b of stream(x, y, 20)) {
          if (++batches === crashAt) throw new Error("preempted");
          yield b;
        }
      },
    };
    // Streams are not shuffled: compare with the same unshuffled run.
    const plain = classifier(12);
    await plain.fit(x, y, { epochs: 3, batchSize: 20, shuffle: false, verbose: 0 });
    const backup = callbacks.backupAndRestore({ backupDir });
    await expect(crashing.fit(flaky, { epochs: 3, verbose: 0, callbacks: [backup] })).rejects.toThrow(/preempted/);
    expect(existsSync(join(backupDir, "weights.safetensors"))).toBe(true);
    const restarted = classifier(12); // a fresh process would build the model again
    const h = await restarted.fit(stream(x, y, 20), { epochs: 3, verbose: 0, callbacks: [backup] });
    expect(h.history.loss.length).toBe(1); // only the third epoch ran
    expectSameWeights(plain, restarted);
    expect(existsSync(backupDir)).toBe(false);
  });
});

describe("callbacks", () => {
  const { x, y } = blobs(100, 5);

  it("csvLogger writes Keras' columns, one row per epoch", async () => {
    const m = classifier(13);
    const filename = join(work, "log.csv");
    await m.fit(x, y, { epochs: 3, validationSplit: 0.2, verbose: 0, callbacks: [callbacks.csvLogger({ filename })] });
    const lines = readFileSync(filename, "utf8").trim().split("\n");
    expect(lines[0]).toBe("epoch,accuracy,loss,val_accuracy,val_loss");
    expect(lines.length).toBe(4);
    expect(lines[3].split(",")[0]).toBe("2");
  });

  it("reduceLROnPlateau lowers the rate when the monitored loss stalls, and logs learning_rate", async () => {
    const m = sequential([dense({ units: 1, inputShape: [2] })], { seed: 1 });
    m.compile({ optimizer: sgd({ learningRate: 0.1 }), loss: "meanSquaredError" });
    const target = tensor(new Float32Array(100).fill(1), [100, 1]);
    const h = await m.fit(x, target, {
      epochs: 6,
      verbose: 0,
      callbacks: [callbacks.reduceLROnPlateau({ monitor: "loss", patience: 0, factor: 0.5, minDelta: 10 })],
    });
    // minDelta 10: no epoch improves on the first, so from the second on the rate halves after
    // each epoch (the log shows the rate the epoch trained with).
    expect(h.history.learning_rate.map((v) => Math.round(v * 1e6) / 1e6)).toEqual([
      0.1, 0.1, 0.05, 0.025, 0.0125, 0.00625,
    ]);
  });
});

describe("a functional model built here with named inputs", () => {
  it("trains from an object of tensors and a stream of named batches identically", async () => {
    const build = () => {
      const a = input({ shape: [3], name: "a" });
      const b = input({ shape: [2], name: "b" });
      const out = dense({ units: 1, name: "out" }).apply(dense({ units: 4 }).apply(a));
      const out2 = dense({ units: 2, name: "aux" }).apply(b);
      const m = model({ inputs: [a, b], outputs: [out, out2], seed: 3 });
      m.compile({ optimizer: "sgd", loss: { out: "mse", aux: "mse" }, lossWeights: { aux: 0.25 } });
      return m;
    };
    const xa = randomTensor([40, 3], 1);
    const xb = randomTensor([40, 2], 2);
    const ya = randomTensor([40, 1], 3);
    const yb = randomTensor([40, 2], 4);
    const m1 = build();
    const m2 = build();
    m2.setWeights(m1.getWeights());
    await m1.fit({ b: xb, a: xa }, { aux: yb, out: ya }, { batchSize: 10, shuffle: false, epochs: 2, verbose: 0 });
    const batches = async function* () {
      for (let s = 0; s < 40; s += 10) {
        const rows = (v: Tensor) => {
          const w = v.shape[1];
          return tensor(v.data.slice(s * w, (s + 10) * w), [10, w]);
        };
        yield { xs: { a: rows(xa), b: rows(xb) }, ys: { out: rows(ya), aux: rows(yb) } };
      }
    };
    await m2.fit({ [Symbol.asyncIterator]: batches }, { epochs: 2, verbose: 0 });
    expectSameWeights(m1, m2);
  });
});
