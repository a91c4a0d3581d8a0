/**
 * Hostile model files: every crafted file is refused with an Error, quickly, by a child process
 * whose peak memory stays under 1 GB (a loader that allocates what a file declares before
 * checking it would abort or be killed instead).
 */
import { execFileSync, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  batchNormalization,
  conv2d,
  dense,
  embedding,
  flatten,
  getMaxModelBytes,
  gru,
  input,
  layerNormalization,
  loadModel,
  lstm,
  model,
  multiHeadAttention,
  positionalEmbedding,
  sequential,
  setMaxModelBytes,
  simpleRNN,
  tensor,
  upSampling2d,
  zeroPadding2d,
} from "../index.ts";
import { native } from "../src/native.ts";
import { encodeSafetensors, SavedModel, sparseFile } from "./hostile/craft.ts";

const root = mkdtempSync(join(tmpdir(), "cortex-hostile-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const bases = {
  dense: () => sequential([dense({ units: 4, inputShape: [2] }), dense({ units: 3 })]),
  conv: () =>
    sequential([conv2d({ filters: 2, kernelSize: 3, inputShape: [6, 6, 1] }), flatten(), dense({ units: 2 })]),
  recurrent: () =>
    sequential([
      lstm({ units: 3, returnSequences: true, inputShape: [4, 2] }),
      gru({ units: 2, returnSequences: true }),
      simpleRNN({ units: 2 }),
    ]),
  tokens: () =>
    sequential([
      embedding({ inputDim: 10, outputDim: 4, inputShape: [5] }),
      positionalEmbedding({ sequenceLength: 5 }),
      layerNormalization(),
      batchNormalization(),
    ]),
  attention: () => {
    const x = input({ shape: [5, 8] });
    return model({ inputs: x, outputs: multiHeadAttention({ numHeads: 2, keyDim: 4 }).apply([x, x]) });
  },
  upsampling: () => sequential([upSampling2d({ size: 2, inputShape: [4, 4, 1] }), flatten(), dense({ units: 2 })]),
};
type Base = keyof typeof bases;

interface Crafted {
  name: string;
  base: Base;
  /** Changes the topology or tensors before the files are written. */
  edit?: (m: SavedModel) => void;
  /** Rewrites the written files. */
  files?: (m: SavedModel, dir: string) => void;
  expected: RegExp;
  maxBytes?: number;
  predict?: number[];
}

/** Keeps only the UpSampling2D layer (no weights) and gives it `size`. */
function upsamplingOnly(size: [number, number]) {
  return (m: SavedModel) => {
    m.layer(0).size = size;
    m.tensors = [];
    (m.topology.config as { layers: unknown[] }).layers.splice(1);
  };
}

const over = /over the .* limit|below 2\^31|more elements than memory/;
const cases: Crafted[] = [
  // Huge declared sizes, one per layer kind: refused before the weights are allocated.
  { name: "Dense units 4e12", base: "dense", edit: (m) => (m.layer(0).units = 4e12), expected: /below 2\^31/ },
  { name: "Dense units 2e9", base: "dense", edit: (m) => (m.layer(1).units = 2e9), expected: over },
  {
    name: "Dense inputShape 2e9",
    base: "dense",
    edit: (m) => {
      m.layer(0).inputShape = [2e9];
      (m.topology.config as { inputShape: number[] }).inputShape = [2e9];
    },
    expected: over,
  },
  { name: "Conv2D filters 2e9", base: "conv", edit: (m) => (m.layer(0).filters = 2e9), expected: over },
  { name: "Conv2D kernel 4e4", base: "conv", edit: (m) => (m.layer(0).kernelSize = [4e4, 4e4]), expected: /./ },
  { name: "LSTM units 2e9", base: "recurrent", edit: (m) => (m.layer(0).units = 2e9), expected: over },
  { name: "GRU units 1e9", base: "recurrent", edit: (m) => (m.layer(1).units = 1e9), expected: over },
  { name: "SimpleRNN units 2e9", base: "recurrent", edit: (m) => (m.layer(2).units = 2e9), expected: over },
  { name: "Embedding inputDim 2e9", base: "tokens", edit: (m) => (m.layer(0).inputDim = 2e9), expected: over },
  { name: "Embedding outputDim 2e9", base: "tokens", edit: (m) => (m.layer(0).outputDim = 2e9), expected: over },
  {
    name: "PositionalEmbedding sequenceLength 2e9",
    base: "tokens",
    edit: (m) => {
      m.layer(0).inputShape = [2e9];
      m.layer(1).sequenceLength = 2e9;
    },
    expected: over,
  },
  {
    name: "MultiHeadAttention numHeads 1e6 keyDim 1e6",
    base: "attention",
    edit: (m) => {
      const layers = (m.topology.config as { layers: { className: string; config: Record<string, unknown> }[] }).layers;
      const mha = layers.find((l) => l.className === "MultiHeadAttention");
      if (!mha) throw new Error("no attention layer in the base model");
      mha.config.numHeads = 1e6;
      mha.config.keyDim = 1e6;
    },
    expected: over,
  },
  // Sizes that are not sizes.
  { name: "negative units", base: "dense", edit: (m) => (m.layer(0).units = -4), expected: /units/ },
  { name: "fractional units", base: "dense", edit: (m) => (m.layer(0).units = 2.5), expected: /units/ },
  { name: "NaN units", base: "dense", edit: (m) => (m.layer(0).units = "NaN"), expected: /units/ },
  {
    name: "null inputShape entry",
    base: "dense",
    edit: (m) => (m.layer(0).inputShape = [null]),
    expected: /inputShape/,
  },
  // No weights, but outputs past 2^31 per axis: refused when the layer is built.
  {
    name: "UpSampling2D size 2^30",
    base: "upsampling",
    edit: upsamplingOnly([2 ** 30, 2 ** 30]),
    expected: /not below 2\^31/,
  },
  // No weights and valid dimensions, but 4 TiB of activations per sample: the load works,
  // the predict is refused before anything is allocated.
  {
    name: "UpSampling2D size [2^17, 2^19], then predict",
    base: "upsampling",
    edit: upsamplingOnly([2 ** 17, 2 ** 19]),
    predict: [1, 4, 4, 1],
    expected: /smaller batchSize/,
  },
  // Broken safetensors.
  {
    name: "offsets past the end of the file",
    base: "dense",
    files: (m, dir) => {
      const t = m.tensors.map((x, i) => (i === 0 ? { ...x, offsets: [0, 1e9] as [number, number] } : x));
      writeFileSync(join(dir, "weights.safetensors"), encodeSafetensors(t));
    },
    expected: /corrupt weights file/,
  },
  {
    name: "header length 2^60",
    base: "dense",
    files: (m, dir) => {
      writeFileSync(join(dir, "weights.safetensors"), encodeSafetensors(m.tensors, undefined, 2n ** 60n));
    },
    expected: /corrupt weights file/,
  },
  {
    name: "f64 dtype where f32 is expected",
    base: "dense",
    edit: (m) => {
      const i = m.tensors.findIndex((t) => t.name === "dense/kernel");
      const k = m.tensors[i];
      m.tensors[i] = { ...k, dtype: "F64", shape: [k.shape[0], k.shape[1] / 2] };
    },
    expected: /should be f32/,
  },
  {
    name: "a 1 TiB sparse weights file",
    base: "dense",
    files: (_, dir) => {
      sparseFile(join(dir, "weights.safetensors"), 2 ** 40);
    },
    expected: /over the .* limit/,
  },
  {
    name: "weights over maxBytes",
    base: "dense",
    maxBytes: 16,
    expected: /over the 16 B limit \(maxBytes/,
  },
  // Hostile JSON.
  {
    name: "deeply nested model.json",
    base: "dense",
    files: (m, dir) => m.write(dir, `${"[".repeat(1e6)}${"]".repeat(1e6)}`),
    expected: /recursion limit|invalid JSON/,
  },
  {
    name: "a 1 GiB sparse model.json",
    base: "dense",
    files: (_, dir) => {
      sparseFile(join(dir, "model.json"), 2 ** 30);
    },
    expected: /over the .* limit/,
  },
];

describe("hostile model files", () => {
  const dirs = new Map<string, string>();
  beforeAll(async () => {
    for (const [name, make] of Object.entries(bases)) {
      const dir = join(root, `base-${name}`);
      await make().save(dir);
      dirs.set(name, dir);
    }
  });

  it("the unmodified bases load (so the refusals below are about the edits)", async () => {
    for (const dir of dirs.values()) await expect(loadModel(dir)).resolves.toBeDefined();
  });

  it("every crafted file is refused with an Error, quickly, under 1 GB of peak memory", () => {
    const manifest = cases.map((c, i) => {
      const dir = join(root, `case-${i}`);
      mkdirSync(dir);
      const saved = new SavedModel(dirs.get(c.base) as string);
      c.edit?.(saved);
      saved.write(dir);
      c.files?.(saved, dir);
      return { name: c.name, dir, maxBytes: c.maxBytes, predict: c.predict };
    });
    const manifestPath = join(root, "manifest.json");
    writeFileSync(manifestPath, JSON.stringify(manifest));
    const out = execFileSync(process.execPath, ["--import", "tsx", "test/hostile/load-child.ts", manifestPath], {
      encoding: "utf8",
      timeout: 120_000,
    });
    const report = JSON.parse(out.trim().split("\n").pop() as string) as {
      results: { name: string; error: string | null; ms: number }[];
      peakRssBytes: number;
    };
    const slowest = report.results.reduce((a, b) => (b.ms > a.ms ? b : a));
    console.log(
      `${report.results.length} crafted files refused; slowest ${slowest.ms.toFixed(1)} ms (${slowest.name}); ` +
        `child peak RSS ${(report.peakRssBytes / 2 ** 20).toFixed(0)} MiB`,
    );
    const unexpected = report.results.filter((r, i) => !r.error || !cases[i].expected.test(r.error));
    expect(unexpected).toEqual([]);
    for (const [i, r] of report.results.entries()) {
      expect(r.error, r.name).not.toBeNull();
      expect(r.error, r.name).toMatch(cases[i].expected);
      expect(r.ms, r.name).toBeLessThan(2000);
    }
    expect(report.results).toHaveLength(cases.length);
    expect(report.peakRssBytes).toBeLessThan(2 ** 30);
  });
});

describe("hostile requests and sizes", () => {
  it("layer sizes that cannot be allocated throw instead of aborting", () => {
    expect(() => dense({ units: 4e12 })).toThrow(/below 2\^31/);
    expect(() => sequential([lstm({ units: 2e9, inputShape: [4, 2] })])).toThrow(/over the 16\.0 GiB limit/);
    expect(() => sequential([dense({ units: 1e9, inputShape: [1e9] })])).toThrow(/over the 16\.0 GiB limit/);
  });

  it("regressions found by the fuzzer: padding sizes past 2^31, rank-0 inputs, inputs of another shape", async () => {
    // Was a Rust panic (capacity overflow): the padded output overflowed usize.
    expect(() => zeroPadding2d({ padding: 2 ** 31 - 1 }).build([3, 3, 4])).toThrow(/not below 2\^31/);
    // Was a Rust panic (slice index): 1e20 became usize::MAX and the output size wrapped.
    expect(() => zeroPadding2d({ padding: [1, 1e20] })).toThrow(/below 2\^31/);
    // Was a Rust panic (index out of bounds): a rank-0 input to predict, before the shape check.
    const net = new native.NativeModel(
      JSON.stringify({
        className: "Sequential",
        layers: [{ className: "Dense", config: { units: 2, inputShape: [1] } }],
      }),
      1,
    );
    await expect(net.predict(new Float32Array(1), [])).rejects.toThrow(/\[batch, \.\.\.sample shape\]/);
    // Was a Rust panic: a layer applied to samples of another shape than it was built for.
    const pad = zeroPadding2d({ padding: 1 });
    pad.build([3, 3, 4]);
    expect(() => pad.apply(tensor(new Float32Array(8), [1, 2, 1, 4]))).toThrow(/built for samples of shape/);
  });

  it("the size limits are validated, and setMaxModelBytes caps what a layer may allocate", async () => {
    await expect(loadModel(join(root, "base-dense"), { maxBytes: -1 })).rejects.toThrow(
      /maxBytes must be a positive integer/,
    );
    expect(() => setMaxModelBytes(0)).toThrow(/positive integer/);
    const cap = getMaxModelBytes();
    expect(cap).toBe(16 * 2 ** 30);
    setMaxModelBytes(1024);
    try {
      expect(() => sequential([dense({ units: 300, inputShape: [1] })])).toThrow(/over the 1\.0 KiB limit/);
      expect(sequential([dense({ units: 4, inputShape: [2] })]).getWeights()).toHaveLength(2);
    } finally {
      setMaxModelBytes(cap);
    }
  });

  it("a predict batch whose activations cannot fit in memory is refused before it runs", async () => {
    const m = sequential([upSampling2d({ size: 256, inputShape: [8, 8, 1] }), flatten()]);
    const x = tensor(new Float32Array(32768 * 64), [32768, 8, 8, 1]);
    await expect(m.predict(x, { batchSize: 32768 })).rejects.toThrow(
      /needs about .* of activations.*smaller batchSize/,
    );
    // The same model still predicts a batch that fits.
    const y = await m.predict(tensor(new Float32Array(64), [1, 8, 8, 1]));
    expect(y.shape).toEqual([1, 2048 * 2048]);
  });
});

describe("save under SIGKILL", () => {
  it("a process killed at random points of save never leaves an unreadable model", async () => {
    const dir = join(root, "killed");
    const shapes = new Set<string>();
    for (let round = 0; round < 12; round++) {
      const child = spawn(process.execPath, ["--import", "tsx", "test/hostile/save-child.ts", dir], {
        stdio: ["ignore", "pipe", "inherit"],
      });
      let saves = 0;
      child.stdout.on("data", (b: Buffer) => {
        saves += b.toString().split("saved").length - 1;
      });
      // Wait for at least one complete save, then kill at a random moment of the next ones.
      while (saves === 0 && child.exitCode === null) await new Promise((r) => setTimeout(r, 5));
      await new Promise((r) => setTimeout(r, Math.random() * 40));
      child.kill("SIGKILL");
      await new Promise((r) => child.once("exit", r));
      const loaded = await loadModel(dir);
      const y = await loaded.predict(tensor(new Float32Array(32), [1, 32]));
      expect(y.data.every(Number.isFinite)).toBe(true);
      shapes.add(JSON.stringify(loaded.outputShape));
    }
    for (const s of shapes) expect(["[3]", "[5]"]).toContain(s);
  }, 60_000);

  it("the state a kill between the two renames leaves (new weights, old model.json) loads the new model", async () => {
    const dir = join(root, "interrupted");
    const a = sequential([dense({ units: 4, inputShape: [2] })], { seed: 1 });
    const b = sequential([dense({ units: 6, inputShape: [2] }), dense({ units: 5 })], { seed: 2 });
    await a.save(dir);
    const oldTopology = readFileSync(join(dir, "model.json"));
    await b.save(dir);
    writeFileSync(join(dir, "model.json"), oldTopology);
    const x = tensor([0.5, -1], [1, 2]);
    expect((await (await loadModel(dir)).predict(x)).data).toEqual((await b.predict(x)).data);
    // The first save of a directory, killed before model.json was renamed into place.
    rmSync(join(dir, "model.json"));
    expect((await loadModel(dir)).outputShape).toEqual([5]);
  });
});
