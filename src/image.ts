/**
 * Images: a minimal PNG encoder (8-bit grayscale, no dependency: node:zlib deflate plus a
 * CRC-32 table) and a helper that tiles a batch of images into one grid.
 *
 *   const grid = imageGrid(samples.data, 64, 28, 28, 8, { range: [-1, 1] });
 *   await writePng("samples.png", grid.data, grid.width, grid.height);
 */
import { randomBytes } from "node:crypto";
import { mkdir, rename, rm, writeFile } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { deflateSync } from "node:zlib";

/** The eight bytes every PNG file starts with. */
export const PNG_SIGNATURE = Uint8Array.of(0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a);

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** CRC-32 (ISO 3309, as PNG and zlib use it) of `bytes`, continuing from `crc` (default: a fresh CRC). */
export function crc32(bytes: Uint8Array, crc = 0): number {
  let c = ~crc >>> 0;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}

function chunk(type: string, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + data.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, data.length, false);
  for (let i = 0; i < 4; i++) out[4 + i] = type.charCodeAt(i);
  out.set(data, 8);
  // The CRC covers the chunk type and data, not the length.
  view.setUint32(8 + data.length, crc32(out.subarray(4, 8 + data.length)), false);
  return out;
}

function checkSize(what: string, width: number, height: number, length: number): void {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width <= 0 || height <= 0) {
    throw new RangeError(`${what}: width and height must be positive integers, got ${width} x ${height}`);
  }
  if (width > 0x7fffffff || height > 0x7fffffff) {
    throw new RangeError(`${what}: ${width} x ${height} exceeds the PNG limit of 2^31 - 1 pixels a side`);
  }
  if (length !== width * height) {
    throw new RangeError(`${what}: ${length} pixels given for a ${width} x ${height} image (${width * height})`);
  }
}

/**
 * Encodes an 8-bit image (`gray`: `height` rows of `width` pixels of `channels` bytes, row-major;
 * 1 channel: grayscale, 3: RGB) as a PNG file: signature, IHDR, one IDAT (filter type 0 on every
 * scanline), IEND.
 */
export function encodePng(gray: Uint8Array, width: number, height: number, channels: 1 | 3 = 1): Uint8Array {
  if (!(gray instanceof Uint8Array)) throw new TypeError("encodePng: gray must be a Uint8Array");
  if (channels !== 1 && channels !== 3) throw new RangeError(`encodePng: channels must be 1 or 3, got ${channels}`);
  checkSize("encodePng", width * channels, height, gray.length);
  const ihdr = new Uint8Array(13);
  const view = new DataView(ihdr.buffer);
  view.setUint32(0, width, false);
  view.setUint32(4, height, false);
  ihdr[8] = 8; // bit depth
  ihdr[9] = channels === 3 ? 2 : 0; // color type: RGB or grayscale
  ihdr[10] = 0; // compression: deflate
  ihdr[11] = 0; // filter method 0
  ihdr[12] = 0; // no interlace
  const stride = width * channels;
  const raw = new Uint8Array(height * (stride + 1));
  for (let y = 0; y < height; y++) {
    raw[y * (stride + 1)] = 0; // filter type None
    raw.set(gray.subarray(y * stride, (y + 1) * stride), y * (stride + 1) + 1);
  }
  const idat = new Uint8Array(deflateSync(raw, { level: 9 }));
  const parts = [PNG_SIGNATURE, chunk("IHDR", ihdr), chunk("IDAT", idat), chunk("IEND", new Uint8Array(0))];
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const p of parts) {
    out.set(p, offset);
    offset += p.length;
  }
  return out;
}

/**
 * Writes `gray` as a PNG at `path`, atomically: the bytes go to a temporary file in the same
 * directory, which is then renamed over `path` (readers never see a half-written file).
 * Creates the directory if needed.
 */
export async function writePng(
  path: string,
  gray: Uint8Array,
  width: number,
  height: number,
  channels: 1 | 3 = 1,
): Promise<void> {
  if (typeof path !== "string" || path === "") throw new TypeError("writePng: expected a file path");
  const bytes = encodePng(gray, width, height, channels);
  const dir = dirname(path);
  await mkdir(dir, { recursive: true });
  const tmp = join(dir, `.${basename(path)}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`);
  try {
    await writeFile(tmp, bytes);
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
}

/** Options of {@link imageGrid}. */
export interface ImageGridOptions {
  /** Values mapped to black and white: `[-1, 1]` for tanh outputs, `[0, 1]` (default) for pixel intensities. */
  range?: [number, number];
  /** Pixels between tiles and around the grid (default 1). */
  padding?: number;
  /** Gray level of the padding, 0..255 (default 0). */
  background?: number;
}

/** An 8-bit grayscale image, row-major. */
export interface GrayImage {
  data: Uint8Array;
  width: number;
  height: number;
}

/**
 * Tiles the first `count` images of `images` (each `height` x `width` floats, single channel,
 * row-major, e.g. an `[n, 28, 28, 1]` tensor's data) into a grid of `columns` columns, mapping
 * `range` to 0..255 (values outside are clipped).
 */
export function imageGrid(
  images: Float32Array,
  count: number,
  height: number,
  width: number,
  columns: number,
  options: ImageGridOptions = {},
): GrayImage {
  for (const [name, v] of [
    ["count", count],
    ["height", height],
    ["width", width],
    ["columns", columns],
  ] as const) {
    if (!Number.isInteger(v) || v <= 0) throw new RangeError(`imageGrid: ${name} must be a positive integer, got ${v}`);
  }
  if (!(images instanceof Float32Array)) throw new TypeError("imageGrid: images must be a Float32Array");
  if (images.length < count * height * width) {
    throw new RangeError(
      `imageGrid: ${count} images of ${height} x ${width} need ${count * height * width} values, got ${images.length}`,
    );
  }
  const [lo, hi] = options.range ?? [0, 1];
  if (!(Number.isFinite(lo) && Number.isFinite(hi) && hi > lo)) {
    throw new RangeError(`imageGrid: range must be [low, high] with low < high, got [${lo}, ${hi}]`);
  }
  const pad = options.padding ?? 1;
  if (!Number.isInteger(pad) || pad < 0) throw new RangeError(`imageGrid: padding must be a non-negative integer`);
  const cols = Math.min(columns, count);
  const rows = Math.ceil(count / columns);
  const outW = cols * width + (cols + 1) * pad;
  const outH = rows * height + (rows + 1) * pad;
  const data = new Uint8Array(outW * outH).fill(options.background ?? 0);
  const scale = 255 / (hi - lo);
  for (let n = 0; n < count; n++) {
    const top = pad + Math.floor(n / columns) * (height + pad);
    const left = pad + (n % columns) * (width + pad);
    const base = n * height * width;
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        const v = Math.round((images[base + y * width + x] - lo) * scale);
        // Clipped to 0..255; NaN stays NaN, which a Uint8Array stores as 0 (black).
        data[(top + y) * outW + left + x] = Math.min(255, Math.max(v, 0));
      }
    }
  }
  return { data, width: outW, height: outH };
}
