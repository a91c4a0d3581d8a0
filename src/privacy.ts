/**
 * Privacy accounting for differentially private training (DP-SGD): how much (ε, δ) privacy a
 * run with Poisson-sampled batches and Gaussian gradient noise spends.
 *
 * This is the Rényi-DP accountant of Mironov, Talwar and Zhang ("Rényi Differential Privacy of
 * the Sampled Gaussian Mechanism", 2019), written to agree with Opacus' `RDPAccountant` number
 * for number: the same default orders, the same log A_α sums for integer and fractional α, and
 * the same RDP-to-(ε, δ) conversion (Balle et al. 2020, Theorem 21). Everything is in f64 and in
 * log space, so large orders and tiny sampling rates do not overflow or underflow.
 * test/privacy.test.ts checks it against Opacus 1.6 on a grid of settings.
 */

/**
 * Opacus' `RDPAccountant.DEFAULT_ALPHAS`: 1.1, 1.2, ..., 10.9, then 12, 13, ..., 63. Using the
 * same orders matters: ε is a minimum over them, so other orders give (slightly) other ε.
 */
export const DEFAULT_ORDERS: readonly number[] = Object.freeze([
  ...Array.from({ length: 99 }, (_, k) => 1 + (k + 1) / 10),
  ...Array.from({ length: 52 }, (_, k) => 12 + k),
]);

/** How long the run is: exactly one of `steps` or `epochs`. */
export type RunLength = { steps: number; epochs?: undefined } | { epochs: number; steps?: undefined };

/** Options of {@link computeEpsilon}. */
export type ComputeEpsilonArgs = RunLength & {
  /** Number of training examples N. */
  datasetSize: number;
  /** Expected batch size B; the sampling rate is q = B / N (each example joins a batch with probability q). */
  batchSize: number;
  /** Noise standard deviation divided by the clipping norm (σ). */
  noiseMultiplier: number;
  /** Target δ, in (0, 1); usually well below 1 / N. */
  delta: number;
  /** RDP orders to minimise over (default {@link DEFAULT_ORDERS}); each must be finite and > 1. */
  orders?: readonly number[];
};

/** What {@link computeEpsilon} returns. */
export interface PrivacySpent {
  /** The ε of the (ε, δ) guarantee. */
  epsilon: number;
  /** The RDP order that gave the smallest ε. At either end of `orders`, more orders could tighten ε. */
  bestAlpha: number;
}

/** Options of {@link computeNoiseMultiplier}. */
export type ComputeNoiseMultiplierArgs = RunLength & {
  /** The ε to stay under. */
  targetEpsilon: number;
  /** Target δ, in (0, 1). */
  delta: number;
  /** Number of training examples N. */
  datasetSize: number;
  /** Expected batch size B. */
  batchSize: number;
  /** Stop when ε is within this much below the target (default 0.01, as Opacus). */
  epsilonTolerance?: number;
  /** RDP orders (default {@link DEFAULT_ORDERS}). */
  orders?: readonly number[];
};

/**
 * The ε spent by `steps` steps (or `epochs` passes) of the sampled Gaussian mechanism with
 * sampling rate q = batchSize / datasetSize and noise multiplier σ, at the given δ.
 *
 * With `epochs`, the step count is `floor(epochs / q)`, as Opacus' `get_noise_multiplier` counts it.
 */
export function computeEpsilon(args: ComputeEpsilonArgs): PrivacySpent {
  const where = "privacy.computeEpsilon";
  const q = samplingRate(args.datasetSize, args.batchSize, where);
  const sigma = args.noiseMultiplier;
  if (typeof sigma !== "number" || !Number.isFinite(sigma) || sigma <= 0) {
    throw new RangeError(`${where}: noiseMultiplier must be a positive finite number, got ${sigma}`);
  }
  checkDelta(args.delta, where);
  const steps = stepCount(args, q, where);
  const orders = checkOrders(args.orders, where);
  return privacySpent(q, sigma, steps, args.delta, orders);
}

/**
 * The smallest noise multiplier (to within the tolerance) whose ε stays at or below
 * `targetEpsilon`: Opacus' `get_noise_multiplier`, the same doubling then bisection, so it
 * returns the same σ.
 */
export function computeNoiseMultiplier(args: ComputeNoiseMultiplierArgs): number {
  const where = "privacy.computeNoiseMultiplier";
  const q = samplingRate(args.datasetSize, args.batchSize, where);
  const target = args.targetEpsilon;
  if (typeof target !== "number" || !Number.isFinite(target) || target <= 0) {
    throw new RangeError(`${where}: targetEpsilon must be a positive finite number, got ${target}`);
  }
  checkDelta(args.delta, where);
  const tolerance = args.epsilonTolerance ?? 0.01;
  if (typeof tolerance !== "number" || !Number.isFinite(tolerance) || tolerance <= 0) {
    throw new RangeError(`${where}: epsilonTolerance must be a positive finite number, got ${tolerance}`);
  }
  const steps = stepCount(args, q, where);
  const orders = checkOrders(args.orders, where);
  const eps = (sigma: number) => privacySpent(q, sigma, steps, args.delta, orders).epsilon;

  // Opacus gives up past σ = 1e6: by then the target is below what any noise can reach (the
  // conversion's ε has a floor that depends only on δ and the orders).
  const maxSigma = 1e6;
  let low = 0;
  let high = 10;
  let epsHigh = Number.POSITIVE_INFINITY;
  while (epsHigh > target) {
    high *= 2;
    epsHigh = eps(high);
    if (high > maxSigma) {
      throw new RangeError(`${where}: targetEpsilon ${target} is unreachable at delta ${args.delta} (noise > 1e6)`);
    }
  }
  while (target - epsHigh > tolerance) {
    const mid = (low + high) / 2;
    const e = eps(mid);
    if (e < target) {
      high = mid;
      epsHigh = e;
    } else {
      low = mid;
    }
  }
  return high;
}

