/**
 * The two wire formats `serve()` speaks: TensorFlow Serving's REST API (`/v1/...`) and the
 * KServe v2 / Open Inference Protocol (`/v2/...`). Decoding turns a JSON body into one float32
 * batch; encoding turns the model's output back into each protocol's response.
 */

/** The name of the single input and output tensor in metadata and v2 requests. */
export const INPUT_NAME = "input";
export const OUTPUT_NAME = "output";

/** A request body decoded into one batch, ready for the model. */
export interface DecodedRequest {
  /** Row-major values, `shape` = [rows, ...sample]. */
  data: Float32Array;
  shape: number[];
  /** `instances` (TF Serving row format), `inputs` (TF Serving columnar) or `v2` (KServe). */
  format: "instances" | "inputs" | "v2";
  /** KServe v2 request id, echoed in the response. */
  id?: string;
}

/**
 * Parses and validates a request body. Self-contained on purpose (no imports, no outer names):
 * its source text also runs in the JSON worker (decode-worker.ts) for large bodies, so it must
 * not close over anything. Throws an Error whose message is the 400 response's.
 */
export function decodeRequestBody(
  text: string,
  protocol: "tfserving" | "v2",
  sampleShape: number[] | null,
  inputName: string,
  outputName: string,
): DecodedRequest {
  const fail = (message: string): never => {
    throw new Error(message);
  };
  const isObject = (v: unknown): v is Record<string, unknown> =>
    typeof v === "object" && v !== null && !Array.isArray(v);
  const checkKeys = (obj: Record<string, unknown>, allowed: string[], where: string) => {
    for (const key of Object.keys(obj)) {
      if (!allowed.includes(key)) fail(`unknown field '${key}' in ${where}; expected ${allowed.join(", ")}`);
    }
  };
  /** Shape of a nested array, following first elements. */
  const shapeOf = (v: unknown): number[] => {
    const shape: number[] = [];
    while (Array.isArray(v)) {
      shape.push(v.length);
      v = v[0];
    }
    return shape;
  };
  const sameShape = (a: number[], b: number[]) => a.length === b.length && a.every((d, i) => d === b[i]);
  /** Writes the numbers of nested `v` (which must have exactly `shape`) into out[offset..]. */
  const fill = (v: unknown, shape: number[], dim: number, out: Float32Array, offset: number, where: string): number => {
    if (dim === shape.length) {
      if (typeof v !== "number") fail(`${where}: expected a number, got ${Array.isArray(v) ? "an array" : typeof v}`);
      if (!Number.isFinite(v)) fail(`${where}: non-finite value`);
      out[offset] = v as number;
      return offset + 1;
    }
    if (!Array.isArray(v) || v.length !== shape[dim]) {
      fail(`${where}: expected shape [${shape.join(", ")}], found a mismatch at axis ${dim}`);
    }
    const items = v as unknown[];
    if (dim === shape.length - 1) {
      for (let i = 0; i < items.length; i++) {
        const x = items[i];
        if (typeof x !== "number") fail(`${where}: expected a number, got ${Array.isArray(x) ? "an array" : typeof x}`);
        if (!Number.isFinite(x)) fail(`${where}: non-finite value`);
        out[offset++] = x as number;
      }
      return offset;
    }
    for (let i = 0; i < items.length; i++) offset = fill(items[i], shape, dim + 1, out, offset, where);
    return offset;
  };
  const product = (shape: number[]) => shape.reduce((a, b) => a * b, 1);
  const checkSample = (sample: number[], where: string) => {
    if (sampleShape && !sameShape(sample, sampleShape)) {
      fail(
        `${where}: sample shape [${sample.join(", ")}] does not match the model's input [${sampleShape.join(", ")}]`,
      );
    }
  };
  const unwrapNamed = (v: unknown, where: string): unknown => {
    if (!isObject(v)) return v;
    checkKeys(v, [inputName], where);
    if (!(inputName in v)) fail(`${where}: missing input '${inputName}'`);
    return v[inputName];
  };

  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch (error) {
    fail(`malformed JSON: ${(error as Error).message}`);
  }
  if (!isObject(body)) fail("the request body must be a JSON object");
  const request = body as Record<string, unknown>;

  if (protocol === "tfserving") {
    checkKeys(request, ["signature_name", "instances", "inputs"], "the request");
    const signature = request.signature_name;
    if (signature !== undefined && signature !== "serving_default") {
      fail(`unknown signature_name '${String(signature)}'; this model has 'serving_default'`);
    }
    if ("instances" in request === "inputs" in request) fail("the request needs exactly one of 'instances', 'inputs'");
    if ("instances" in request) {
      const instances = request.instances;
      if (!Array.isArray(instances) || instances.length === 0) fail("'instances' must be a non-empty array");
      const rows = (instances as unknown[]).map((row, i) => unwrapNamed(row, `instances[${i}]`));
      const sample = sampleShape ?? shapeOf(rows[0]);
      checkSample(shapeOf(rows[0]), "instances[0]");
      const per = product(sample);
      const data = new Float32Array(rows.length * per);
      for (let i = 0; i < rows.length; i++) fill(rows[i], sample, 0, data, i * per, `instances[${i}]`);
      return { data, shape: [rows.length, ...sample], format: "instances" };
    }
    const inputs = unwrapNamed(request.inputs, "inputs");
    const shape = shapeOf(inputs);
    if (shape.length === 0 || shape[0] === 0) fail("'inputs' must be a non-empty array of samples");
    checkSample(shape.slice(1), "inputs");
    const data = new Float32Array(product(shape));
    fill(inputs, shape, 0, data, 0, "inputs");
    return { data, shape, format: "inputs" };
  }

  checkKeys(request, ["id", "parameters", "inputs", "outputs"], "the request");
  if (request.id !== undefined && typeof request.id !== "string") fail("'id' must be a string");
  if (request.parameters !== undefined && !isObject(request.parameters)) fail("'parameters' must be an object");
  if (request.outputs !== undefined) {
    if (!Array.isArray(request.outputs)) fail("'outputs' must be an array");
    for (const [i, out] of (request.outputs as unknown[]).entries()) {
      if (!isObject(out)) fail(`outputs[${i}] must be an object`);
      checkKeys(out as Record<string, unknown>, ["name", "parameters"], `outputs[${i}]`);
      if ((out as Record<string, unknown>).name !== outputName) {
        fail(
          `outputs[${i}]: unknown output '${String((out as Record<string, unknown>).name)}'; expected '${outputName}'`,
        );
      }
    }
  }
  const inputs = request.inputs;
  if (!Array.isArray(inputs) || inputs.length !== 1) fail("'inputs' must be an array of exactly one tensor");
  const tensorSpec = (inputs as unknown[])[0];
  if (!isObject(tensorSpec)) fail("inputs[0] must be an object");
  const spec = tensorSpec as Record<string, unknown>;
  checkKeys(spec, ["name", "shape", "datatype", "data", "parameters"], "inputs[0]");
  if (spec.name !== inputName) fail(`inputs[0]: unknown input '${String(spec.name)}'; expected '${inputName}'`);
  if (spec.datatype !== "FP32") fail(`inputs[0]: datatype must be 'FP32', got '${String(spec.datatype)}'`);
  const shape = spec.shape;
  if (!Array.isArray(shape) || shape.length === 0 || !shape.every((d) => Number.isInteger(d) && d >= 0)) {
    fail("inputs[0]: 'shape' must be a non-empty array of non-negative integers");
  }
  const dims = shape as number[];
  if (dims[0] === 0) fail("inputs[0]: the batch dimension must be at least 1");
  checkSample(dims.slice(1), "inputs[0]");
  const data = new Float32Array(product(dims));
  const values = spec.data;
  if (!Array.isArray(values)) fail("inputs[0]: 'data' must be an array");
  // Flat row-major data is the norm; nested data must then have exactly `shape`.
  const flat = !(values as unknown[]).some(Array.isArray);
  if (flat) {
    if ((values as unknown[]).length !== data.length) {
      fail(
        `inputs[0]: 'data' holds ${(values as unknown[]).length} values but shape [${dims.join(", ")}] needs ${data.length}`,
      );
    }
    fill(values, [data.length], 0, data, 0, "inputs[0].data");
  } else {
    fill(values, dims, 0, data, 0, "inputs[0].data");
  }
  return { data, shape: dims, format: "v2", id: request.id as string | undefined };
}

