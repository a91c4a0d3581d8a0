/** Native memory stays flat across thousands of predict calls. */
import { describe, expect, it } from "vitest";
import { dense, sequential, type TapeTensor, valueAndGrads, variable } from "../index.ts";
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

describe("memory of custom training loops", () => {
  it("RSS stays flat across 400 synchronous valueAndGrads steps", () => {
    // No await anywhere: Node would only run native finalizers between event-loop turns, so
    // this passes only if valueAndGrads frees its tensors and hands out V8-owned gradients.
    const model = sequential([dense({ units: 256, activation: "relu", inputShape: [256] }), dense({ units: 256 })], {
      seed: 2,
    });
    const x = randomTensor([128, 256]);
    const step = () => valueAndGrads(() => model.call(x).mean(), model);
    for (let i = 0; i < 50; i++) step();
    global.gc?.();
    const before = process.memoryUsage().rss;
    for (let i = 0; i < 400; i++) step();
    global.gc?.();
    const grown = process.memoryUsage().rss - before;
    // Each step makes ~384 KB of tensors and ~514 KB of gradients: leaking would add > 300 MB.
    expect(grown).toBeLessThan(60 * 1024 * 1024);
  });

  it("tensors made inside valueAndGrads are freed, with a clear error on later use", () => {
    const w = variable(randomTensor([4]));
    let inner: TapeTensor | undefined;
    const { value } = valueAndGrads(() => {
      inner = w.mul(w);
      return inner.sum();
    }, w);
    expect(Number.isFinite(value)).toBe(true);
    expect(() => inner?.toTensor()).toThrow(/disposed/);
    // Variables outlive the scope.
    expect(w.toTensor().shape).toEqual([4]);
  });
});
