/**
 * The only file that loads the native addon. Everything else imports the typed binding from here.
 */
import { createRequire } from "node:module";
import type * as Binding from "../crates/node/binding.d.ts";

const require = createRequire(import.meta.url);

// From src/ when run as TypeScript, from dist/src/ when run as the compiled package.
const candidates = ["../crates/node/binding.cjs", "../../crates/node/binding.cjs"];

function load(): typeof Binding {
  let lastError: unknown;
  for (const path of candidates) {
    try {
      return require(path) as typeof Binding;
    } catch (error) {
      lastError = error;
      if ((error as NodeJS.ErrnoException).code !== "MODULE_NOT_FOUND") break;
    }
  }
  throw new Error(
    `cortex-nn: cannot load the native addon (crates/node/*.node). Build it with 'npm run build'. Cause: ${
      (lastError as Error).message
    }`,
  );
}

const loaded = load();

/** The napi-rs binding (generated typings in crates/node/binding.d.ts). */
export const native = loaded;
export type NativeModel = Binding.NativeModel;
export type NativeLayer = Binding.NativeLayer;
export type TensorData = Binding.TensorData;
export type NativeTensor = Binding.NativeTensor;
export type NativeGrads = Binding.NativeGrads;
export type NativeOptimizer = Binding.NativeOptimizer;
export type DeviceInfo = Binding.DeviceInfo;
