//! TensorFlow.js layers-models: `model.json` (`modelTopology`, the Keras 2 form of the config
//! that tfjs writes, and `weightsManifest`) next to binary weight shards.
//!
//! Loading reads every dtype tfjs writes, quantized ones included (`uint8`/`uint16` with
//! scale and min, `float16`). Saving writes float32 shards of at most 4 MiB, as tfjs does, in a
//! form `tf.loadLayersModel` reads.

use std::collections::HashMap;
use std::path::{Component, Path};

use cortex_core::nn::io::{read_limited, write_atomically, LoadOptions};
use cortex_core::nn::Model;
use cortex_core::{Error, Result};
use serde_json::{json, Map, Value};

use crate::keras::graph::{self, Slot};
use crate::keras::{build, to_keras};

const MAX_JSON_BYTES: u64 = 64 << 20;
const SHARD_BYTES: usize = 4 << 20;

fn io_err(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::Io(format!("{}: {what}", path.display()))
}

/// One manifest entry: weight name, shape, and how its bytes decode.
struct Entry {
    name: String,
    shape: Vec<usize>,
    /// Stored dtype: float32, int32, float16, uint8 or uint16.
    stored: String,
    scale: f32,
    min: f32,
}

impl Entry {
    fn parse(v: &Value) -> Result<Entry> {
        let bad = || Error::Invalid(format!("bad weightsManifest entry {v}"));
        let name = v.get("name").and_then(Value::as_str).ok_or_else(bad)?.to_string();
        let shape = v
            .get("shape")
            .and_then(Value::as_array)
            .ok_or_else(bad)?
            .iter()
            .map(|d| {
                d.as_u64()
                    .filter(|&d| d < (1 << 31))
                    .map(|d| d as usize)
                    .ok_or_else(bad)
            })
            .collect::<Result<Vec<_>>>()?;
        let mut stored = v.get("dtype").and_then(Value::as_str).unwrap_or("float32").to_string();
        let (mut scale, mut min) = (1.0, 0.0);
        if let Some(q) = v.get("quantization").filter(|q| !q.is_null()) {
            stored = q.get("dtype").and_then(Value::as_str).ok_or_else(bad)?.to_string();
            scale = q.get("scale").and_then(Value::as_f64).unwrap_or(1.0) as f32;
            min = q.get("min").and_then(Value::as_f64).unwrap_or(0.0) as f32;
        }
        if !matches!(stored.as_str(), "float32" | "int32" | "float16" | "uint8" | "uint16") {
            return Err(Error::Invalid(format!(
                "weight '{name}': dtype {stored} is not one tfjs writes for layers"
            )));
        }
        Ok(Entry {
            name,
            shape,
            stored,
            scale,
            min,
        })
    }

    fn elements(&self) -> Result<usize> {
        self.shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| Error::Memory(format!("weight '{}' is too large", self.name)))
    }

    fn bytes_per_element(&self) -> usize {
        match self.stored.as_str() {
            "uint8" => 1,
            "uint16" | "float16" => 2,
            _ => 4,
        }
    }

    fn decode(&self, b: &[u8]) -> Vec<f32> {
        match self.stored.as_str() {
            "uint8" => b.iter().map(|&q| q as f32 * self.scale + self.min).collect(),
            "uint16" => b
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]) as f32 * self.scale + self.min)
                .collect(),
            "float16" => b
                .chunks_exact(2)
                .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
            "int32" => b
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32)
                .collect(),
            _ => b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        }
    }
}

/// IEEE half to single precision (subnormals, infinities and NaN included).
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match exp {
        0 if frac == 0 => sign,
        0 => {
            // Subnormal: normalise.
            let shift = frac.leading_zeros() - 21;
            let frac = (frac << shift) & 0x3ff;
            sign | ((113 - shift) << 23) | (frac << 13)
        }
        31 => sign | 0x7f80_0000 | (frac << 13),
        _ => sign | ((exp + 112) << 23) | (frac << 13),
    };
    f32::from_bits(bits)
}

