//! Model files: a directory holding `model.json` (topology and compile settings) and
//! `weights.safetensors` (the weights, plus a copy of the topology in its metadata).
//!
//! Saving writes each file to a temporary name and renames it into place, weights first. Both
//! files carry the same random save id. A process killed between the two renames leaves new
//! weights next to an old model.json; the ids then differ, and loading takes the topology from
//! the weights file, which is complete. So a kill at any moment leaves the old model or the new
//! one, never an unreadable pair. When the ids agree, model.json is used (edits to it count).
//!
//! Model files come from outside, so loading checks before it allocates: file sizes against
//! limits, the safetensors header (offsets, dtypes, lengths; checked by the `safetensors`
//! crate), and every weight the config declares against the bytes the file actually holds.

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::path::Path;

use safetensors::tensor::{Dtype, Metadata, TensorView};
use safetensors::SafeTensors;
use serde_json::{json, Value};

use super::model::Model;
use super::param::Param;
use crate::alloc::{self, WeightBudget, WeightFill};
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

/// Metadata key of the weights file that holds the topology (the same JSON as model.json).
const TOPOLOGY_KEY: &str = "cortex-nn.topology";
/// Key of the save id, in model.json and in the weights metadata.
const SAVE_ID_KEY: &str = "saveId";
/// model.json files are a few KiB; anything past this is not one of ours.
const MAX_TOPOLOGY_BYTES: u64 = 64 << 20;
/// The safetensors crate's own cap on a header.
const MAX_HEADER_BYTES: u64 = 100 << 20;

/// How [`load`] treats the files.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Seed of the model's random state (dropout, later re-initialisation).
    pub seed: u64,
    /// Largest weight data accepted, in bytes; larger files and configs are refused.
    pub max_bytes: u64,
}

impl LoadOptions {
    /// The process's model size limit ([`alloc::max_model_bytes`]) with `seed`.
    pub fn new(seed: u64) -> Self {
        LoadOptions {
            seed,
            max_bytes: alloc::max_model_bytes(),
        }
    }
}

/// Saves the model into directory `dir` (created if missing), with its training state (see
/// [`checkpoint`](super::checkpoint)) when compiled.
pub fn save(model: &Model, dir: &Path) -> Result<()> {
    save_with(model, dir, None)
}

/// [`save`], with `extra` merged into the training state (e.g. `backupAndRestore`'s epoch).
pub fn save_with(model: &Model, dir: &Path, extra: Option<Value>) -> Result<()> {
    if !model.is_built() {
        return Err(Error::Invalid(
            "save: the model has no weights yet; build it or train it first".into(),
        ));
    }
    fs::create_dir_all(dir).map_err(|e| io_err("cannot create directory", dir, e))?;
    let mut weights = model.get_weights()?;
    let mut topology = json!({
        "format": FORMAT,
        "version": 1,
        "config": model.to_json(),
        "weights": weights.iter().map(|(n, _, _)| n.clone()).collect::<Vec<_>>(),
    });
    if let Some(c) = model.compile_json() {
        topology["compile"] = c;
    }
    if let Some((tensors, mut state)) = super::checkpoint::capture(model) {
        if let (Some(Value::Object(extra)), Some(obj)) = (extra, state.as_object_mut()) {
            obj.extend(extra);
        }
        topology["trainingState"] = state;
        weights.extend(tensors);
    }
    let save_id = new_save_id();
    topology[SAVE_ID_KEY] = json!(save_id);
    let text = serde_json::to_string_pretty(&topology).map_err(|e| Error::Io(e.to_string()))?;
    let bytes: Vec<Vec<u8>> = weights.iter().map(|(_, _, data)| le_bytes(data)).collect();
    let views = weights
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), b)| {
            TensorView::new(Dtype::F32, shape.clone(), b)
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::Io(format!("cannot encode weight '{name}': {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let metadata = HashMap::from([
        (TOPOLOGY_KEY.to_string(), text.clone()),
        (SAVE_ID_KEY.to_string(), save_id),
    ]);
    let encoded =
        safetensors::serialize(views, Some(metadata)).map_err(|e| Error::Io(format!("cannot encode weights: {e}")))?;
    // The weights file (with the topology inside) is the commit point; model.json follows.
    write_atomically(&dir.join(WEIGHTS), &encoded)?;
    write_atomically(&dir.join(TOPOLOGY), text.as_bytes())
}

