//! The Node.js binding of cortex-nn. Thin on purpose: each export converts its arguments,
//! calls the engine, and converts the result. Long work runs as an `AsyncTask` on a libuv
//! worker (which hands the kernels to the rayon pool), so the event loop never waits.
//! Engine errors and panics both surface as JavaScript `Error`s.

pub mod layer;
pub mod model;
pub mod ops;
pub mod tape;
pub mod tensor;

use std::panic::{catch_unwind, AssertUnwindSafe};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Converts an engine error into a JavaScript error with the engine's message.
pub(crate) fn js_error(e: cortex_core::Error) -> napi::Error {
    napi::Error::new(napi::Status::InvalidArg, e.to_string())
}

/// Runs `f`, turning a Rust panic into a JavaScript error instead of aborting Node.
pub(crate) fn guarded<T>(what: &str, f: impl FnOnce() -> cortex_core::Result<T>) -> napi::Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(js_error(e)),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Err(napi::Error::new(
                napi::Status::GenericFailure,
                format!("internal error in {what} (please report it): {msg}"),
            ))
        }
    }
}

/// Parses a JSON string coming from the TypeScript layer.
pub(crate) fn parse_json(what: &str, text: &str) -> napi::Result<serde_json::Value> {
    serde_json::from_str(text)
        .map_err(|e| napi::Error::new(napi::Status::InvalidArg, format!("{what}: invalid JSON: {e}")))
}