/** Nested arrays of `shape` from row-major `data`. */
export function nest(data: Float32Array, shape: readonly number[], offset = 0, dim = 0): unknown {
  if (shape.length === 0) return data[offset];
  if (dim === shape.length - 1) return Array.from(data.subarray(offset, offset + shape[dim]));
  const stride = shape.slice(dim + 1).reduce((a, b) => a * b, 1);
  const out: unknown[] = new Array(shape[dim]);
  for (let i = 0; i < shape[dim]; i++) out[i] = nest(data, shape, offset + i * stride, dim + 1);
  return out;
}

/** The response body for an output batch of `shape`, in the format the request came in. */
export function encodeResponse(
  request: DecodedRequest,
  output: { data: Float32Array; shape: readonly number[] },
  model: { name: string; version: string },
): Record<string, unknown> {
  const shape = [...output.shape];
  if (request.format === "instances") {
    const rowShape = shape.slice(1);
    const per = rowShape.reduce((a, b) => a * b, 1);
    const predictions = new Array(shape[0]);
    for (let r = 0; r < shape[0]; r++) predictions[r] = nest(output.data, rowShape, r * per);
    return { predictions };
  }
  if (request.format === "inputs") return { outputs: nest(output.data, shape) };
  return {
    model_name: model.name,
    model_version: model.version,
    ...(request.id !== undefined ? { id: request.id } : {}),
    outputs: [{ name: OUTPUT_NAME, shape, datatype: "FP32", data: Array.from(output.data) }],
  };
}

