/**
 * Interchange from the API: Keras 3 `.keras` files load to Keras' predictions; models saved as
 * `.keras` open in real Keras 3 (when python3 has keras; skipped with a notice otherwise) and
 * as tfjs layers-models in `tf.loadLayersModel`; tfjs layers-models (float32 and quantized)
 * load into cortex-nn with tfjs' outputs. Every family of layers is checked against Keras in
 * crates/formats/tests/keras_files.rs; this file checks the paths a user takes.
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as tf from "@tensorflow/tfjs";
import { afterAll, describe, expect, it } from "vitest";
import {
  conv2d,
  dense,
  flatten,
  gru,
  loadModel,
  lstm,
  maxPooling2d,
  sequential,
  type Tensor,
  tensor,
} from "../index.ts";
import { randomTensor } from "./helpers.ts";

const fixtures = join(import.meta.dirname, "fixtures", "keras");
const work = mkdtempSync(join(tmpdir(), "cortex-interchange-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));

type Record = { shape: number[]; data: number[] };
const fixture = (name: string) =>
  JSON.parse(readFileSync(join(fixtures, `${name}.json`), "utf8")) as { inputs: Record[]; outputs: Record[] };

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]) / Math.max(1, Math.abs(b[i])));
  return d;
}

const hasKeras = (() => {
  try {
    execFileSync("python3", ["-c", "import keras"], { stdio: "ignore", env: { ...process.env, KERAS_BACKEND: "jax" } });
    return true;
  } catch {
    return false;
  }
})();

describe("Keras 3 .keras files", () => {
  for (const name of ["mlp", "convnet", "recurrent", "conv1d", "transformer", "decoder"]) {
    it(`${name}.keras loads to Keras' predictions`, async () => {
      const { inputs, outputs } = fixture(name);
      const m = await loadModel(join(fixtures, `${name}.keras`));
      const y = await m.predict(tensor(Float32Array.from(inputs[0].data), inputs[0].shape));
      expect(y.shape).toEqual(outputs[0].shape);
      expect(maxDiff(y.data, outputs[0].data)).toBeLessThan(1e-4);
    });
  }

  it("a Lambda layer is refused with its name and class", async () => {
    await expect(loadModel(join(fixtures, "lambda.keras"))).rejects.toThrow(/doubler.*Lambda|Lambda.*doubler/);
  });

  it.skipIf(!hasKeras)("a model saved as .keras opens in Keras 3 with the same predictions", async () => {
    const m = sequential(
      [
        conv2d({ filters: 3, kernelSize: 3, activation: "relu", inputShape: [8, 8, 1] }),
        maxPooling2d({ poolSize: 2 }),
        flatten(),
        dense({ units: 4, activation: "softmax" }),
      ],
      { seed: 3 },
    );
    const x = randomTensor([2, 8, 8, 1]);
    const ours = await m.predict(x);
    const file = join(work, "conv.keras");
    await m.save(file);
    const inputs = join(work, "conv-inputs.json");
    writeFileSync(inputs, JSON.stringify([{ shape: x.shape, data: Array.from(x.data) }]));
    const out = execFileSync("python3", [join(fixtures, "keras_predict.py"), file, inputs], {
      env: { ...process.env, KERAS_BACKEND: "jax" },
      encoding: "utf8",
      stdio: ["ignore", "pipe", "ignore"],
    });
    const [keras] = JSON.parse(out.trim().split("\n").at(-1) as string) as Record[];
    expect(keras.shape).toEqual(ours.shape);
    expect(maxDiff(ours.data, keras.data)).toBeLessThan(1e-5);
    // And it loads back into cortex-nn.
    const again = await loadModel(file);
    expect(Array.from((await again.predict(x)).data)).toEqual(Array.from(ours.data));
  });
  if (!hasKeras)
    console.log("interchange: python3 has no keras; the Keras-side check is skipped (pip install keras jax)");
});

/** A tfjs layers-model on disk from tfjs' own save artifacts (tfjs-node's file:// is unavailable here). */
async function writeTfjs(m: tf.LayersModel, dir: string, quantize?: "uint8" | "uint16" | "float16"): Promise<void> {
  let artifacts: tf.io.ModelArtifacts | undefined;
  await m.save(
    tf.io.withSaveHandler(async (a) => {
      artifacts = a;
      return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: "JSON" } };
    }),
  );
  if (!artifacts?.weightSpecs || !artifacts.weightData) throw new Error("tfjs saved no weights");
  let specs = artifacts.weightSpecs;
  let data = new Uint8Array(artifacts.weightData as ArrayBuffer);
  if (quantize) {
    const floats = new Float32Array(data.buffer, data.byteOffset, data.byteLength / 4);
    const parts: Uint8Array[] = [];
    let offset = 0;
    specs = specs.map((s) => {
      const n = s.shape.reduce((a, b) => a * b, 1);
      const values = floats.subarray(offset, offset + n);
      offset += n;
      if (quantize === "float16") {
        parts.push(new Uint8Array(Uint16Array.from(values, toHalf).buffer));
        return { ...s, quantization: { dtype: "float16" } };
      }
      const levels = quantize === "uint8" ? 255 : 65535;
      const min = Math.min(...values);
      const scale = (Math.max(...values) - min) / levels || 1;
      const codes = Array.from(values, (v: number) => Math.round((v - min) / scale));
      const q = quantize === "uint8" ? Uint8Array.from(codes) : Uint16Array.from(codes);
      parts.push(new Uint8Array(q.buffer));
      return { ...s, quantization: { dtype: quantize, scale, min } };
    });
    data = new Uint8Array(parts.reduce((a, p) => a + p.byteLength, 0));
    let at = 0;
    for (const p of parts) {
      data.set(p, at);
      at += p.byteLength;
    }
  }
  const manifest = { paths: ["group1-shard1of1.bin"], weights: specs };
  writeFileSync(join(dir, "group1-shard1of1.bin"), data);
  writeFileSync(
    join(dir, "model.json"),
    JSON.stringify({ format: "layers-model", modelTopology: artifacts.modelTopology, weightsManifest: [manifest] }),
  );
}

