/** The file readers of cortex-nn's data pipeline: CSV, image folders, streamed MNIST. */
import { spawnSync } from "node:child_process";
import { createWriteStream } from "node:fs";
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { deflateSync, gzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { adam, data, dense, encodePng, flatten, loadMnist, sequential, type Tensor } from "../index.ts";
import { mnistDataDir } from "../src/data/mnist.ts";
import { MersenneTwister } from "../src/data/random.ts";
import { crc32 } from "../src/image.ts";

const { csvDataset, imageDatasetFromDirectory, mnistDataset } = data;

let tmp: string;
beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), "cortex-data-"));
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

describe("csvDataset", () => {
  it("streams typed rows as { xs, ys } with the label column split off", async () => {
    const path = join(tmp, "iris.csv");
    await writeFile(
      path,
      'a,species,b,c\n1.5,setosa,2,"3"\r\n-4e-1,virginica,,6\n\n7,setosa,8,.5\n', // CRLF, a blank line, no final newline handling issues
    );
    const rows = await csvDataset(path, {
      label: "species",
      categorical: { species: ["setosa", "virginica"] },
      columnDefaults: { b: -1 },
    }).toArray();
    expect(rows).toHaveLength(3);
    expect(rows[0].xs.shape).toEqual([3]);
    expect(rows[0].ys.shape).toEqual([]);
    expect(Array.from(rows[1].xs.data)).toEqual([-0.4000000059604645, -1, 6]);
    expect(rows.map((r) => r.ys.data[0])).toEqual([0, 1, 0]);
    const [batch] = await csvDataset(path, {
      labels: ["a", "b"],
      columns: ["c"],
      categorical: { species: ["setosa", "virginica"] },
      columnDefaults: { b: 0 },
    })
      .batch(8)
      .toArray();
    expect(batch.xs.shape).toEqual([3, 1]);
    expect(batch.ys.shape).toEqual([3, 2]);
    expect(Array.from(batch.xs.data)).toEqual([3, 6, 0.5]);
  });

  it("reads headerless files with named columns", async () => {
    const path = join(tmp, "plain.tsv");
    await writeFile(path, "1\t2\t0\n3\t4\t1\n");
    const rows = await csvDataset(path, {
      header: false,
      columns: ["x1", "x2", "y"],
      label: "y",
      delimiter: "\t",
    }).toArray();
    expect(rows.map((r) => Array.from(r.xs.data))).toEqual([
      [1, 2],
      [3, 4],
    ]);
    expect(() => csvDataset(path, { header: false })).toThrow(/needs `columns`/);
  });

  it("rejects a bad row with the file, line and column", async () => {
    const path = join(tmp, "bad.csv");
    await writeFile(path, "x,y,label\n1,2,0\n3,4,1\n5,6\n");
    await expect(csvDataset(path, { label: "label" }).toArray()).rejects.toThrow(
      /bad\.csv:4: expected 3 fields, got 2/,
    );
    await writeFile(path, "x,y,label\n1,2,0\n3,abc,1\n");
    await expect(csvDataset(path, { label: "label" }).toArray()).rejects.toThrow(
      /bad\.csv:3, column 2 \("y"\): "abc" is not a number/,
    );
    await writeFile(path, "x,y,label\n1,,0\n");
    await expect(csvDataset(path, { label: "label" }).toArray()).rejects.toThrow(/bad\.csv:2, column 2.*empty field/);
    await writeFile(path, "x,y,label\n1,0x10,0\n");
    await expect(csvDataset(path, { label: "label" }).toArray()).rejects.toThrow(/"0x10" is not a number/);
    await expect(csvDataset(path, { label: "nope" }).toArray()).rejects.toThrow(/label column "nope" is not among/);
    await expect(csvDataset(join(tmp, "missing.csv"), { label: "y" }).toArray()).rejects.toThrow(
      /cannot read .*missing\.csv/,
    );
  });

  it("refuses a line longer than maxLineLength instead of buffering it", async () => {
    const path = join(tmp, "long.csv");
    await writeFile(path, `x,y\n${"1".repeat(5000)},2\n`);
    await expect(csvDataset(path, { label: "y", maxLineLength: 1000 }).toArray()).rejects.toThrow(
      /long\.csv:2: line longer than maxLineLength/,
    );
  });

  it("streams a 50 MB file with bounded heap", async () => {
    setFlagsFromString("--expose-gc");
    const gc = runInNewContext("gc") as () => void;
    const path = join(tmp, "big.csv");
    const out = createWriteStream(path);
    const cols = 16;
    out.write(`${Array.from({ length: cols }, (_, i) => `f${i}`).join(",")},label\n`);
    const row = `${Array.from({ length: cols }, (_, i) => (i * 0.37).toFixed(4)).join(",")},1\n`;
    const block = row.repeat(Math.ceil((1 << 20) / row.length));
    for (let i = 0; i < 50; i++) out.write(block);
    await new Promise<void>((resolve, reject) => out.end((e?: Error | null) => (e ? reject(e) : resolve())));
    gc();
    const before = process.memoryUsage().heapUsed;
    let peak = 0;
    let count = 0;
    let sum = 0;
    const start = performance.now();
    for await (const b of csvDataset(path, { label: "label" }).batch(1024)) {
      count += b.xs.shape[0];
      sum += b.ys.data[0];
      if (count % (100 * 1024) === 0) {
        gc();
        peak = Math.max(peak, process.memoryUsage().heapUsed - before);
      }
    }
    const seconds = (performance.now() - start) / 1000;
    const rows = 50 * Math.ceil((1 << 20) / row.length);
    expect(count).toBe(rows);
    expect(sum).toBe(Math.ceil(rows / 1024));
    console.log(
      `csvDataset: ${rows} rows (${(50 * block.length) / 2 ** 20} MiB) in ${seconds.toFixed(2)} s, ` +
        `peak retained heap growth ${(peak / 2 ** 20).toFixed(1)} MiB`,
    );
    expect(peak).toBeLessThan(16 * 2 ** 20);
  });
});

