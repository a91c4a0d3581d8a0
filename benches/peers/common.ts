/** Timing helpers shared by the JS peer benchmarks. */

export const now = (): number => performance.now();

export function median(xs: readonly number[]): number {
  if (xs.length === 0) throw new Error("median of empty list");
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

export interface TimingOptions {
  /** Untimed calls before measuring. */
  warmup: number;
  /** Maximum number of timed calls. */
  runs: number;
  /** Stop taking new timed calls once this much time (ms) was spent measuring; at least one call always runs. */
  budgetMs?: number;
}

/** Time `fn` (sync or async) and return every per-call duration in ms. */
export async function sample(
  fn: () => unknown | Promise<unknown>,
  { warmup, runs, budgetMs = Number.POSITIVE_INFINITY }: TimingOptions,
): Promise<number[]> {
  for (let i = 0; i < warmup; i++) await fn();
  const times: number[] = [];
  const start = now();
  while (times.length < Math.max(1, runs)) {
    const t0 = now();
    await fn();
    times.push(now() - t0);
    if (now() - start > budgetMs) break;
  }
  return times;
}

/** Median per-call time in ms. */
export async function medianMs(fn: () => unknown, opts: TimingOptions): Promise<number> {
  return median(await sample(fn, opts));
}

/** Fastest per-call time in ms. */
export async function bestMs(fn: () => unknown, opts: TimingOptions): Promise<number> {
  return Math.min(...(await sample(fn, opts)));
}

/** GFLOP/s of an m x k by k x n matrix product that took `ms` milliseconds. */
export function gemmGflops(m: number, k: number, n: number, ms: number): number {
  return (2 * m * k * n) / (ms * 1e-3) / 1e9;
}

export function round(x: number, digits = 2): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/** Print the single JSON result line on stdout (everything else goes to stderr). */
export function emit(result: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(result)}\n`);
}
