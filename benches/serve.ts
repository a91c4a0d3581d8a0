/**
 * `npm run bench:serve`: HTTP serving under load. Batch-1 `:predict` requests at 1, 16, 64 and
 * 256 concurrent keep-alive connections against
 *   (a) `cortex-nn serve` with the MNIST convnet of benches/infer.ts, and
 *   (b) a plain node:http server around onnxruntime-node running the same model with the same
 *       weights (cortex-nn's own ONNX export): parse JSON, `session.run`, respond, as a Node
 *       user writes it today.
 * Each server runs in its own child process so the load generator does not share its event
 * loop. `/v2/health/ready` is polled during the load. Then a fresh cortex-nn server takes
 * 256-row requests and reports its largest event-loop stall, with and without the JSON worker.
 * Prints a markdown table and writes it into benches/RESULTS.md.
 *
 * `tsx benches/serve.ts [secondsPerRun]` (default 3).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { type Agent, createServer, Agent as HttpAgent, request } from "node:http";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { conv2d, dense, flatten, maxPooling2d, sequential, setSeed } from "../index.ts";
import { writeSection } from "./results.ts";

const root = join(import.meta.dirname, "..");

/** The peer: what a Node user writes today around onnxruntime-node. */
async function runPeer(onnxPath: string): Promise<void> {
  const ort = await import("onnxruntime-node");
  const session = await ort.InferenceSession.create(onnxPath, { graphOptimizationLevel: "all" });
  const [inputName] = session.inputNames;
  const [outputName] = session.outputNames;
  const server = createServer((req, res) => {
    const send = (status: number, body: unknown) => {
      const text = JSON.stringify(body);
      res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
      res.end(text);
    };
    if (req.url === "/v2/health/ready") return send(200, { ready: true });
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", async () => {
      try {
        const { instances } = JSON.parse(Buffer.concat(chunks).toString("utf8")) as { instances: number[][][][] };
        const data = Float32Array.from(instances.flat(3));
        const out = await session.run({ [inputName]: new ort.Tensor("float32", data, [instances.length, 28, 28, 1]) });
        const y = out[outputName].data as Float32Array;
        const per = y.length / instances.length;
        send(200, { predictions: instances.map((_, r) => Array.from(y.subarray(r * per, (r + 1) * per))) });
      } catch (error) {
        send(400, { error: String(error) });
      }
    });
  });
  server.listen(0, "127.0.0.1", () => {
    const address = server.address() as { port: number };
    process.stderr.write(`peer serving at http://127.0.0.1:${address.port}\n`);
  });
}

/** Starts a server child; resolves to its URL, read from its "at http://..." line on stderr. */
function startChild(args: string[]): Promise<{ child: ChildProcess; url: string }> {
  const child = spawn(process.execPath, ["--import", "tsx", ...args], {
    cwd: root,
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  return new Promise((resolve, reject) => {
    child.stderr?.on("data", (d) => {
      stderr += d;
      const m = /at (http:\/\/\S+)/.exec(stderr);
      if (m) resolve({ child, url: m[1] });
    });
    child.once("exit", (code) => reject(new Error(`server exited (${code}): ${stderr}`)));
  });
}

async function stopChild(child: ChildProcess): Promise<void> {
  const exited = new Promise((r) => child.once("exit", r));
  child.kill("SIGTERM");
  await exited;
}

function post(agent: Agent, url: URL, body: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      {
        method: "POST",
        agent,
        headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) },
      },
      (res) => {
        res.resume();
        res.on("end", () => resolve(res.statusCode ?? 0));
      },
    );
    req.on("error", reject);
    req.end(body);
  });
}

function get(agent: Agent, url: URL): Promise<number> {
  return new Promise((resolve, reject) => {
    request(url, { agent }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode ?? 0));
    })
      .on("error", reject)
      .end();
  });
}

const percentile = (sorted: number[], p: number) =>
  sorted.length === 0 ? Number.NaN : sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];

