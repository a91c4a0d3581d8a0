//! Model configs, Keras to cortex-nn and back: Sequential and Functional (with shared layers
//! and nested models), in Keras 3's config.json form and in Keras 2's (which tfjs writes).
//!
//! Weights are matched by position in Keras' `model.weights.h5`: each layer's variables live in
//! a group named after its class (`layers/dense`, `layers/dense_1`, ... in `model.layers`
//! order), so converting a model also lists, for every cortex-nn layer, where its variables are.

use std::collections::HashMap;

use cortex_core::{Error, Result};
use serde_json::{json, Map, Value};

use super::layer::{class_from_keras, class_snake, config_from_keras, dtype_policy, layer_to_keras, unsupported};

/// Where one cortex-nn layer's weights live in a Keras file.
#[derive(Clone, Debug, PartialEq)]
pub struct Slot {
    /// cortex-nn layer path: its name, prefixed by enclosing models' names (`inner/dense`).
    pub layer: String,
    /// cortex-nn class name (decides how variables are grouped under the path).
    pub class: String,
    /// HDF5 group of the layer (`layers/dense_1`), or for tfjs the Keras layer name.
    pub h5: String,
}

fn is_model_class(class: &str) -> bool {
    matches!(class, "Sequential" | "Functional" | "Model")
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::Invalid(msg.into())
}

/// A sample shape (batch axis dropped) from Keras' `batch_shape` / `batch_input_shape`.
fn sample_shape(config: &Value, layer: &str) -> Result<Option<Value>> {
    let Some(shape) = config.get("batch_shape").or_else(|| config.get("batch_input_shape")) else {
        return Ok(None);
    };
    let dims = shape
        .as_array()
        .filter(|a| !a.is_empty())
        .ok_or_else(|| invalid(format!("layer '{layer}': bad input shape {shape}")))?;
    let rest: Vec<Value> = dims[1..].to_vec();
    if rest.iter().any(|d| d.as_u64().is_none_or(|d| d == 0)) {
        return Err(unsupported(
            layer,
            format!("input shape {shape} (cortex-nn needs every non-batch dimension known)"),
        ));
    }
    Ok(Some(Value::Array(rest)))
}

/// Converts a Keras model (`{class_name, config}`) to a cortex-nn model config, appending the
/// weight slots of its layers. `h5` is the model's group in the weights file ("" at the top),
/// `prefix` the cortex-nn layer path of its layers.
pub fn model_from_keras(model: &Value, h5: &str, prefix: &str, slots: &mut Vec<Slot>, depth: usize) -> Result<Value> {
    if depth > 16 {
        return Err(invalid("models nested more than 16 deep"));
    }
    let class = model.get("class_name").and_then(Value::as_str).unwrap_or("");
    let config = model
        .get("config")
        .and_then(Value::as_object)
        .ok_or_else(|| invalid(format!("a {class} model needs a config object")))?;
    let name = config
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("model")
        .to_string();
    let layers = config
        .get("layers")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid(format!("model '{name}': config has no 'layers' list")))?;
    match class {
        "Sequential" => sequential_from_keras(&name, config, layers, h5, prefix, slots, depth),
        "Functional" | "Model" => functional_from_keras(&name, config, layers, h5, prefix, slots, depth),
        other => Err(invalid(format!(
            "model '{name}': class '{other}' is not a Keras Sequential or Functional model"
        ))),
    }
}