/** A 3-channel PNG (color type 2, filter 0 on every row), for tests that need colour. */
function encodeRgbPng(rgb: Uint8Array, width: number, height: number): Uint8Array {
  const raw = new Uint8Array(height * (width * 3 + 1));
  for (let y = 0; y < height; y++) raw.set(rgb.subarray(y * width * 3, (y + 1) * width * 3), y * (width * 3 + 1) + 1);
  const chunk = (type: string, body: Uint8Array) => {
    const out = Buffer.alloc(12 + body.length);
    out.writeUInt32BE(body.length, 0);
    out.write(type, 4, "latin1");
    out.set(body, 8);
    out.writeUInt32BE(crc32(out.subarray(4, 8 + body.length)), 8 + body.length);
    return out;
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // colour type: RGB
  return Buffer.concat([
    Buffer.from(encodePng(new Uint8Array(1), 1, 1).subarray(0, 8)), // the PNG signature
    chunk("IHDR", ihdr),
    chunk("IDAT", deflateSync(raw)),
    chunk("IEND", new Uint8Array(0)),
  ]);
}

/** A valid PNG whose header claims `width` x `height` pixels (CRC fixed up). */
function pngClaiming(width: number, height: number): Uint8Array {
  const png = Buffer.from(encodePng(new Uint8Array(1), 1, 1));
  png.writeUInt32BE(width, 16);
  png.writeUInt32BE(height, 20);
  png.writeUInt32BE(crc32(png.subarray(12, 29)), 29);
  return png;
}

const pythonHas = (code: string) => spawnSync("python3", ["-c", code]).status === 0;

describe("imageDatasetFromDirectory", () => {
  let dir: string;
  const expected = new Map<string, Uint8Array>(); // file name -> gray pixels (8x6)

  beforeAll(async () => {
    dir = join(tmp, "images");
    // Two classes; "dogs" sorts after "cats"; a nested folder and a non-image file as Keras sees them.
    for (const cls of ["dogs", "cats", "cats/more"]) await mkdir(join(dir, cls), { recursive: true });
    await mkdir(join(dir, ".hidden"));
    await writeFile(join(dir, "cats", "notes.txt"), "not an image");
    for (let i = 0; i < 6; i++) {
      const px = Uint8Array.from({ length: 8 * 6 }, (_, k) => (k * 5 + i * 17) % 256);
      const name = `${i < 3 ? "cats" : i < 5 ? "dogs" : "cats/more"}/img${i}.png`;
      expected.set(name, px);
      await writeFile(join(dir, name), encodePng(px, 8, 6));
    }
    await copyFile(join(import.meta.dirname, "fixtures/images/gradient.jpg"), join(dir, "dogs", "z-gradient.JPG"));
    const rgb = Uint8Array.from({ length: 8 * 6 * 3 }, (_, k) => (k * 7) % 256);
    await writeFile(join(dir, "dogs", "color.png"), encodeRgbPng(rgb, 8, 6));
  });

  it("labels by sorted subfolder, yields [batch, h, w, c] pixels in [0, 255] unscaled", async () => {
    const ds = await imageDatasetFromDirectory(dir, {
      imageSize: [6, 8],
      colorMode: "grayscale",
      shuffle: false,
      batchSize: 4,
    });
    expect(ds.classNames).toEqual(["cats", "dogs"]);
    expect(ds.filePaths.map((p) => p.slice(dir.length + 1))).toEqual([
      "cats/img0.png",
      "cats/img1.png",
      "cats/img2.png",
      "cats/more/img5.png",
      "dogs/color.png",
      "dogs/img3.png",
      "dogs/img4.png",
      "dogs/z-gradient.JPG",
    ]);
    const batches = await ds.toArray();
    expect(batches.map((b) => b.xs.shape)).toEqual([
      [4, 6, 8, 1],
      [4, 6, 8, 1],
    ]);
    expect([...batches[0].ys.data, ...batches[1].ys.data]).toEqual([0, 0, 0, 0, 1, 1, 1, 1]);
    // Same size in and out: the decoded pixels exactly.
    expect(Array.from(batches[0].xs.data.subarray(0, 48))).toEqual(Array.from(expected.get("cats/img0.png") ?? []));
    expect(Array.from(batches[0].xs.data.subarray(3 * 48, 4 * 48))).toEqual(
      Array.from(expected.get("cats/more/img5.png") ?? []),
    );
    // Colour to gray with the ITU-R 601 weights.
    const rgb = Uint8Array.from({ length: 8 * 6 * 3 }, (_, k) => (k * 7) % 256);
    expect(batches[1].xs.data[5]).toBe(Math.round(0.299 * rgb[15] + 0.587 * rgb[16] + 0.114 * rgb[17]));
  });

  it("decodes JPEG like libjpeg, resizes bilinearly, and encodes labels as asked", async () => {
    const ds = await imageDatasetFromDirectory(dir, {
      imageSize: [12, 16],
      colorMode: "rgb",
      shuffle: false,
      batchSize: 8,
      labelMode: "categorical",
    });
    const [b] = await ds.toArray();
    expect(b.xs.shape).toEqual([8, 12, 16, 3]);
    expect(b.ys.shape).toEqual([8, 2]);
    expect(Array.from(b.ys.data.subarray(0, 2))).toEqual([1, 0]);
    expect(Array.from(b.ys.data.subarray(14, 16))).toEqual([0, 1]);
    const reference = JSON.parse(
      await readFile(join(import.meta.dirname, "fixtures/images/gradient.json"), "utf8"),
    ) as { rgb: number[] };
    const jpeg = b.xs.data.subarray(7 * 12 * 16 * 3);
    const maxDiff = Math.max(...reference.rgb.map((v, i) => Math.abs(v - jpeg[i])));
    expect(maxDiff).toBeLessThanOrEqual(4);
    // Gray 8x6 upsampled to 16x12: within the range of the source, and rgb repeats gray.
    const gray0 = b.xs.data.subarray(0, 12 * 16 * 3);
    expect(gray0[0]).toBe(gray0[1]);
    expect(Math.max(...gray0)).toBeLessThanOrEqual(255);
    const binary = await imageDatasetFromDirectory(dir, { imageSize: [2, 2], labelMode: "binary", shuffle: false });
    const [bb] = await binary.toArray();
    expect(bb.ys.shape).toEqual([8, 1]);
    const none = await imageDatasetFromDirectory(dir, { imageSize: [2, 2], labelMode: null, colorMode: "rgba" });
    const [nb] = await none.toArray();
    expect(Object.keys(nb)).toEqual(["xs"]);
    expect(nb.xs.shape).toEqual([8, 2, 2, 4]);
  });

  it("splits validation by Keras' seeded file shuffle (NumPy's RandomState)", async () => {
    const [train, val] = await imageDatasetFromDirectory(dir, {
      imageSize: [4, 4],
      validationSplit: 0.25,
      subset: "both",
      seed: 1337,
      batchSize: 3,
    });
    expect(train.filePaths).toHaveLength(6);
    expect(val.filePaths).toHaveLength(2);
    expect(new Set([...train.filePaths, ...val.filePaths]).size).toBe(8);
    const trainBatches = await train.toArray();
    expect(trainBatches.map((b) => b.xs.shape[0])).toEqual([3, 3]);
    // Training data is reshuffled every pass (epoch); validation keeps its order.
    const fingerprints = (batches: { xs: Tensor }[]) =>
      batches.flatMap((b) =>
        Array.from({ length: b.xs.shape[0] }, (_, i) => b.xs.data.subarray(i * 48, (i + 1) * 48).join(",")),
      );
    const epoch1 = fingerprints(trainBatches);
    const epoch2 = fingerprints(await train.toArray());
    expect(new Set(epoch1).size).toBe(6);
    expect([...epoch2].sort()).toEqual([...epoch1].sort());
    expect(epoch2).not.toEqual(epoch1);
    expect(fingerprints(await val.toArray())).toEqual(fingerprints(await val.toArray()));
    const valOnly = await imageDatasetFromDirectory(dir, {
      imageSize: [4, 4],
      validationSplit: 0.25,
      subset: "validation",
      seed: 1337,
    });
    expect(valOnly.filePaths).toEqual(val.filePaths);
    // The order Keras gets: RandomState(1337).shuffle over the sorted list.
    const sorted = (await imageDatasetFromDirectory(dir, { shuffle: false })).filePaths;
    expect([...train.filePaths, ...val.filePaths]).toEqual(new MersenneTwister(1337).shuffle([...sorted]));
    if (!pythonHas("import numpy")) {
      console.log("data-readers.test: skipping the NumPy RandomState check: python3 cannot import numpy");
      return;
    }
    const perm = JSON.parse(
      spawnSync(
        "python3",
        [
          "-c",
          "import numpy as np, json; x=list(range(8)); np.random.RandomState(1337).shuffle(x); print(json.dumps(x))",
        ],
        { encoding: "utf8" },
      ).stdout,
    ) as number[];
    expect([...train.filePaths, ...val.filePaths]).toEqual(perm.map((i) => sorted[i]));
    await expect(imageDatasetFromDirectory(dir, { validationSplit: 0.2, subset: "training" })).rejects.toThrow(
      /give a `seed`/,
    );
  });

  it("resizes with TensorFlow's bilinear arithmetic (checked against PyTorch's identical one)", async (ctx) => {
    const script = join(import.meta.dirname, "fixtures/images/torch_resize.py");
    const ds = await imageDatasetFromDirectory(dir, { colorMode: "grayscale", shuffle: false, classNames: ["cats"] });
    const files = ds.filePaths;
    const sizes = [
      [4, 5], // down
      [9, 13], // up
      [3, 17], // down one way, up the other
    ];
    const arg = sizes.map(([h, w]) => `${h}x${w}`).join(",");
    const run = spawnSync("python3", [script, arg, ...files], { encoding: "utf8" });
    if (run.status === 3 || run.error) {
      console.log(`data-readers.test: skipping the resize reference: ${run.stderr?.trim() || run.error?.message}`);
      ctx.skip();
      return;
    }
    expect(run.status, run.stderr).toBe(0);
    const ref = JSON.parse(run.stdout) as number[][][];
    for (const [k, [h, w]] of sizes.entries()) {
      const sized = await imageDatasetFromDirectory(dir, {
        imageSize: [h, w],
        colorMode: "grayscale",
        shuffle: false,
        classNames: ["cats"],
      });
      const [b] = await sized.toArray();
      expect(b.xs.shape).toEqual([files.length, h, w, 1]);
      const ours = Array.from(b.xs.data);
      const maxDiff = Math.max(...ref[k].flat().map((v, i) => Math.abs(v - ours[i])));
      expect(maxDiff).toBeLessThan(1e-3);
    }
  });

  it("matches Keras' own image_dataset_from_directory pixel for pixel (within 1e-3)", async (ctx) => {
    const script = join(import.meta.dirname, "fixtures/images/keras_reference.py");
    const run = spawnSync("python3", [script, dir, "5", "7", "rgb"], { encoding: "utf8", maxBuffer: 1 << 28 });
    if (run.status === 3 || run.error) {
      console.log(`data-readers.test: skipping the Keras comparison: ${run.stderr?.trim() || run.error?.message}`);
      ctx.skip();
      return;
    }
    expect(run.status, run.stderr).toBe(0);
    const ref = JSON.parse(run.stdout) as {
      classNames: string[];
      filePaths: string[];
      images: number[];
      labels: number[];
    };
    const ds = await imageDatasetFromDirectory(dir, { imageSize: [5, 7], shuffle: false, batchSize: 100 });
    const [b] = await ds.toArray();
    expect(ds.classNames).toEqual(ref.classNames);
    expect(ds.filePaths).toEqual(ref.filePaths);
    expect(Array.from(b.ys.data)).toEqual(ref.labels);
    // The JPEG may differ by a few levels between decoders; the PNGs must agree to rounding.
    const perImage = 5 * 7 * 3;
    ref.images.forEach((v, i) => {
      const tol = ds.filePaths[Math.floor(i / perImage)].endsWith(".JPG") ? 4 : 1e-3;
      expect(Math.abs(v - b.xs.data[i])).toBeLessThanOrEqual(tol);
    });
  });

  it("decodes on a worker thread: the event loop keeps ticking through a heavy batch", async () => {
    const big = join(tmp, "big-images");
    await mkdir(join(big, "a"), { recursive: true });
    const side = 1024;
    const px = Uint8Array.from({ length: side * side }, (_, i) => (i * 31 + (i >> 10)) % 256);
    const png = encodePng(px, side, side);
    for (let i = 0; i < 12; i++) await writeFile(join(big, "a", `${i}.png`), png);
    const ds = await imageDatasetFromDirectory(big, { imageSize: [512, 512], batchSize: 12, shuffle: false });
    let last = performance.now();
    let worst = 0;
    const timer = setInterval(() => {
      const now = performance.now();
      worst = Math.max(worst, now - last);
      last = now;
    }, 5);
    const started = performance.now();
    const [b] = await ds.toArray();
    const took = performance.now() - started;
    clearInterval(timer);
    expect(b.xs.shape).toEqual([12, 512, 512, 3]);
    console.log(
      `imageDatasetFromDirectory: 12 PNGs of 1024x1024 to 512x512 RGB in ${took.toFixed(0)} ms, largest timer gap ${worst.toFixed(1)} ms`,
    );
    expect(worst, `decode took ${took.toFixed(0)} ms`).toBeLessThan(Math.max(30, took / 4));
  });

  it("rejects corrupt and oversized images with errors naming the file", async () => {
    const bad = join(tmp, "bad-images");
    await mkdir(join(bad, "a"), { recursive: true });
    await writeFile(join(bad, "a", "ok.png"), encodePng(new Uint8Array(4), 2, 2));
    await writeFile(join(bad, "a", "zz-corrupt.png"), Buffer.from("definitely not a png"));
    const corrupt = await imageDatasetFromDirectory(bad, { imageSize: [2, 2], shuffle: false });
    await expect(corrupt.toArray()).rejects.toThrow(/cannot decode image .*zz-corrupt\.png/);
    await rm(join(bad, "a", "zz-corrupt.png"));
    await writeFile(join(bad, "a", "zz-huge.png"), pngClaiming(100000, 100000));
    const before = process.memoryUsage().rss;
    const huge = await imageDatasetFromDirectory(bad, { imageSize: [2, 2], shuffle: false });
    await expect(huge.toArray()).rejects.toThrow(
      /cannot decode image .*zz-huge\.png: .*exceeds limit \(at most 16384 pixels per side/,
    );
    expect(process.memoryUsage().rss - before).toBeLessThan(256 * 2 ** 20);
    await rm(join(bad, "a", "zz-huge.png"));
    const truncated = encodePng(
      Uint8Array.from({ length: 64 * 64 }, (_, i) => i % 251),
      64,
      64,
    );
    await writeFile(join(bad, "a", "zz-truncated.png"), truncated.subarray(0, truncated.length - 40));
    const cut = await imageDatasetFromDirectory(bad, { imageSize: [2, 2], shuffle: false });
    await expect(cut.toArray()).rejects.toThrow(/zz-truncated\.png/);
  });

  it("validates its options and the folder", async () => {
    await expect(imageDatasetFromDirectory(join(tmp, "nope"))).rejects.toThrow(/cannot read directory .*nope/);
    await expect(imageDatasetFromDirectory(dir, { classNames: ["cats", "birds"] })).rejects.toThrow(/birds/);
    await expect(imageDatasetFromDirectory(dir, { imageSize: [0, 3] })).rejects.toThrow(RangeError);
    await expect(imageDatasetFromDirectory(dir, { batchSize: 100000, imageSize: [4096, 4096] })).rejects.toThrow(
      /over 2\^28 floats/,
    );
    const only = await imageDatasetFromDirectory(dir, { classNames: ["dogs"], shuffle: false, imageSize: [2, 2] });
    expect(only.classNames).toEqual(["dogs"]);
    expect(only.filePaths).toHaveLength(4);
  });
});

describe("mnistDataset", () => {
  it("streams the same first 100 samples as loadMnist", async () => {
    const ref = await loadMnist({ trainLimit: 100, testLimit: 100 });
    const train = await mnistDataset("train").take(100).batch(100).toArray();
    expect(train[0].xs.shape).toEqual([100, 28, 28, 1]);
    expect(train[0].ys.shape).toEqual([100]);
    expect(train[0].xs.data).toEqual(ref.trainImages);
    expect(train[0].ys.data).toEqual(ref.trainLabels);
    const [test] = await mnistDataset("test").take(100).batch(100).toArray();
    expect(test.xs.data).toEqual(ref.testImages);
    expect(test.ys.data).toEqual(ref.testLabels);
  });

  it("feeds training: a shuffled, batched, prefetched stream trains a model with trainOnBatch", async () => {
    const net = sequential([flatten({ inputShape: [28, 28, 1] }), dense({ units: 10, activation: "softmax" })], {
      seed: 1,
    });
    net.compile({
      optimizer: adam({ learningRate: 0.01 }),
      loss: "sparseCategoricalCrossentropy",
      metrics: ["accuracy"],
    });
    const batches = mnistDataset("train").take(2048).shuffle(512, { seed: 2 }).batch(64).prefetch(2);
    const losses: number[] = [];
    for (let epoch = 0; epoch < 2; epoch++) {
      for await (const { xs, ys } of batches) losses.push((await net.trainOnBatch(xs, ys)).loss);
    }
    expect(losses).toHaveLength(64);
    const mean = (a: number[]) => a.reduce((x, y) => x + y, 0) / a.length;
    expect(mean(losses.slice(-8))).toBeLessThan(mean(losses.slice(0, 8)) * 0.6);
  });

  it("reads gzip-compressed files through a streaming gunzip", async () => {
    const gz = join(tmp, "mnist-gz");
    await mkdir(gz);
    for (const f of ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]) {
      await writeFile(join(gz, `${f}.gz`), gzipSync(await readFile(join(mnistDataDir(), f)), { level: 1 }));
    }
    const ref = await loadMnist({ dir: gz, trainLimit: 0, testLimit: 10 }).catch(() => undefined);
    const [b] = await mnistDataset("test", { dir: gz }).take(10).batch(10).toArray();
    const plain = await mnistDataset("test").take(10).batch(10).toArray();
    expect(b.xs.data).toEqual(plain[0].xs.data);
    expect(b.ys.data).toEqual(plain[0].ys.data);
    expect(ref).toBeUndefined(); // loadMnist needs the train split too; the stream does not.
  });

  it("rejects missing, corrupt and truncated files naming them", async () => {
    const bad = join(tmp, "mnist-bad");
    await mkdir(bad);
    await expect(mnistDataset("test", { dir: bad }).toArray()).rejects.toThrow(/file not found: .*t10k-images/);
    const labels = await readFile(join(mnistDataDir(), "t10k-labels-idx1-ubyte"));
    await writeFile(join(bad, "t10k-labels-idx1-ubyte"), labels);
    await writeFile(join(bad, "t10k-images-idx3-ubyte"), Buffer.from([0, 0, 8, 1, ...new Array(12).fill(0)]));
    await expect(mnistDataset("test", { dir: bad }).toArray()).rejects.toThrow(/t10k-images-idx3-ubyte: bad magic/);
    const images = await readFile(join(mnistDataDir(), "t10k-images-idx3-ubyte"));
    await writeFile(join(bad, "t10k-images-idx3-ubyte"), images.subarray(0, 16 + 784 * 3 + 5));
    const got: unknown[] = [];
    await expect(
      (async () => {
        for await (const s of mnistDataset("test", { dir: bad })) got.push(s);
      })(),
    ).rejects.toThrow(/t10k-images-idx3-ubyte: truncated at image 3 of 10000/);
    expect(got).toHaveLength(3);
    await writeFile(join(bad, "t10k-images-idx3-ubyte.gz"), Buffer.from([0x1f, 0x8b, 1, 2, 3]));
    await rm(join(bad, "t10k-images-idx3-ubyte"));
    await expect(mnistDataset("test", { dir: bad }).toArray()).rejects.toThrow(
      /t10k-images-idx3-ubyte\.gz: corrupt gzip/,
    );
    expect(() => mnistDataset("val" as never)).toThrow(/split must be/);
  });
});