/// A shard path from the manifest, refused when it leaves the model's directory.
fn shard_path(dir: &Path, name: &str) -> Result<std::path::PathBuf> {
    let rel = Path::new(name);
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(Error::Invalid(format!(
            "weight shard path '{name}' leaves the model's directory"
        )));
    }
    Ok(dir.join(rel))
}

/// Loads a tfjs layers-model from its `model.json`.
pub fn load(path: &Path, options: &LoadOptions) -> Result<Model> {
    let text = read_limited(path, "model.json", MAX_JSON_BYTES, "model.json size limit")?;
    let json: Value = serde_json::from_slice(&text).map_err(|e| io_err(path, format!("not JSON ({e})")))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let topology = json.get("modelTopology").ok_or_else(|| {
        io_err(
            path,
            "no modelTopology: not a tfjs layers-model (graph models are not supported)",
        )
    })?;
    let keras = topology.get("model_config").unwrap_or(topology);
    let mut slots = Vec::new();
    let config = graph::model_from_keras(keras, "", "", &mut slots, 0).map_err(|e| io_err(path, e))?;

    // Weights: each group's shards concatenated, entries consumed in order.
    let groups = json
        .get("weightsManifest")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut values: HashMap<String, (Vec<usize>, Vec<f32>)> = HashMap::new();
    let mut budget = options.max_bytes;
    let mut total_file_bytes = 0u64;
    for group in &groups {
        let entries = group
            .get("weights")
            .and_then(Value::as_array)
            .ok_or_else(|| io_err(path, "a weightsManifest group has no 'weights'"))?
            .iter()
            .map(Entry::parse)
            .collect::<Result<Vec<_>>>()
            .map_err(|e| io_err(path, e))?;
        let mut data = Vec::new();
        for shard in group.get("paths").and_then(Value::as_array).into_iter().flatten() {
            let name = shard
                .as_str()
                .ok_or_else(|| io_err(path, "a shard path is not a string"))?;
            let shard_file = shard_path(dir, name).map_err(|e| io_err(path, e))?;
            let bytes = read_limited(&shard_file, "weight shard", budget, "maxBytes")?;
            budget -= bytes.len() as u64;
            total_file_bytes += bytes.len() as u64;
            data.extend_from_slice(&bytes);
        }
        let mut offset = 0usize;
        for e in entries {
            let n = e.elements().map_err(|x| io_err(path, x))?;
            let len = n
                .checked_mul(e.bytes_per_element())
                .ok_or_else(|| io_err(path, "weight too large"))?;
            let end = offset
                .checked_add(len)
                .filter(|&end| end <= data.len())
                .ok_or_else(|| io_err(path, format!("weight '{}' runs past the end of its shards", e.name)))?;
            values.insert(e.name.clone(), (e.shape.clone(), e.decode(&data[offset..end])));
            offset = end;
        }
    }
    let model = build(&config, options, total_file_bytes.saturating_mul(4)).map_err(|e| io_err(path, e))?;
    read_weights(&model, &slots, &values).map_err(|e| io_err(path, e))?;
    Ok(model)
}

