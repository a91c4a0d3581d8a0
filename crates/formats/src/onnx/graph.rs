//! The graph under construction: unique value names, nodes, initializers, and what each layer
//! emitter needs to read its layer (config and weights) and to report what it cannot express.

use std::collections::{HashMap, HashSet};

use cortex_core::nn::Layer;
use cortex_core::{Error, Result};
use serde_json::Value as Json;

use super::proto::{Attr, Data, NodeProto, TensorProto};

/// A tensor flowing between layers: its ONNX value name and its sample shape (without the
/// dynamic batch axis). Layouts are Keras' (channels-last) between layers.
#[derive(Clone, Debug)]
pub struct Value {
    /// ONNX value name.
    pub name: String,
    /// Sample shape (no batch axis).
    pub shape: Vec<usize>,
    /// The Keras mask travelling with this value, if any.
    pub mask: Option<Mask>,
}

/// A Keras mask in the graph: a float value (1 keep, 0 padded) of shape `[batch, dims...]`.
#[derive(Clone, Debug)]
pub struct Mask {
    /// ONNX value name.
    pub name: String,
    /// Sample shape (no batch axis); `[time]` for sequence masks.
    pub dims: Vec<usize>,
}

impl Value {
    /// A value with no mask.
    pub fn new(name: String, shape: Vec<usize>) -> Value {
        Value {
            name,
            shape,
            mask: None,
        }
    }
}

/// Nodes and initializers, with fresh names.
#[derive(Default)]
pub struct Builder {
    /// Nodes in topological order.
    pub nodes: Vec<NodeProto>,
    /// Initializers (weights and constants).
    pub inits: Vec<TensorProto>,
    /// Default-domain opset (some ops moved attributes to inputs across versions).
    pub opset: i64,
    used: HashSet<String>,
    ints_cache: HashMap<Vec<i64>, String>,
}

/// Attribute list shorthand.
pub type Attrs<'a> = Vec<(&'a str, Attr)>;

impl Builder {
    /// An empty graph for a default-domain opset.
    pub fn new(opset: i64) -> Builder {
        Builder {
            opset,
            ..Builder::default()
        }
    }

    /// Reserves a name (graph inputs / outputs) so no node output takes it.
    pub fn reserve(&mut self, name: &str) {
        self.used.insert(name.to_string());
    }

    /// A name not used yet, derived from `hint` (Keras layer names are valid ONNX names).
    pub fn fresh(&mut self, hint: &str) -> String {
        let base: String = hint
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "_/.-:".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let mut name = base.clone();
        let mut k = 1;
        while self.used.contains(&name) {
            name = format!("{base}_{k}");
            k += 1;
        }
        self.used.insert(name.clone());
        name
    }

    /// Adds a node with `n` outputs named from `hint`; returns the output names.
    pub fn op_n(&mut self, op: &str, inputs: &[&str], attrs: Attrs, hint: &str, n: usize) -> Vec<String> {
        let outputs: Vec<String> = (0..n).map(|_| self.fresh(hint)).collect();
        self.node_to(op, inputs, attrs, hint, outputs.clone());
        outputs
    }

    /// Adds a node whose outputs have the given names.
    pub fn node_to(&mut self, op: &str, inputs: &[&str], attrs: Attrs, hint: &str, outputs: Vec<String>) {
        let name = self.fresh(&format!("{hint}/{op}"));
        self.nodes.push(NodeProto {
            op_type: op.into(),
            name,
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs,
            attrs: attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        });
    }

    /// Adds a single-output node; returns its output name.
    pub fn op(&mut self, op: &str, inputs: &[&str], attrs: Attrs, hint: &str) -> String {
        self.op_n(op, inputs, attrs, hint, 1).remove(0)
    }

