//! Model files: a directory holding `model.json` (topology and compile settings) and
//! `weights.safetensors`. Each file is written to a temporary name and renamed into place, so
//! a crash mid-save never leaves a half-written file behind.

use std::fs;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use serde_json::{json, Value};

use super::model::Model;
use crate::{Error, Result};

/// Marks our model.json files.
pub const FORMAT: &str = "cortex-nn/sequential";
const TOPOLOGY: &str = "model.json";
const WEIGHTS: &str = "weights.safetensors";

fn io_err(what: &str, path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Io(format!("{what} '{}': {e}", path.display()))
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let result = fs::write(&tmp, bytes)
        .and_then(|_| fs::File::open(&tmp)?.sync_all())
        .and_then(|_| fs::rename(&tmp, path));
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(io_err("cannot write", path, e));
    }
    Ok(())
}

/// Saves the model into directory `dir` (created if missing).
pub fn save(model: &Model, dir: &Path) -> Result<()> {
    if !model.is_built() {
        return Err(Error::Invalid(
            "save: the model has no weights yet; build it or train it first".into(),
        ));
    }
    fs::create_dir_all(dir).map_err(|e| io_err("cannot create directory", dir, e))?;
    let weights = model.get_weights()?;
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = weights
        .iter()
        .map(|(name, shape, data)| {
            (
                name.clone(),
                shape.clone(),
                data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(name, shape, b)| {
            TensorView::new(Dtype::F32, shape.clone(), b)
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::Io(format!("cannot encode weight '{name}': {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let encoded = safetensors::serialize(views, None).map_err(|e| Error::Io(format!("cannot encode weights: {e}")))?;
    let mut topology = json!({
        "format": FORMAT,
        "version": 1,
        "config": model.to_json(),
        "weights": weights.iter().map(|(n, _, _)| n.clone()).collect::<Vec<_>>(),
    });
    if let Some(c) = model.compile_json() {
        topology["compile"] = c;
    }
    let text = serde_json::to_string_pretty(&topology).map_err(|e| Error::Io(e.to_string()))?;
    // Weights first: a model.json always points at weights that are complete.
    write_atomically(&dir.join(WEIGHTS), &encoded)?;
    write_atomically(&dir.join(TOPOLOGY), text.as_bytes())
}

/// Loads a model saved by [`save`]; every problem (missing, truncated, corrupt or mismatched
/// files) is an error that names the file.
pub fn load(dir: &Path, seed: u64) -> Result<Model> {
    let topo_path = dir.join(TOPOLOGY);
    let text = fs::read_to_string(&topo_path).map_err(|e| io_err("cannot read model file", &topo_path, e))?;
    let topology: Value =
        serde_json::from_str(&text).map_err(|e| io_err("corrupt model file (invalid JSON)", &topo_path, e))?;
    if topology.get("format").and_then(Value::as_str) != Some(FORMAT) {
        return Err(io_err(
            "not a cortex-nn model file",
            &topo_path,
            format!("expected format '{FORMAT}'"),
        ));
    }
    let config = topology
        .get("config")
        .ok_or_else(|| io_err("corrupt model file", &topo_path, "no 'config'"))?;
    let mut model = Model::from_config(config, seed).map_err(|e| io_err("invalid model in", &topo_path, e))?;
    if !model.is_built() {
        return Err(io_err("corrupt model file", &topo_path, "no input shape recorded"));
    }
    if let Some(c) = topology.get("compile") {
        model
            .compile(c)
            .map_err(|e| io_err("invalid compile settings in", &topo_path, e))?;
    }
    let weights_path = dir.join(WEIGHTS);
    let bytes = fs::read(&weights_path).map_err(|e| io_err("cannot read weights file", &weights_path, e))?;
    let tensors = SafeTensors::deserialize(&bytes).map_err(|e| io_err("corrupt weights file", &weights_path, e))?;
    let mut values = Vec::new();
    for (name, shape, _) in model.get_weights()? {
        let view = tensors
            .tensor(&name)
            .map_err(|_| io_err("weights file lacks", &weights_path, format!("tensor '{name}'")))?;
        if view.dtype() != Dtype::F32 || view.shape() != shape.as_slice() {
            return Err(io_err(
                "weights file does not match the model",
                &weights_path,
                format!(
                    "'{name}' should be f32 {shape:?}, found {:?} {:?}",
                    view.dtype(),
                    view.shape()
                ),
            ));
        }
        let data: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        values.push(data);
    }
    model
        .set_weights(&values)
        .map_err(|e| io_err("invalid weights in", &weights_path, e))?;
    Ok(model)
}
