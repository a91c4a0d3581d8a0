/** Native memory stays flat across thousands of predict calls. */
import { describe, expect, it } from "vitest";
import { dense, sequential } from "../index.ts";
import { randomTensor } from "./helpers.ts";

describe("memory", () => {
  it("RSS does not grow across 5000 predict calls", async () => {
    const model = sequential([dense({ units: 256, activation: "relu", inputShape: [64] }), dense({ units: 10 })], {
      seed: 1,
    });
    const x = randomTensor([32, 64]);
    const run = async (n: number) => {
      for (let i = 0; i < n; i++) await model.predict(x);
    };
    await run(1000); // warm up allocator and JIT
    global.gc?.();
    const before = process.memoryUsage().rss;
    await run(5000);
    global.gc?.();
    const grown = process.memoryUsage().rss - before;
    // Each call returns 32*10 floats; leaking them all (or the inputs, 8 KB each) would add > 40 MB.
    expect(grown).toBeLessThan(20 * 1024 * 1024);
  });
});