interface LoadResult {
  rps: number;
  p50: number;
  p99: number;
  errors: number;
  healthP99: number;
}

/** `connections` closed loops of POSTs for `seconds` (after a short warm-up), health polled every 20 ms. */
async function load(
  base: string,
  path: string,
  body: string,
  connections: number,
  seconds: number,
): Promise<LoadResult> {
  const agent = new HttpAgent({ keepAlive: true, maxSockets: connections });
  const healthAgent = new HttpAgent({ keepAlive: true, maxSockets: 1 });
  const url = new URL(path, base);
  const latencies: number[] = [];
  const health: number[] = [];
  let errors = 0;
  let measuring = false;
  let running = true;
  const loop = async () => {
    while (running) {
      const t0 = performance.now();
      const status = await post(agent, url, body).catch(() => 0);
      if (!measuring) continue;
      if (status === 200) latencies.push(performance.now() - t0);
      else errors++;
    }
  };
  const poll = async () => {
    while (running) {
      const t0 = performance.now();
      const status = await get(healthAgent, new URL("/v2/health/ready", base)).catch(() => 0);
      if (measuring) {
        if (status === 200) health.push(performance.now() - t0);
        else errors++;
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  const loops = [...Array.from({ length: connections }, loop), poll()];
  await new Promise((r) => setTimeout(r, 500));
  measuring = true;
  const start = performance.now();
  await new Promise((r) => setTimeout(r, seconds * 1000));
  measuring = false;
  const elapsed = (performance.now() - start) / 1000;
  running = false;
  await Promise.all(loops);
  agent.destroy();
  healthAgent.destroy();
  latencies.sort((a, b) => a - b);
  health.sort((a, b) => a - b);
  return {
    rps: latencies.length / elapsed,
    p50: percentile(latencies, 50),
    p99: percentile(latencies, 99),
    errors,
    healthP99: percentile(health, 99),
  };
}

async function main(seconds: number): Promise<void> {
  setSeed(42);
  const model = sequential([
    conv2d({ filters: 32, kernelSize: 3, activation: "relu", inputShape: [28, 28, 1] }),
    maxPooling2d({ poolSize: 2 }),
    conv2d({ filters: 64, kernelSize: 3, activation: "relu" }),
    maxPooling2d({ poolSize: 2 }),
    flatten(),
    dense({ units: 10, activation: "softmax" }),
  ]);
  const work = mkdtempSync(join(tmpdir(), "cortex-bench-serve-"));
  const modelDir = join(work, "convnet");
  await model.save(modelDir);
  mkdirSync(join(import.meta.dirname, ".onnx"), { recursive: true });
  const onnxPath = join(import.meta.dirname, ".onnx", "serve-convnet.onnx");
  await model.export(onnxPath, { format: "onnx" });

  const sample = (rows: number) =>
    JSON.stringify({
      instances: Array.from({ length: rows }, (_, r) =>
        Array.from({ length: 28 }, (_, i) =>
          Array.from({ length: 28 }, (_, j) => [
            Math.round(((Math.sin((r + 1) * (i * 28 + j) * 0.37) + 1) / 2) * 1e4) / 1e4,
          ]),
        ),
      ),
    });
  const body = sample(1);
  const path = "/v1/models/convnet:predict";
  const servers = [
    { name: "cortex-nn serve", args: ["bin/cortex-nn.mjs", "serve", "--model", `convnet=${modelDir}`, "--port", "0"] },
    { name: "node:http + onnxruntime-node", args: ["benches/serve.ts", "peer", onnxPath] },
  ];
  const rows: { server: string; connections: number; r: LoadResult }[] = [];
  for (const s of servers) {
    const { child, url } = await startChild(s.args);
    for (const connections of [1, 16, 64, 256]) {
      const r = await load(url, path, body, connections, seconds);
      rows.push({ server: s.name, connections, r });
      console.log(
        `${s.name}, ${connections} connections: ${r.rps.toFixed(0)} req/s, p50 ${r.p50.toFixed(2)} ms, ` +
          `p99 ${r.p99.toFixed(2)} ms, ${r.errors} errors, health p99 ${r.healthP99.toFixed(2)} ms`,
      );
    }
    await stopChild(child);
  }

  // The largest event-loop stall of the server itself while it takes 256-row requests (4.3 MB of JSON each).
  const bigBody = sample(256);
  const stalls: { mode: string; stallMs: number; rps: number }[] = [];
  for (const [mode, extra] of [
    ["JSON worker (default, bodies >= 64 KiB)", []],
    ["main-thread JSON (--worker-decode-bytes 1e9)", ["--worker-decode-bytes", "1000000000"]],
  ] as const) {
    const { child, url } = await startChild([...servers[0].args, ...extra]);
    const r = await load(url, path, bigBody, 4, seconds);
    const metrics = await (await fetch(new URL("/metrics", url))).text();
    const stall = Number(/^cortex_event_loop_delay_max_seconds (\S+)$/m.exec(metrics)?.[1]) * 1000;
    stalls.push({ mode, stallMs: stall, rps: r.rps });
    console.log(
      `256-row requests, ${mode}: largest event-loop stall ${stall.toFixed(1)} ms, ${r.rps.toFixed(1)} req/s`,
    );
    await stopChild(child);
  }
  rmSync(work, { recursive: true, force: true });

  const cpu = cpus()[0]?.model ?? "unknown CPU";
  const fmt = (v: number, d = 2) => (Number.isFinite(v) ? v.toFixed(d) : "-");
  const ort = JSON.parse(readFileSync(join(root, "node_modules/onnxruntime-node/package.json"), "utf8")).version;
  const at64 = (name: string) => rows.find((x) => x.server === name && x.connections === 64)?.r;
  const [ours, peer] = [at64(servers[0].name), at64(servers[1].name)];
  const table = [
    "## Serving (bench:serve)",
    "",
    `${cpu} (${cpus().length} cores), Node ${process.version}, onnxruntime-node ${ort}, ` +
      `${new Date().toISOString().slice(0, 10)}. MNIST convnet of bench:infer (same weights: cortex-nn's ONNX export), ` +
      `batch-1 TF Serving \`:predict\` JSON requests (${body.length} bytes), closed-loop keep-alive connections, ` +
      `${seconds} s per row after 0.5 s warm-up; servers and load generator share the machine. cortex-nn: defaults ` +
      "(max batch 64, batch timeout 0: batches form while one runs). Health = `GET /v2/health/ready` every 20 ms during the load.",
    "",
    "| server | connections | req/s | p50 ms | p99 ms | errors | health p99 ms |",
    "|---|---|---|---|---|---|---|",
    ...rows.map(
      ({ server, connections, r }) =>
        `| ${server} | ${connections} | ${r.rps.toFixed(0)} | ${fmt(r.p50)} | ${fmt(r.p99)} | ${r.errors} | ${fmt(r.healthP99)} |`,
    ),
    "",
    ours && peer
      ? `At 64 connections: ${(ours.rps / peer.rps).toFixed(2)}x the peer's requests/s (target >= 1.5x), ` +
        `p99 ${fmt(ours.p99)} vs ${fmt(peer.p99)} ms.`
      : "",
    "",
    `Largest event-loop stall of the cortex-nn server under 256-row requests (${(bigBody.length / 1e6).toFixed(1)} MB ` +
      "of JSON each, 4 connections):",
    "",
    "| JSON decoding | largest stall ms | req/s |",
    "|---|---|---|",
    ...stalls.map((s) => `| ${s.mode} | ${fmt(s.stallMs, 1)} | ${fmt(s.rps, 1)} |`),
    "",
  ].join("\n");
  console.log(`\n${table}`);
  writeSection("serve", table);
}

// Last: the helpers above are `const`s, initialised only once their lines have run.
if (process.argv[2] === "peer") await runPeer(process.argv[3]);
else await main(Number(process.argv[2] ?? 3));
