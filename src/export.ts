/**
 * Model export to interchange formats (Keras 3's `model.export(path, format="onnx")`).
 *
 * ONNX graphs have float32 input(s) named `input` (or `input_0`, `input_1`, ... for several
 * inputs, in the model's input order) and output(s) `output` (or `output_0`, ...); the first
 * axis is the dynamic batch axis (`dim_param` "batch"), the other axes are fixed at the model's
 * sample shapes, and image data stays channels-last (NHWC) as in Keras. Layers without a
 * faithful ONNX form reject the export with an Error naming the layer.
 */
import { type NativeModel, native } from "./native.ts";

/** Arguments of `model.export`: the format and, for ONNX, the opset (17 to 21, default 17). */
export type ExportArgs = { format: "onnx"; opset?: number };

const MIN_OPSET = 17;
const MAX_OPSET = 21;

/** Validates `args` and writes the model at `path` (atomically: a temporary file, then a rename). */
export async function exportModel(native_: NativeModel, path: string, args: ExportArgs): Promise<void> {
  if (typeof path !== "string" || path.length === 0) {
    throw new Error("export: path must be a non-empty string");
  }
  if (args === null || typeof args !== "object") {
    throw new Error(`export: expected arguments { format: "onnx", opset? }, got ${String(args)}`);
  }
  const { format, opset, ...rest } = args as ExportArgs & Record<string, unknown>;
  const unknown = Object.keys(rest);
  if (unknown.length > 0) {
    throw new Error(`export: unknown option '${unknown[0]}'; expected format, opset`);
  }
  if (format !== "onnx") {
    throw new Error(`export: unknown format '${String(format)}'; expected "onnx"`);
  }
  if (opset !== undefined) {
    if (typeof opset !== "number" || !Number.isInteger(opset)) {
      throw new Error(`export: opset must be an integer, got ${String(opset)}`);
    }
    if (opset < MIN_OPSET) {
      throw new Error(`export: opset ${opset} is too old; ONNX export needs opset ${MIN_OPSET} or later`);
    }
    if (opset > MAX_OPSET) {
      throw new Error(`export: opset ${opset} is not supported yet; expected ${MIN_OPSET} to ${MAX_OPSET}`);
    }
  }
  await native.exportOnnx(native_, path, opset ?? MIN_OPSET);
}