/// A non-input layer entry (or nested model) as cortex-nn's, with its weight slots.
fn layer_from_keras(entry: &Value, h5: String, prefix: &str, slots: &mut Vec<Slot>, depth: usize) -> Result<Value> {
    let class = entry.get("class_name").and_then(Value::as_str).unwrap_or("");
    let config = entry.get("config").cloned().unwrap_or(Value::Null);
    let name = config.get("name").and_then(Value::as_str).unwrap_or(class).to_string();
    if is_model_class(class) {
        let nested = model_from_keras(entry, &h5, &format!("{prefix}{name}/"), slots, depth + 1)?;
        let cortex_class = nested["className"].clone();
        return Ok(json!({"className": cortex_class, "config": nested}));
    }
    if matches!(class, "Lambda" | "TFOpLambda")
        || entry
            .get("registered_name")
            .and_then(Value::as_str)
            .is_some_and(|r| r.contains('>'))
    {
        return Err(unsupported(&name, format!("class {class} (custom code)")));
    }
    let cortex_class = class_from_keras(class).to_string();
    let converted = config_from_keras(&cortex_class, &config)?;
    // Checked here, so the error names the layer: cortex-nn refuses unknown options.
    cortex_core::nn::layers::from_config(&cortex_class, &converted)
        .map_err(|e| invalid(format!("layer '{name}' ({class}): {e}")))?;
    slots.push(Slot {
        layer: format!("{prefix}{name}"),
        class: cortex_class.clone(),
        h5,
    });
    Ok(json!({"className": cortex_class, "config": converted}))
}

/// Names a layer's group like Keras' saving code: the class in snake_case, numbered from the
/// second layer of a class on.
#[derive(Default)]
struct GroupNames(HashMap<String, usize>);

impl GroupNames {
    fn next(&mut self, h5: &str, class: &str) -> String {
        let base = class_snake(class);
        let n = self.0.entry(base.clone()).or_insert(0);
        let name = if *n == 0 { base } else { format!("{base}_{n}") };
        *n += 1;
        if h5.is_empty() {
            format!("layers/{name}")
        } else {
            format!("{h5}/layers/{name}")
        }
    }
}

fn sequential_from_keras(
    name: &str,
    config: &Map<String, Value>,
    layers: &[Value],
    h5: &str,
    prefix: &str,
    slots: &mut Vec<Slot>,
    depth: usize,
) -> Result<Value> {
    let mut input_shape = None;
    let mut out = Vec::new();
    let mut groups = GroupNames::default();
    for entry in layers {
        let class = entry.get("class_name").and_then(Value::as_str).unwrap_or("");
        let cfg = entry.get("config").cloned().unwrap_or(Value::Null);
        let lname = cfg.get("name").and_then(Value::as_str).unwrap_or(class).to_string();
        if input_shape.is_none() {
            input_shape = sample_shape(&cfg, &lname)?;
        }
        if class == "InputLayer" {
            continue;
        }
        let group = groups.next(h5, class);
        out.push(layer_from_keras(entry, group, prefix, slots, depth)?);
    }
    if input_shape.is_none() {
        if let Some(shape) = config.get("build_input_shape").filter(|s| !s.is_null()) {
            input_shape = sample_shape(&json!({ "batch_shape": shape }), name)?;
        }
    }
    let mut v = json!({"className": "Sequential", "name": name, "layers": out});
    if let Some(shape) = input_shape {
        v["inputShape"] = shape;
    }
    Ok(v)
}

