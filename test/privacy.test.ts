/**
 * The RDP privacy accountant against Opacus 1.6's RDPAccountant (test/fixtures/privacy/
 * make_rdp_refs.py writes the references): ε and the best order on a grid of sampling rates,
 * noise multipliers and step counts, the noise-multiplier search, and input validation.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { privacy } from "../index.ts";

interface Case {
  datasetSize: number;
  batchSize: number;
  noiseMultiplier: number;
  steps: number;
  delta: number;
  epsilon: number;
  bestAlpha: number;
}
interface Refs {
  opacus: string;
  cases: Case[];
  abadiMnist: Case & { epochs: number };
  noiseMultipliers: {
    targetEpsilon: number;
    delta: number;
    datasetSize: number;
    batchSize: number;
    epochs: number;
    noiseMultiplier: number;
  }[];
  logErfc: [number, number][];
}
const refs = JSON.parse(
  readFileSync(join(import.meta.dirname, "fixtures", "privacy", "rdp_refs.json"), "utf8"),
) as Refs;

const relative = (a: number, b: number) => Math.abs(a - b) / Math.abs(b);

describe("privacy.computeEpsilon", () => {
  it(`matches Opacus ${refs.opacus} on ${refs.cases.length} settings to 1e-9 relative`, () => {
    let worst = 0;
    for (const c of refs.cases) {
      const { epsilon, bestAlpha } = privacy.computeEpsilon({
        datasetSize: c.datasetSize,
        batchSize: c.batchSize,
        noiseMultiplier: c.noiseMultiplier,
        steps: c.steps,
        delta: c.delta,
      });
      worst = Math.max(worst, relative(epsilon, c.epsilon));
      expect(bestAlpha, JSON.stringify(c)).toBe(c.bestAlpha);
      expect(relative(epsilon, c.epsilon), JSON.stringify(c)).toBeLessThan(1e-9);
    }
    console.log(
      `privacy: worst relative difference from Opacus over ${refs.cases.length} cases: ${worst.toExponential(2)}`,
    );
  });

  it("gives Opacus' ε for Abadi et al.'s MNIST setting (q = 256/60000, σ = 1.1, 60 epochs, δ = 1e-5)", () => {
    const a = refs.abadiMnist;
    const out = privacy.computeEpsilon({
      datasetSize: 60000,
      batchSize: 256,
      noiseMultiplier: 1.1,
      epochs: 60,
      delta: 1e-5,
    });
    console.log(
      `privacy: Abadi MNIST ε = ${out.epsilon} at α = ${out.bestAlpha} (Opacus: ${a.epsilon} at α = ${a.bestAlpha}, ${a.steps} steps)`,
    );
    expect(out.bestAlpha).toBe(a.bestAlpha);
    expect(relative(out.epsilon, a.epsilon)).toBeLessThan(1e-9);
    // Epochs count floor(epochs / q) steps, as Opacus does.
    const bySteps = privacy.computeEpsilon({
      datasetSize: 60000,
      batchSize: 256,
      noiseMultiplier: 1.1,
      steps: a.steps,
      delta: 1e-5,
    });
    expect(bySteps.epsilon).toBe(out.epsilon);
  });

  it("grows with steps and shrinks with noise", () => {
    const base = { datasetSize: 10000, batchSize: 100, delta: 1e-5 };
    const e = (noiseMultiplier: number, steps: number) =>
      privacy.computeEpsilon({ ...base, noiseMultiplier, steps }).epsilon;
    expect(e(1, 2000)).toBeGreaterThan(e(1, 1000));
    expect(e(2, 1000)).toBeLessThan(e(1, 1000));
  });

  it("does not overflow at large orders and tiny or full sampling rates", () => {
    const out = privacy.computeEpsilon({
      datasetSize: 1_000_000,
      batchSize: 1,
      noiseMultiplier: 0.3,
      steps: 10,
      delta: 1e-8,
      orders: [1.5, 32, 256, 1024.5],
    });
    expect(Number.isFinite(out.epsilon)).toBe(true);
    // q = 1 is the plain Gaussian mechanism: RDP(α) = α / (2σ²) per step.
    expect(privacy.rdpOfStep(1, 2, 5)).toBe(5 / 8);
  });

  it("rejects bad input with RangeErrors that name the argument", () => {
    const ok = { datasetSize: 60000, batchSize: 256, noiseMultiplier: 1.1, steps: 100, delta: 1e-5 };
    const bad: [object, RegExp][] = [
      [{ datasetSize: 0 }, /datasetSize/],
      [{ datasetSize: 1.5 }, /datasetSize/],
      [{ batchSize: -1 }, /batchSize/],
      [{ batchSize: 70000 }, /must not exceed datasetSize/],
      [{ noiseMultiplier: 0 }, /noiseMultiplier/],
      [{ noiseMultiplier: Number.NaN }, /noiseMultiplier/],
      [{ delta: 0 }, /delta/],
      [{ delta: 1 }, /delta/],
      [{ steps: 0 }, /steps/],
      [{ steps: 2.5 }, /steps/],
      [{ epochs: 1 }, /exactly one of steps or epochs/],
      [{ steps: undefined }, /exactly one of steps or epochs/],
      [{ steps: undefined, epochs: 1e-9 }, /less than one step/],
      [{ orders: [] }, /orders/],
      [{ orders: [2, 1] }, /order/],
    ];
    for (const [patch, message] of bad) {
      expect(
        () => privacy.computeEpsilon({ ...ok, ...patch } as privacy.ComputeEpsilonArgs),
        JSON.stringify(patch),
      ).toThrow(RangeError);
      expect(() => privacy.computeEpsilon({ ...ok, ...patch } as privacy.ComputeEpsilonArgs)).toThrow(message);
    }
  });
});

describe("privacy.logErfc", () => {
  it("matches scipy's log_ndtr form (Opacus' _log_erfc) to 1e-11 relative, past erfc's underflow", () => {
    for (const [x, ref] of refs.logErfc) {
      const got = privacy.logErfc(x);
      if (ref === 0) expect(got).toBe(0);
      else expect(relative(got, ref), `x = ${x}`).toBeLessThan(1e-11);
    }
    expect(privacy.logErfc(Number.POSITIVE_INFINITY)).toBe(Number.NEGATIVE_INFINITY);
    expect(privacy.logErfc(Number.NEGATIVE_INFINITY)).toBeCloseTo(Math.LN2, 15);
  });
});

describe("privacy.computeNoiseMultiplier", () => {
  it("finds the same σ as Opacus' get_noise_multiplier", () => {
    for (const r of refs.noiseMultipliers) {
      const sigma = privacy.computeNoiseMultiplier({
        targetEpsilon: r.targetEpsilon,
        delta: r.delta,
        datasetSize: r.datasetSize,
        batchSize: r.batchSize,
        epochs: r.epochs,
      });
      expect(sigma, JSON.stringify(r)).toBe(r.noiseMultiplier);
      const spent = privacy.computeEpsilon({ ...r, noiseMultiplier: sigma }).epsilon;
      expect(spent).toBeLessThanOrEqual(r.targetEpsilon);
      expect(spent).toBeGreaterThan(r.targetEpsilon - 0.01);
    }
  });

  it("rejects a target no noise can reach, and bad input", () => {
    const base = { delta: 1e-5, datasetSize: 60000, batchSize: 256, epochs: 1 };
    expect(() => privacy.computeNoiseMultiplier({ ...base, targetEpsilon: 1e-4 })).toThrow(/unreachable/);
    expect(() => privacy.computeNoiseMultiplier({ ...base, targetEpsilon: -1 })).toThrow(RangeError);
    expect(() => privacy.computeNoiseMultiplier({ ...base, targetEpsilon: 1, epsilonTolerance: 0 })).toThrow(
      /epsilonTolerance/,
    );
  });
});