/** Round-to-nearest IEEE half bits of a float (normal range; tiny values flush to zero). */
function toHalf(v: number): number {
  const f = new Float32Array([v]);
  const bits = new Uint32Array(f.buffer)[0];
  const sign = (bits >>> 16) & 0x8000;
  const exp = ((bits >>> 23) & 0xff) - 127 + 15;
  if (exp <= 0) return sign;
  if (exp >= 31) return sign | 0x7c00;
  const mant = bits & 0x7fffff;
  const half = sign | (exp << 10) | (mant >>> 13);
  return mant & 0x1000 ? half + 1 : half;
}

/** Loads a tfjs layers-model directory into tfjs through memory. */
async function readTfjs(dir: string): Promise<tf.LayersModel> {
  const json = JSON.parse(readFileSync(join(dir, "model.json"), "utf8"));
  const specs = json.weightsManifest.flatMap((g: { weights: unknown[] }) => g.weights);
  const buffers = json.weightsManifest.flatMap((g: { paths: string[] }) =>
    g.paths.map((p) => readFileSync(join(dir, p))),
  );
  const all = Buffer.concat(buffers);
  return tf.loadLayersModel(
    tf.io.fromMemory({
      modelTopology: json.modelTopology,
      weightSpecs: specs,
      weightData: all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength),
    }),
  );
}

function tfPredict(m: tf.LayersModel, x: Tensor): Float32Array {
  const y = tf.tidy(() => m.predict(tf.tensor(x.data, [...x.shape])) as tf.Tensor);
  const out = y.dataSync() as Float32Array;
  y.dispose();
  return out;
}

