/**
 * `serve()`: an HTTP inference server on node:http speaking TF Serving REST (`/v1`) and KServe
 * v2 / Open Inference Protocol (`/v2`), with dynamic batching, Prometheus metrics, limits and
 * graceful shutdown.
 */
import { readdirSync, statSync } from "node:fs";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { availableParallelism } from "node:os";
import { join } from "node:path";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { loadModel, type Model, type QuantizeMode } from "../model.ts";
import { Tensor } from "../tensor.ts";
import { type Batcher, type BatcherError, batcher } from "./batcher.ts";
import { DecodePool, WorkerCrash } from "./decode-worker.ts";
import { Counter, Gauge, Histogram, Registry } from "./metrics.ts";
import {
  type DecodedRequest,
  decodeRequestBody,
  encodeResponse,
  INPUT_NAME,
  type ModelDescription,
  OUTPUT_NAME,
  tfServingMetadata,
  tfServingStatus,
  v2Metadata,
} from "./protocols.ts";

/** Options of {@link serve}. */
export interface ServeOptions {
  /**
   * Models by name: a loaded `Model`, or a path for `loadModel` (a saved directory, a `.keras`
   * file, a tfjs model.json). A directory whose subdirectories are numbers (`PATH/1`, `PATH/2`)
   * serves each as a version, the highest by default, as TF Serving does.
   */
  models: Record<string, Model | string>;
  /** TCP port (default 8501, TF Serving's REST port); 0 picks a free one (see `url`). */
  port?: number;
  /** Interface to listen on (default `'127.0.0.1'`; `'0.0.0.0'` for all). */
  host?: string;
  /** Rows merged into one `predict` (default 64); see {@link batcher}. */
  maxBatchSize?: number;
  /** Longest wait for a batch to fill, ms (default 0: batches form while the previous one runs). */
  batchTimeoutMs?: number;
  /** Queued requests per model version before 429 (default 10,000). */
  maxQueue?: number;
  /** Largest request body (default 16 MiB); larger ones get 413 without being read. */
  bodyLimitBytes?: number;
  /**
   * Bodies at least this large (default 64 KiB) are parsed on worker threads so that the event
   * loop stays free; smaller ones parse on the main thread in well under a millisecond.
   */
  workerDecodeBytes?: number;
  /** One JSON line per request on stdout (true), or to this function (default off). */
  logRequests?: boolean | ((entry: RequestLog) => void);
  /** Compiles models loaded from paths for this device (`'gpu'` falls back to the CPU with a warning). */
  device?: "cpu" | "gpu" | "gpu!";
  /**
   * Inference precision of models loaded from paths (see `Model.quantize`): `'int8'` or `'bf16'`
   * (AMX-BF16 CPUs only; elsewhere the server does not start). CPU only.
   */
  quantize?: QuantizeMode;
}

/** One request as logged by {@link ServeOptions.logRequests}. */
export interface RequestLog {
  time: string;
  method: string;
  path: string;
  status: number;
  protocol: string;
  model?: string;
  version?: string;
  rows?: number;
  ms: number;
  error?: string;
}

/** A running server, from {@link serve}. */
export interface Server {
  /** Base URL, e.g. `http://127.0.0.1:8501`. */
  readonly url: string;
  /** Stops accepting connections, answers 503 to new requests, finishes in-flight ones, then resolves. */
  close(): Promise<void>;
}

interface Version {
  name: string;
  version: string;
  model: Model;
  batcher: Batcher;
}

interface Served {
  versions: Map<string, Version>;
  latest: string;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

const MODEL_NAME = "[^/:]+";
const V1_ROUTE = new RegExp(`^/v1/models/(${MODEL_NAME})(?:/versions/([^/:]+))?(/metadata|:[A-Za-z]+)?$`);
const V2_ROUTE = new RegExp(`^/v2/models/(${MODEL_NAME})(?:/versions/([^/]+))?(/ready|/infer)?$`);
const LATENCY_BUCKETS = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5];
const BATCH_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512];

/** Numbered subdirectories of `path` (TF Serving's version layout), or null when it has none. */
function versionDirectories(path: string): string[] | null {
  let entries: string[];
  try {
    if (!statSync(path).isDirectory()) return null;
    entries = readdirSync(path);
  } catch {
    return null;
  }
  const versions = entries.filter((e) => /^\d+$/.test(e) && statSync(join(path, e)).isDirectory());
  return versions.length > 0 ? versions.sort((a, b) => Number(a) - Number(b)) : null;
}

