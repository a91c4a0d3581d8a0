//! Model interchange for cortex-nn: Keras 3 `.keras` files, TensorFlow.js layers-models and
//! cortex-nn's own directories are loaded by [`load`] (chosen by the path) and written by
//! [`save`]; ONNX is written by [`onnx::export`].

pub mod keras;
pub mod onnx;
pub mod tensorboard;
pub mod tfjs;

use std::path::Path;

use cortex_core::nn::io::{self, LoadOptions};
use cortex_core::nn::Model;
use cortex_core::{Error, Result};

/// A file format [`save`] writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// cortex-nn's directory: model.json + weights.safetensors (kill-safe, compile state kept).
    Cortex,
    /// A Keras 3 `.keras` zip.
    Keras,
    /// A TensorFlow.js layers-model directory: model.json + .bin shards.
    Tfjs,
}

impl Format {
    /// Parses `"cortex" | "keras" | "tfjs"`; `None` picks by the path (`.keras` is Keras).
    pub fn choose(name: Option<&str>, path: &Path) -> Result<Format> {
        match name {
            Some("cortex") => Ok(Format::Cortex),
            Some("keras") => Ok(Format::Keras),
            Some("tfjs") => Ok(Format::Tfjs),
            Some(other) => Err(Error::Invalid(format!(
                "save: unknown format '{other}'; expected 'cortex', 'keras' or 'tfjs' (ONNX: model.export)"
            ))),
            None if is_keras(path) => Ok(Format::Keras),
            None => Ok(Format::Cortex),
        }
    }
}

fn is_keras(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("keras"))
}

/// Loads a model from `path`: a `.keras` file, a tfjs `model.json` (or a directory holding a
/// tfjs one), or a cortex-nn directory.
pub fn load(path: &Path, options: &LoadOptions) -> Result<Model> {
    if is_keras(path) {
        return keras::load(path, options);
    }
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("h5")) {
        return Err(Error::Invalid(format!(
            "'{}': a bare .h5 file (Keras 2 full-model or weights-only HDF5) is not supported; save it as .keras \
             with Keras 3, or convert it to a tfjs layers-model",
            path.display()
        )));
    }
    if path.is_file() {
        return tfjs::load(path, options);
    }
    let json = path.join("model.json");
    if json.is_file() && !path.join("weights.safetensors").exists() && is_tfjs(&json) {
        return tfjs::load(&json, options);
    }
    io::load(path, options)
}

/// Whether a model.json is a tfjs one (it has `modelTopology`), read only as far as needed.
fn is_tfjs(json: &Path) -> bool {
    io::read_limited(json, "model.json", 64 << 20, "model.json size limit")
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .is_some_and(|v| v.get("modelTopology").is_some())
}

/// Saves `model` to `path` in `format`.
pub fn save(model: &Model, path: &Path, format: Format) -> Result<()> {
    match format {
        Format::Cortex => io::save(model, path),
        Format::Keras => keras::save(model, path),
        Format::Tfjs => tfjs::save(model, path),
    }
}