/** What the metadata endpoints describe of one model version. */
export interface ModelDescription {
  name: string;
  version: string;
  versions: string[];
  inputShape: number[] | null;
  outputShape: number[] | null;
}

const tfsDims = (shape: number[] | null) =>
  shape === null
    ? { unknown_rank: true }
    : { dim: [-1, ...shape].map((size) => ({ size: String(size), name: "" })), unknown_rank: false };

/** `GET /v1/models/NAME/metadata`, shaped as TF Serving's GetModelMetadata response. */
export function tfServingMetadata(m: ModelDescription): Record<string, unknown> {
  const tensorInfo = (name: string, shape: number[] | null) => ({
    dtype: "DT_FLOAT",
    tensor_shape: tfsDims(shape),
    name: `serving_default_${name}:0`,
  });
  return {
    model_spec: { name: m.name, signature_name: "", version: m.version },
    metadata: {
      signature_def: {
        signature_def: {
          serving_default: {
            inputs: { [INPUT_NAME]: tensorInfo(INPUT_NAME, m.inputShape) },
            outputs: { [OUTPUT_NAME]: tensorInfo(OUTPUT_NAME, m.outputShape) },
            method_name: "tensorflow/serving/predict",
          },
        },
      },
    },
  };
}

/** `GET /v1/models/NAME`: every version of the model (or only `onlyVersion`) as AVAILABLE. */
export function tfServingStatus(versions: string[]): Record<string, unknown> {
  return {
    model_version_status: versions.map((version) => ({
      version,
      state: "AVAILABLE",
      status: { error_code: "OK", error_message: "" },
    })),
  };
}

/** `GET /v2/models/NAME[/versions/V]`: the Open Inference Protocol's model metadata. */
export function v2Metadata(m: ModelDescription): Record<string, unknown> {
  const v2Shape = (shape: number[] | null) => (shape === null ? [-1] : [-1, ...shape]);
  return {
    name: m.name,
    versions: m.versions,
    platform: "cortex-nn",
    inputs: [{ name: INPUT_NAME, datatype: "FP32", shape: v2Shape(m.inputShape) }],
    outputs: [{ name: OUTPUT_NAME, datatype: "FP32", shape: v2Shape(m.outputShape) }],
  };
}
