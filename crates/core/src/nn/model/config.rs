//! Building a model from its JSON description (`Model::from_config`): the layer entries,
//! shared-layer references and the functional graph's node references.

use super::*;

fn shape_list(v: &Value, what: &str) -> Result<Vec<usize>> {
    v.as_array()
        .and_then(|a| {
            a.iter()
                .map(|d| d.as_u64().filter(|&d| d > 0).map(|d| d as usize))
                .collect()
        })
        .ok_or_else(|| invalid(format!("{what}: expected an array of positive integers, got {v}")))
}

/// Makes (or finds, for `{ "ref": id }`) the layer of one `layers` entry.
fn layer_entry(entry: &Value, index: usize, seed: &mut Rng) -> Result<SharedLayer> {
    if let Some(id) = entry.get("ref").and_then(Value::as_u64) {
        return LayerCell::lookup(id);
    }
    let class = entry
        .get("className")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("layer {index}: expected {{ className, config }}, got {entry}")))?;
    let mut config = entry.get("config").cloned().unwrap_or_else(|| json!({}));
    if config.get("name").is_none() {
        if let Some(map) = config.as_object_mut() {
            map.insert("name".into(), json!(layers::unique_name(layers::base_name(class))));
        }
    }
    if class == "Sequential" || class == "Functional" {
        let mut cfg = config.clone();
        cfg["className"] = json!(class);
        let model = Model::from_config(&cfg, seed.next_u64())?;
        return Ok(LayerCell::new(Box::new(model), true));
    }
    let (layer, common) = layers::from_config(class, &config).map_err(|e| invalid(format!("layer {index}: {e}")))?;
    Ok(LayerCell::new(layer, common.trainable))
}

fn source_of(v: &Value, nodes_so_far: usize, inputs: usize) -> Result<Source> {
    let pair = v
        .as_array()
        .filter(|a| a.len() == 2)
        .and_then(|a| Some((a[0].as_i64()?, a[1].as_u64()? as usize)));
    match pair {
        Some((-1, i)) if i < inputs => Ok(Source::Input(i)),
        Some((n, o)) if n >= 0 && (n as usize) < nodes_so_far => Ok(Source::Node(n as usize, o)),
        _ => Err(invalid(format!("functional model: bad node reference {v}"))),
    }
}

