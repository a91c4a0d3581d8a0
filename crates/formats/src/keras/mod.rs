//! Keras 3 `.keras` files: a zip of `config.json` (the model's Keras config),
//! `metadata.json` and `model.weights.h5` (the variables, by layer).
//!
//! Loading converts the config to cortex-nn's, builds the model with zeroed weights charged to
//! the size budget, then copies each variable in after checking its size. The compile config
//! (optimizer class and hyper-parameters, loss, metrics) is applied when cortex-nn has its
//! counterparts; the optimizer's state (moments, step) is not restored.

pub mod graph;
pub mod layer;
pub mod weights;

use std::io::{Cursor, Read, Write};
use std::path::Path;

use cortex_core::alloc::{WeightBudget, WeightFill};
use cortex_core::nn::io::{read_limited, write_atomically, LoadOptions};
use cortex_core::nn::Model;
use cortex_core::{Error, Result};
use serde_json::{json, Value};

/// config.json and metadata.json are a few KiB; anything past this is not a Keras file.
const MAX_JSON_BYTES: u64 = 64 << 20;
/// HDF5 structure (headers, heaps, B-trees) on top of the weight data itself.
const H5_OVERHEAD_BYTES: u64 = 64 << 20;

fn io_err(path: &str, what: impl std::fmt::Display) -> Error {
    Error::Io(format!("{path}: {what}"))
}

/// One entry of the archive, refused before inflating when it declares more than `limit`.
fn entry(zip: &mut zip::ZipArchive<Cursor<&[u8]>>, name: &str, limit: u64, path: &str) -> Result<Vec<u8>> {
    let mut file = zip
        .by_name(name)
        .map_err(|e| io_err(path, format!("not a Keras 3 .keras file: no {name} ({e})")))?;
    if file.size() > limit {
        return Err(Error::Memory(format!(
            "{path}: {name} declares {} bytes, over the {limit}-byte limit",
            file.size()
        )));
    }
    let mut out = Vec::new();
    file.by_ref()
        .take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|e| io_err(path, format!("cannot read {name}: {e}")))?;
    if out.len() as u64 > limit || out.len() as u64 != file.size() {
        return Err(io_err(
            path,
            format!("{name} does not hold the size its header declares"),
        ));
    }
    Ok(out)
}

/// Loads a `.keras` file.
pub fn load(path: &Path, options: &LoadOptions) -> Result<Model> {
    let limit = options.max_bytes.saturating_add(H5_OVERHEAD_BYTES + 2 * MAX_JSON_BYTES);
    let bytes = read_limited(path, "Keras file", limit, "maxBytes plus the file's structure")?;
    load_bytes(&bytes, options, &path.display().to_string())
}

/// Loads a `.keras` archive held in memory; `path` names it in errors.
pub fn load_bytes(bytes: &[u8], options: &LoadOptions, path: &str) -> Result<Model> {
    let mut zip =
        zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| io_err(path, format!("not a zip archive ({e})")))?;
    let config_text = entry(&mut zip, "config.json", MAX_JSON_BYTES, path)?;
    let config: Value =
        serde_json::from_slice(&config_text).map_err(|e| io_err(path, format!("config.json is not JSON ({e})")))?;
    let h5_bytes = entry(
        &mut zip,
        "model.weights.h5",
        options.max_bytes.saturating_add(H5_OVERHEAD_BYTES),
        path,
    )?;
    let limits = cortex_hdf5::Limits {
        max_bytes: options.max_bytes,
        ..Default::default()
    };
    let root = cortex_hdf5::read(&h5_bytes, &limits).map_err(|e| io_err(path, format!("model.weights.h5: {e}")))?;
    let mut slots = Vec::new();
    let cortex = graph::model_from_keras(&config, "", "", &mut slots, 0).map_err(|e| io_err(path, e))?;
    let data_bytes: u64 = h5_bytes.len() as u64;
    let mut model = build(&cortex, options, data_bytes).map_err(|e| io_err(path, e))?;
    weights::read_into(&model, &slots, &root).map_err(|e| io_err(path, e))?;
    if let Some(compile) = config.get("compile_config").and_then(compile_from_keras) {
        // A loss or optimizer cortex-nn lacks leaves the model uncompiled: compile() it yourself.
        let _ = model.compile(&compile);
    }
    Ok(model)
}

/// Builds the model from a cortex-nn config with zeroed weights, charged to the smaller of
/// `maxBytes` and what the file holds (a config declaring more than the file carries is a lie).
pub fn build(config: &Value, options: &LoadOptions, file_bytes: u64) -> Result<Model> {
    let limit = options.max_bytes.min(file_bytes);
    let model = WeightBudget::new(
        limit,
        WeightFill::Overwrite,
        "the weight data in the file (or maxBytes)",
    )
    .run(|| Model::from_config(config, options.seed))?;
    if !model.is_built() {
        return Err(Error::Invalid(
            "the model has no input shape (a Sequential model without an InputLayer)".into(),
        ));
    }
    Ok(model)
}