    /// A float32 initializer.
    pub fn weight(&mut self, hint: &str, dims: &[usize], data: Vec<f32>) -> String {
        debug_assert_eq!(dims.iter().product::<usize>(), data.len());
        let name = self.fresh(hint);
        self.inits.push(TensorProto {
            name: name.clone(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data: Data::F32(data),
        });
        name
    }

    /// A float32 scalar constant.
    pub fn scalar(&mut self, v: f32) -> String {
        self.weight("const", &[], vec![v])
    }

    /// A 1-D int64 constant (shapes, axes, pads); equal lists share one initializer.
    pub fn ints(&mut self, v: &[i64]) -> String {
        if let Some(n) = self.ints_cache.get(v) {
            return n.clone();
        }
        let name = self.fresh("const_i64");
        self.inits.push(TensorProto {
            name: name.clone(),
            dims: vec![v.len() as i64],
            data: Data::I64(v.to_vec()),
        });
        self.ints_cache.insert(v.to_vec(), name.clone());
        name
    }

    /// A 0-d int64 constant (a `Gather` index that drops the axis).
    pub fn index(&mut self, k: i64) -> String {
        let name = self.fresh("const_index");
        self.inits.push(TensorProto {
            name: name.clone(),
            dims: vec![],
            data: Data::I64(vec![k]),
        });
        name
    }

    /// `Gather(x, k, axis)` with a scalar index: the axis is removed.
    pub fn pick(&mut self, x: &str, k: i64, axis: i64, hint: &str) -> String {
        let i = self.index(k);
        self.op("Gather", &[x, &i], vec![("axis", Attr::Int(axis))], hint)
    }

    /// `Transpose(x, perm)`.
    pub fn transpose(&mut self, x: &str, perm: &[i64], hint: &str) -> String {
        self.op("Transpose", &[x], vec![("perm", Attr::Ints(perm.to_vec()))], hint)
    }

    /// `Reshape(x, [0, dims...])`: the batch axis is kept (0 copies it), the rest is fixed.
    pub fn reshape_batch(&mut self, x: &str, sample: &[usize], hint: &str) -> String {
        let mut shape = vec![0i64];
        shape.extend(sample.iter().map(|&d| d as i64));
        let s = self.ints(&shape);
        self.op("Reshape", &[x, &s], vec![], hint)
    }

    /// `Unsqueeze(x, axes)`.
    pub fn unsqueeze(&mut self, x: &str, axes: &[i64], hint: &str) -> String {
        let a = self.ints(axes);
        self.op("Unsqueeze", &[x, &a], vec![], hint)
    }

    /// `ReduceMean` over `axes` (an attribute before opset 18, an input from 18).
    pub fn reduce_mean(&mut self, x: &str, axes: &[i64], keepdims: bool, hint: &str) -> String {
        let keep = ("keepdims", Attr::Int(i64::from(keepdims)));
        if self.opset >= 18 {
            let a = self.ints(axes);
            self.op("ReduceMean", &[x, &a], vec![keep], hint)
        } else {
            self.op(
                "ReduceMean",
                &[x],
                vec![keep, ("axes", Attr::Ints(axes.to_vec()))],
                hint,
            )
        }
    }

    /// `ReduceSum` over `axes` (an input since opset 13).
    pub fn reduce_sum(&mut self, x: &str, axes: &[i64], keepdims: bool, hint: &str) -> String {
        let a = self.ints(axes);
        self.op(
            "ReduceSum",
            &[x, &a],
            vec![("keepdims", Attr::Int(i64::from(keepdims)))],
            hint,
        )
    }
}

/// Row-major transpose of `data` (of `shape`) by `perm`.
pub fn permute(data: &[f32], shape: &[usize], perm: &[usize]) -> Vec<f32> {
    let rank = shape.len();
    let mut strides = vec![1; rank];
    for i in (0..rank.saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let mut out = Vec::with_capacity(data.len());
    let mut idx = vec![0usize; rank];
    for _ in 0..data.len() {
        let src: usize = (0..rank).map(|k| idx[k] * strides[perm[k]]).sum();
        out.push(data[src]);
        for k in (0..rank).rev() {
            idx[k] += 1;
            if idx[k] < out_shape[k] {
                break;
            }
            idx[k] = 0;
        }
    }
    out
}

/// One layer being exported: its name, class, config and weights (by name inside the layer).
pub struct LayerCtx {
    /// Layer name.
    pub name: String,
    /// Keras class name.
    pub class: String,
    /// The layer's config (camelCase keys).
    pub config: Json,
    params: HashMap<String, (Vec<usize>, Vec<f32>)>,
}

impl LayerCtx {
    /// Reads a (non-model) layer.
    pub fn of(layer: &dyn Layer) -> LayerCtx {
        let name = layer.name().to_string();
        let prefix = format!("{name}/");
        let params = layer
            .params()
            .into_iter()
            .map(|p| {
                let key = p.name.strip_prefix(&prefix).unwrap_or(&p.name).to_string();
                (key, (p.shape(), p.get().to_vec()))
            })
            .collect();
        LayerCtx {
            class: layer.class_name().to_string(),
            config: layer.config(),
            name,
            params,
        }
    }

    /// An error naming this layer.
    pub fn unsupported(&self, why: impl std::fmt::Display) -> Error {
        Error::Invalid(format!(
            "ONNX export: layer '{}' ({}) cannot be exported: {why}",
            self.name, self.class
        ))
    }

    /// A weight by its name inside the layer (`kernel`, `query/bias`...), if the layer has it.
    pub fn maybe(&self, key: &str) -> Option<(&[usize], &[f32])> {
        self.params.get(key).map(|(s, d)| (s.as_slice(), d.as_slice()))
    }

    /// A weight the layer must have.
    pub fn param(&self, key: &str) -> Result<(&[usize], &[f32])> {
        self.maybe(key)
            .ok_or_else(|| self.unsupported(format!("weight '{key}' is missing (is the layer built?)")))
    }

    /// A string option.
    pub fn str(&self, key: &str, default: &str) -> String {
        self.config
            .get(key)
            .and_then(Json::as_str)
            .unwrap_or(default)
            .to_string()
    }

    /// A boolean option.
    pub fn bool(&self, key: &str, default: bool) -> bool {
        self.config.get(key).and_then(Json::as_bool).unwrap_or(default)
    }

    /// A float option.
    pub fn f32(&self, key: &str, default: f32) -> f32 {
        self.config
            .get(key)
            .and_then(Json::as_f64)
            .map_or(default, |v| v as f32)
    }

    /// A non-negative integer option, or a one-element list of one.
    pub fn usize(&self, key: &str, default: usize) -> usize {
        match self.config.get(key) {
            Some(Json::Array(a)) if a.len() == 1 => a[0].as_u64().map_or(default, |v| v as usize),
            Some(v) => v.as_u64().map_or(default, |v| v as usize),
            None => default,
        }
    }

    /// A pair option (`[a, b]` or `n` for both).
    pub fn pair(&self, key: &str, default: [usize; 2]) -> [usize; 2] {
        match self.config.get(key) {
            Some(Json::Array(a)) if a.len() == 2 => [
                a[0].as_u64().map_or(default[0], |v| v as usize),
                a[1].as_u64().map_or(default[1], |v| v as usize),
            ],
            Some(v) => v.as_u64().map_or(default, |v| [v as usize; 2]),
            None => default,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permute_moves_axes() {
        // [2, 3] -> [3, 2]
        let d: Vec<f32> = (0..6).map(|v| v as f32).collect();
        assert_eq!(permute(&d, &[2, 3], &[1, 0]), [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
        // HWIO [1, 2, 2, 1] -> OIHW
        let d: Vec<f32> = (0..4).map(|v| v as f32).collect();
        assert_eq!(permute(&d, &[1, 2, 2, 1], &[3, 2, 0, 1]), [0.0, 2.0, 1.0, 3.0]);
    }

    #[test]
    fn fresh_names_are_unique() {
        let mut b = Builder::default();
        assert_eq!(b.fresh("dense"), "dense");
        assert_eq!(b.fresh("dense"), "dense_1");
        assert_eq!(b.fresh("a b"), "a_b");
        assert_eq!(b.ints(&[0, 4]), b.ints(&[0, 4]));
    }
}
