//! A small seedable generator (xoshiro256** seeded through splitmix64): initializers, dropout and
//! shuffling draw from it so a seed reproduces a run exactly.

/// Seedable pseudo-random generator.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator whose whole stream is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    /// A generator seeded from the clock, for runs without a seed.
    pub fn from_entropy() -> Self {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Rng::new(t ^ (std::process::id() as u64).rotate_left(32))
    }

    /// The generator's whole state, for checkpoints ([`Self::from_state`] continues the stream).
    pub fn state(&self) -> [u64; 4] {
        self.s
    }

    /// A generator that continues the stream whose state is `s` (from [`Self::state`]).
    pub fn from_state(s: [u64; 4]) -> Self {
        Rng { s }
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
    }

    /// Uniform integer in [0, n).
    pub fn below(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f32 {
        let u1 = ((self.next_u64() >> 11) as f64 + 0.5) * (1.0 / (1u64 << 53) as f64);
        let u2 = (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    }

    /// Standard normal redrawn until it falls within two standard deviations.
    pub fn truncated_normal(&mut self) -> f32 {
        loop {
            let v = self.normal();
            if v.abs() <= 2.0 {
                return v;
            }
        }
    }

    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }

    /// A fresh generator split off this one (for per-batch dropout streams).
    pub fn fork(&mut self) -> Rng {
        Rng::new(self.next_u64())
    }
}

fn seed_source() -> &'static std::sync::Mutex<Rng> {
    static SOURCE: std::sync::OnceLock<std::sync::Mutex<Rng>> = std::sync::OnceLock::new();
    SOURCE.get_or_init(|| std::sync::Mutex::new(Rng::from_entropy()))
}

/// Fixes the global seed: models created afterwards initialise, shuffle and drop out
/// reproducibly (Keras `set_random_seed`).
pub fn set_global_seed(seed: u64) {
    *seed_source().lock().unwrap_or_else(|e| e.into_inner()) = Rng::new(seed);
}

/// A seed for a new model, drawn from the global source.
pub fn next_seed() -> u64 {
    seed_source().lock().unwrap_or_else(|e| e.into_inner()).next_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_streams_repeat_and_look_uniform() {
        let a: Vec<u64> = (0..5)
            .map({
                let mut r = Rng::new(7);
                move |_| r.next_u64()
            })
            .collect();
        let mut r = Rng::new(7);
        assert!(a.iter().all(|&v| v == r.next_u64()));
        let mut r = Rng::new(1);
        let n = 100_000;
        let mean: f32 = (0..n).map(|_| r.uniform()).sum::<f32>() / n as f32;
        assert!((mean - 0.5).abs() < 0.01);
        let var: f32 = (0..n).map(|_| r.normal().powi(2)).sum::<f32>() / n as f32;
        assert!((var - 1.0).abs() < 0.03);
    }
}
