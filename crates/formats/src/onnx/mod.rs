//! ONNX export of a built model, as Keras 3's `model.export(path, format="onnx")`.
//!
//! The graph:
//! - inputs are named `input` (one input) or `input_0`, `input_1`, ... (several, in the
//!   model's input order); outputs `output` or `output_0`, `output_1`, ...; all float32;
//! - the first axis is the dynamic batch axis (`dim_param` "batch"), the others fixed at the
//!   model's sample shapes; data layout is Keras' channels-last (NHWC) at the boundary;
//! - every layer of a nested model is inlined; dropout is the identity (inference graph);
//! - default opset 17 (`ir_version` 8); opsets 17 to 21 are accepted.
//!
//! A layer (or layer option) with no faithful ONNX form is an error naming the layer and its
//! class, never an approximate graph. One op family per file: [`core`] (dense, activations,
//! merges, normalizations, embeddings), [`conv`], [`recurrent`], [`attention`].

use std::collections::HashMap;

use cortex_core::nn::model::Source;
use cortex_core::nn::{Layer, Model};
use cortex_core::{Error, Result};

mod attention;
mod conv;
mod core;
mod graph;
pub mod proto;
mod recurrent;

use graph::{Builder, LayerCtx, Value};
use proto::{GraphProto, ModelProto, ValueInfo, FLOAT};

/// Export settings.
#[derive(Clone, Debug)]
pub struct ExportOptions {
    /// Default-domain opset version (17 to 21; default 17).
    pub opset: u32,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions { opset: 17 }
    }
}

/// Lowest and highest opset the emitted ops are written for.
pub const MIN_OPSET: u32 = 17;
/// See [`MIN_OPSET`].
pub const MAX_OPSET: u32 = 21;

/// The IR version that goes with an opset (ONNX's versioning table).
fn ir_version(opset: u32) -> i64 {
    match opset {
        ..=18 => 8,
        19 | 20 => 9,
        _ => 10,
    }
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::Invalid(msg.into())
}

/// Graph input names: `input` alone, else `input_0`, `input_1`, ...
pub fn input_names(n: usize) -> Vec<String> {
    boundary_names("input", n)
}

/// Graph output names: `output` alone, else `output_0`, `output_1`, ...
pub fn output_names(n: usize) -> Vec<String> {
    boundary_names("output", n)
}

fn boundary_names(base: &str, n: usize) -> Vec<String> {
    if n == 1 {
        vec![base.to_string()]
    } else {
        (0..n).map(|i| format!("{base}_{i}")).collect()
    }
}

fn value_info(name: &str, sample: &[usize]) -> ValueInfo {
    let mut dims = vec![Err("batch".to_string())];
    dims.extend(sample.iter().map(|&d| Ok(d as i64)));
    ValueInfo {
        name: name.to_string(),
        elem_type: FLOAT,
        dims,
    }
}

/// Serializes `model` (built, weights as they are now) as an ONNX `ModelProto`.
pub fn export(model: &Model, opts: &ExportOptions) -> Result<Vec<u8>> {
    if !(MIN_OPSET..=MAX_OPSET).contains(&opts.opset) {
        return Err(invalid(format!(
            "ONNX export: opset {} is not supported; expected {MIN_OPSET} to {MAX_OPSET}",
            opts.opset
        )));
    }
    if !model.is_built() || model.input_shapes().is_empty() {
        return Err(invalid(format!(
            "ONNX export: model '{}' is not built; build it (or run predict once) so its input shape is known",
            model.name()
        )));
    }
    // Weights living on a GPU are fetched first.
    model.sync_from_device()?;
    let mut b = Builder::new(i64::from(opts.opset));
    let in_names = input_names(model.input_shapes().len());
    let out_names = output_names(model.output_shapes().len());
    in_names.iter().chain(&out_names).for_each(|n| b.reserve(n));
    let ins: Vec<Value> = in_names
        .iter()
        .zip(model.input_shapes())
        .map(|(n, s)| Value::new(n.clone(), s.clone()))
        .collect();
    let outs = emit_model(&mut b, model, &ins)?;
    let mut outputs = Vec::with_capacity(outs.len());
    for (v, name) in outs.iter().zip(&out_names) {
        // An Identity gives the output its public name (and allows an output that is an input).
        b.node_to("Identity", &[&v.name], vec![], name, vec![name.clone()]);
        outputs.push(value_info(name, &v.shape));
    }
    let graph = GraphProto {
        name: model.name().to_string(),
        nodes: std::mem::take(&mut b.nodes),
        initializers: std::mem::take(&mut b.inits),
        inputs: ins.iter().map(|v| value_info(&v.name, &v.shape)).collect(),
        outputs,
    };
    Ok(ModelProto {
        ir_version: ir_version(opts.opset),
        opset: i64::from(opts.opset),
        producer_name: "cortex-nn".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph,
    }
    .encode())
}

