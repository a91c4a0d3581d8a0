/**
 * Crafted model files for the hostile-input tests: real saved models with one thing changed
 * (a huge or invalid size, a broken safetensors header, a nested JSON bomb...).
 */
import { readFileSync, truncateSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export interface SafeTensor {
  name: string;
  dtype?: string;
  shape: number[];
  data: Uint8Array;
  /** Offsets to write instead of the true ones. */
  offsets?: [number, number];
}

/** Encodes a safetensors file: u64 LE header length, JSON header, data. */
export function encodeSafetensors(tensors: SafeTensor[], metadata?: Record<string, string>, headerLength?: bigint) {
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  let offset = 0;
  for (const t of tensors) {
    header[t.name] = {
      dtype: t.dtype ?? "F32",
      shape: t.shape,
      data_offsets: t.offsets ?? [offset, offset + t.data.length],
    };
    offset += t.data.length;
  }
  const json = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(headerLength ?? BigInt(json.length));
  return Buffer.concat([len, json, ...tensors.map((t) => Buffer.from(t.data))]);
}

/** Decodes a safetensors file written by cortex-nn (trusted input: our own save). */
export function decodeSafetensors(bytes: Buffer): { tensors: SafeTensor[]; metadata?: Record<string, string> } {
  const n = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + n).toString()) as Record<string, unknown>;
  const metadata = header.__metadata__ as Record<string, string> | undefined;
  const tensors: SafeTensor[] = [];
  for (const [name, info] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    const { dtype, shape, data_offsets } = info as { dtype: string; shape: number[]; data_offsets: [number, number] };
    tensors.push({ name, dtype, shape, data: bytes.subarray(8 + n + data_offsets[0], 8 + n + data_offsets[1]) });
  }
  tensors.sort((a, b) => a.data.byteOffset - b.data.byteOffset);
  return { tensors, metadata };
}

type Json = Record<string, unknown>;

/** A saved model's files, editable. */
export class SavedModel {
  topology: Json;
  tensors: SafeTensor[];
  metadata?: Record<string, string>;

  constructor(dir: string) {
    this.topology = JSON.parse(readFileSync(join(dir, "model.json"), "utf8")) as Json;
    ({ tensors: this.tensors, metadata: this.metadata } = decodeSafetensors(
      readFileSync(join(dir, "weights.safetensors")),
    ));
  }

  /** The config of layer `i` (of the top-level model). */
  layer(i: number): Json {
    const config = this.topology.config as { layers: { config: Json }[] };
    return config.layers[i].config;
  }

  /**
   * Writes the pair into `dir`. The weights file drops its embedded topology and model.json its
   * save id, so the edited model.json is what the loader reads.
   */
  write(dir: string, modelJson?: string) {
    const topology = { ...this.topology };
    delete topology.saveId;
    writeFileSync(join(dir, "model.json"), modelJson ?? JSON.stringify(topology));
    writeFileSync(join(dir, "weights.safetensors"), encodeSafetensors(this.tensors));
  }
}

/** Makes `path` a sparse file of `bytes` bytes (no disk used). */
export function sparseFile(path: string, bytes: number) {
  writeFileSync(path, "");
  truncateSync(path, bytes);
}
