/**
 * The four seed listings (examples/seed/) run as tests with tiny step counts: their models build
 * with the listings' shapes and parameter counts, and a few training steps move the losses.
 */
import { describe, expect, it } from "vitest";
import { main as attention, buildAttention } from "../examples/seed/attention.ts";
import { buildCnn, main as cnn, cnnParams } from "../examples/seed/cnn.ts";
import { paramCount } from "../examples/seed/common.ts";
import { buildDiscriminator, buildGenerator, main as gan } from "../examples/seed/gan.ts";
import { buildRnn, main as rnn } from "../examples/seed/rnn.ts";

describe("seed listings", () => {
  it("rnn: Embedding(10, 64) -> LSTM(128) -> per-step dense(10) on [batch, 100] token ids learns", async () => {
    const m = buildRnn();
    expect(m.outputShape).toEqual([100, 10]);
    // 10*64 + 4*(128*(64+128) + 128) + (128*10 + 10)
    expect(paramCount(m)).toBe(640 + 4 * (128 * 192 + 128) + 1290);
    const { losses } = await rnn({ steps: 30, quiet: true });
    expect(losses.every(Number.isFinite)).toBe(true);
    expect(losses.at(-1)).toBeLessThan(losses[0] / 2);
  });

  it("attention: 8-head self-attention on (100, 10) inputs learns", async () => {
    const m = buildAttention();
    expect(m.outputShape).toEqual([10]);
    // q, k, v: 10 -> 8 x 64 each (kernel + bias); output 8 x 64 -> 10; then dense 10 -> 10.
    expect(paramCount(m)).toBe(3 * (10 * 512 + 512) + (512 * 10 + 10) + 110);
    const { losses } = await attention({ steps: 20, quiet: true });
    expect(losses.every(Number.isFinite)).toBe(true);
    expect(losses.at(-1)).toBeLessThan(losses[0] - 0.2);
  });

  it("gan: 4 x 256 generator and discriminator, 5 discriminator steps per generator step", async () => {
    const hidden = 3 * (256 * 256 + 256);
    expect(paramCount(buildGenerator())).toBe(100 * 256 + 256 + hidden + 256 * 784 + 784);
    expect(paramCount(buildDiscriminator())).toBe(784 * 256 + 256 + hidden + 257);
    const { dLosses, gLosses } = await gan({ steps: 4, quiet: true });
    expect(dLosses).toHaveLength(4);
    expect([...dLosses, ...gLosses].every(Number.isFinite)).toBe(true);
    // The discriminator learns to tell the fixed "real" cluster from the generator's output.
    expect(dLosses.at(-1)).toBeLessThan(dLosses[0]);
  });

  it("cnn: the full 224x224x3 -> 1000 model builds with the closed-form parameter count", () => {
    // ~8 s and ~2.7 GB (the weights only; training it takes ~11 GB, see examples/seed/README.md).
    const m = buildCnn();
    expect(m.outputShape).toEqual([1000]);
    expect(cnnParams()).toBe(710_251_816);
    expect(paramCount(m)).toBe(cnnParams());
    expect(cnnParams({ padding: "same" })).toBe(823_498_024);
  });

  it("cnn: the same layer stack, scaled down, trains and matches the formula", async () => {
    for (const shape of [
      { size: 32, classes: 10, hidden: 16 },
      { size: 33, classes: 7, hidden: 8, padding: "same" as const },
    ]) {
      const { params, losses } = await cnn({ ...shape, steps: 2, batch: 2, quiet: true });
      expect(params).toBe(cnnParams(shape));
      expect(losses.every(Number.isFinite)).toBe(true);
    }
  });
});
