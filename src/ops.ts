/**
 * Eager operations and process-wide settings.
 */
import { type DeviceInfo, native } from "./native.ts";
import { expectTensor, Tensor } from "./tensor.ts";

/** Matrix product of `a` (`[m, k]`) and `b` (`[k, n]`), computed in Rust (AVX-512/AVX2 GEMM). */
export function matMul(a: Tensor, b: Tensor): Tensor {
  expectTensor(a, "matMul: a");
  expectTensor(b, "matMul: b");
  const out = native.matMul(a.data, [...a.shape], b.data, [...b.shape]);
  return new Tensor(out.data, out.shape);
}

/** Sets how many threads the Rust kernels use (also `CORTEX_NUM_THREADS`). */
export function setNumThreads(n: number): void {
  if (!Number.isInteger(n) || n <= 0) throw new RangeError(`setNumThreads: expected a positive integer, got ${n}`);
  native.setNumThreads(n);
}

/** Number of threads the Rust kernels use. */
export function getNumThreads(): number {
  return native.getNumThreads();
}

/**
 * Caps the weights of every model built or loaded afterwards, in bytes (default 16 GiB, or the
 * `CORTEX_MAX_MODEL_BYTES` environment variable). A layer config or model file declaring more
 * is refused with an Error before anything is allocated. `loadModel(dir, { maxBytes })` sets a
 * tighter cap for one load.
 */
export function setMaxModelBytes(bytes: number): void {
  if (!Number.isSafeInteger(bytes) || bytes <= 0)
    throw new RangeError(`setMaxModelBytes: expected a positive integer, got ${bytes}`);
  native.setMaxModelBytes(bytes);
}

/** The current cap on a model's weights, in bytes (see {@link setMaxModelBytes}). */
export function getMaxModelBytes(): number {
  return native.getMaxModelBytes();
}

/** Fixes the global seed: models created afterwards initialise, shuffle and drop out reproducibly. */
export function setSeed(seed: number): void {
  if (!Number.isInteger(seed) || seed < 0)
    throw new RangeError(`setSeed: expected a non-negative integer, got ${seed}`);
  native.setSeed(seed);
}

/** A GPU (or software) adapter, as listed by {@link devices}. */
export type { DeviceInfo };

/**
 * The adapters `compile({ device: 'gpu' })` can use (GPUs through Vulkan, Metal or DX12, and
 * software rasterisers such as Mesa's lavapipe); empty when there are none.
 */
export function devices(): DeviceInfo[] {
  return native.devices();
}