impl Model {
    /// Builds a model from its description:
    /// `{ className: "Sequential", name?, layers: [...], inputShape? }` or
    /// `{ className: "Functional", name?, layers: [...], inputs: [shape...], nodes: [{ layer, inputs: [[node|-1, index]] }], outputs: [[node, index]] }`.
    /// A `layers` entry is `{ className, config }` (a new layer) or `{ ref: id }` (a live shared layer).
    pub fn from_config(config: &Value, seed: u64) -> Result<Model> {
        let obj = config
            .as_object()
            .ok_or_else(|| invalid(format!("model config must be an object, got {config}")))?;
        let class = obj.get("className").and_then(Value::as_str).unwrap_or("Sequential");
        let functional = match class {
            "Sequential" => false,
            "Functional" => true,
            other => {
                return Err(invalid(format!(
                    "unknown model class '{other}'; expected Sequential or Functional"
                )))
            }
        };
        let allowed: &[&str] = if functional {
            &[
                "className",
                "name",
                "layers",
                "inputs",
                "inputNames",
                "nodes",
                "outputs",
                "trainable",
            ]
        } else {
            &["className", "name", "layers", "inputShape", "trainable"]
        };
        if let Some(key) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(invalid(format!(
                "{class}: unknown option '{key}'; expected one of: {}",
                allowed.join(", ")
            )));
        }
        let mut rng = Rng::new(seed);
        let entries = obj
            .get("layers")
            .and_then(Value::as_array)
            .ok_or_else(|| invalid("model config needs a 'layers' array"))?;
        if entries.is_empty() {
            return Err(invalid("a model needs at least one layer"));
        }
        let layers: Vec<SharedLayer> = entries
            .iter()
            .enumerate()
            .map(|(i, e)| layer_entry(e, i, &mut rng))
            .collect::<Result<_>>()?;
        let mut seen = HashSet::new();
        for l in &layers {
            let name = l.read().name().to_string();
            if !seen.insert(name.clone()) {
                return Err(invalid(format!(
                    "layer name '{name}' is used twice in one model; names must be unique"
                )));
            }
        }
        let mut model = Model {
            // Keras numbering (sequential, sequential_1, ...) so two unnamed models can nest in one.
            name: match obj.get("name").and_then(Value::as_str) {
                Some(name) => name.into(),
                None => crate::nn::layers::unique_name(if functional { "model" } else { "sequential" }),
            },
            functional,
            layers,
            nodes: Vec::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            input_names: Vec::new(),
            output_shapes: Vec::new(),
            shapes: HashMap::new(),
            compiled: None,
            rng,
            placement: crate::Device::Cpu,
        };
        if functional {
            model.inputs = obj
                .get("inputs")
                .and_then(Value::as_array)
                .ok_or_else(|| invalid("functional model needs 'inputs' (sample shapes)"))?
                .iter()
                .map(|s| shape_list(s, "functional model input"))
                .collect::<Result<_>>()?;
            if let Some(names) = obj.get("inputNames").filter(|v| !v.is_null()) {
                let names: Vec<String> = serde_json::from_value(names.clone())
                    .map_err(|_| invalid(format!("inputNames must be a list of strings, got {names}")))?;
                if names.len() != model.inputs.len() {
                    return Err(invalid(format!(
                        "inputNames has {} names for {} inputs",
                        names.len(),
                        model.inputs.len()
                    )));
                }
                model.input_names = names;
            }
            let nodes = obj
                .get("nodes")
                .and_then(Value::as_array)
                .ok_or_else(|| invalid("functional model needs 'nodes'"))?;
            for (n, node) in nodes.iter().enumerate() {
                let layer = node
                    .get("layer")
                    .and_then(Value::as_u64)
                    .map(|l| l as usize)
                    .filter(|&l| l < model.layers.len());
                let layer =
                    layer.ok_or_else(|| invalid(format!("node {n}: 'layer' must index 'layers', got {node}")))?;
                let inputs = node
                    .get("inputs")
                    .and_then(Value::as_array)
                    .ok_or_else(|| invalid(format!("node {n}: needs 'inputs'")))?
                    .iter()
                    .map(|s| source_of(s, n, model.inputs.len()))
                    .collect::<Result<_>>()?;
                model.nodes.push(Node { layer, inputs });
            }
            model.outputs = obj
                .get("outputs")
                .and_then(Value::as_array)
                .ok_or_else(|| invalid("functional model needs 'outputs'"))?
                .iter()
                .map(|s| source_of(s, model.nodes.len(), model.inputs.len()))
                .collect::<Result<_>>()?;
            model.build_graph()?;
        } else {
            model.nodes = (0..model.layers.len())
                .map(|i| Node {
                    layer: i,
                    inputs: vec![if i == 0 {
                        Source::Input(0)
                    } else {
                        Source::Node(i - 1, 0)
                    }],
                })
                .collect();
            model.outputs = vec![Source::Node(model.nodes.len() - 1, 0)];
            let shape = match obj.get("inputShape") {
                Some(s) if !s.is_null() => Some(shape_list(s, "inputShape")?),
                _ => model.layers[0]
                    .read()
                    .config()
                    .get("inputShape")
                    .map(|s| shape_list(s, "inputShape"))
                    .transpose()?,
            };
            if let Some(shape) = shape {
                model.build(&shape)?;
            }
        }
        if obj.get("trainable") == Some(&Value::Bool(false)) {
            model.set_trainable(false);
        }
        Ok(model)
    }
}
