/**
 * The robustness and explain examples on a tiny budget: they run, write their files, and report
 * numbers in range.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { main as explainMain } from "../examples/explain.ts";
import { main as robustnessMain } from "../examples/robustness.ts";
import { PNG_SIGNATURE } from "../src/image.ts";

const work = mkdtempSync(join(tmpdir(), "cortex-examples-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));

function expectPng(path: string) {
  expect(existsSync(path)).toBe(true);
  expect([...readFileSync(path).subarray(0, 8)]).toEqual([...PNG_SIGNATURE]);
}

const inUnit = (v: number) => Number.isFinite(v) && v >= 0 && v <= 1;

describe("examples on a tiny budget", () => {
  it("robustness: both models measured, table as JSON, chart as PNG", async () => {
    const outDir = join(work, "robustness");
    const r = await robustnessMain({
      epochs: 1,
      advEpochs: 1,
      trainLimit: 512,
      evalLimit: 64,
      testLimit: 128,
      epsilons: [0, 0.1, 0.3],
      sigmas: [0, 0.3],
      outDir,
      verbose: 0,
    });
    expectPng(join(outDir, "robustness.png"));
    const json = JSON.parse(readFileSync(join(outDir, "robustness.json"), "utf8"));
    expect(json.models.map((m: { name: string }) => m.name)).toEqual(["plain", "adversarial"]);
    expect(json.settings.evalLimit).toBe(64);
    for (const m of r.models) {
      expect(inUnit(m.cleanAccuracy)).toBe(true);
      expect(m.pgd.map((p) => p.epsilon)).toEqual([0, 0.1, 0.3]);
      expect(m.noise.map((p) => p.sigma)).toEqual([0, 0.3]);
      for (const p of [...m.pgd, ...m.noise]) expect(inUnit(p.accuracy)).toBe(true);
      // A stronger attack never helps the model much (the same random start seeds both).
      expect(m.pgd[2].accuracy).toBeLessThanOrEqual(m.pgd[0].accuracy + 0.05);
    }
    // Four steps on 512 images already lift the plain model above chance (10%).
    expect(r.models[0].cleanAccuracy).toBeGreaterThan(0.2);
  });

  it("explain: heatmap grids, attention grids, completeness and the randomisation check", async () => {
    const outDir = join(work, "explain");
    const r = await explainMain({
      epochs: 1,
      vitEpochs: 1,
      trainLimit: 512,
      testLimit: 128,
      igSteps: 64,
      outDir,
      verbose: 0,
    });
    for (const name of [
      "saliency.png",
      "integrated-gradients.png",
      "grad-cam.png",
      "vit-attention-block1.png",
      "vit-attention-block2.png",
    ]) {
      expectPng(join(outDir, name));
    }
    expect(existsSync(join(outDir, "explain.json"))).toBe(true);
    expect(r.indices).toHaveLength(10);
    expect(inUnit(r.convnetAccuracy) && inUnit(r.vitAccuracy)).toBe(true);
    for (const c of r.completeness) {
      expect(Math.abs(c.sum - c.delta)).toBeLessThanOrEqual(0.05 * Math.abs(c.delta) + 1e-3);
    }
    for (const v of Object.values(r.randomization)) expect(v >= -1 && v <= 1).toBe(true);
  });
});