/// Emits every node of `model` applied to `ins`; returns its outputs.
fn emit_model(b: &mut Builder, model: &Model, ins: &[Value]) -> Result<Vec<Value>> {
    let mut values: HashMap<Source, Value> = HashMap::new();
    for (i, v) in ins.iter().enumerate() {
        values.insert(Source::Input(i), v.clone());
    }
    for (n, node) in model.nodes().iter().enumerate() {
        let xs: Vec<Value> = node
            .inputs
            .iter()
            .map(|s| {
                values.get(s).cloned().ok_or_else(|| {
                    invalid(format!(
                        "ONNX export: node {n} of '{}' has no input {s:?}",
                        model.name()
                    ))
                })
            })
            .collect::<Result<_>>()?;
        let layer = model.layers()[node.layer].read();
        let outs = match layer.as_model() {
            Some(inner) => {
                // A nested model does not pass its inner masks on: like the engine's
                // Model::call, the outer graph carries the first input's mask (if it fits).
                let mut outs = emit_model(b, inner, &xs)?;
                outs.iter_mut().for_each(|o| o.mask = None);
                carry_mask(&xs, &mut outs);
                outs
            }
            None => emit_layer(b, &**layer, &xs)?,
        };
        for (o, v) in outs.into_iter().enumerate() {
            values.insert(Source::Node(n, o), v);
        }
    }
    model
        .output_sources()
        .iter()
        .map(|s| {
            values
                .get(s)
                .cloned()
                .ok_or_else(|| invalid(format!("ONNX export: output {s:?} of '{}' missing", model.name())))
        })
        .collect()
}

/// The engine's default mask rule: outputs whose leading axes match the first input's mask
/// shape carry that mask.
fn carry_mask(xs: &[Value], outs: &mut [Value]) {
    let Some(m) = xs.first().and_then(|x| x.mask.clone()) else {
        return;
    };
    for o in outs {
        if o.shape.len() >= m.dims.len() && o.shape[..m.dims.len()] == m.dims[..] {
            o.mask = Some(m.clone());
        }
    }
}

fn emit_layer(b: &mut Builder, layer: &dyn Layer, xs: &[Value]) -> Result<Vec<Value>> {
    let l = LayerCtx::of(layer);
    if xs.is_empty() {
        return Err(l.unsupported("it has no inputs"));
    }
    let emitted = core::emit(b, &l, xs)
        .or_else(|| conv::emit(b, &l, xs))
        .or_else(|| recurrent::emit(b, &l, xs))
        .or_else(|| attention::emit(b, &l, xs))
        .unwrap_or_else(|| Err(l.unsupported("the exporter has no mapping for this layer class")))?;
    let mut outs = emitted;
    // Layers that set their output masks themselves (engine: ctx.output_masks); the rest get
    // the default rule.
    let sets_masks = matches!(
        l.class.as_str(),
        "GlobalAveragePooling1D" | "SimpleRNN" | "LSTM" | "GRU" | "Bidirectional"
    ) || (l.class == "Embedding" && l.bool("maskZero", false));
    if !sets_masks {
        carry_mask(xs, &mut outs);
    }
    Ok(outs)
}

#[cfg(test)]
mod tests;
