/** The file readers of cortex-nn's data pipeline: CSV, streamed MNIST. */
import { createWriteStream } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { gzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { data, loadMnist } from "../index.ts";
import { mnistDataDir } from "../src/data/mnist.ts";

const { csvDataset, mnistDataset } = data;

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
