import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { request } from "node:http";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { dense, type Model, type Server, sequential, serve, tensor } from "../index.ts";

const dir = mkdtempSync(join(tmpdir(), "cortex-serve-"));
const build = (seed: number) => {
  const m = sequential([dense({ units: 5, activation: "relu", inputShape: [4] }), dense({ units: 3 })]);
  m.setWeights(
    m.getWeights().map((w) =>
      tensor(
        w.data.map((_, i) => Math.sin(i + seed)),
        [...w.shape],
      ),
    ),
  );
  return m;
};
const v1Model = build(1);
const v2Model = build(2);
const rows = [
  [0.5, -1, 2, 0.25],
  [1, 2, 3, 4],
  [-3, 0, 1e-3, 7],
];
let server: Server;

async function expected(model: Model, input: number[][]): Promise<number[][]> {
  const y = await model.predict(tensor(Float32Array.from(input.flat()), [input.length, 4]));
  return input.map((_, r) => Array.from(y.data.slice(r * 3, r * 3 + 3)));
}
const close = (a: number[][], b: number[][]) => {
  expect(a.length).toBe(b.length);
  // 1e-6 relative: merged batches may round the last float32 bit differently (see batcher()).
  for (const [r, row] of a.entries()) {
    for (const [c, v] of row.entries()) {
      expect(Math.abs(v - b[r][c])).toBeLessThanOrEqual(1e-6 * Math.max(1, Math.abs(b[r][c])));
    }
  }
};