/**
 * The RDP of one step of the sampled Gaussian mechanism at order `alpha` (Opacus' `_compute_rdp`).
 * Exported for tests and for composing runs with different settings (RDP adds up over steps).
 */
export function rdpOfStep(q: number, sigma: number, alpha: number): number {
  if (q === 0) return 0;
  if (sigma === 0) return Number.POSITIVE_INFINITY;
  if (q === 1) return alpha / (2 * sigma * sigma);
  if (!Number.isFinite(alpha)) return Number.POSITIVE_INFINITY;
  const logA = Number.isInteger(alpha) ? logAIntAlpha(q, sigma, alpha) : logAFracAlpha(q, sigma, alpha);
  return logA / (alpha - 1);
}

function privacySpent(q: number, sigma: number, steps: number, delta: number, orders: readonly number[]): PrivacySpent {
  // Balle et al. 2020, Theorem 21: ε = RDP(α) + log((α-1)/α) - (log δ + log α) / (α - 1),
  // minimised over the orders; the first minimum wins ties, as numpy's nanargmin.
  let epsilon = Number.POSITIVE_INFINITY;
  let bestAlpha = Number.NaN;
  const logDelta = Math.log(delta);
  for (const a of orders) {
    const rdp = rdpOfStep(q, sigma, a) * steps;
    const e = rdp - (logDelta + Math.log(a)) / (a - 1) + Math.log((a - 1) / a);
    if (Number.isNaN(e)) continue;
    if (Number.isNaN(bestAlpha) || e < epsilon) {
      epsilon = e;
      bestAlpha = a;
    }
  }
  return { epsilon, bestAlpha };
}

/** log(e^x + e^y) without overflow; -Infinity stands for 0. */
function logAdd(x: number, y: number): number {
  const a = Math.min(x, y);
  const b = Math.max(x, y);
  if (a === Number.NEGATIVE_INFINITY) return b;
  return Math.log1p(Math.exp(a - b)) + b;
}

/** log(e^x - e^y) for x >= y. */
function logSub(x: number, y: number): number {
  if (x < y) throw new RangeError("privacy: internal error, log-space subtraction went negative");
  if (y === Number.NEGATIVE_INFINITY) return x;
  if (x === y) return Number.NEGATIVE_INFINITY;
  const d = Math.expm1(x - y);
  // Where expm1 overflows, e^y is negligible next to e^x (Opacus catches the OverflowError alike).
  return Number.isFinite(d) ? Math.log(d) + y : x;
}

/**
 * log A_α for integer α: a finite binomial sum (Mironov et al. 2019, section 3.3). The log
 * binomial is accumulated term by term (log C(α, i+1) = log C(α, i) + log(α-i) - log(i+1)),
 * which never forms a large binomial and needs no lgamma.
 */
function logAIntAlpha(q: number, sigma: number, alpha: number): number {
  const logQ = Math.log(q);
  const log1mQ = Math.log1p(-q);
  let logA = Number.NEGATIVE_INFINITY;
  let logCoef = 0;
  for (let i = 0; i <= alpha; i++) {
    if (i > 0) logCoef += Math.log(alpha - i + 1) - Math.log(i);
    const s = logCoef + i * logQ + (alpha - i) * log1mQ + (i * i - i) / (2 * sigma * sigma);
    logA = logAdd(logA, s);
  }
  return logA;
}

/**
 * log A_α for fractional α: an infinite series whose generalized binomials change sign once i
 * passes α, so positive and negative terms are added and subtracted in log space, summed until
 * the terms drop below e^-30 (Opacus' stopping rule, kept so the sums match).
 */
