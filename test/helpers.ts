/** Shared test helpers: small deterministic data sets. */
import { type Tensor, tensor } from "../index.ts";

/** A seeded linear-congruential stream in [0, 1). */
export function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

/** Two Gaussian-ish blobs in 2-D: label 0 around (-1,-1), label 1 around (1,1). */
export function blobs(n: number, seed = 1): { x: Tensor; y: Tensor } {
  const rand = lcg(seed);
  const x = new Float32Array(n * 2);
  const y = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const label = i % 2;
    const center = label === 0 ? -1 : 1;
    x[2 * i] = center + (rand() - 0.5);
    x[2 * i + 1] = center + (rand() - 0.5);
    y[i] = label;
  }
  return { x: tensor(x, [n, 2]), y: tensor(y, [n]) };
}

/** Random values in [-1, 1) with the given shape. */
export function randomTensor(shape: number[], seed = 7): Tensor {
  const rand = lcg(seed);
  const size = shape.reduce((a, b) => a * b, 1);
  return tensor(
    Float32Array.from({ length: size }, () => rand() * 2 - 1),
    shape,
  );
}
