//! Shared test helpers: the device, a deterministic RNG and the error metric.

use std::sync::OnceLock;

use cortex_wgpu::Gpu;

/// The shared device, or `None` when GPU tests are skipped ([`skip`]); panics with the error
/// when a device was expected but cannot be opened.
pub fn gpu() -> Option<&'static Gpu> {
    static GPU: OnceLock<Option<Gpu>> = OnceLock::new();
    GPU.get_or_init(|| {
        if skip() {
            return None;
        }
        match Gpu::new() {
            Ok(g) => Some(g),
            Err(e) => panic!("Gpu::new() failed: {e} (set CORTEX_SKIP_GPU_TESTS=1 to skip GPU tests)"),
        }
    })
    .as_ref()
}

/// The devices the row-reduction tests run on, named: the shared one, which takes the
/// subgroup variants where the adapter has `SUBGROUP`, and then a second device held on the
/// workgroup-memory path, so every run checks both paths (lavapipe has subgroups).
pub fn reduction_paths() -> Vec<(&'static str, &'static Gpu)> {
    static TREE: OnceLock<Gpu> = OnceLock::new();
    let Some(shared) = gpu() else { return Vec::new() };
    if !shared.subgroups() {
        return vec![("workgroup memory", shared)];
    }
    let tree = TREE.get_or_init(|| {
        let g = Gpu::new().expect("second device");
        g.set_subgroups(false).unwrap();
        g
    });
    vec![("subgroups", shared), ("workgroup memory", tree)]
}

/// True when GPU tests are skipped: `CORTEX_SKIP_GPU_TESTS=1`, or no adapter without
/// `CORTEX_REQUIRE_GPU=1` (the reason is printed once).
pub fn skip() -> bool {
    cortex_wgpu::gpu_test_skip_reason().is_some()
}

/// Deterministic xorshift values in [-1, 1).
pub fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Max relative error of `got` vs `want`: |g - w| / max(|w|, floor) where the floor is
/// 1e-2 of the reference's largest magnitude (so entries that cancel to ~0 are judged
/// relative to the tensor's scale, not to themselves).
pub fn max_rel_err(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len(), "length mismatch");
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let floor = (scale * 1e-2).max(1e-30);
    got.iter()
        .zip(want)
        .map(|(&g, &w)| (g as f64 - w).abs() / w.abs().max(floor))
        .fold(0.0, f64::max)
}

/// Asserts `max_rel_err(got, want) <= tol`.
#[track_caller]
pub fn assert_close(what: &str, got: &[f32], want: &[f64], tol: f64) {
    let err = max_rel_err(got, want);
    assert!(err <= tol, "{what}: max relative error {err:e} > {tol:e}");
}
