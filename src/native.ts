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
    `cortex-nn: cannot load the native addon for ${platformName()}. Prebuilt binaries ship as the ` +
      `optional packages cortex-nn-linux-{x64,arm64}-{gnu,musl} (reinstall if npm skipped it); on ` +
      `another platform, build from source with a Rust toolchain: 'npm ci && npm pack' in a clone, ` +
      `then install the tarball (README, "Install and supported platforms"). Each attempt:\n${causes(lastError)}`,
  );
}

/** napi's platform name for this process, e.g. linux-x64-gnu (as the generated loader picks). */
function platformName(): string {
  if (process.platform !== "linux") return `${process.platform}-${process.arch}`;
  const header = (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header;
  return `linux-${process.arch}-${header?.glibcVersionRuntime ? "gnu" : "musl"}`;
}

/** The loader's error and its `cause` chain (one line per file or package tried). */
function causes(error: unknown): string {
  const lines: string[] = [];
  for (let e = error as (Error & { cause?: unknown }) | undefined; e && lines.length < 16; e = e.cause as typeof e) {
    lines.push(`  - ${String(e.message).split("\n")[0]}`);
  }
  return lines.join("\n");
}

const loaded = load();

/** The napi-rs binding (generated typings in crates/node/binding.d.ts). */
export const native = loaded;
export type NativeModel = Binding.NativeModel;
export type NativeLayer = Binding.NativeLayer;
export type TensorData = Binding.TensorData;
export type NativeTensor = Binding.NativeTensor;
export type NativeGrads = Binding.NativeGrads;
export type NativeGradScope = Binding.NativeGradScope;
export type NativeOptimizer = Binding.NativeOptimizer;
export type DeviceInfo = Binding.DeviceInfo;
export type BatchQueue = Binding.BatchQueue;
export type BatchData = Binding.BatchData;