/// A tensor reference of a Keras inbound node: `(layer, node index, tensor index)`, from Keras
/// 3's `__keras_tensor__` objects or Keras 2's `[name, node, tensor, kwargs]` lists.
fn tensor_refs(v: &Value, out: &mut Vec<(String, usize, usize)>) {
    match v {
        Value::Object(o) if o.get("class_name").and_then(Value::as_str) == Some("__keras_tensor__") => {
            if let Some(h) = o
                .get("config")
                .and_then(|c| c.get("keras_history"))
                .and_then(Value::as_array)
            {
                if let (Some(l), Some(n), Some(t)) = (
                    h.first().and_then(Value::as_str),
                    h.get(1).and_then(Value::as_u64),
                    h.get(2).and_then(Value::as_u64),
                ) {
                    out.push((l.to_string(), n as usize, t as usize));
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| tensor_refs(x, out)),
        _ => {}
    }
}

/// One call of a layer: its input tensors and keyword arguments.
struct Call {
    inputs: Vec<(String, usize, usize)>,
    kwargs: Map<String, Value>,
}

fn calls_of(entry: &Value, layer: &str) -> Result<Vec<Call>> {
    let Some(nodes) = entry.get("inbound_nodes").and_then(Value::as_array) else {
        return Ok(Vec::new());
    };
    nodes
        .iter()
        .map(|node| {
            let mut inputs = Vec::new();
            let mut kwargs = Map::new();
            if let Some(o) = node.as_object() {
                // Keras 3: {"args": [...], "kwargs": {...}}; MultiHeadAttention's key/value
                // may come as keyword arguments.
                if let Some(args) = o.get("args") {
                    tensor_refs(args, &mut inputs);
                }
                if let Some(kw) = o.get("kwargs").and_then(Value::as_object) {
                    for key in ["query", "value", "key"] {
                        if let Some(t) = kw.get(key) {
                            tensor_refs(t, &mut inputs);
                        }
                    }
                    kwargs = kw.clone();
                }
            } else if let Some(list) = node.as_array() {
                // Keras 2 / tfjs: [[name, node, tensor, kwargs], ...].
                for t in list {
                    let a = t
                        .as_array()
                        .ok_or_else(|| invalid(format!("layer '{layer}': bad inbound node {t}")))?;
                    match (
                        a.first().and_then(Value::as_str),
                        a.get(1).and_then(Value::as_u64),
                        a.get(2).and_then(Value::as_u64),
                    ) {
                        (Some(l), Some(n), Some(i)) => inputs.push((l.to_string(), n as usize, i as usize)),
                        _ => return Err(invalid(format!("layer '{layer}': bad inbound node {t}"))),
                    }
                    if let Some(kw) = a.get(3).and_then(Value::as_object) {
                        kwargs.extend(kw.clone());
                    }
                }
            }
            for (key, value) in &kwargs {
                let harmless = matches!(
                    key.as_str(),
                    "mask" | "training" | "query" | "value" | "key" | "use_causal_mask"
                ) || value.is_null();
                if !harmless {
                    return Err(unsupported(layer, format!("call argument {key} = {value}")));
                }
            }
            Ok(Call { inputs, kwargs })
        })
        .collect()
}

fn io_list(v: Option<&Value>, what: &str) -> Result<Vec<(String, usize, usize)>> {
    let v = v.ok_or_else(|| invalid(format!("functional model config has no '{what}'")))?;
    let parse = |t: &Value| -> Result<(String, usize, usize)> {
        let a = t.as_array().ok_or_else(|| invalid(format!("bad {what} entry {t}")))?;
        match (
            a.first().and_then(Value::as_str),
            a.get(1).and_then(Value::as_u64),
            a.get(2).and_then(Value::as_u64),
        ) {
            (Some(l), Some(n), Some(i)) => Ok((l.to_string(), n as usize, i as usize)),
            _ => Err(invalid(format!("bad {what} entry {t}"))),
        }
    };
    let list = v.as_array().ok_or_else(|| invalid(format!("bad {what}: {v}")))?;
    // A single input is written as one triple rather than a list of them.
    if list.first().is_some_and(Value::is_string) {
        return Ok(vec![parse(v)?]);
    }
    list.iter().map(parse).collect()
}

fn functional_from_keras(
    name: &str,
    config: &Map<String, Value>,
    layers: &[Value],
    h5: &str,
    prefix: &str,
    slots: &mut Vec<Slot>,
    depth: usize,
) -> Result<Value> {
    let inputs = io_list(config.get("input_layers"), "input_layers")?;
    let outputs = io_list(config.get("output_layers"), "output_layers")?;
    let mut input_index: HashMap<String, usize> = HashMap::new();
    for (i, (l, _, _)) in inputs.iter().enumerate() {
        input_index.insert(l.clone(), i);
    }
    let mut input_shapes = vec![Value::Null; inputs.len()];
    let mut cortex_layers = Vec::new();
    let mut layer_calls = Vec::new(); // (cortex layer index, name, calls)
    let mut groups = GroupNames::default();
    for entry in layers {
        let class = entry.get("class_name").and_then(Value::as_str).unwrap_or("");
        let cfg = entry.get("config").cloned().unwrap_or(Value::Null);
        let lname = entry
            .get("name")
            .or_else(|| cfg.get("name"))
            .and_then(Value::as_str)
            .unwrap_or(class)
            .to_string();
        // Keras 3 writes the mask of an Embedding(mask_zero) as an explicit `not_equal(x, 0)`
        // operation passed to later layers as `mask=`; cortex-nn propagates that mask itself.
        // Operations are not layers: they hold no weights and have no group.
        if class == "NotEqual" && entry.get("module").and_then(Value::as_str) == Some("keras.src.ops.numpy") {
            continue;
        }
        let group = groups.next(h5, class);
        if class == "InputLayer" {
            let i = *input_index
                .get(&lname)
                .ok_or_else(|| invalid(format!("model '{name}': input layer '{lname}' is not among its inputs")))?;
            input_shapes[i] = sample_shape(&cfg, &lname)?
                .ok_or_else(|| invalid(format!("model '{name}': input '{lname}' has no shape")))?;
            continue;
        }
        let mut converted = layer_from_keras(entry, group, prefix, slots, depth)?;
        let calls = calls_of(entry, &lname)?;
        // use_causal_mask is a call argument in Keras and a layer option in cortex-nn: every
        // call of the layer must agree.
        let causal: Vec<bool> = calls
            .iter()
            .map(|c| c.kwargs.get("use_causal_mask") == Some(&Value::Bool(true)))
            .collect();
        if causal.iter().any(|&c| c) {
            if causal.iter().any(|&c| !c) {
                return Err(unsupported(
                    &lname,
                    "calling a shared layer with and without use_causal_mask",
                ));
            }
            converted["config"]["useCausalMask"] = json!(true);
        }
        layer_calls.push((cortex_layers.len(), lname, calls));
        cortex_layers.push(converted);
    }
    if let Some(i) = input_shapes.iter().position(Value::is_null) {
        return Err(invalid(format!(
            "model '{name}': input '{}' has no InputLayer",
            inputs[i].0
        )));
    }
    // Emit nodes once their inputs exist (the config lists layers in an order where that holds,
    // but a shared layer's later calls may depend on layers listed after it).
    let mut node_of: HashMap<(String, usize), usize> = HashMap::new();
    let mut next_call = vec![0usize; layer_calls.len()];
    let mut nodes = Vec::new();
    let source = |t: &(String, usize, usize), node_of: &HashMap<(String, usize), usize>| -> Option<Value> {
        if let Some(&i) = input_index.get(&t.0) {
            return Some(json!([-1, i]));
        }
        node_of.get(&(t.0.clone(), t.1)).map(|&n| json!([n, t.2]))
    };
    loop {
        let mut progressed = false;
        for (k, (layer, lname, calls)) in layer_calls.iter().enumerate() {
            while next_call[k] < calls.len() {
                let call = &calls[next_call[k]];
                let srcs: Option<Vec<Value>> = call.inputs.iter().map(|t| source(t, &node_of)).collect();
                let Some(srcs) = srcs else { break };
                node_of.insert((lname.clone(), next_call[k]), nodes.len());
                nodes.push(json!({"layer": layer, "inputs": srcs}));
                next_call[k] += 1;
                progressed = true;
            }
        }
        if !progressed {
            break;
        }
    }
    if let Some(k) = (0..layer_calls.len()).find(|&k| next_call[k] < layer_calls[k].2.len()) {
        return Err(invalid(format!(
            "model '{name}': layer '{}' is called on tensors no layer produces",
            layer_calls[k].1
        )));
    }
    let outputs: Vec<Value> = outputs
        .iter()
        .map(|t| source(t, &node_of).ok_or_else(|| invalid(format!("model '{name}': unknown output {t:?}"))))
        .collect::<Result<_>>()?;
    Ok(json!({
        "className": "Functional",
        "name": name,
        "layers": cortex_layers,
        "inputs": input_shapes,
        "inputNames": inputs.iter().map(|(l, _, _)| l.clone()).collect::<Vec<_>>(),
        "nodes": nodes,
        "outputs": outputs,
    }))
}

/// A cortex-nn model config (as `Model::to_json` writes it) as a Keras 3 model config, with the
/// weight slots of its layers in the order Keras will look for them.
pub fn model_to_keras(model: &Value, h5: &str, prefix: &str, slots: &mut Vec<Slot>) -> Result<Value> {
    let class = model.get("className").and_then(Value::as_str).unwrap_or("Sequential");
    let name = model.get("name").and_then(Value::as_str).unwrap_or("model").to_string();
    let layers = model
        .get("layers")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid(format!("model '{name}' has no layers")))?;
    if class == "Sequential" {
        let shape = model.get("inputShape").filter(|s| !s.is_null()).ok_or_else(|| {
            invalid(format!(
                "model '{name}' is not built: give its first layer an inputShape"
            ))
        })?;
        let mut batch_shape = vec![Value::Null];
        batch_shape.extend(shape.as_array().cloned().unwrap_or_default());
        let mut out = vec![input_layer("input_layer", &batch_shape)];
        let mut groups = GroupNames::default();
        for l in layers {
            let class = l.get("className").and_then(Value::as_str).unwrap_or("");
            let group = groups.next(h5, class);
            out.push(layer_entry_to_keras(l, group, prefix, slots)?.0);
        }
        return Ok(json!({
            "module": "keras",
            "class_name": "Sequential",
            "config": {"name": name, "trainable": true, "dtype": dtype_policy(), "layers": out},
            "registered_name": null,
            "build_config": {"input_shape": batch_shape},
        }));
    }
    functional_to_keras(model, &name, layers, h5, prefix, slots)
}

fn input_layer(name: &str, batch_shape: &[Value]) -> Value {
    json!({
        "module": "keras.layers",
        "class_name": "InputLayer",
        "config": {"batch_shape": batch_shape, "dtype": "float32", "sparse": false, "ragged": false, "name": name},
        "registered_name": null,
        "name": name,
        "inbound_nodes": [],
    })
}

/// One cortex-nn layer entry as a Keras layer entry (and its name).
fn layer_entry_to_keras(entry: &Value, group: String, prefix: &str, slots: &mut Vec<Slot>) -> Result<(Value, String)> {
    let class = entry.get("className").and_then(Value::as_str).unwrap_or("");
    let config = entry.get("config").cloned().unwrap_or(Value::Null);
    if matches!(class, "Sequential" | "Functional") {
        let name = config
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("model")
            .to_string();
        let nested = model_to_keras(&config, &group, &format!("{prefix}{name}/"), slots)?;
        return Ok((nested, name));
    }
    let keras = layer_to_keras(class, &config)?;
    let name = keras["config"]["name"].as_str().unwrap_or(class).to_string();
    slots.push(Slot {
        layer: format!("{prefix}{name}"),
        class: class.to_string(),
        h5: group,
    });
    Ok((keras, name))
}

/// An operation of the graph Keras rebuilds: an input layer or a cortex-nn layer.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Op {
    Input(usize),
    Layer(usize),
}

