/** fit/predict run on Rust threads: a 10 ms timer keeps firing while a model trains. */
import { describe, expect, it } from "vitest";
import { conv2d, dense, flatten, getNumThreads, maxPooling2d, sequential, setNumThreads } from "../index.ts";
import { randomTensor } from "./helpers.ts";

describe("event loop", () => {
  it("never stalls more than 50 ms while training and predicting", async () => {
    const model = sequential(
      [
        conv2d({ filters: 16, kernelSize: 3, activation: "relu", inputShape: [28, 28, 1] }),
        maxPooling2d({ poolSize: 2 }),
        flatten(),
        dense({ units: 10, activation: "softmax" }),
      ],
      { seed: 1 },
    );
    model.compile({ optimizer: "adam", loss: "sparseCategoricalCrossentropy" });
    const x = randomTensor([1024, 28, 28, 1]);
    const y = randomTensor([1024]);
    for (let i = 0; i < 1024; i++) y.data[i] = i % 10;
    const gaps: number[] = [];
    let last = performance.now();
    let ticks = 0;
    const timer = setInterval(() => {
      const now = performance.now();
      gaps.push(now - last);
      last = now;
      ticks++;
    }, 10);
    let batches = 0;
    const started = performance.now();
    // Train for at least half a second whatever the machine's speed, so the check means something.
    let epochs = 0;
    while (performance.now() - started < 500) {
      await model.fit(x, y, { epochs: 1, batchSize: 32, verbose: 0, callbacks: [{ onBatchEnd: () => batches++ }] });
      await model.predict(x, { batchSize: 256 });
      epochs++;
    }
    const elapsed = performance.now() - started;
    clearInterval(timer);
    expect(batches).toBe(32 * epochs);
    expect(ticks).toBeGreaterThan(elapsed / 10 / 3);
    expect(Math.max(...gaps)).toBeLessThan(50);
  });

  it("thread count is configurable", () => {
    const before = getNumThreads();
    setNumThreads(1);
    expect(getNumThreads()).toBe(1);
    setNumThreads(before);
    expect(getNumThreads()).toBe(before);
    expect(() => setNumThreads(0)).toThrow(/positive integer/);
  });
});
