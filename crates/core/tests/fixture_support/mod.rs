//! Reading the shared PyTorch fixtures (test/fixtures/fixtures.json) and comparing with them:
//! the base of norm_support and spatial_support, used by fixtures.rs and fixtures_recurrent.rs too.
#![allow(dead_code)]

use cortex_core::rng::Rng;
use serde_json::Value;

pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../test/fixtures/fixtures.json");

/// Every fixture case.
pub fn all_cases() -> Vec<Value> {
    let text = std::fs::read_to_string(FIXTURES).expect("fixtures.json is readable");
    let v: Value = serde_json::from_str(&text).expect("fixtures.json parses");
    v["cases"].as_array().expect("cases array").clone()
}

/// Every case of `op`.
pub fn cases(op: &str) -> Vec<Value> {
    all_cases().into_iter().filter(|c| c["op"] == op).collect()
}

pub fn shape_of(v: &Value) -> Vec<usize> {
    v["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect()
}

pub fn data_of(v: &Value) -> Vec<f32> {
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_f64().unwrap() as f32)
        .collect()
}

/// Deterministic values in [-1, 1).
pub fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| rng.uniform() * 2.0 - 1.0).collect()
}

/// |got - want| <= 1e-5 + 1e-4 |want| for every element.
pub fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_close_tol(what, got, want, 1e-5, 1e-4);
}

pub fn assert_close_tol(what: &str, got: &[f32], want: &[f32], abs: f32, rel: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= abs + rel * w.abs(), "{what}[{i}]: got {g}, want {w}");
    }
}