/**
 * Starts an inference server for `models` and resolves once it listens and every model is
 * loaded (until then `/v2/health/ready` answers 503 and inference 503).
 *
 * Endpoints: TF Serving REST `POST /v1/models/NAME[/versions/V]:predict` (`instances` or
 * `inputs`), `GET /v1/models/NAME[/versions/V][/metadata]`; KServe v2 `GET /v2`,
 * `/v2/health/live`, `/v2/health/ready`, `GET /v2/models/NAME[/versions/V][/ready]`,
 * `POST /v2/models/NAME[/versions/V]/infer`; `GET /metrics` (Prometheus). Each model version has
 * its own {@link batcher}. Errors are `{"error": "..."}` with 400 (bad JSON, shapes, values,
 * unknown fields), 404, 405, 413, 429 (with Retry-After) and 503.
 *
 * ```ts
 * const server = await serve({ models: { mnist: "./mnist-model" }, port: 0 });
 * // POST `${server.url}/v1/models/mnist:predict` {"instances": [...]}
 * await server.close();
 * ```
 */
export async function serve(options: ServeOptions): Promise<Server> {
  if (options === null || typeof options !== "object" || typeof options.models !== "object") {
    throw new TypeError("serve: expected { models: { name: modelOrPath } }");
  }
  const names = Object.keys(options.models);
  if (names.length === 0) throw new TypeError("serve: no models given");
  const bodyLimit = options.bodyLimitBytes ?? 16 * 1024 * 1024;
  const workerDecodeBytes = options.workerDecodeBytes ?? 64 * 1024;
  const log =
    options.logRequests === true
      ? (entry: RequestLog) => process.stdout.write(`${JSON.stringify(entry)}\n`)
      : typeof options.logRequests === "function"
        ? options.logRequests
        : undefined;

  const served = new Map<string, Served>();
  let state: "loading" | "ready" | "closing" = "loading";
  let inFlight = 0;
  const idleWaiters: (() => void)[] = [];
  const decodePool = new DecodePool(Math.min(2, availableParallelism()));
  const loopDelay = monitorEventLoopDelay({ resolution: 5 });

  const registry = new Registry();
  const requests = registry.add(
    new Counter("cortex_requests_total", "HTTP requests by model, protocol and status code."),
  );
  const latency = registry.add(
    new Histogram("cortex_request_duration_seconds", "Request latency, from headers to response.", LATENCY_BUCKETS),
  );
  const batchSizes = registry.add(new Histogram("cortex_batch_size", "Rows per native predict call.", BATCH_BUCKETS));
  const inferenceTime = registry.add(
    new Histogram("cortex_batch_inference_seconds", "Duration of each native predict call.", LATENCY_BUCKETS),
  );
  const allVersions = () => [...served.values()].flatMap((s) => [...s.versions.values()]);
  registry.add(
    new Gauge("cortex_queue_depth", "Requests waiting for a batch.", () =>
      allVersions().map((v) => ({
        labels: { model: v.name, version: v.version },
        value: v.batcher.stats().queueDepth,
      })),
    ),
  );
  registry.add(
    new Gauge("cortex_event_loop_delay_max_seconds", "Longest event-loop stall since the server became ready.", () => [
      { labels: {}, value: loopDelay.max / 1e9 },
    ]),
  );

  const addVersion = (name: string, version: string, model: Model) => {
    const labels = { model: name, version };
    const entry: Version = {
      name,
      version,
      model,
      batcher: batcher(model, {
        maxBatchSize: options.maxBatchSize,
        batchTimeoutMs: options.batchTimeoutMs,
        maxQueue: options.maxQueue,
        onBatch: ({ rows, durationMs }) => {
          batchSizes.observe(labels, rows);
          inferenceTime.observe(labels, durationMs / 1000);
        },
      }),
    };
    const s = served.get(name) ?? { versions: new Map(), latest: version };
    s.versions.set(version, entry);
    if (Number(version) >= Number(s.latest)) s.latest = version;
    served.set(name, s);
  };

  const http = createServer((req, res) => void handle(req, res));
  // Clients keep connections open between requests; a slow-loris must not hold one forever.
  http.headersTimeout = 30_000;
  http.requestTimeout = 120_000;
  http.keepAliveTimeout = 5_000;

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const start = performance.now();
    const path = (req.url ?? "/").split("?")[0];
    const info: Partial<RequestLog> & { protocol: string } = { protocol: "other" };
    inFlight++;
    // A client that hangs up while queued takes its request out of the batch queue.
    const abort = new AbortController();
    res.on("close", () => {
      if (!res.writableFinished) abort.abort();
    });
    let status = 200;
    let body: unknown;
    let contentType = "application/json";
    let headers: Record<string, string> = {};
    try {
      const result = await route(req, path, info, abort.signal);
      if (typeof result === "string") {
        body = result;
        contentType = "text/plain; version=0.0.4; charset=utf-8";
      } else {
        [status, body] = result;
      }
    } catch (error) {
      if (error instanceof HttpError) {
        status = error.status;
        headers = error.headers;
        body = { error: error.message };
      } else {
        status = 500;
        body = { error: `internal error: ${(error as Error)?.message ?? String(error)}` };
      }
      info.error = (body as { error: string }).error;
    }
    if (!res.destroyed) {
      const text = typeof body === "string" ? body : JSON.stringify(body);
      // Say goodbye on every response once closing, so keep-alive clients reconnect elsewhere.
      if (state === "closing" || status === 413) headers.connection = "close";
      res.writeHead(status, {
        "content-type": contentType,
        "content-length": Buffer.byteLength(text),
        ...headers,
      });
      res.end(text);
      // The rest of an oversized body is never read: drop the connection instead.
      if (status === 413) res.on("finish", () => req.socket.destroy());
    }
    const ms = performance.now() - start;
    requests.inc({ model: info.model ?? "", protocol: info.protocol, code: String(status) });
    if (info.model) latency.observe({ model: info.model, protocol: info.protocol }, ms / 1000);
    log?.({
      time: new Date().toISOString(),
      method: req.method ?? "",
      path,
      status,
      ...info,
      ms: Math.round(ms * 1000) / 1000,
    });
    if (--inFlight === 0) for (const wake of idleWaiters.splice(0)) wake();
  }

  function allow(req: IncomingMessage, method: "GET" | "POST"): void {
    if (req.method !== method && !(method === "GET" && req.method === "HEAD")) {
      throw new HttpError(405, `method ${req.method} not allowed; use ${method}`, { allow: method });
    }
  }

  function lookup(name: string, version: string | undefined): Version {
    if (state === "loading") throw new HttpError(503, "models are loading", { "retry-after": "1" });
    const s = served.get(name);
    if (!s) throw new HttpError(404, `unknown model '${name}'`);
    const v = s.versions.get(version ?? s.latest);
    if (!v) throw new HttpError(404, `model '${name}' has no version '${version}'`);
    return v;
  }

  const describe = (v: Version): ModelDescription => ({
    name: v.name,
    version: v.version,
    versions: [...(served.get(v.name)?.versions.keys() ?? [])],
    inputShape: v.model.inputShape,
    outputShape: v.model.outputShape,
  });

  async function route(
    req: IncomingMessage,
    path: string,
    info: Partial<RequestLog> & { protocol: string },
    signal: AbortSignal,
  ): Promise<[number, unknown] | string> {
    if (path === "/metrics") {
      allow(req, "GET");
      return registry.render();
    }
    if (path === "/v2" || path.startsWith("/v2/")) info.protocol = "kserve_v2";
    if (path.startsWith("/v1/")) info.protocol = "tfserving";
    if (path === "/v2") {
      allow(req, "GET");
      return [200, { name: "cortex-nn", version: SERVER_VERSION, extensions: [] }];
    }
    if (path === "/v2/health/live") {
      allow(req, "GET");
      return [200, { live: true }];
    }
    if (path === "/v2/health/ready") {
      allow(req, "GET");
      if (state !== "ready") throw new HttpError(503, state === "loading" ? "loading" : "shutting down");
      return [200, { ready: true }];
    }
    const v1 = V1_ROUTE.exec(path);
    const v2 = v1 ? null : V2_ROUTE.exec(path);
    const match = v1 ?? v2;
    if (!match) throw new HttpError(404, `no route for ${path}`);
    const [, rawName, rawVersion, action] = match;
    const name = decodeURIComponent(rawName);
    const version = rawVersion === undefined ? undefined : decodeURIComponent(rawVersion);
    info.model = name;
    const infer = action === ":predict" || action === "/infer";
    if (action?.startsWith(":") && !infer) {
      throw new HttpError(404, `unsupported method '${action.slice(1)}'; this server implements :predict`);
    }
    allow(req, infer ? "POST" : "GET");
    if (state === "closing") throw new HttpError(503, "shutting down", { "retry-after": "1" });
    const entry = lookup(name, version);
    info.version = entry.version;
    if (v1 && action === "/metadata") return [200, tfServingMetadata(describe(entry))];
    if (v1 && !infer) return [200, tfServingStatus(version ? [entry.version] : describe(entry).versions)];
    if (v2 && action === "/ready") return [200, { name, ready: true }];
    if (v2 && !infer) return [200, v2Metadata(describe(entry))];

    const protocol = v1 ? "tfserving" : "v2";
    const bytes = await readBody(req, bodyLimit);
    // A request is accepted once its body is in: one still arriving when shutdown began is refused.
    // (The cast: TypeScript narrowed `state` before the await and cannot see close() change it.)
    if ((state as string) === "closing") throw new HttpError(503, "shutting down", { "retry-after": "1" });
    const sampleShape = entry.model.inputShape;
    let decoded: DecodedRequest;
    try {
      decoded =
        bytes.byteLength >= workerDecodeBytes
          ? await decodePool.decode(bytes, protocol, sampleShape, INPUT_NAME, OUTPUT_NAME)
          : decodeRequestBody(new TextDecoder().decode(bytes), protocol, sampleShape, INPUT_NAME, OUTPUT_NAME);
    } catch (error) {
      if (error instanceof WorkerCrash) throw error;
      throw new HttpError(400, (error as Error).message);
    }
    info.rows = decoded.shape[0];
    let output: Tensor;
    try {
      output = await entry.batcher.predict(new Tensor(decoded.data, decoded.shape), { signal });
    } catch (error) {
      const code = (error as BatcherError).code;
      if (code === "QUEUE_FULL") throw new HttpError(429, "queue full, retry later", { "retry-after": "1" });
      if (code === "CLOSED") throw new HttpError(503, "shutting down", { "retry-after": "1" });
      if (code === "BAD_SHAPE") throw new HttpError(400, (error as Error).message);
      throw error;
    }
    return [200, encodeResponse(decoded, output, { name, version: entry.version })];
  }

  const listening = new Promise<void>((resolve, reject) => {
    http.once("error", reject);
    http.listen(options.port ?? 8501, options.host ?? "127.0.0.1", () => {
      http.off("error", reject);
      resolve();
    });
  });
  await listening;

  let closing: Promise<void> = Promise.resolve();
  async function close(): Promise<void> {
    if (state === "closing") return closing;
    state = "closing";
    closing = (async () => {
      const stopped = new Promise<void>((resolve) => http.close(() => resolve()));
      http.closeIdleConnections();
      if (inFlight > 0) await new Promise<void>((resolve) => idleWaiters.push(resolve));
      await Promise.all(allVersions().map((v) => v.batcher.close()));
      http.closeAllConnections();
      await stopped;
      await decodePool.close();
      loopDelay.disable();
    })();
    return closing;
  }

  try {
    for (const name of names) {
      const spec = options.models[name];
      if (typeof spec !== "string") {
        addVersion(name, "1", spec);
        continue;
      }
      const versions = versionDirectories(spec);
      for (const version of versions ?? ["1"]) {
        const model = await loadModel(versions ? join(spec, version) : spec);
        if (options.device) model.compile({ optimizer: "sgd", loss: "meanSquaredError", device: options.device });
        if (options.quantize) model.quantize({ mode: options.quantize });
        addVersion(name, version, model);
      }
    }
  } catch (error) {
    await close();
    throw error;
  }
  state = "ready";
  loopDelay.enable();

  const address = http.address() as AddressInfo;
  const host = address.family === "IPv6" ? `[${address.address}]` : address.address;
  return { url: `http://${host}:${address.port}`, close };
}

