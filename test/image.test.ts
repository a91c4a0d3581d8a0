/** The PNG encoder and image grids: byte layout, zlib payload, CRCs, atomic writes. */
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { inflateSync } from "node:zlib";
import { describe, expect, it } from "vitest";
import { crc32, encodePng, imageGrid, PNG_SIGNATURE, writePng } from "../src/image.ts";

interface Chunk {
  type: string;
  data: Uint8Array;
  crc: number;
  /** Bytes the CRC covers: type and data. */
  covered: Uint8Array;
}

function chunks(png: Uint8Array): Chunk[] {
  const view = new DataView(png.buffer, png.byteOffset, png.byteLength);
  const out: Chunk[] = [];
  let offset = 8;
  while (offset < png.length) {
    const length = view.getUint32(offset, false);
    const type = String.fromCharCode(...png.subarray(offset + 4, offset + 8));
    const data = png.subarray(offset + 8, offset + 8 + length);
    const crc = view.getUint32(offset + 8 + length, false);
    out.push({ type, data, crc, covered: png.subarray(offset + 4, offset + 8 + length) });
    offset += 12 + length;
  }
  expect(offset).toBe(png.length);
  return out;
}

describe("PNG encoder", () => {
  it("crc32 matches the standard check value", () => {
    expect(crc32(new TextEncoder().encode("123456789"))).toBe(0xcbf43926);
    expect(crc32(new Uint8Array(0))).toBe(0);
    // Continuing a CRC gives the CRC of the concatenation.
    const a = new TextEncoder().encode("12345");
    const b = new TextEncoder().encode("6789");
    expect(crc32(b, crc32(a))).toBe(0xcbf43926);
  });

  it("encodes a tiny grayscale image: signature, IHDR, IDAT scanlines, CRCs", () => {
    const width = 3;
    const height = 2;
    const gray = Uint8Array.of(0, 128, 255, 10, 20, 30);
    const png = encodePng(gray, width, height);
    expect(Array.from(png.subarray(0, 8))).toEqual(Array.from(PNG_SIGNATURE));
    expect(Array.from(png.subarray(0, 8))).toEqual([137, 80, 78, 71, 13, 10, 26, 10]);

    const list = chunks(png);
    expect(list.map((c) => c.type)).toEqual(["IHDR", "IDAT", "IEND"]);
    for (const c of list) expect(c.crc).toBe(crc32(c.covered));

    const ihdr = list[0].data;
    expect(ihdr.length).toBe(13);
    const hv = new DataView(ihdr.buffer, ihdr.byteOffset, ihdr.byteLength);
    expect(hv.getUint32(0, false)).toBe(width);
    expect(hv.getUint32(4, false)).toBe(height);
    // Bit depth 8, color type 0 (grayscale), deflate, filter method 0, no interlace.
    expect(Array.from(ihdr.subarray(8))).toEqual([8, 0, 0, 0, 0]);

    // The IDAT is a zlib stream of the scanlines, each prefixed by filter type 0.
    const raw = new Uint8Array(inflateSync(list[1].data));
    expect(Array.from(raw)).toEqual([0, 0, 128, 255, 0, 10, 20, 30]);
    expect(list[2].data.length).toBe(0);
    expect(list[2].crc).toBe(0xae426082);
  });

  it("rejects mismatched sizes", () => {
    expect(() => encodePng(new Uint8Array(5), 3, 2)).toThrow(/5 pixels given for a 3 x 2 image/);
    expect(() => encodePng(new Uint8Array(0), 0, 0)).toThrow(/positive integers/);
  });

  it("writePng writes atomically and leaves no temporary file", async () => {
    const dir = mkdtempSync(join(tmpdir(), "cortex-png-"));
    try {
      const path = join(dir, "sub", "x.png");
      const gray = Uint8Array.from({ length: 16 }, (_, i) => i * 16);
      await writePng(path, gray, 4, 4);
      const bytes = new Uint8Array(readFileSync(path));
      expect(Array.from(bytes)).toEqual(Array.from(encodePng(gray, 4, 4)));
      // Overwriting replaces the file.
      await writePng(path, new Uint8Array(4), 2, 2);
      expect(chunks(new Uint8Array(readFileSync(path)))[0].data[3]).toBe(2);
      expect(readdirSync(join(dir, "sub"))).toEqual(["x.png"]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("imageGrid", () => {
  it("tiles images with padding and maps the value range to 0..255", () => {
    // Three 2x2 images in [-1, 1], two columns: a 2x2 grid of tiles, one slot empty.
    const images = Float32Array.of(-1, 1, 0, 2, 1, 1, 1, 1, -1, -1, -1, -1);
    const grid = imageGrid(images, 3, 2, 2, 2, { range: [-1, 1], padding: 1, background: 7 });
    expect(grid.width).toBe(2 * 2 + 3);
    expect(grid.height).toBe(2 * 2 + 3);
    const at = (x: number, y: number) => grid.data[y * grid.width + x];
    expect([at(1, 1), at(2, 1), at(1, 2), at(2, 2)]).toEqual([0, 255, 128, 255]); // 0 -> 127.5 rounds up, 2 clipped
    expect([at(4, 1), at(5, 2)]).toEqual([255, 255]);
    expect([at(1, 4), at(2, 5)]).toEqual([0, 0]);
    expect([at(0, 0), at(3, 1), at(4, 4), at(6, 6)]).toEqual([7, 7, 7, 7]);
    // [0, 1] is the default range.
    expect(Array.from(imageGrid(Float32Array.of(0, 0.5, 1, Number.NaN), 1, 2, 2, 1, { padding: 0 }).data)).toEqual([
      0, 128, 255, 0,
    ]);
    expect(() => imageGrid(new Float32Array(3), 1, 2, 2, 1)).toThrow(/need 4 values, got 3/);
  });
});
