import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { callbacks, dense, sequential } from "../index.ts";
import { native } from "../src/native.ts";
import { blobs } from "./helpers.ts";

const reader = join(import.meta.dirname, "fixtures/tensorboard/read_events.py");
const hasTensorBoard = spawnSync("python3", ["-c", "import tensorboard"]).status === 0;
if (!hasTensorBoard) {
  console.warn(
    "tensorboard.test: skipping the read-back tests: python3 cannot import tensorboard (pip install tensorboard)",
  );
}

interface Histogram {
  step: number;
  min: number;
  max: number;
  num: number;
  sum: number;
  sum_squares: number;
  bucket_total: number;
}
interface Run {
  scalars: Record<string, { step: number; value: number }[]>;
  histograms: Record<string, Histogram[]>;
  files: { file: string; records: number; first_file_version: string }[];
}

/** The log directory as TensorBoard's EventAccumulator and event_file_loader read it. */
function readLogDir(dir: string): Record<string, Run> {
  return JSON.parse(execFileSync("python3", [reader, dir], { encoding: "utf8" }));
}

const dirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), "cortex-tb-"));
  dirs.push(d);
  return d;
}
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function model() {
  const m = sequential(
    [dense({ units: 8, activation: "relu", inputShape: [2] }), dense({ units: 2, activation: "softmax" })],
    { seed: 3 },
  );
  m.compile({ optimizer: "adam", loss: "sparseCategoricalCrossentropy", metrics: ["accuracy"] });
  return m;
}

/** float32 storage: TensorBoard keeps scalars as float32. */
function expectF32(got: number, want: number): void {
  expect(got).toBe(Math.fround(want));
}

describe("callbacks.tensorBoard", () => {
  it("validates its arguments", () => {
    expect(() => callbacks.tensorBoard({ logDir: "" })).toThrow(/logDir/);
    expect(() => callbacks.tensorBoard({ logDir: "x", updateFreq: 0 })).toThrow(/updateFreq/);
    expect(() => callbacks.tensorBoard({ logDir: "x", updateFreq: "step" as "epoch" })).toThrow(/updateFreq/);
    expect(() => callbacks.tensorBoard({ logDir: "x", histogramFreq: -1 })).toThrow(/histogramFreq/);
    expect(() => callbacks.tensorBoard({ logDir: "x", logdir: "y" } as { logDir: string })).toThrow(/unknown option/);
  });

  it.skipIf(!hasTensorBoard)("writes epoch scalars TensorBoard's loader reads, train/ and validation/", async () => {
    const logDir = tempDir();
    const { x, y } = blobs(64);
    const val = blobs(32, 9);
    const m = model();
    const history = await m.fit(x, y, {
      epochs: 3,
      batchSize: 16,
      validationData: [val.x, val.y],
      verbose: 0,
      callbacks: [callbacks.tensorBoard({ logDir })],
    });
    expect(readdirSync(logDir).sort()).toEqual(["train", "validation"]);
    for (const run of ["train", "validation"]) {
      const [file] = readdirSync(join(logDir, run));
      expect(file).toMatch(/^events\.out\.tfevents\.\d{10}\.[^.]+.*\.\d+\.\d+$/);
    }
    const runs = readLogDir(logDir);
    for (const run of ["train", "validation"]) {
      expect(runs[run].files).toHaveLength(1);
      expect(runs[run].files[0].first_file_version).toBe("brain.Event:2");
    }
    const train = runs.train.scalars;
    const validation = runs.validation.scalars;
    expect(Object.keys(train).sort()).toEqual(["epoch_accuracy", "epoch_loss"]);
    expect(Object.keys(validation).sort()).toEqual(["epoch_accuracy", "epoch_loss"]);
    for (const [name, series] of [
      ["loss", train.epoch_loss],
      ["accuracy", train.epoch_accuracy],
      ["val_loss", validation.epoch_loss],
      ["val_accuracy", validation.epoch_accuracy],
    ] as const) {
      expect(series.map((e) => e.step)).toEqual([0, 1, 2]);
      for (const [i, e] of series.entries()) expectF32(e.value, history.history[name][i]);
    }
  });

  it.skipIf(!hasTensorBoard)("writes batch scalars every updateFreq batches at the global batch number", async () => {
    const logDir = tempDir();
    const { x, y } = blobs(64);
    const m = model();
    const batches: number[] = [];
    const losses = new Map<number, number>();
    let epoch = 0;
    await m.fit(x, y, {
      epochs: 2,
      batchSize: 16,
      verbose: 0,
      callbacks: [
        callbacks.tensorBoard({ logDir, updateFreq: 3 }),
        {
          onBatchEnd: (batch, logs) => {
            const step = epoch * 4 + batch + 1;
            batches.push(step);
            losses.set(step, logs.loss);
          },
          onEpochEnd: (e) => {
            epoch = e + 1;
          },
        },
      ],
    });
    expect(batches).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    const { scalars } = readLogDir(logDir).train;
    expect(Object.keys(scalars).sort()).toEqual(["batch_accuracy", "batch_loss", "epoch_accuracy", "epoch_loss"]);
    expect(scalars.batch_loss.map((e) => e.step)).toEqual([3, 6]);
    for (const e of scalars.batch_loss) expectF32(e.value, losses.get(e.step) as number);
  });

  it.skipIf(!hasTensorBoard)(
    "fit with histogramFreq writes weight histograms each epoch that TensorBoard reads",
    async () => {
      const logDir = tempDir();
      const m = model();
      const { x, y } = blobs(64);
      await m.fit(x, y, { epochs: 3, verbose: 0, callbacks: [callbacks.tensorBoard({ logDir, histogramFreq: 1 })] });
      const names = m.weightNames();
      const weights = m.getWeights();
      const { histograms } = readLogDir(logDir).train;
      expect(Object.keys(histograms).sort()).toEqual(names.map((n) => `${n}/histogram`).sort());
      for (const [i, w] of weights.entries()) {
        const events = histograms[`${names[i]}/histogram`];
        expect(events.map((h) => h.step)).toEqual([0, 1, 2]);
        // The last epoch's histogram describes the weights fit ended with.
        const h = events[2];
        expect(h.num).toBe(w.data.length);
        expect(h.bucket_total).toBe(w.data.length);
        expect(h.min).toBe(Math.min(...w.data));
        expect(h.max).toBe(Math.max(...w.data));
        expect(h.sum).toBeCloseTo(
          w.data.reduce((a, b) => a + b, 0),
          5,
        );
      }
      const writer = new native.NativeEventWriter(join(logDir, "closed"), "test-host");
      writer.close();
      expect(() => writer.scalar("x", 0, 1)).toThrow(/closed/);
    },
  );
});
