//! Fuzzing of the model-file loader: random mutations of the committed seed models
//! (`fuzz-corpus/`, made by scripts/make-fuzz-seeds.ts) are loaded, and every model that loads
//! is run forward and trained one step. Properties: no panic escapes, nothing aborts (an abort
//! ends this test binary), peak memory stays bounded, and each input ends in an Error or a
//! working model.
//!
//! Runs for `CORTEX_FUZZ_SECS` seconds (default 5; CI gives it more) from seed
//! `CORTEX_FUZZ_SEED` (default: the clock, printed so a failure can be replayed). Inputs that
//! panic are written to `target/fuzz-crashes/` and fail the test; each one becomes a case in
//! `fuzz-corpus/regressions/` once fixed.

use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cortex_core::nn::io::{self, LoadOptions};
use cortex_core::Tensor;
use serde_json::Value;

/// A xorshift stream: the fuzzer's only randomness, so a seed replays a run.
struct Stream(u64);

impl Stream {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

struct Seed {
    name: String,
    topology: String,
    weights: Vec<u8>,
}

fn corpus() -> Vec<Seed> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-corpus");
    let mut dirs: Vec<PathBuf> = Vec::new();
    for entry in fs::read_dir(&root).expect("the seed corpus is committed") {
        let path = entry.expect("readable corpus").path();
        if path.join("model.json").exists() {
            dirs.push(path);
        } else if path.is_dir() {
            dirs.extend(fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        }
    }
    dirs.sort();
    dirs.iter()
        .map(|d| Seed {
            name: d.strip_prefix(&root).unwrap().display().to_string(),
            topology: fs::read_to_string(d.join("model.json")).unwrap_or_default(),
            weights: fs::read(d.join("weights.safetensors")).unwrap_or_default(),
        })
        .collect()
}

/// Values that break size arithmetic and type assumptions.
fn interesting(s: &mut Stream) -> Value {
    let numbers = [
        0.0,
        -1.0,
        1.0,
        2.5,
        3.0,
        65535.0,
        2147483647.0,
        2147483648.0,
        4e12,
        1e308,
        -1e308,
        1e-300,
        1e18,
    ];
    match s.below(6) {
        0..=2 => serde_json::json!(numbers[s.below(numbers.len())]),
        3 => serde_json::json!([numbers[s.below(numbers.len())], numbers[s.below(numbers.len())]]),
        4 => Value::Null,
        _ => [
            serde_json::json!("NaN"),
            serde_json::json!(""),
            serde_json::json!({}),
            serde_json::json!([]),
            serde_json::json!(true),
            serde_json::json!("Dense"),
            serde_json::json!("relu"),
        ][s.below(7)]
        .clone(),
    }
}

/// Replaces, removes or duplicates one random node of `v`.
fn mutate_json(v: &mut Value, s: &mut Stream) {
    mutate_node(v, s, 0)
}

fn mutate_node(v: &mut Value, s: &mut Stream, depth: usize) {
    if depth < 12 && !s.chance(4) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                let i = s.below(m.len());
                return mutate_node(m.values_mut().nth(i).expect("index below len"), s, depth + 1);
            }
            Value::Array(a) if !a.is_empty() => {
                let i = s.below(a.len());
                return mutate_node(&mut a[i], s, depth + 1);
            }
            _ => {}
        }
    }
    match (s.below(8), &mut *v) {
        (0, Value::Object(m)) if !m.is_empty() => {
            let key = m.keys().nth(s.below(m.len())).cloned().expect("index below len");
            m.remove(&key);
        }
        (1, Value::Array(a)) if !a.is_empty() => {
            let x = a[s.below(a.len())].clone();
            a.push(x);
        }
        _ => *v = interesting(s),
    }
}

fn mutate_bytes(b: &mut Vec<u8>, s: &mut Stream) {
    if b.is_empty() {
        b.push(s.next() as u8);
        return;
    }
    match s.below(6) {
        0 => b.truncate(s.below(b.len())),
        1 => {
            let i = s.below(b.len());
            b[i] ^= 1 << s.below(8);
        }
        2 => {
            let i = s.below(b.len());
            b[i] = [0, 0xff, b'0', b'9', b'[', b'"', b'-', b'e'][s.below(8)];
        }
        3 => {
            let (i, j) = (s.below(b.len()), s.below(b.len()));
            let (i, j) = (i.min(j), i.max(j).min(i + 64));
            let chunk = b[i..j].to_vec();
            let at = s.below(b.len());
            b.splice(at..at, chunk);
        }
        4 => {
            let (i, n) = (s.below(b.len()), s.below(16));
            b.drain(i..(i + n).min(b.len()));
        }
        _ => {
            // The header length field.
            let len = [0u64, 1, 7, u64::MAX, 1 << 60, b.len() as u64, (b.len() as u64) * 2][s.below(7)];
            if b.len() >= 8 {
                b[..8].copy_from_slice(&len.to_le_bytes());
            }
        }
    }
}