function logAFracAlpha(q: number, sigma: number, alpha: number): number {
  let logA0 = Number.NEGATIVE_INFINITY;
  let logA1 = Number.NEGATIVE_INFINITY;
  const logQ = Math.log(q);
  const log1mQ = Math.log1p(-q);
  const z0 = sigma * sigma * Math.log(1 / q - 1) + 0.5;
  const twoSigma2 = 2 * sigma * sigma;
  const sqrt2Sigma = Math.SQRT2 * sigma;
  // C(α, i) as sign and log magnitude, updated by the factor (α - i + 1) / i.
  let logCoef = 0;
  let positive = true;
  for (let i = 0; ; i++) {
    if (i > 0) {
      const f = alpha - i + 1;
      logCoef += Math.log(Math.abs(f)) - Math.log(i);
      if (f < 0) positive = !positive;
    }
    const j = alpha - i;
    const logT0 = logCoef + i * logQ + j * log1mQ;
    const logT1 = logCoef + j * logQ + i * log1mQ;
    const logE0 = Math.log(0.5) + logErfc((i - z0) / sqrt2Sigma);
    const logE1 = Math.log(0.5) + logErfc((z0 - j) / sqrt2Sigma);
    const logS0 = logT0 + (i * i - i) / twoSigma2 + logE0;
    const logS1 = logT1 + (j * j - j) / twoSigma2 + logE1;
    if (positive) {
      logA0 = logAdd(logA0, logS0);
      logA1 = logAdd(logA1, logS1);
    } else {
      logA0 = logSub(logA0, logS0);
      logA1 = logSub(logA1, logS1);
    }
    if (Math.max(logS0, logS1) < -30) break;
  }
  return logAdd(logA0, logA1);
}

const LOG_SQRT_PI = 0.5 * Math.log(Math.PI);

/**
 * log(erfc(x)), accurate where erfc(x) underflows (x > ~26) and to about 1e-11 relative
 * elsewhere (checked against scipy in test/privacy.test.ts). Below x = 3, erfc = 1 - erf with
 * erf from its all-positive series e^{-x²} Σ (2x²)^n x / (2n+1)!! (no cancellation; 1 - erf
 * loses at most ~5 digits at x = 3). From x = 3 on, the Laplace continued fraction
 * erfc(x) = e^{-x²}/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + ...)))) gives log erfc directly
 * as -x² - log √π - log(fraction), so it never underflows.
 */
export function logErfc(x: number): number {
  if (Number.isNaN(x)) return Number.NaN;
  if (x >= 3) {
    if (x === Number.POSITIVE_INFINITY) return Number.NEGATIVE_INFINITY;
    // Evaluated backwards from a fixed depth: 200 levels is converged to f64 for x >= 3.
    let f = x;
    for (let k = 200; k >= 1; k--) f = x + k / 2 / f;
    return -x * x - LOG_SQRT_PI - Math.log(f);
  }
  if (x <= -3) {
    // erfc(x) = 2 - erfc(-x), and erfc(-x) < 2.3e-5.
    return Math.log(2 - Math.exp(logErfc(-x)));
  }
  return Math.log(1 - erf(x));
}

/** erf(x) for |x| < 3 by the all-positive series (see {@link logErfc}). */
function erf(x: number): number {
  const twoX2 = 2 * x * x;
  let term = x;
  let sum = x;
  for (let n = 1; n < 200; n++) {
    term *= twoX2 / (2 * n + 1);
    sum += term;
    if (Math.abs(term) < 1e-17 * Math.abs(sum)) break;
  }
  return (2 / Math.sqrt(Math.PI)) * Math.exp(-x * x) * sum;
}

function samplingRate(datasetSize: number, batchSize: number, where: string): number {
  if (!Number.isSafeInteger(datasetSize) || datasetSize < 1) {
    throw new RangeError(`${where}: datasetSize must be a positive integer, got ${datasetSize}`);
  }
  if (!Number.isSafeInteger(batchSize) || batchSize < 1) {
    throw new RangeError(`${where}: batchSize must be a positive integer, got ${batchSize}`);
  }
  if (batchSize > datasetSize) {
    throw new RangeError(`${where}: batchSize (${batchSize}) must not exceed datasetSize (${datasetSize})`);
  }
  return batchSize / datasetSize;
}

function checkDelta(delta: number, where: string): void {
  if (typeof delta !== "number" || !(delta > 0 && delta < 1)) {
    throw new RangeError(`${where}: delta must be in (0, 1), got ${delta}`);
  }
}

function stepCount(args: RunLength, q: number, where: string): number {
  const { steps, epochs } = args;
  if ((steps === undefined) === (epochs === undefined)) {
    throw new RangeError(`${where}: give exactly one of steps or epochs`);
  }
  if (steps !== undefined) {
    if (!Number.isSafeInteger(steps) || steps < 1) {
      throw new RangeError(`${where}: steps must be a positive integer, got ${steps}`);
    }
    return steps;
  }
  if (typeof epochs !== "number" || !Number.isFinite(epochs) || epochs <= 0) {
    throw new RangeError(`${where}: epochs must be a positive finite number, got ${epochs}`);
  }
  const n = Math.floor(epochs / q);
  if (n < 1) throw new RangeError(`${where}: ${epochs} epochs at sampling rate ${q} is less than one step`);
  return n;
}

function checkOrders(orders: readonly number[] | undefined, where: string): readonly number[] {
  if (orders === undefined) return DEFAULT_ORDERS;
  if (!Array.isArray(orders) || orders.length === 0) {
    throw new RangeError(`${where}: orders must be a non-empty array of numbers > 1`);
  }
  for (const a of orders) {
    if (typeof a !== "number" || !Number.isFinite(a) || a <= 1) {
      throw new RangeError(`${where}: every order must be a finite number > 1, got ${a}`);
    }
  }
  return orders;
}
