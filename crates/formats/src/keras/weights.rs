//! Where each cortex-nn weight lives in a Keras `model.weights.h5`, and copying between them.
//!
//! cortex-nn keeps every layer's weights in Keras' order and layout, so a layer's k-th weight is
//! the k-th variable of its group. Composite Keras layers keep their variables in sub-layers:
//! recurrent layers in `cell/vars`, Bidirectional in `forward_layer/cell` and
//! `backward_layer/cell`, MultiHeadAttention in `query_dense`, `key_dense`, `value_dense` and
//! `output_dense`.

use std::collections::HashMap;

use cortex_core::nn::Model;
use cortex_core::{Error, Result};
use cortex_hdf5::{Dataset, Group, Node};

use super::graph::Slot;

/// The dataset path of weight `index` of the `count` weights of the layer in `slot`.
pub fn var_path(slot: &Slot, index: usize, count: usize) -> String {
    let h5 = &slot.h5;
    match slot.class.as_str() {
        "LSTM" | "GRU" | "SimpleRNN" => format!("{h5}/cell/vars/{index}"),
        "Bidirectional" => {
            let half = count / 2;
            let (side, i) = if index < half {
                ("forward_layer", index)
            } else {
                ("backward_layer", index - half)
            };
            format!("{h5}/{side}/cell/vars/{i}")
        }
        "MultiHeadAttention" => {
            let per = (count / 4).max(1);
            let sub = ["query_dense", "key_dense", "value_dense", "output_dense"][(index / per).min(3)];
            format!("{h5}/{sub}/vars/{}", index % per)
        }
        _ => format!("{h5}/vars/{index}"),
    }
}

/// Every group Keras expects for the layer in `slot` (it creates one per sub-layer, empty or
/// not, and looks them up on load).
pub fn groups_of(slot: &Slot) -> Vec<String> {
    let h5 = &slot.h5;
    let mut out = vec![format!("{h5}/vars")];
    match slot.class.as_str() {
        "LSTM" | "GRU" | "SimpleRNN" => out.push(format!("{h5}/cell/vars")),
        "Bidirectional" => {
            for side in ["forward_layer", "backward_layer"] {
                out.push(format!("{h5}/{side}/vars"));
                out.push(format!("{h5}/{side}/cell/vars"));
            }
        }
        "MultiHeadAttention" => {
            for sub in [
                "query_dense",
                "key_dense",
                "value_dense",
                "output_dense",
                "_softmax",
                "_dropout_layer",
            ] {
                out.push(format!("{h5}/{sub}/vars"));
            }
        }
        _ => {}
    }
    out
}

/// The layer path of a weight name (`inner/dense/kernel` -> `inner/dense`). Bidirectional's
/// weights carry one more level (`bi/forward_lstm/kernel`), found by trying the longest prefix
/// that is a known layer.
fn layer_of<'a>(name: &'a str, slots: &HashMap<&str, &Slot>) -> Option<&'a str> {
    let mut end = name.len();
    while let Some(i) = name[..end].rfind('/') {
        if slots.contains_key(&name[..i]) {
            return Some(&name[..i]);
        }
        end = i;
    }
    None
}

/// Visits each weight of `model` with its dataset path.
pub fn for_each_weight(
    model: &Model,
    slots: &[Slot],
    mut f: impl FnMut(&str, &str, &cortex_core::nn::Param) -> Result<()>,
) -> Result<()> {
    let by_layer: HashMap<&str, &Slot> = slots.iter().map(|s| (s.layer.as_str(), s)).collect();
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut unknown = None;
    model.visit_params(&mut |name, _, _| match layer_of(name, &by_layer) {
        Some(l) => *counts.entry(l.to_string()).or_insert(0) += 1,
        None => unknown = Some(name.to_string()),
    });
    if let Some(name) = unknown {
        return Err(Error::Invalid(format!(
            "weight '{name}' belongs to no layer of the Keras file"
        )));
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut result = Ok(());
    model.visit_params(&mut |name, param, _| {
        if result.is_err() {
            return;
        }
        let Some(layer) = layer_of(name, &by_layer) else { return };
        let index = seen.entry(layer.to_string()).or_insert(0);
        let path = var_path(by_layer[layer], *index, counts[layer]);
        *index += 1;
        result = f(name, &path, param);
    });
    result
}

/// Copies the file's weights into `model` (whose weights are zeros, charged to a budget).
pub fn read_into(model: &Model, slots: &[Slot], root: &Group) -> Result<()> {
    for_each_weight(model, slots, |name, path, param| {
        let data = root
            .dataset(path)
            .ok_or_else(|| Error::Invalid(format!("the weights file lacks '{path}' (weight '{name}')")))?;
        let shape = param.shape();
        // Keras and cortex-nn share layouts, so the shapes must agree exactly (a transposed
        // kernel has the right size and the wrong meaning).
        if data.shape != shape {
            return Err(Error::Invalid(format!(
                "weight '{name}' should be {shape:?}, the file's '{path}' is {:?}",
                data.shape
            )));
        }
        let values = data.to_f32().map_err(|e| Error::Invalid(format!("'{path}': {e}")))?;
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(Error::Invalid(format!(
                "weight '{name}' ('{path}') holds a non-finite value at {i}"
            )));
        }
        param.set(values)
    })
}

/// The weights file Keras 3 writes for `model`: every layer's groups, its variables, and the
/// empty top-level `vars` group.
pub fn write_groups(model: &Model, slots: &[Slot], model_name: &str) -> Result<Group> {
    let mut root = Group::default();
    root.group_mut_or_create("layers");
    for slot in slots {
        for g in groups_of(slot) {
            root.group_mut_or_create(&g);
        }
    }
    for_each_weight(model, slots, |_, path, param| {
        let (group, var) = path.rsplit_once('/').unwrap_or(("", path));
        root.group_mut_or_create(group).insert(
            var,
            Node::Dataset(Dataset::from_f32(param.shape(), &param.get().to_vec())),
        );
        Ok(())
    })?;
    root.group_mut_or_create("vars")
        .attrs
        .push(("name".into(), cortex_hdf5::Attr::String(model_name.into())));
    Ok(root)
}