async function call(path: string, body?: unknown, method = body === undefined ? "GET" : "POST") {
  const res = await fetch(server.url + path, {
    method,
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, json: text.startsWith("{") ? JSON.parse(text) : text };
}

beforeAll(async () => {
  await v1Model.save(join(dir, "versioned", "1"));
  await v2Model.save(join(dir, "versioned", "2"));
  await v2Model.save(join(dir, "single"));
  server = await serve({
    models: { inline: v1Model, versioned: join(dir, "versioned") },
    port: 0,
    bodyLimitBytes: 64 * 1024,
    workerDecodeBytes: 1024, // the larger requests below take the worker path
    batchTimeoutMs: 1,
  });
});
afterAll(async () => {
  await server?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe("serve: TF Serving REST", () => {
  it("predicts in row and columnar format, equal to model.predict", async () => {
    const rowsRes = await call("/v1/models/inline:predict", { instances: rows });
    expect(rowsRes.status).toBe(200);
    close(rowsRes.json.predictions, await expected(v1Model, rows));
    const named = await call("/v1/models/inline:predict", { instances: rows.map((r) => ({ input: r })) });
    close(named.json.predictions, await expected(v1Model, rows));
    const columnar = await call("/v1/models/inline:predict", { signature_name: "serving_default", inputs: rows });
    close(columnar.json.outputs, await expected(v1Model, rows));
  });

  it("serves numbered directories as versions, the newest by default", async () => {
    const latest = await call("/v1/models/versioned:predict", { instances: rows });
    close(latest.json.predictions, await expected(v2Model, rows));
    const first = await call("/v1/models/versioned/versions/1:predict", { instances: rows });
    close(first.json.predictions, await expected(v1Model, rows));
    const status = await call("/v1/models/versioned");
    expect(status.json.model_version_status.map((s: { version: string }) => s.version)).toEqual(["1", "2"]);
    expect(status.json.model_version_status[0]).toEqual({
      version: "1",
      state: "AVAILABLE",
      status: { error_code: "OK", error_message: "" },
    });
    const meta = await call("/v1/models/versioned/versions/2/metadata");
    const sig = meta.json.metadata.signature_def.signature_def.serving_default;
    expect(meta.json.model_spec).toMatchObject({ name: "versioned", version: "2" });
    expect(sig.inputs.input.tensor_shape.dim.map((d: { size: string }) => d.size)).toEqual(["-1", "4"]);
    expect(sig.outputs.output.tensor_shape.dim.map((d: { size: string }) => d.size)).toEqual(["-1", "3"]);
  });

  it("merges concurrent requests (large ones parsed on a worker) and stays exact", async () => {
    const many = Array.from({ length: 40 }, (_, i) => rows.map((r) => r.map((v) => v + (i % 7) * 0.1)));
    const big = Array.from({ length: 100 }, (_, i) => [i / 50, -i / 100, 1 - i / 80, 0.5]); // > 1 KiB: worker decode
    const responses = await Promise.all([
      ...many.map((input) => call("/v1/models/inline:predict", { instances: input })),
      call("/v1/models/inline:predict", { instances: big }),
    ]);
    for (const [i, input] of [...many, big].entries())
      close(responses[i].json.predictions, await expected(v1Model, input));
  });
});

describe("serve: KServe v2", () => {
  it("answers health, server and model metadata", async () => {
    expect((await call("/v2/health/live")).status).toBe(200);
    expect((await call("/v2/health/ready")).status).toBe(200);
    expect((await call("/v2")).json).toMatchObject({ name: "cortex-nn" });
    expect((await call("/v2/models/versioned/ready")).status).toBe(200);
    expect((await call("/v2/models/versioned")).json).toEqual({
      name: "versioned",
      versions: ["1", "2"],
      platform: "cortex-nn",
      inputs: [{ name: "input", datatype: "FP32", shape: [-1, 4] }],
      outputs: [{ name: "output", datatype: "FP32", shape: [-1, 3] }],
    });
    expect((await call("/v2/models/versioned/versions/1")).status).toBe(200);
  });

  it("infers with flat and nested data", async () => {
    const want = await expected(v1Model, rows);
    for (const data of [rows.flat(), rows]) {
      const res = await call("/v2/models/versioned/versions/1/infer", {
        id: "req-1",
        inputs: [{ name: "input", shape: [3, 4], datatype: "FP32", data }],
        outputs: [{ name: "output" }],
      });
      expect(res.status).toBe(200);
      expect(res.json).toMatchObject({ model_name: "versioned", model_version: "1", id: "req-1" });
      const [out] = res.json.outputs;
      expect(out).toMatchObject({ name: "output", shape: [3, 3], datatype: "FP32" });
      close([out.data], [want.flat()]);
    }
  });
});

describe("serve: errors", () => {
  const infer = (data: unknown, extra: object = {}) => ({
    inputs: [{ name: "input", shape: [1, 4], datatype: "FP32", data, ...extra }],
  });
  it.each([
    ["malformed JSON", "/v1/models/inline:predict", "{not json", 400],
    ["wrong shape", "/v1/models/inline:predict", { instances: [[1, 2, 3]] }, 400],
    ["ragged rows", "/v1/models/inline:predict", { instances: [[1, 2, 3, 4], [1]] }, 400],
    ["non-finite value", "/v1/models/inline:predict", '{"instances": [[1, 2, 3, 1e999]]}', 400],
    ["a string value", "/v1/models/inline:predict", { instances: [[1, 2, "3", 4]] }, 400],
    ["unknown field", "/v1/models/inline:predict", { instances: [[1, 2, 3, 4]], extra: 1 }, 400],
    [
      "both instances and inputs",
      "/v1/models/inline:predict",
      { instances: [[1, 2, 3, 4]], inputs: [[1, 2, 3, 4]] },
      400,
    ],
    ["v2 wrong data length", "/v2/models/inline/infer", infer([1, 2, 3]), 400],
    ["v2 wrong datatype", "/v2/models/inline/infer", infer([1, 2, 3, 4], { datatype: "INT32" }), 400],
    ["v2 unknown input field", "/v2/models/inline/infer", infer([1, 2, 3, 4], { foo: 1 }), 400],
    ["unknown model", "/v1/models/nope:predict", { instances: [[1, 2, 3, 4]] }, 404],
    ["unknown version", "/v2/models/versioned/versions/9/infer", infer([1, 2, 3, 4]), 404],
    ["unknown path", "/v3/whatever", { a: 1 }, 404],
  ])("%s → %i", async (_what, path, body, status) => {
    const res = await call(path, body);
    expect(res.status).toBe(status);
    expect(typeof res.json.error).toBe("string");
  });

  it("405 for the wrong method, with Allow", async () => {
    const res = await call("/v1/models/inline:predict");
    expect(res.status).toBe(405);
    expect(res.headers.get("allow")).toBe("POST");
    expect((await call("/v2/health/ready", {})).status).toBe(405);
  });

  it("413 over the body limit, declared or streamed", async () => {
    const declared = await rawRequest(
      `POST /v1/models/inline:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n{"instances"`,
    );
    expect(declared).toMatch(/^HTTP\/1.1 413/);
    const streamed = await new Promise<number>((resolve, reject) => {
      const req = request(`${server.url}/v1/models/inline:predict`, { method: "POST" }, (res) => {
        resolve(res.statusCode ?? 0);
        res.resume();
      });
      req.on("error", reject);
      const chunk = "x".repeat(16 * 1024);
      // Chunked upload without a Content-Length: the server counts as it reads.
      for (let i = 0; i < 8; i++) req.write(chunk);
    });
    expect(streamed).toBe(413);
    expect((await call("/v2/health/ready")).status).toBe(200); // others unaffected
  });

  it("429 with Retry-After when the queue is full", async () => {
    const small = await serve({ models: { m: v1Model }, port: 0, maxQueue: 1, batchTimeoutMs: 300 });
    const post = () =>
      fetch(`${small.url}/v1/models/m:predict`, { method: "POST", body: JSON.stringify({ instances: rows }) });
    const responses = await Promise.all([post(), post(), post()]);
    const codes = responses.map((r) => r.status).sort();
    expect(codes).toEqual([200, 429, 429]);
    expect(responses.find((r) => r.status === 429)?.headers.get("retry-after")).toBe("1");
    const metrics = await (await fetch(`${small.url}/metrics`)).text();
    expect(metrics).toMatch(/cortex_requests_total\{model="m",protocol="tfserving",code="429"\} 2/);
    await small.close();
  });

  it("503 for a request completed after shutdown began; the one accepted before still gets 200", async () => {
    const s = await serve({ models: { m: v1Model }, port: 0, batchTimeoutMs: 300 });
    const body = JSON.stringify({ instances: rows });
    const head = `POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nContent-Length: ${body.length}\r\n\r\n`;
    const url = new URL(s.url);
    const open = async () => {
      const socket = connect(Number(url.port), url.hostname);
      const state = { text: "", closed: new Promise((r) => socket.once("close", r)) };
      socket.on("data", (d) => {
        state.text += d;
      });
      await new Promise((r) => socket.once("connect", r));
      return { socket, state };
    };
    const accepted = await open();
    accepted.socket.write(head + body); // queued for 300 ms
    const late = await open();
    late.socket.write(head + body.slice(0, 10)); // body still arriving
    await new Promise((r) => setTimeout(r, 50));
    const closed = s.close();
    late.socket.write(body.slice(10));
    await closed;
    await Promise.all([accepted.state.closed, late.state.closed]);
    expect(accepted.state.text).toMatch(/^HTTP\/1.1 200/);
    expect(late.state.text).toMatch(/^HTTP\/1.1 503/);
  });
});

describe("serve: metrics and logs", () => {
  it("exposes Prometheus metrics", async () => {
    const text = (await call("/metrics")).json as string;
    for (const name of [
      "cortex_requests_total",
      "cortex_request_duration_seconds_bucket",
      "cortex_batch_size_bucket",
      "cortex_queue_depth",
      "cortex_batch_inference_seconds_bucket",
    ]) {
      expect(text).toContain(name);
    }
    expect(text).toMatch(/cortex_requests_total\{model="inline",protocol="tfserving",code="200"\} \d+/);
  });

  it("logs one JSON line per request", async () => {
    const lines: unknown[] = [];
    const s = await serve({ models: { m: v1Model }, port: 0, logRequests: (l) => lines.push(l) });
    await fetch(`${s.url}/v1/models/m:predict`, { method: "POST", body: JSON.stringify({ instances: rows }) });
    await fetch(`${s.url}/v1/models/zzz`);
    await s.close();
    expect(lines).toMatchObject([
      { method: "POST", path: "/v1/models/m:predict", status: 200, model: "m", version: "1", rows: 3 },
      { method: "GET", status: 404, model: "zzz" },
    ]);
  });
});

describe("cortex-nn serve (CLI)", () => {
  it("SIGTERM during load: every accepted request gets 200, then exit 0", async () => {
    const child: ChildProcess = spawn(
      process.execPath,
      ["--import", "tsx", "bin/cortex-nn.mjs", "serve", "--model", `m=${join(dir, "single")}`, "--port", "0"].concat([
        "--batch-timeout-ms",
        "400",
      ]),
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    let stderr = "";
    const url = await new Promise<string>((resolve, reject) => {
      child.stderr?.on("data", (d) => {
        stderr += d;
        const m = /at (http:\/\/\S+)/.exec(stderr);
        if (m) resolve(m[1]);
      });
      child.once("exit", (code) => reject(new Error(`exited ${code}: ${stderr}`)));
    });
    const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
    const post = () =>
      fetch(`${url}/v1/models/m:predict`, { method: "POST", body: JSON.stringify({ instances: rows }) }).then(
        (r) => r.status,
      );
    const accepted = Array.from({ length: 20 }, post);
    await new Promise((r) => setTimeout(r, 150)); // all are queued (the batch waits 400 ms)
    child.kill("SIGTERM");
    expect(await Promise.all(accepted)).toEqual(new Array(20).fill(200));
    expect(await exited).toBe(0);
  });
});

/** Sends raw bytes and returns everything the server answers before closing. */
function rawRequest(bytes: string): Promise<string> {
  const url = new URL(server.url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(url.port), url.hostname, () => socket.write(bytes));
    let text = "";
    socket.on("data", (d) => {
      text += d;
    });
    socket.on("close", () => resolve(text));
    socket.on("error", reject);
  });
}
