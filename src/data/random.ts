/**
 * The seeded random stream of the data pipeline: MT19937 seeded and drawn from exactly as
 * NumPy's legacy `np.random.RandomState(seed)`, so `imageDatasetFromDirectory` puts the same
 * files in the validation split as Keras' `image_dataset_from_directory` with the same seed
 * (Keras shuffles its file list with `RandomState(seed).shuffle` before splitting).
 */

const N = 624;
const M = 397;

/** A Mersenne Twister (MT19937) with NumPy `RandomState`'s seeding and integer draws. */
export class MersenneTwister {
  private readonly mt = new Uint32Array(N);
  private index = N;

  /** Seeds like `np.random.RandomState(seed)`; `seed` must be an integer in [0, 2^32). */
  constructor(seed: number) {
    if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) {
      throw new RangeError(`seed must be an integer in [0, 2^32), got ${seed}`);
    }
    this.mt[0] = seed >>> 0;
    for (let i = 1; i < N; i++) {
      const prev = this.mt[i - 1] ^ (this.mt[i - 1] >>> 30);
      this.mt[i] = (Math.imul(1812433253, prev) + i) >>> 0;
    }
  }

  /** The next 32-bit output. */
  nextUint32(): number {
    if (this.index >= N) this.twist();
    let y = this.mt[this.index++];
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  }

  private twist(): void {
    const mt = this.mt;
    for (let i = 0; i < N; i++) {
      const y = (mt[i] & 0x80000000) | (mt[(i + 1) % N] & 0x7fffffff);
      mt[i] = mt[(i + M) % N] ^ (y >>> 1) ^ (y & 1 ? 0x9908b0df : 0);
    }
    this.index = 0;
  }

  /**
   * A uniform integer in [0, max] by masked rejection, as NumPy's `random_interval` (so the
   * stream of draws, not just their distribution, matches NumPy's). `max` must be < 2^32.
   */
  interval(max: number): number {
    if (max === 0) return 0;
    let mask = max;
    mask |= mask >>> 1;
    mask |= mask >>> 2;
    mask |= mask >>> 4;
    mask |= mask >>> 8;
    mask |= mask >>> 16;
    mask >>>= 0;
    for (;;) {
      const value = (this.nextUint32() & mask) >>> 0;
      if (value <= max) return value;
    }
  }

  /** Shuffles `items` in place as `RandomState.shuffle` does (Fisher-Yates from the end). */
  shuffle<T>(items: T[]): T[] {
    for (let i = items.length - 1; i > 0; i--) {
      const j = this.interval(i);
      const tmp = items[i];
      items[i] = items[j];
      items[j] = tmp;
    }
    return items;
  }
}

/** A fresh random seed in [0, 1e6) when the caller gave none (Keras draws the same range). */
export function randomSeed(): number {
  return Math.floor(Math.random() * 1e6);
}