/// tfjs names weights `layer/weight` (Keras 2 names, nested cells included:
/// `lstm/lstm_cell/kernel`); a layer's weights are matched in order among the names under its
/// path.
fn read_weights(model: &Model, slots: &[Slot], values: &HashMap<String, (Vec<usize>, Vec<f32>)>) -> Result<()> {
    let mut by_layer: HashMap<&str, Vec<&str>> = HashMap::new();
    let slot_names: Vec<&str> = slots.iter().map(|s| s.layer.as_str()).collect();
    let mut ordered: Vec<(&str, &str)> = Vec::new();
    for name in values.keys() {
        if let Some(layer) = slot_names
            .iter()
            .filter(|l| name.starts_with(&format!("{l}/")))
            .max_by_key(|l| l.len())
        {
            ordered.push((layer, name));
        }
    }
    for (layer, name) in ordered {
        by_layer.entry(layer).or_default().push(name);
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut result = Ok(());
    model.visit_params(&mut |name, param, _| {
        if result.is_err() {
            return;
        }
        let Some(layer) = slot_names
            .iter()
            .filter(|l| name.starts_with(&format!("{l}/")))
            .max_by_key(|l| l.len())
        else {
            result = Err(Error::Invalid(format!(
                "weight '{name}' belongs to no layer of the file"
            )));
            return;
        };
        let suffix = &name[layer.len() + 1..];
        // Prefer the exact name; else the layer's k-th weight in the file's order.
        let index = seen.entry(layer.to_string()).or_insert(0);
        let candidates = by_layer.get(layer).cloned().unwrap_or_default();
        let exact = format!("{layer}/{suffix}");
        let found = if values.contains_key(&exact) {
            Some(exact.as_str().to_owned())
        } else {
            weight_in_order(&candidates, *index).map(str::to_owned)
        };
        *index += 1;
        result = match found.and_then(|k| values.get(&k).map(|v| (k, v))) {
            None => Err(Error::Invalid(format!("the file lacks weight '{name}'"))),
            // Keras layouts on both sides: the shapes must agree exactly (a transposed kernel
            // has the right size and the wrong meaning).
            Some((k, (shape, _))) if *shape != param.shape() => Err(Error::Invalid(format!(
                "weight '{k}' is {shape:?} in the file, '{name}' is {:?}",
                param.shape()
            ))),
            Some((_, (_, v))) => param.set(v.clone()),
        };
    });
    result
}

/// Keras 2 weight order within a layer: kernel, recurrent_kernel, bias (gamma, beta,
/// moving_mean, moving_variance; embeddings), whatever prefix the cell adds.
fn weight_in_order<'a>(names: &[&'a str], index: usize) -> Option<&'a str> {
    const ORDER: &[&str] = &[
        "kernel",
        "recurrent_kernel",
        "bias",
        "gamma",
        "beta",
        "moving_mean",
        "moving_variance",
        "embeddings",
    ];
    let rank = |n: &str| {
        let last = n.rsplit('/').next().unwrap_or(n);
        let dir = if n.contains("/backward_") { 1 } else { 0 };
        (
            dir,
            ORDER.iter().position(|o| *o == last).unwrap_or(ORDER.len()),
            n.to_string(),
        )
    };
    let mut sorted = names.to_vec();
    sorted.sort_by_key(|n| rank(n));
    sorted.get(index).copied()
}

/// Keras 3's config (as [`to_keras`] writes it) in the Keras 2 form tfjs reads.
fn keras2(v: &Value) -> Value {
    match v {
        Value::Object(o) => {
            if o.get("class_name").and_then(Value::as_str) == Some("DTypePolicy") {
                return json!("float32");
            }
            let mut out = Map::new();
            for (k, x) in o {
                match k.as_str() {
                    "module" | "registered_name" | "build_config" => {}
                    "batch_shape" => {
                        out.insert("batch_input_shape".into(), x.clone());
                    }
                    "class_name" if x == "Functional" => {
                        out.insert(k.clone(), json!("Model"));
                    }
                    "inbound_nodes" => {
                        let nodes: Vec<Value> = x
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|node| {
                                let mut refs = Vec::new();
                                collect_history(node.get("args").unwrap_or(&Value::Null), &mut refs);
                                Value::Array(
                                    refs.into_iter()
                                        .map(|mut h| {
                                            h.push(json!({}));
                                            Value::Array(h)
                                        })
                                        .collect(),
                                )
                            })
                            .collect();
                        out.insert(k.clone(), Value::Array(nodes));
                    }
                    _ => {
                        out.insert(k.clone(), keras2(x));
                    }
                }
            }
            // Keras 2's Sequential has no InputLayer: its first layer carries the shape.
            if o.get("class_name").and_then(Value::as_str) == Some("Sequential") {
                if let Some(layers) = out
                    .get_mut("config")
                    .and_then(|c| c.get_mut("layers"))
                    .and_then(Value::as_array_mut)
                {
                    if layers.first().and_then(|l| l.get("class_name")).and_then(Value::as_str) == Some("InputLayer") {
                        let input = layers.remove(0);
                        if let Some(first) = layers.first_mut() {
                            first["config"]["batch_input_shape"] = input["config"]["batch_input_shape"].clone();
                        }
                    }
                }
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(keras2).collect()),
        other => other.clone(),
    }
}