/// The weights file's header as JSON, to mutate shapes, dtypes, offsets and the metadata.
fn mutate_weights_header(bytes: &[u8], s: &mut Stream) -> Option<Vec<u8>> {
    let n = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?) as usize;
    let mut header: Value = serde_json::from_slice(bytes.get(8..8usize.checked_add(n)?)?).ok()?;
    if s.chance(3) {
        // The embedded topology: mutate it and make it the one the loader reads.
        let meta = header.get_mut("__metadata__")?.as_object_mut()?;
        let mut topo: Value = serde_json::from_str(meta.get("cortex-nn.topology")?.as_str()?).ok()?;
        mutate_json(&mut topo, s);
        meta.insert("cortex-nn.topology".into(), Value::String(topo.to_string()));
        meta.insert("saveId".into(), Value::String("fuzzed".into()));
    } else {
        mutate_json(&mut header, s);
    }
    let text = header.to_string();
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(&bytes[8 + n..]);
    Some(out)
}

/// Loads the files in `dir`; a model that loads predicts and trains one step.
fn exercise(dir: &Path) {
    let options = LoadOptions {
        seed: 1,
        max_bytes: 64 << 20,
    };
    let Ok(mut model) = io::load(dir, &options) else {
        return;
    };
    // Models whose activations are huge per sample are valid files; running them is not the
    // point here (predict refuses them only past the machine's available memory).
    if model.activation_bytes_per_sample() > 16 << 20 || model.input_shapes().len() != 1 {
        return;
    }
    let shape: Vec<usize> = std::iter::once(2)
        .chain(model.input_shapes()[0].iter().copied())
        .collect();
    let x = Tensor::zeros(&shape);
    if let Ok(y) = model.predict(&x, 32) {
        if model.is_compiled() {
            let _ = model.train_on_batch(&x, &Tensor::zeros(y.shape()));
        }
    }
}

fn peak_rss_bytes() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

#[test]
fn mutated_model_files_end_in_an_error_or_a_working_model() {
    let seeds = corpus();
    assert!(seeds.len() >= 6, "the seed corpus is missing");
    let secs: u64 = std::env::var("CORTEX_FUZZ_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let seed: u64 = std::env::var("CORTEX_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("fuzzing model files for {secs} s from CORTEX_FUZZ_SEED={seed}");
    let mut s = Stream(seed | 1);
    let work = std::env::temp_dir().join(format!("cortex-fuzz-{}", std::process::id()));
    let crashes = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/fuzz-crashes");
    let deadline = Instant::now() + Duration::from_secs(secs);
    let (mut runs, mut loaded, mut failures) = (0u64, 0u64, Vec::new());
    // Each seed unmodified first: they must load (the corpus is current with the format).
    for (i, seed_files) in seeds.iter().enumerate() {
        let dir = work.join(format!("seed-{i}"));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("model.json"), &seed_files.topology).unwrap();
        fs::write(dir.join("weights.safetensors"), &seed_files.weights).unwrap();
        if !seed_files.name.starts_with("regressions") {
            let r = io::load(&dir, &LoadOptions::new(1));
            assert!(r.is_ok(), "seed {} does not load: {:?}", seed_files.name, r.err());
        }
    }
    while Instant::now() < deadline {
        let base = &seeds[s.below(seeds.len())];
        let (mut topology, mut weights) = (base.topology.clone(), base.weights.clone());
        for _ in 0..1 + s.below(3) {
            match s.below(5) {
                0 | 1 => {
                    if let Ok(mut v) = serde_json::from_str::<Value>(&topology) {
                        mutate_json(&mut v, &mut s);
                        topology = v.to_string();
                    }
                }
                2 => {
                    if let Some(w) = mutate_weights_header(&weights, &mut s) {
                        weights = w;
                    }
                }
                3 => mutate_bytes(&mut weights, &mut s),
                _ => {
                    let mut b = topology.into_bytes();
                    mutate_bytes(&mut b, &mut s);
                    topology = String::from_utf8_lossy(&b).into_owned();
                }
            }
        }
        let dir = work.join("case");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("model.json"), &topology).unwrap();
        fs::write(dir.join("weights.safetensors"), &weights).unwrap();
        runs += 1;
        let outcome = catch_unwind(AssertUnwindSafe(|| exercise(&dir)));
        if io::load(&dir, &LoadOptions::new(1)).is_ok() {
            loaded += 1;
        }
        if outcome.is_err() {
            let keep = crashes.join(format!("{seed}-{runs}"));
            fs::create_dir_all(&keep).unwrap();
            fs::write(keep.join("model.json"), &topology).unwrap();
            fs::write(keep.join("weights.safetensors"), &weights).unwrap();
            failures.push(keep);
        }
    }
    let _ = fs::remove_dir_all(&work);
    let peak = peak_rss_bytes();
    eprintln!(
        "{runs} mutated inputs, {loaded} loaded as valid models, {} panics, peak RSS {peak:?} bytes",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "inputs that panicked (kept for replay): {failures:?}"
    );
    assert!(runs > 0);
    if let Some(p) = peak {
        assert!(p < 1 << 30, "peak memory {p} bytes");
    }
}

#[test]
fn fuzzer_regressions_are_refused() {
    // A ZeroPadding2D padding of 1e20 became usize::MAX and wrapped the output size (a panic
    // in the kernel); it is now an option error.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-corpus/regressions/zero-padding-1e20");
    let e = io::load(&dir, &LoadOptions::new(1)).err().expect("refused");
    assert!(e.to_string().contains("below 2^31"), "{e}");
}