fn functional_to_keras(
    model: &Value,
    name: &str,
    layers: &[Value],
    h5: &str,
    prefix: &str,
    slots: &mut Vec<Slot>,
) -> Result<Value> {
    let bad = || invalid(format!("model '{name}': malformed functional config"));
    let inputs = model.get("inputs").and_then(Value::as_array).ok_or_else(bad)?;
    let nodes = model.get("nodes").and_then(Value::as_array).ok_or_else(bad)?;
    let outputs = model.get("outputs").and_then(Value::as_array).ok_or_else(bad)?;
    let pair = |v: &Value| -> Result<(i64, usize)> {
        let a = v.as_array().ok_or_else(bad)?;
        Ok((
            a.first().and_then(Value::as_i64).ok_or_else(bad)?,
            a.get(1).and_then(Value::as_u64).ok_or_else(bad)? as usize,
        ))
    };
    // (layer index, input sources) per node; a source is (node or -1, output or input index).
    let mut graph: Vec<(usize, Vec<(i64, usize)>)> = Vec::new();
    for n in nodes {
        let layer = n.get("layer").and_then(Value::as_u64).ok_or_else(bad)? as usize;
        let srcs = n
            .get("inputs")
            .and_then(Value::as_array)
            .ok_or_else(bad)?
            .iter()
            .map(pair)
            .collect::<Result<_>>()?;
        graph.push((layer, srcs));
    }
    let outs: Vec<(i64, usize)> = outputs.iter().map(pair).collect::<Result<_>>()?;
    let order = keras_layer_order(inputs.len(), &graph, &outs);

    // Keras names: input layers get fresh names that no cortex-nn layer uses.
    let layer_names: Vec<String> = layers
        .iter()
        .map(|l| l["config"]["name"].as_str().unwrap_or("layer").to_string())
        .collect();
    let mut input_names = Vec::new();
    for i in 0..inputs.len() {
        let mut k = i;
        loop {
            let candidate = if k == 0 {
                "input_layer".to_string()
            } else {
                format!("input_layer_{k}")
            };
            if !layer_names.contains(&candidate) && !input_names.contains(&candidate) {
                input_names.push(candidate);
                break;
            }
            k += 1;
        }
    }
    // Each node's index among its layer's calls (Keras' node_index).
    let mut call_index = Vec::with_capacity(graph.len());
    let mut calls_so_far: HashMap<usize, usize> = HashMap::new();
    for (layer, _) in &graph {
        let c = calls_so_far.entry(*layer).or_insert(0);
        call_index.push(*c);
        *c += 1;
    }
    let tensor = |src: (i64, usize)| -> Value {
        let history = if src.0 < 0 {
            json!([input_names[src.1], 0, 0])
        } else {
            let n = src.0 as usize;
            json!([layer_names[graph[n].0], call_index[n], src.1])
        };
        // Keras only uses the shape for a placeholder that keras_history then replaces.
        json!({"class_name": "__keras_tensor__", "config": {"shape": [null], "dtype": "float32", "keras_history": history}})
    };
    let mut groups = GroupNames::default();
    let mut out_layers = Vec::new();
    for op in order {
        match op {
            Op::Input(i) => {
                // Keras keeps an (empty) group for each input layer too.
                let group = groups.next(h5, "InputLayer");
                slots.push(Slot {
                    layer: format!("{prefix}<input {i}>"),
                    class: "InputLayer".into(),
                    h5: group,
                });
                let mut batch_shape = vec![Value::Null];
                batch_shape.extend(inputs[i].as_array().cloned().unwrap_or_default());
                out_layers.push(input_layer(&input_names[i], &batch_shape));
            }
            Op::Layer(l) => {
                let class = layers[l]["className"].as_str().unwrap_or("");
                let group = groups.next(h5, class);
                let (mut keras, lname) = layer_entry_to_keras(&layers[l], group, prefix, slots)?;
                let causal = layers[l]["config"]["useCausalMask"] == Value::Bool(true);
                let multi_input = matches!(class, "Add" | "Multiply" | "Concatenate");
                let inbound: Vec<Value> = graph
                    .iter()
                    .filter(|(layer, _)| *layer == l)
                    .map(|(_, srcs)| {
                        let ts: Vec<Value> = srcs.iter().map(|&s| tensor(s)).collect();
                        let args = if multi_input { json!([ts]) } else { Value::Array(ts) };
                        let kwargs = if causal {
                            json!({"use_causal_mask": true})
                        } else {
                            json!({})
                        };
                        json!({"args": args, "kwargs": kwargs})
                    })
                    .collect();
                keras["name"] = json!(lname);
                keras["inbound_nodes"] = Value::Array(inbound);
                out_layers.push(keras);
            }
        }
    }
    let io = |src: (i64, usize)| -> Value { tensor(src)["config"]["keras_history"].clone() };
    Ok(json!({
        "module": "keras.src.models.functional",
        "class_name": "Functional",
        "config": {
            "name": name,
            "trainable": true,
            "layers": out_layers,
            "input_layers": (0..inputs.len()).map(|i| io((-1, i))).collect::<Vec<_>>(),
            "output_layers": outs.iter().map(|&s| io(s)).collect::<Vec<_>>(),
        },
        "registered_name": "Functional",
    }))
}