/// A fresh id for one save: time, process and a counter, so two saves never share one.
fn new_save_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    format!(
        "{nanos:x}-{:x}-{:x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// The little-endian bytes of `data` (f32 is stored little-endian in safetensors).
fn le_bytes(data: &[f32]) -> Vec<u8> {
    data.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Reads a whole file after checking its size against `limit` (so a huge or sparse file costs
/// an Error, not memory), with a fallible allocation.
pub fn read_limited(path: &Path, what: &str, limit: u64, limit_name: &str) -> Result<Vec<u8>> {
    let mut file = fs::File::open(path).map_err(|e| io_err(&format!("cannot read {what}"), path, e))?;
    let len = file
        .metadata()
        .map_err(|e| io_err(&format!("cannot read {what}"), path, e))?
        .len();
    if len > limit {
        return Err(Error::Memory(format!(
            "{what} '{}' is {}, over the {} limit ({limit_name})",
            path.display(),
            alloc::human(len),
            alloc::human(limit)
        )));
    }
    let mut bytes = alloc::try_with_capacity(&format!("{what} '{}'", path.display()), len as usize)?;
    file.by_ref()
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| io_err(&format!("cannot read {what}"), path, e))?;
    if bytes.len() as u64 > limit {
        return Err(io_err(&format!("{what} grew while being read:"), path, "refusing it"));
    }
    Ok(bytes)
}

/// Loads a model saved by [`save`]; every problem (missing, truncated, corrupt, oversized or
/// mismatched files) is an error that names the file.
pub fn load(dir: &Path, options: &LoadOptions) -> Result<Model> {
    load_with_state(dir, options).map(|(model, _)| model)
}

/// [`load`], also returning the saved `trainingState` JSON (with any extra keys of [`save_with`]).
pub fn load_with_state(dir: &Path, options: &LoadOptions) -> Result<(Model, Option<Value>)> {
    let weights_path = dir.join(WEIGHTS);
    let topo_path = dir.join(TOPOLOGY);
    let from_file = read_model_json(&topo_path);
    let bytes = match read_limited(
        &weights_path,
        "weights file",
        options.max_bytes.saturating_add(MAX_HEADER_BYTES),
        "maxBytes plus the largest safetensors header",
    ) {
        Ok(b) => b,
        // Without model.json either, there is no model here: say that.
        Err(e) => {
            return Err(match from_file {
                Ok(None) => io_err("cannot read model file", &topo_path, "no such file"),
                Ok(Some(_)) => e,
                Err(json_error) => json_error,
            })
        }
    };
    let (header_len, header) =
        SafeTensors::read_metadata(&bytes).map_err(|e| io_err("corrupt weights file", &weights_path, e))?;
    // read_metadata has checked that the offsets tile the data exactly.
    let data = &bytes[8 + header_len..];
    let embedded = header
        .metadata()
        .as_ref()
        .and_then(|m| Some((m.get(TOPOLOGY_KEY)?.clone(), m.get(SAVE_ID_KEY).cloned())));
    let (topology, text_path) = choose_topology(from_file, &topo_path, embedded, &weights_path)?;
    let config = topology
        .get("config")
        .ok_or_else(|| io_err("corrupt model file", text_path, "no 'config'"))?;
    // Every weight the config declares is charged against what the file holds (and maxBytes)
    // before it is allocated, and left as zeros: the file's values replace it below.
    let data_bytes = header.data_len() as u64;
    let limited_by_file = data_bytes <= options.max_bytes;
    let (limit, source) = if limited_by_file {
        (data_bytes, "the weight data in the file")
    } else {
        (options.max_bytes, "maxBytes")
    };
    let mut model = WeightBudget::new(limit, WeightFill::Overwrite, source)
        .run(|| Model::from_config(config, options.seed))
        .map_err(|e| match e {
            Error::Memory(_) if limited_by_file => io_err("weights file does not match the model", &weights_path, e),
            _ => io_err("invalid model in", text_path, e),
        })?;
    if !model.is_built() {
        return Err(io_err("corrupt model file", text_path, "no input shape recorded"));
    }
    if let Some(c) = topology.get("compile") {
        model
            .compile(c)
            .map_err(|e| io_err("invalid compile settings in", text_path, e))?;
    }
    let mut result = Ok(());
    model.visit_params(&mut |name, param, _| {
        if result.is_ok() {
            result = read_weight(&header, data, name, param).map_err(|e| match e {
                Error::Memory(m) => Error::Memory(m),
                other => io_err("weights file does not match the model", &weights_path, other),
            });
        }
    });
    result?;
    let state = topology.get("trainingState").cloned();
    super::checkpoint::restore(&mut model, state.as_ref(), &header, data)
        .map_err(|e| io_err("invalid training state in", &weights_path, e))?;
    Ok((model, state))
}

fn parse_topology(text: &str, path: &Path) -> Result<Value> {
    let v: Value = serde_json::from_str(text).map_err(|e| io_err("corrupt model file (invalid JSON)", path, e))?;
    if v.get("format").and_then(Value::as_str) != Some(FORMAT) {
        return Err(io_err(
            "not a cortex-nn model file",
            path,
            format!("expected format '{FORMAT}'"),
        ));
    }
    Ok(v)
}

/// model.json's topology, or `None` when there is no model.json.
fn read_model_json(path: &Path) -> Result<Option<Value>> {
    if !path.exists() {
        return Ok(None);
    }
    let bytes = read_limited(path, "model file", MAX_TOPOLOGY_BYTES, "model.json size limit")?;
    let text = String::from_utf8(bytes).map_err(|e| io_err("corrupt model file (not UTF-8)", path, e))?;
    parse_topology(&text, path).map(Some)
}

/// The topology to load: model.json, unless a save was interrupted after the weights file was
/// replaced (model.json is then missing or has another save id) and the weights file's copy is
/// the complete one. Files from before save ids (or written by hand) use model.json.
fn choose_topology<'a>(
    from_file: Result<Option<Value>>,
    topo_path: &'a Path,
    embedded: Option<(String, Option<String>)>,
    weights_path: &'a Path,
) -> Result<(Value, &'a Path)> {
    let from_file = from_file?;
    let Some((embedded_text, embedded_id)) = embedded else {
        let missing = || io_err("cannot read model file", topo_path, "no such file");
        return Ok((from_file.ok_or_else(missing)?, topo_path));
    };
    if let Some(v) = from_file {
        let file_id = v.get(SAVE_ID_KEY).and_then(Value::as_str);
        if file_id.is_none() || file_id == embedded_id.as_deref() {
            return Ok((v, topo_path));
        }
    }
    Ok((parse_topology(&embedded_text, weights_path)?, weights_path))
}

/// Copies tensor `name` of the file into `param`, after checking dtype, shape and values.
fn read_weight(header: &Metadata, data: &[u8], name: &str, param: &Param) -> Result<()> {
    let info = header
        .info(name)
        .ok_or_else(|| Error::Invalid(format!("the file lacks tensor '{name}'")))?;
    let shape = param.shape();
    if info.dtype != Dtype::F32 || info.shape != shape {
        return Err(Error::Invalid(format!(
            "'{name}' should be f32 {shape:?}, found {:?} {:?}",
            info.dtype, info.shape
        )));
    }
    let bytes = &data[info.data_offsets.0..info.data_offsets.1];
    let mut values = alloc::try_with_capacity(&format!("weight '{name}'"), bytes.len() / 4)?;
    values.extend(
        bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
    );
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(Error::Invalid(format!("non-finite value at index {i} of '{name}'")));
    }
    param.set(values)
}
