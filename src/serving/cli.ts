/**
 * The `cortex-nn` command line (bin/cortex-nn.mjs): `cortex-nn serve --model NAME=PATH ...`.
 */
import { parseArgs } from "node:util";
import { type ServeOptions, serve } from "./server.ts";

const USAGE = `Usage: cortex-nn serve --model NAME=PATH [--model NAME2=PATH2] [options]

Serves models over HTTP: TF Serving REST (/v1/models/NAME:predict) and KServe v2
(/v2/models/NAME/infer), with dynamic batching and Prometheus metrics at /metrics.
PATH is a saved model directory, a .keras file or a tfjs model.json; a directory of
numbered subdirectories (PATH/1, PATH/2) serves each as a version, the newest by default.

Options:
  --model NAME=PATH          a model to serve (repeatable)
  --port N                   TCP port (default 8501; 0 picks a free one)
  --host HOST                interface (default 127.0.0.1)
  --max-batch-size N         rows merged into one predict (default 64)
  --batch-timeout-ms MS      longest wait for a batch to fill (default 0: next turn)
  --max-queue N              queued requests per model before 429 (default 10000)
  --body-limit-bytes N       largest request body (default 16777216)
  --device cpu|gpu           where the models run (default cpu)
  --quantize int8|bf16       reduced-precision inference (default float32; bf16 needs AMX)
  --log-requests             one JSON line per request on stdout
`;

function int(name: string, value: string | undefined, min = 0): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be an integer >= ${min}, got '${value}'`);
  return n;
}

/** Parses `argv` (without node and the script) into serve() options; throws with a message for the user. */
export function parseServeArgs(argv: string[]): ServeOptions {
  const { values } = parseArgs({
    args: argv,
    options: {
      model: { type: "string", multiple: true },
      port: { type: "string" },
      host: { type: "string" },
      "max-batch-size": { type: "string" },
      "batch-timeout-ms": { type: "string" },
      "max-queue": { type: "string" },
      "body-limit-bytes": { type: "string" },
      "worker-decode-bytes": { type: "string" },
      device: { type: "string" },
      quantize: { type: "string" },
      "log-requests": { type: "boolean" },
    },
    strict: true,
    allowPositionals: false,
  });
  const models: Record<string, string> = {};
  for (const spec of values.model ?? []) {
    const eq = spec.indexOf("=");
    if (eq <= 0 || eq === spec.length - 1) throw new Error(`--model expects NAME=PATH, got '${spec}'`);
    models[spec.slice(0, eq)] = spec.slice(eq + 1);
  }
  if (Object.keys(models).length === 0) throw new Error("at least one --model NAME=PATH is required");
  const device = values.device;
  if (device !== undefined && device !== "cpu" && device !== "gpu" && device !== "gpu!") {
    throw new Error(`--device must be cpu or gpu, got '${device}'`);
  }
  const quantize = values.quantize;
  if (quantize !== undefined && quantize !== "int8" && quantize !== "bf16" && quantize !== "float32") {
    throw new Error(`--quantize must be int8, bf16 or float32, got '${quantize}'`);
  }
  const timeout = values["batch-timeout-ms"];
  if (timeout !== undefined && !(Number(timeout) >= 0))
    throw new Error(`--batch-timeout-ms must be >= 0, got '${timeout}'`);
  return {
    models,
    port: int("port", values.port),
    host: values.host,
    maxBatchSize: int("max-batch-size", values["max-batch-size"], 1),
    batchTimeoutMs: timeout === undefined ? undefined : Number(timeout),
    maxQueue: int("max-queue", values["max-queue"], 1),
    bodyLimitBytes: int("body-limit-bytes", values["body-limit-bytes"], 1),
    workerDecodeBytes: int("worker-decode-bytes", values["worker-decode-bytes"], 0),
    device,
    quantize,
    logRequests: values["log-requests"] ?? false,
  };
}

/** Runs the command line; resolves to the exit code once the server has stopped (or failed to start). */
export async function runCli(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === "--help" || command === "-h" || command === "help") {
    process.stdout.write(USAGE);
    return command === undefined ? 2 : 0;
  }
  if (command !== "serve") {
    process.stderr.write(`cortex-nn: unknown command '${command}'\n\n${USAGE}`);
    return 2;
  }
  if (rest.includes("--help") || rest.includes("-h")) {
    process.stdout.write(USAGE);
    return 0;
  }
  let options: ServeOptions;
  try {
    options = parseServeArgs(rest);
  } catch (error) {
    process.stderr.write(`cortex-nn serve: ${(error as Error).message}\n\n${USAGE}`);
    return 2;
  }
  let server: Awaited<ReturnType<typeof serve>>;
  try {
    server = await serve(options);
  } catch (error) {
    process.stderr.write(`cortex-nn serve: ${(error as Error).message}\n`);
    return 1;
  }
  // stderr, so that stdout carries only request logs.
  process.stderr.write(`cortex-nn serving ${Object.keys(options.models).join(", ")} at ${server.url}\n`);
  await new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      process.stderr.write(`cortex-nn: ${signal}, finishing in-flight requests\n`);
      resolve();
    };
    process.once("SIGTERM", stop);
    process.once("SIGINT", stop);
  });
  await server.close();
  return 0;
}