/// The name of the first layer of `class` anywhere in a Keras config.
fn find_class(v: &Value, class: &str) -> Option<String> {
    match v {
        Value::Object(o) => {
            if o.get("class_name").and_then(Value::as_str) == Some(class) {
                return o
                    .get("config")
                    .and_then(|c| c.get("name"))
                    .and_then(Value::as_str)
                    .map(str::to_owned);
            }
            o.values().find_map(|x| find_class(x, class))
        }
        Value::Array(a) => a.iter().find_map(|x| find_class(x, class)),
        _ => None,
    }
}

fn collect_history(v: &Value, out: &mut Vec<Vec<Value>>) {
    match v {
        Value::Object(o) => {
            if let Some(h) = o
                .get("config")
                .and_then(|c| c.get("keras_history"))
                .and_then(Value::as_array)
            {
                out.push(h.clone());
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_history(x, out)),
        _ => {}
    }
}

/// Saves `model` as a tfjs layers-model: `dir/model.json` and `dir/group1-shardKofN.bin`.
pub fn save(model: &Model, dir: &Path) -> Result<()> {
    let (config, _) = to_keras(model)?;
    if let Some(layer) = find_class(&config, "GRU") {
        return Err(Error::Invalid(format!(
            "layer '{layer}': GRU cannot be saved for TensorFlow.js: cortex-nn's GRU is Keras 3's resetAfter=true \
             form, which tfjs-layers refuses; save it as .keras or export ONNX instead"
        )));
    }
    let topology = keras2(&config);
    let mut manifest = Vec::new();
    let mut data: Vec<u8> = Vec::new();
    for (name, shape, values) in model.get_weights()? {
        manifest.push(json!({"name": name, "shape": shape, "dtype": "float32"}));
        for v in values {
            data.extend_from_slice(&v.to_le_bytes());
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| io_err(dir, format!("cannot create the directory: {e}")))?;
    let shards: Vec<&[u8]> = if data.is_empty() {
        Vec::new()
    } else {
        data.chunks(SHARD_BYTES).collect()
    };
    let n = shards.len();
    let mut paths = Vec::new();
    for (i, shard) in shards.iter().enumerate() {
        let name = format!("group1-shard{}of{n}.bin", i + 1);
        write_atomically(&dir.join(&name), shard)?;
        paths.push(name);
    }
    let json = json!({
        "format": "layers-model",
        "generatedBy": "cortex-nn",
        "convertedBy": null,
        "modelTopology": {"class_name": topology["class_name"], "config": topology["config"], "keras_version": "tfjs-layers 4.22.0", "backend": "tensor_flow.js"},
        "weightsManifest": [{"paths": paths, "weights": manifest}],
    });
    let text = serde_json::to_string(&json).map_err(|e| Error::Io(e.to_string()))?;
    // model.json last: a reader never sees it before its shards.
    write_atomically(&dir.join("model.json"), text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_floats_decode() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert!(f16_to_f32(0x7c00).is_infinite());
    }

    #[test]
    fn shard_paths_stay_inside() {
        let d = Path::new("/m");
        assert!(shard_path(d, "group1-shard1of1.bin").is_ok());
        assert!(shard_path(d, "../etc/passwd").is_err());
        assert!(shard_path(d, "/etc/passwd").is_err());
    }
}