describe("TensorFlow.js layers-models", () => {
  it("a model saved with format tfjs loads in tf.loadLayersModel to the same outputs", async () => {
    for (const [label, make, shape] of [
      [
        "convnet",
        () =>
          sequential(
            [
              conv2d({ filters: 4, kernelSize: 3, activation: "relu", inputShape: [9, 9, 2] }),
              maxPooling2d({ poolSize: 2 }),
              flatten(),
              dense({ units: 3, activation: "softmax" }),
            ],
            { seed: 5 },
          ),
        [3, 9, 9, 2],
      ],
      ["lstm", () => sequential([lstm({ units: 5, inputShape: [6, 3] }), dense({ units: 2 })], { seed: 6 }), [2, 6, 3]],
    ] as const) {
      const m = make();
      const x = randomTensor([...shape]);
      const dir = join(work, `tfjs-${label}`);
      await m.save(dir, { format: "tfjs" });
      const theirs = await readTfjs(dir);
      expect(maxDiff(tfPredict(theirs, x), (await m.predict(x)).data), label).toBeLessThan(1e-5);
      theirs.dispose();
      // And cortex-nn reads its own tfjs files back.
      const again = await loadModel(join(dir, "model.json"));
      expect(Array.from((await again.predict(x)).data)).toEqual(Array.from((await m.predict(x)).data));
    }
  });

  for (const name of ["functional", "lstm", "convnet"]) {
    it(`the committed tfjs fixture '${name}' (written by tfjs itself) loads to tfjs' predictions`, async () => {
      const dir = join(import.meta.dirname, "fixtures", "tfjs", name);
      const e = JSON.parse(readFileSync(join(dir, "expected.json"), "utf8"));
      const y = await (await loadModel(dir)).predict(tensor(Float32Array.from(e.x), e.shape));
      expect(y.shape).toEqual(e.yShape);
      expect(maxDiff(y.data, e.y)).toBeLessThan(1e-5);
    });
  }

  it("a GRU is refused for tfjs by name (tfjs-layers has no resetAfter GRU)", async () => {
    const m = sequential([gru({ units: 3, inputShape: [4, 2], name: "my_gru" })], { seed: 1 });
    await expect(m.save(join(work, "gru-tfjs"), { format: "tfjs" })).rejects.toThrow(/my_gru.*resetAfter/);
  });

  it("bad tfjs files are Errors that say what is wrong: missing or short shard, ../ paths, wrong shapes", async () => {
    const m = sequential([dense({ units: 3, inputShape: [4] }), dense({ units: 2 })], { seed: 2 });
    const good = join(work, "tfjs-good");
    await m.save(good, { format: "tfjs" });
    const json = JSON.parse(readFileSync(join(good, "model.json"), "utf8"));
    const shard = readFileSync(join(good, json.weightsManifest[0].paths[0]));
    const variant = (name: string, edit: (j: typeof json) => void, bin: Buffer = shard) => {
      const dir = join(work, `tfjs-bad-${name}`);
      mkdirSync(dir, { recursive: true });
      const copy = structuredClone(json);
      edit(copy);
      writeFileSync(join(dir, "model.json"), JSON.stringify(copy));
      writeFileSync(join(dir, json.weightsManifest[0].paths[0]), bin);
      return join(dir, "model.json");
    };
    const cases: [string, string, RegExp][] = [
      [
        "missing shard",
        variant("missing", (j) => {
          j.weightsManifest[0].paths = ["nope.bin"];
        }),
        /nope\.bin/,
      ],
      ["short shard", variant("short", () => {}, shard.subarray(0, shard.length - 8)), /runs past the end/],
      [
        "escaping path",
        variant("escape", (j) => {
          j.weightsManifest[0].paths = ["../tfjs-good/group1-shard1of1.bin"];
        }),
        /leaves the model's directory/,
      ],
      [
        "wrong shape",
        variant("shape", (j) => {
          j.weightsManifest[0].weights[0].shape = [3, 4];
        }),
        /\[3, 4\] in the file.*\[4, 3\]/,
      ],
    ];
    for (const [label, path, message] of cases) {
      await expect(loadModel(path), label).rejects.toThrow(message);
    }
  });

  for (const quantize of [undefined, "uint8", "uint16", "float16"] as const) {
    it(`a tfjs-written model (${quantize ?? "float32"} weights) loads to tfjs' outputs`, async () => {
      const m = tf.sequential({
        layers: [
          tf.layers.conv2d({ filters: 3, kernelSize: 3, activation: "relu", inputShape: [7, 7, 1] }),
          tf.layers.flatten(),
          tf.layers.dense({ units: 4, activation: "tanh" }),
          tf.layers.dense({ units: 2 }),
        ],
      });
      const dir = join(work, `from-tfjs-${quantize ?? "f32"}`);
      mkdirSync(dir, { recursive: true });
      await writeTfjs(m, dir, quantize);
      const theirs = await readTfjs(dir);
      const ours = await loadModel(dir);
      const x = randomTensor([2, 7, 7, 1], 11);
      expect(maxDiff((await ours.predict(x)).data, tfPredict(theirs, x))).toBeLessThan(1e-5);
      m.dispose();
      theirs.dispose();
    });
  }
});
