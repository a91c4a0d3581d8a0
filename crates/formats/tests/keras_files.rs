//! Real Keras 3 files (test/fixtures/keras, written by make_keras_fixtures.py) load to the
//! predictions Keras made, every family of layers and a multi-input/multi-output graph with a
//! shared layer and a nested model among them; saving them again as `.keras` and loading that
//! gives the same outputs; unsupported layers are refused by name.

use std::path::{Path, PathBuf};

use cortex_core::nn::io::LoadOptions;
use cortex_core::nn::Model;
use cortex_core::rng::Rng;
use cortex_core::Tensor;
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../test/fixtures/keras")
}

fn tensors(v: &Value) -> Vec<Tensor> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let shape: Vec<usize> = t["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            let data: Vec<f32> = t["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_f64().unwrap() as f32)
                .collect();
            Tensor::new(data, &shape).unwrap()
        })
        .collect()
}

fn run(model: &Model, inputs: &[Tensor]) -> Vec<Tensor> {
    model.run(inputs, &[], false, &mut Rng::new(1)).unwrap()
}

/// Largest |a - b| relative to max(1, |b|).
fn max_rel_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.shape(), b.shape());
    a.data()
        .iter()
        .zip(b.data())
        .map(|(x, y)| (x - y).abs() / y.abs().max(1.0))
        .fold(0.0, f32::max)
}

const MODELS: &[&str] = &[
    "mlp",
    "convnet",
    "recurrent",
    "conv1d",
    "transformer",
    "multi_io",
    "decoder",
];

#[test]
fn keras_files_load_to_keras_predictions_and_save_back() {
    let dir = tempdir();
    for name in MODELS {
        let record: Value =
            serde_json::from_slice(&std::fs::read(fixtures().join(format!("{name}.json"))).unwrap()).unwrap();
        let inputs = tensors(&record["inputs"]);
        let expected = tensors(&record["outputs"]);
        let model = cortex_formats::load(&fixtures().join(format!("{name}.keras")), &LoadOptions::new(1))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let got = run(&model, &inputs);
        assert_eq!(got.len(), expected.len(), "{name}: outputs");
        for (g, e) in got.iter().zip(&expected) {
            let d = max_rel_diff(g, e);
            println!("{name}: max relative difference to Keras {d:.2e}");
            assert!(d < 1e-4, "{name}: differs from Keras by {d}");
        }
        let path = dir.join(format!("{name}.keras"));
        cortex_formats::save(&model, &path, cortex_formats::Format::Keras).unwrap_or_else(|e| panic!("{name}: {e}"));
        let again =
            cortex_formats::load(&path, &LoadOptions::new(2)).unwrap_or_else(|e| panic!("{name} reloaded: {e}"));
        for (g, e) in run(&again, &inputs).iter().zip(&got) {
            assert_eq!(g.data(), e.data(), "{name}: saved and reloaded");
        }
        std::fs::write(dir.join(format!("{name}.inputs.json")), record["inputs"].to_string()).unwrap();
    }
    keras_opens_what_we_saved(&dir);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Real Keras 3 loads each file cortex-nn saved and predicts what Keras predicted on the
/// original (when python3 has keras; skipped with a notice otherwise).
fn keras_opens_what_we_saved(dir: &Path) {
    let has_keras = std::process::Command::new("python3")
        .args(["-c", "import keras"])
        .env("KERAS_BACKEND", "jax")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_keras {
        println!("keras_files: python3 has no keras; the Keras-side check is skipped (pip install keras jax)");
        return;
    }
    let mut args = vec![fixtures().join("keras_predict.py").display().to_string()];
    for name in MODELS {
        args.push(dir.join(format!("{name}.keras")).display().to_string());
        args.push(dir.join(format!("{name}.inputs.json")).display().to_string());
    }
    let out = std::process::Command::new("python3")
        .args(&args)
        .env("KERAS_BACKEND", "jax")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with('[') || l.starts_with('{'))
        .collect();
    assert_eq!(
        lines.len(),
        MODELS.len(),
        "keras_predict.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (name, line) in MODELS.iter().zip(lines) {
        let v: Value = serde_json::from_str(line).unwrap();
        assert!(
            v.get("error").is_none(),
            "{name}: Keras could not load cortex-nn's file: {}",
            v["error"]
        );
        let record: Value =
            serde_json::from_slice(&std::fs::read(fixtures().join(format!("{name}.json"))).unwrap()).unwrap();
        for (k, e) in tensors(&v).iter().zip(&tensors(&record["outputs"])) {
            let d = max_rel_diff(k, e);
            println!("{name}: Keras on cortex-nn's file vs the original, max relative difference {d:.2e}");
            assert!(
                d < 1e-5,
                "{name}: Keras predicts differently from cortex-nn's file by {d}"
            );
        }
    }
}

#[test]
fn the_mlp_file_comes_back_compiled() {
    let model = cortex_formats::load(&fixtures().join("mlp.keras"), &LoadOptions::new(1)).unwrap();
    let c = model.compile_json().expect("compiled from compile_config");
    assert_eq!(c["optimizer"]["name"], "adam");
    assert!((c["optimizer"]["learningRate"].as_f64().unwrap() - 0.01).abs() < 1e-6);
}

#[test]
fn unsupported_layers_are_refused_by_name_and_class() {
    let e = cortex_formats::load(&fixtures().join("lambda.keras"), &LoadOptions::new(1))
        .err()
        .expect("an error")
        .to_string();
    assert!(e.contains("doubler") && e.contains("Lambda"), "{e}");
    let e = cortex_formats::load(&fixtures().join("regularizer.keras"), &LoadOptions::new(1))
        .err()
        .expect("an error")
        .to_string();
    assert!(e.contains("regularized") && e.contains("kernel_regularizer"), "{e}");
}

#[test]
fn a_weight_budget_below_the_file_is_refused_before_loading() {
    let mut options = LoadOptions::new(1);
    options.max_bytes = 64;
    let e = cortex_formats::load(&fixtures().join("convnet.keras"), &options)
        .err()
        .expect("an error")
        .to_string();
    assert!(e.to_lowercase().contains("max_bytes") || e.contains("limit"), "{e}");
}

#[test]
fn hostile_archives_are_errors() {
    let dir = tempdir();
    let good = std::fs::read(fixtures().join("mlp.keras")).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("not a zip", b"hello, this is not a zip archive".to_vec()),
        ("truncated", good[..good.len() / 2].to_vec()),
        ("tail only", good[good.len() / 2..].to_vec()),
    ];
    for (what, bytes) in cases {
        let path = dir.join(format!("{}.keras", what.replace(' ', "_")));
        std::fs::write(&path, &bytes).unwrap();
        assert!(cortex_formats::load(&path, &LoadOptions::new(1)).is_err(), "{what}");
    }
    // Every byte flipped in turn across the archive: errors or a model, never a panic.
    let mut rng = Rng::new(5);
    for _ in 0..300 {
        let mut bytes = good.clone();
        let i = (rng.next_u64() as usize) % bytes.len();
        bytes[i] ^= 1 << (rng.next_u64() % 8);
        let _ = cortex_formats::keras::load_bytes(&bytes, &LoadOptions::new(1), "mutated");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempdir() -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "cortex-keras-test-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}
