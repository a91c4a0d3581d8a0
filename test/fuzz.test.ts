/**
 * Fuzzing of the native entry points with hostile tensor and shape arguments: random shapes
 * (0, 2^31, 2^32 - 1, negative, NaN, fractional), data of the wrong length, bad batch sizes and
 * mutated layer configs (test/hostile/fuzz-child.ts). Every call must return or throw an Error.
 * The loop runs in a child process so that an abort is reported with the call that caused it:
 * the seed is replayed with tracing on. Runs CORTEX_FUZZ_SECS seconds (default 3).
 */
import { spawnSync } from "node:child_process";
import { describe, expect, it } from "vitest";

const seconds = Number(process.env.CORTEX_FUZZ_SECS ?? 3);
const seed = Number(process.env.CORTEX_FUZZ_SEED ?? Date.now() % 2 ** 31);

/** The fuzz child for `seconds`, or (a replay) for exactly `calls` calls with every call traced. */
function runChild(trace: boolean, calls?: number) {
  const args = ["--import", "tsx", "test/hostile/fuzz-child.ts", String(seed), String(seconds)];
  if (calls !== undefined) args.push(String(calls));
  return spawnSync(process.execPath, args, {
    encoding: "utf8",
    env: { ...process.env, CORTEX_FUZZ_TRACE: trace ? "1" : "0" },
    maxBuffer: 1 << 30,
    timeout: (trace ? 10 * seconds + 120 : seconds + 60) * 1000,
  });
}

describe(`fuzzing the native entry points (CORTEX_FUZZ_SEED=${seed})`, () => {
  it("hostile shapes, lengths, batch sizes and configs end in a result or an Error", () => {
    const run = runChild(false);
    if (run.status !== 0) {
      // Replay to just past the last progress mark the run printed: the same calls, traced.
      const marks = [...(run.stdout ?? "").matchAll(/^progress (\d+)$/gm)];
      const reached = marks.length ? Number(marks[marks.length - 1][1]) + 1000 : undefined;
      const replay = runChild(true, reached);
      const lastCalls = replay.stderr.trim().split("\n").slice(-3).join("\n");
      throw new Error(
        `the fuzz child ended with status ${run.status} signal ${run.signal}:\n${run.stderr.slice(-2000)}\n` +
          `replay of seed ${seed}: status ${replay.status} signal ${replay.signal}; last calls:\n${lastCalls}`,
      );
    }
    const summary = JSON.parse(run.stdout.trim().split("\n").pop() as string) as {
      calls: number;
      healthy: boolean;
      slowest: { ms: number; what: string };
      outcomes: Record<string, number>;
    };
    console.log(
      `fuzz: ${summary.calls} calls from seed ${seed}; slowest ${summary.slowest.ms.toFixed(0)} ms (${summary.slowest.what})`,
    );
    expect(summary.calls).toBeGreaterThan(100);
    expect(summary.healthy).toBe(true);
  }, 300_000);
});
