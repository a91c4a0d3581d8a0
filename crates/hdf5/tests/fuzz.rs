//! Deterministic mutation fuzzing of the reader: flipped bytes, random bytes, truncations and
//! large integers written at random offsets of the fixtures (and of a file from our writer).
//! Every mutant must give Ok or Err, never a panic. Runs for CORTEX_FUZZ_SECS seconds (default 3).

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use common::*;
use cortex_hdf5::{read, write, Limits};

/// xorshift64*: deterministic, so a failing mutant can be reproduced from its iteration number.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Offsets of structure signatures: half the mutations land just after one, where the
/// versions, sizes, counts and addresses the reader trusts least are stored.
fn hot_spots(b: &[u8]) -> Vec<usize> {
    const SIGS: [&[u8]; 14] = [
        b"OHDR", b"OCHK", b"TREE", b"SNOD", b"HEAP", b"GCOL", b"FRHP", b"FHIB", b"FHDB", b"BTHD", b"BTIN", b"BTLF",
        b"FAHD", b"EAHD",
    ];
    (0..b.len().saturating_sub(4))
        .filter(|&i| SIGS.iter().any(|s| &b[i..i + 4] == *s))
        .collect()
}

fn mutate(rng: &mut Rng, input: &[u8], hot: &[usize]) -> Vec<u8> {
    let mut b = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        if b.is_empty() {
            break;
        }
        let at = if !hot.is_empty() && rng.below(2) == 0 {
            (hot[rng.below(hot.len())] + rng.below(64)).min(b.len() - 1)
        } else {
            rng.below(b.len())
        };
        match rng.below(6) {
            0 => b[at] ^= 1 << rng.below(8),
            1 => b[at] = rng.next() as u8,
            2 => b.truncate(at),
            3 | 4 => {
                // Large or boundary integers where lengths, counts and addresses live.
                let vals = [
                    u64::MAX,
                    u64::MAX - 1,
                    1 << 63,
                    0x7fff_ffff,
                    0xffff_ffff,
                    0x1_0000_0000,
                    0,
                    rng.next(),
                ];
                let v = vals[rng.below(vals.len())].to_le_bytes();
                let width = [1, 2, 4, 8][rng.below(4)];
                let end = (at + width).min(b.len());
                b[at..end].copy_from_slice(&v[..end - at]);
            }
            _ => {
                // Copy a small window elsewhere: creates self-references and loops.
                let len = 8.min(b.len() - at);
                let to = rng.below(b.len() - len + 1);
                let w = b[at..at + len].to_vec();
                b[to..to + len].copy_from_slice(&w);
            }
        }
    }
    b
}

#[test]
fn mutated_files_never_panic() {
    let secs: f64 = std::env::var("CORTEX_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let mut corpus: Vec<Vec<u8>> = FIXTURES.iter().map(|n| fixture(n)).collect();
    corpus.push(fixture("unsupported_lzf"));
    let own = read(&fixture("keras_dense.weights"), &Limits::default()).unwrap();
    corpus.push(write(&own).unwrap());
    let hot: Vec<Vec<usize>> = corpus.iter().map(|b| hot_spots(b)).collect();
    // Small enough that mutated sizes fail fast instead of allocating gigabytes.
    let limits = Limits {
        max_bytes: 1 << 26,
        max_objects: 100_000,
        max_depth: 32,
    };
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let (mut iterations, mut oks) = (0u64, 0u64);
    // Silence the default hook so a panic is reported once, with its mutant, below.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    while Instant::now() < deadline {
        let src = rng.below(corpus.len());
        let mutant = mutate(&mut rng, &corpus[src], &hot[src]);
        match catch_unwind(AssertUnwindSafe(|| read(&mutant, &limits))) {
            Ok(r) => oks += u64::from(r.is_ok()),
            Err(e) => {
                std::panic::set_hook(hook);
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()));
                let path = std::env::temp_dir().join("cortex-hdf5-fuzz-crash.h5");
                std::fs::write(&path, &mutant).unwrap();
                panic!(
                    "iteration {iterations} (fixture {src}) panicked: {msg:?}; mutant saved to {}",
                    path.display()
                );
            }
        }
        iterations += 1;
    }
    std::panic::set_hook(hook);
    println!("fuzz: {iterations} mutants in {secs}s, {oks} still read Ok");
    assert!(iterations > 0);
}
