/**
 * The only file that loads the native addon. Everything else imports the typed binding from here.
 */
import { createRequire } from "node:module";
import type * as Binding from "../crates/node/binding.d.ts";

const require = createRequire(import.meta.url);

let loaded: typeof Binding;
try {
  loaded = require("../crates/node/binding.cjs") as typeof Binding;
} catch (error) {
  throw new Error(
    `cortex-nn: cannot load the native addon (crates/node/*.node). Build it with 'npm run build'. Cause: ${
      (error as Error).message
    }`,
  );
}

/** The napi-rs binding (generated typings in crates/node/binding.d.ts). */
export const native = loaded;
export type NativeModel = Binding.NativeModel;
export type NativeLayer = Binding.NativeLayer;
export type TensorData = Binding.TensorData;
export type NativeTensor = Binding.NativeTensor;
export type NativeGrads = Binding.NativeGrads;
export type NativeOptimizer = Binding.NativeOptimizer;
