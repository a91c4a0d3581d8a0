//! TensorBoard event-file binding: one `NativeEventWriter` per event file. Each call appends a
//! small record to a buffered file (microseconds), so the methods are synchronous.

use std::path::Path;

use cortex_formats::tensorboard::EventWriter;
use napi::bindgen_prelude::Float32Array;
use napi_derive::napi;

use crate::guarded;

/// Appends scalar and histogram summaries to a new `events.out.tfevents.*` file in a directory.
#[napi]
pub struct NativeEventWriter {
    inner: EventWriter,
}

/// A TensorBoard step: a safe integer (JavaScript numbers are exact up to 2^53).
fn step_of(what: &str, step: f64) -> napi::Result<i64> {
    if step.fract() != 0.0 || !(-9_007_199_254_740_991.0..=9_007_199_254_740_991.0).contains(&step) {
        return Err(napi::Error::new(
            napi::Status::InvalidArg,
            format!("{what}: step must be an integer, got {step}"),
        ));
    }
    Ok(step as i64)
}

#[napi]
impl NativeEventWriter {
    /// Creates `dir` if needed and starts a new event file in it; `hostname` goes into the name.
    #[napi(constructor)]
    pub fn new(dir: String, hostname: String) -> napi::Result<Self> {
        let inner = guarded("tensorBoard", || EventWriter::create(Path::new(&dir), &hostname))?;
        Ok(NativeEventWriter { inner })
    }

    /// The event file's path.
    #[napi(getter)]
    pub fn path(&self) -> String {
        self.inner.path().display().to_string()
    }

    /// Appends a scalar summary (buffered).
    #[napi]
    pub fn scalar(&mut self, tag: String, step: f64, value: f64) -> napi::Result<()> {
        let step = step_of("scalar", step)?;
        guarded("tensorBoard scalar", || self.inner.scalar(&tag, step, value))
    }

    /// Appends a histogram summary of `values` (buffered).
    #[napi]
    pub fn histogram(&mut self, tag: String, step: f64, values: Float32Array) -> napi::Result<()> {
        let step = step_of("histogram", step)?;
        guarded("tensorBoard histogram", || self.inner.histogram(&tag, step, &values))
    }

    /// Writes buffered records to the file.
    #[napi]
    pub fn flush(&mut self) -> napi::Result<()> {
        guarded("tensorBoard flush", || self.inner.flush())
    }

    /// Flushes and closes the file; later writes throw.
    #[napi]
    pub fn close(&mut self) -> napi::Result<()> {
        guarded("tensorBoard close", || self.inner.close())
    }
}
