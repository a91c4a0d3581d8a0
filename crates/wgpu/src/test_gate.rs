//! The one rule every GPU test suite of the project follows (Rust and, mirrored, vitest).
//!
//! - `CORTEX_SKIP_GPU_TESTS=1`: GPU tests are skipped.
//! - No adapter at all: they are skipped too, so `npm test` passes on a machine without a
//!   GPU driver, unless `CORTEX_REQUIRE_GPU=1` (CI sets it), where they run and fail on the
//!   missing adapter.
//!
//! The reason is printed once per process, straight to stderr: the test harness captures
//! `eprintln!` of passing tests, and a silent skip would look like a pass.

use std::io::Write;
use std::sync::OnceLock;

/// Why this process should skip its GPU tests, or `None` to run them.
pub fn gpu_test_skip_reason() -> Option<&'static str> {
    static REASON: OnceLock<Option<String>> = OnceLock::new();
    REASON
        .get_or_init(|| {
            let reason = decide(
                env_is_one("CORTEX_SKIP_GPU_TESTS"),
                env_is_one("CORTEX_REQUIRE_GPU"),
                || !crate::adapters().is_empty(),
            );
            if let Some(why) = &reason {
                let _ = writeln!(std::io::stderr(), "cortex-nn: skipping GPU tests: {why}");
            }
            reason
        })
        .as_deref()
}

fn env_is_one(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v == "1")
}

fn decide(skip: bool, require: bool, has_adapter: impl FnOnce() -> bool) -> Option<String> {
    if skip {
        return Some("CORTEX_SKIP_GPU_TESTS=1".into());
    }
    if require || has_adapter() {
        return None;
    }
    Some(
        "wgpu finds no GPU adapter. Install a Vulkan driver (on Debian/Ubuntu without a GPU: \
         apt-get install mesa-vulkan-drivers libvulkan1, Mesa's software device) to run them; \
         CORTEX_REQUIRE_GPU=1 makes a missing adapter fail instead"
            .into(),
    )
}

#[cfg(test)]
mod tests {
    use super::decide;

    #[test]
    fn skip_wins_require_runs_and_no_adapter_skips() {
        assert!(decide(true, true, || true).unwrap().contains("CORTEX_SKIP_GPU_TESTS"));
        assert_eq!(
            decide(false, true, || false),
            None,
            "required: run and fail on the adapter"
        );
        assert_eq!(decide(false, false, || true), None);
        assert!(decide(false, false, || false).unwrap().contains("mesa-vulkan-drivers"));
    }
}