/// Keras' compile config as cortex-nn's, when every part has a counterpart.
fn compile_from_keras(c: &Value) -> Option<Value> {
    let opt = c.get("optimizer")?;
    let class = opt.get("class_name")?.as_str()?.to_ascii_lowercase();
    let oc = opt.get("config")?;
    let lr = oc.get("learning_rate")?.as_f64()?;
    let num = |k: &str| oc.get(k).and_then(Value::as_f64);
    let optimizer = match class.as_str() {
        "adam" | "adamw" => {
            let mut o = json!({"name": class, "learningRate": lr, "beta1": num("beta_1")?, "beta2": num("beta_2")?, "epsilon": num("epsilon")?});
            if class == "adamw" {
                o["weightDecay"] = json!(num("weight_decay")?);
            }
            o
        }
        "sgd" => {
            json!({"name": "sgd", "learningRate": lr, "momentum": num("momentum").unwrap_or(0.0), "nesterov": oc.get("nesterov").and_then(Value::as_bool).unwrap_or(false)})
        }
        "rmsprop" => json!({"name": "rmsprop", "learningRate": lr, "rho": num("rho")?, "epsilon": num("epsilon")?}),
        _ => return None,
    };
    // One loss for every output, or a list / an object of them (several outputs).
    let loss = match c.get("loss")? {
        Value::Array(list) => Value::Array(list.iter().map(loss_from_keras).collect::<Option<_>>()?),
        Value::Object(map) if !map.contains_key("class_name") => Value::Object(
            map.iter()
                .map(|(k, v)| Some((k.clone(), loss_from_keras(v)?)))
                .collect::<Option<_>>()?,
        ),
        one => loss_from_keras(one)?,
    };
    let names = |m: &Value| -> Value {
        match m {
            Value::Array(list) => Value::Array(list.iter().filter(|v| v.is_string()).cloned().collect()),
            _ => json!([]),
        }
    };
    // A flat list of names, or one list per output (a list of lists, or an object).
    let metrics = match c.get("metrics") {
        Some(Value::Array(m)) if m.iter().any(Value::is_array) => Value::Array(m.iter().map(names).collect()),
        Some(Value::Object(m)) => Value::Object(m.iter().map(|(k, v)| (k.clone(), names(v))).collect()),
        Some(m @ Value::Array(_)) => names(m),
        _ => json!([]),
    };
    let mut compile = json!({"optimizer": optimizer, "loss": loss, "metrics": metrics});
    if let Some(w @ (Value::Array(_) | Value::Object(_))) = c.get("loss_weights") {
        compile["lossWeights"] = w.clone();
    }
    Some(compile)
}

/// One Keras loss (a name, or a serialized loss object) as cortex-nn's.
fn loss_from_keras(v: &Value) -> Option<Value> {
    Some(match v {
        Value::String(s) => json!(s),
        Value::Object(o) => {
            let name = layer::snake(o.get("class_name")?.as_str()?);
            let name = name.trim_start_matches('_').to_string();
            let from_logits = o
                .get("config")
                .and_then(|c| c.get("from_logits"))
                .and_then(Value::as_bool)
                .unwrap_or(false);
            json!({"name": name, "fromLogits": from_logits})
        }
        _ => return None,
    })
}

/// The Keras 3 config.json and weights of `model` (`config`, h5 root).
pub fn to_keras(model: &Model) -> Result<(Value, cortex_hdf5::Group)> {
    if !model.is_built() {
        return Err(Error::Invalid(
            "save: the model has no weights yet; build it or train it first".into(),
        ));
    }
    // Fetches GPU-resident weights back first.
    model.get_weights()?;
    let mut slots = Vec::new();
    let config = graph::model_to_keras(&model.to_json(), "", "", &mut slots)?;
    let root = weights::write_groups(model, &slots, model.name())?;
    Ok((config, root))
}

/// Saves `model` as a `.keras` file that Keras 3 loads (`keras.saving.load_model`), atomically.
pub fn save(model: &Model, path: &Path) -> Result<()> {
    let (config, root) = to_keras(model)?;
    let h5 = cortex_hdf5::write(&root).map_err(|e| Error::Io(format!("cannot encode model.weights.h5: {e}")))?;
    let metadata = json!({"keras_version": "3.5.0", "date_saved": "cortex-nn"});
    let mut out = Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut out);
        let stored = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .large_file(h5.len() as u64 >= u32::MAX as u64);
        let entries: [(&str, Vec<u8>); 3] = [
            ("metadata.json", metadata.to_string().into_bytes()),
            ("config.json", config.to_string().into_bytes()),
            ("model.weights.h5", h5),
        ];
        for (name, bytes) in entries {
            zip.start_file(name, stored)
                .and_then(|_| zip.write_all(&bytes).map_err(Into::into))
                .map_err(|e| Error::Io(format!("cannot write {name} into the archive: {e}")))?;
        }
        zip.finish()
            .map_err(|e| Error::Io(format!("cannot finish the archive: {e}")))?;
    }
    write_atomically(path, out.get_ref())
}