/// The order of `model.layers` that Keras 3 computes when it rebuilds this graph
/// (`keras.src.ops.function.map_graph`): a depth-first walk from the outputs numbers the
/// operations, depths come from the longest path to an output, and layers are listed by
/// decreasing depth, then by that number. Weight groups are named in this order.
fn keras_layer_order(n_inputs: usize, graph: &[(usize, Vec<(i64, usize)>)], outputs: &[(i64, usize)]) -> Vec<Op> {
    // Keras nodes: one per input layer, then one per cortex-nn node.
    #[derive(Clone, Copy, PartialEq, Eq, Hash)]
    enum N {
        In(usize),
        Call(usize),
    }
    let op_of = |n: N| match n {
        N::In(i) => Op::Input(i),
        N::Call(c) => Op::Layer(graph[c].0),
    };
    let producer = |src: (i64, usize)| {
        if src.0 < 0 {
            N::In(src.1)
        } else {
            N::Call(src.0 as usize)
        }
    };
    let parents = |n: N| -> Vec<N> {
        match n {
            N::In(_) => Vec::new(),
            N::Call(c) => graph[c].1.iter().map(|&s| producer(s)).collect(),
        }
    };
    let mut finished = std::collections::HashSet::new();
    let mut op_index: Vec<(Op, i64)> = Vec::new();
    let mut decreasing = Vec::new();
    // Iterative form of _build_map_helper (the graph is acyclic: nodes only reference earlier ones).
    fn visit(
        n: N,
        finished: &mut std::collections::HashSet<N>,
        op_index: &mut Vec<(Op, i64)>,
        decreasing: &mut Vec<N>,
        op_of: &dyn Fn(N) -> Op,
        parents: &dyn Fn(N) -> Vec<N>,
    ) {
        if finished.contains(&n) {
            return;
        }
        let op = op_of(n);
        if !op_index.iter().any(|(o, _)| *o == op) {
            let next = op_index.len() as i64;
            op_index.push((op, next));
        }
        for p in parents(n) {
            visit(p, finished, op_index, decreasing, op_of, parents);
        }
        finished.insert(n);
        decreasing.push(n);
    }
    for &o in outputs {
        visit(
            producer(o),
            &mut finished,
            &mut op_index,
            &mut decreasing,
            &op_of,
            &parents,
        );
    }
    let mut node_depth: HashMap<N, usize> = HashMap::new();
    let mut op_depth: Vec<(Op, usize)> = Vec::new();
    for &n in decreasing.iter().rev() {
        let mut depth = *node_depth.get(&n).unwrap_or(&0);
        let op = op_of(n);
        let prev = op_depth.iter().find(|(o, _)| *o == op).map_or(0, |(_, d)| *d);
        depth = depth.max(prev);
        match op_depth.iter_mut().find(|(o, _)| *o == op) {
            Some(e) => e.1 = depth,
            None => op_depth.push((op, depth)),
        }
        node_depth.insert(n, depth);
        for p in parents(n) {
            let d = node_depth.entry(p).or_insert(0);
            *d = (*d).max(depth + 1);
        }
    }
    for i in 0..n_inputs {
        let op = Op::Input(i);
        if !op_depth.iter().any(|(o, _)| *o == op) {
            op_depth.push((op, 0));
            match op_index.iter_mut().find(|(o, _)| *o == op) {
                Some(e) => e.1 = -1,
                None => op_index.push((op, -1)),
            }
        }
    }
    let index_of = |op: Op| op_index.iter().find(|(o, _)| *o == op).map_or(i64::MAX, |(_, i)| *i);
    let mut depths: Vec<usize> = op_depth.iter().map(|(_, d)| *d).collect();
    depths.sort_unstable();
    depths.dedup();
    let mut order = Vec::new();
    for &d in depths.iter().rev() {
        let mut at: Vec<Op> = op_depth.iter().filter(|(_, od)| *od == d).map(|(o, _)| *o).collect();
        at.sort_by_key(|&o| index_of(o));
        order.extend(at);
    }
    order
}
