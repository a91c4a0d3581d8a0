//! The Node.js binding of cortex-nn. Thin on purpose: each export converts its arguments,
//! calls the engine, and converts the result. Long work runs as an `AsyncTask` on a libuv
//! worker (which hands the kernels to the rayon pool), so the event loop never waits.
//! Engine errors and panics both surface as JavaScript `Error`s.

pub mod explain;
pub mod fit;
pub mod image;
pub mod layer;
pub mod model;
pub mod onnx;
pub mod ops;
pub mod tape;
pub mod tensor;
pub mod tensorboard;

use std::panic::{catch_unwind, AssertUnwindSafe};

use cortex_core::alloc::OutOfMemory;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Converts an engine error into a JavaScript error with the engine's message.
pub(crate) fn js_error(e: cortex_core::Error) -> napi::Error {
    napi::Error::new(napi::Status::InvalidArg, e.to_string())
}

/// Keeps the default panic message off stderr for [`OutOfMemory`] unwinds: they are not bugs,
/// and the caller gets them as an Error.
fn quiet_out_of_memory_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<OutOfMemory>().is_none() {
                default_hook(info);
            }
        }));
    });
}

/// Runs `f`, turning a Rust panic into a JavaScript error instead of aborting Node. A kernel
/// that could not allocate its output unwinds with [`OutOfMemory`], which becomes a plain Error.
pub(crate) fn guarded<T>(what: &str, f: impl FnOnce() -> cortex_core::Result<T>) -> napi::Result<T> {
    quiet_out_of_memory_panics();
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(js_error(e)),
        Err(panic) if panic.downcast_ref::<OutOfMemory>().is_some() => {
            let OutOfMemory(msg) = panic.downcast_ref::<OutOfMemory>().cloned().expect("checked");
            Err(napi::Error::new(napi::Status::GenericFailure, format!("{what}: {msg}")))
        }
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
