/**
 * Helpers shared by the four seed listings: seeded synthetic data (the source material ships no
 * data sets), the parameter count read from the summary (copying 800M weights into JS just to
 * count them would double the CNN's memory), peak memory, and "run me if I am the entry point".
 */
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
import type { Model } from "../../index.ts";

/** A seeded uniform [0, 1) generator (mulberry32), so every run sees the same synthetic data. */
export function uniforms(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

/** `n` standard normals (Box-Muller). */
export function normals(n: number, next: () => number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const r = Math.sqrt(-2 * Math.log(1 - next()));
    const a = 2 * Math.PI * next();
    out[i] = r * Math.cos(a);
    if (i + 1 < n) out[i + 1] = r * Math.sin(a);
  }
  return out;
}

/** `n` integers in [0, k), stored as floats (class labels and token ids are floats in cortex-nn tensors). */
export function integers(n: number, k: number, next: () => number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.floor(next() * k);
  return out;
}

/** The "Total params" line of the model's summary. */
export function paramCount(m: Model): number {
  const match = /Total params: ([\d,]+)/.exec(m.summary(false));
  if (!match) throw new Error("paramCount: no 'Total params' line in the summary");
  return Number(match[1].replaceAll(",", ""));
}

/** Peak resident memory of this process so far in GB (Linux VmHWM; NaN elsewhere). */
export function peakRssGb(): number {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync("/proc/self/status", "utf8"));
    return m ? Number(m[1]) / 1024 ** 2 : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

/** Seconds since `t0` (from `performance.now()`). */
export const seconds = (t0: number): number => (performance.now() - t0) / 1000;

/** Whether the module at `url` is the script node was started with (so importing it runs nothing). */
export function isMain(url: string): boolean {
  return process.argv[1] !== undefined && pathToFileURL(process.argv[1]).href === url;
}
