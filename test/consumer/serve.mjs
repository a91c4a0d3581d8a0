// The installed `cortex-nn serve` command: saves a small model, serves it on a random port,
// asks KServe's ready probe and a TF Serving predict, then stops it with SIGTERM (exit 0).
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { dense, sequential } from "cortex-nn";

const dir = mkdtempSync(join(tmpdir(), "consumer-serve-"));
const model = sequential([dense({ units: 2, inputShape: [3] })], { seed: 1 });
await model.save(join(dir, "m"));
// The installed command itself (what `npx cortex-nn` runs), so the SIGTERM reaches the server
// and not an npm wrapper around it.
const bin = join("node_modules", ".bin", "cortex-nn");
const child = spawn(process.execPath, [bin, "serve", "--model", `m=${join(dir, "m")}`, "--port", "0"], {
  stdio: ["ignore", "ignore", "pipe"],
});
let log = "";
const url = await new Promise((resolve, reject) => {
  child.stderr.on("data", (d) => {
    log += d;
    const m = /serving .* at (http:\/\/\S+)/.exec(log);
    if (m) resolve(m[1]);
  });
  child.on("exit", (code) => reject(new Error(`cortex-nn serve exited ${code}: ${log}`)));
  setTimeout(() => reject(new Error(`no 'serving' line in 20 s: ${log}`)), 20_000);
});
for (let i = 0; (await fetch(`${url}/v2/health/ready`)).status !== 200; i++) {
  if (i > 100) throw new Error("never ready");
  await new Promise((r) => setTimeout(r, 100));
}
const res = await fetch(`${url}/v1/models/m:predict`, { method: "POST", body: '{"instances": [[1, 2, 3]]}' });
const body = await res.json();
const [expected] = (
  await model.predict((await import("cortex-nn")).tensor(new Float32Array([1, 2, 3]), [1, 3]))
).toArray();
if (res.status !== 200 || Math.abs(body.predictions[0][0] - expected[0]) > 1e-6) {
  throw new Error(`predict: ${res.status} ${JSON.stringify(body)} vs ${expected}`);
}
child.kill("SIGTERM");
const code = await new Promise((resolve) => child.on("exit", resolve));
rmSync(dir, { recursive: true, force: true });
if (code !== 0) throw new Error(`exit code ${code} after SIGTERM`);
console.log(`cortex-nn serve: ready, predict ${JSON.stringify(body.predictions[0])}, SIGTERM exit 0`);