const SERVER_VERSION = "0.1.0";

/** Reads the body, refusing (413) as soon as it exceeds `limit` without reading the rest. */
function readBody(req: IncomingMessage, limit: number): Promise<Uint8Array> {
  const declared = Number(req.headers["content-length"]);
  if (declared > limit) {
    return Promise.reject(new HttpError(413, `request body of ${declared} bytes exceeds the limit of ${limit}`));
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let total = 0;
    const cleanup = () => {
      req.off("data", onData);
      req.off("end", onEnd);
      req.off("error", onError);
    };
    const onData = (chunk: Buffer) => {
      total += chunk.length;
      if (total > limit) {
        cleanup();
        req.pause();
        reject(new HttpError(413, `request body exceeds the limit of ${limit} bytes`));
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = () => {
      cleanup();
      // A fresh, unpooled copy: it may be transferred to a decode worker.
      const bytes = new Uint8Array(total);
      let offset = 0;
      for (const c of chunks) {
        bytes.set(c, offset);
        offset += c.length;
      }
      resolve(bytes);
    };
    const onError = (error: Error) => {
      cleanup();
      reject(new HttpError(400, `request body: ${error.message}`));
    };
    req.on("data", onData);
    req.on("end", onEnd);
    req.on("error", onError);
  });
}
