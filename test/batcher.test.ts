import { describe, expect, it } from "vitest";
import { BatcherError, batcher, dense, type Model, sequential, type Tensor } from "../index.ts";
import { randomTensor } from "./helpers.ts";

function smallModel(): Model {
  return sequential([dense({ units: 16, activation: "relu", inputShape: [8] }), dense({ units: 3 })]);
}

/** Counts the native predict calls the batcher makes. */
function countPredicts(model: Model): { calls: number[] } {
  const seen = { calls: [] as number[] };
  const original = model.predict.bind(model);
  model.predict = (x: Tensor, args?: { batchSize?: number }) => {
    seen.calls.push(x.shape[0]);
    return original(x, args);
  };
  return seen;
}

const maxDiff = (a: Tensor, b: Tensor) => a.data.reduce((m, v, i) => Math.max(m, Math.abs(v - b.data[i])), 0);

describe("batcher", () => {
  it("merges 64 concurrent calls into fewer native predicts with the same results", async () => {
    const model = smallModel();
    const inputs = Array.from({ length: 64 }, (_, i) => randomTensor([1 + (i % 3), 8], i + 1));
    const expected = await Promise.all(inputs.map((x) => model.predict(x)));
    const seen = countPredicts(model);
    const b = batcher(model, { maxBatchSize: 32, batchTimeoutMs: 5 });
    const results = await Promise.all(inputs.map((x) => b.predict(x)));
    expect(seen.calls.length).toBeLessThan(16);
    expect(Math.max(...seen.calls)).toBeLessThanOrEqual(32);
    results.forEach((y, i) => {
      expect(y.shape).toEqual(expected[i].shape);
      expect(maxDiff(y, expected[i])).toBeLessThanOrEqual(1e-6);
    });
    const stats = b.stats();
    expect(stats.requests).toBe(64);
    expect(stats.batches).toBe(seen.calls.length);
    expect(Object.values(stats.batchSizes).reduce((a, c) => a + c, 0)).toBe(stats.batches);
    await b.close();
  });

  it("waits up to batchTimeoutMs for a batch to fill, and starts a full batch at once", async () => {
    const model = smallModel();
    const slow = batcher(model, { maxBatchSize: 4, batchTimeoutMs: 80 });
    let t0 = performance.now();
    await slow.predict(randomTensor([1, 8]));
    expect(performance.now() - t0).toBeGreaterThanOrEqual(70);
    t0 = performance.now();
    await Promise.all([1, 2, 3, 4].map((s) => slow.predict(randomTensor([1, 8], s))));
    expect(performance.now() - t0).toBeLessThan(60);
    expect(slow.stats().batchSizes).toEqual({ 1: 1, 4: 1 });
    // A request larger than maxBatchSize runs alone, unsplit.
    const big = await slow.predict(randomTensor([10, 8]));
    expect(big.shape).toEqual([10, 3]);
    await slow.close();
  });

  it("an aborted request leaves the queue", async () => {
    const b = batcher(smallModel(), { batchTimeoutMs: 10_000 });
    const controller = new AbortController();
    const pending = b.predict(randomTensor([1, 8]), { signal: controller.signal });
    expect(b.stats().queueDepth).toBe(1);
    controller.abort();
    await expect(pending).rejects.toMatchObject({ name: "AbortError" });
    expect(b.stats()).toMatchObject({ queueDepth: 0, aborted: 1, batches: 0 });
    await expect(b.predict(randomTensor([1, 8]), { signal: AbortSignal.abort() })).rejects.toMatchObject({
      name: "AbortError",
    });
    await b.close();
  });

  it("rejects at once with QUEUE_FULL, drains on close, then refuses with CLOSED", async () => {
    const b = batcher(smallModel(), { batchTimeoutMs: 10_000, maxQueue: 2 });
    const queued = [b.predict(randomTensor([1, 8], 1)), b.predict(randomTensor([1, 8], 2))];
    const full = b.predict(randomTensor([1, 8], 3));
    await expect(full).rejects.toBeInstanceOf(BatcherError);
    await expect(full).rejects.toMatchObject({ code: "QUEUE_FULL" });
    expect(b.stats().rejected).toBe(1);
    const t0 = performance.now();
    await b.close(); // does not wait the 10 s timeout
    expect(performance.now() - t0).toBeLessThan(1000);
    const results = await Promise.all(queued);
    expect(results.map((r) => r.shape)).toEqual([
      [1, 3],
      [1, 3],
    ]);
    await expect(b.predict(randomTensor([1, 8]))).rejects.toMatchObject({ code: "CLOSED" });
  });

  it("rejects a wrong sample shape before it can reach a batch", async () => {
    const b = batcher(smallModel());
    await expect(b.predict(randomTensor([1, 7]))).rejects.toMatchObject({ code: "BAD_SHAPE" });
    expect(b.stats().requests).toBe(0);
    await b.close();
  });
});
