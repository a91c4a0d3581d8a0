//! `compile`: the loss of each output (and their weights), the optimizer, the metrics and the
//! device, in Keras' forms: one loss for every output, a list in output order, or an object
//! keyed by output name.

use super::*;

/// Spreads a per-output setting given as one value (for every output), a list (in output order)
/// or an object keyed by output name, into one value per output. An object with a string
/// `name` is one value (a loss spec such as `{ name, fromLogits }`), not a map.
fn per_output<'a>(what: &str, v: &'a Value, names: &[String]) -> Result<Vec<Option<&'a Value>>> {
    match v {
        Value::Array(list) => {
            if list.len() != names.len() {
                return Err(invalid(format!(
                    "compile: {what} has {} entries but the model has {} outputs ({})",
                    list.len(),
                    names.len(),
                    names.join(", ")
                )));
            }
            Ok(list.iter().map(Some).collect())
        }
        Value::Object(map) if !map.get("name").is_some_and(Value::is_string) => {
            if let Some(key) = map.keys().find(|k| !names.contains(k)) {
                return Err(invalid(format!(
                    "compile: {what} names output '{key}', but the outputs are: {}",
                    names.join(", ")
                )));
            }
            Ok(names.iter().map(|n| map.get(n)).collect())
        }
        one => Ok(vec![Some(one); names.len()]),
    }
}

impl Model {
    /// Names of the inputs: those given in the config (`input({ name })`, Keras input layers),
    /// else Keras' defaults `input_layer`, `input_layer_1`, ...
    pub fn input_names(&self) -> Vec<String> {
        (0..self.input_count())
            .map(|i| match self.input_names.get(i) {
                Some(n) => n.clone(),
                None if i == 0 => "input_layer".to_string(),
                None => format!("input_layer_{i}"),
            })
            .collect()
    }

    /// Names of the outputs, as Keras names them: the name of the layer that produces each
    /// (with `_1`, `_2`, ... for further outputs of one layer call).
    pub fn output_names(&self) -> Vec<String> {
        if self.outputs.is_empty() {
            return match self.layers.last() {
                Some(l) => vec![l.read().name().to_string()],
                None => Vec::new(),
            };
        }
        self.outputs
            .iter()
            .map(|s| match *s {
                Source::Node(n, o) => {
                    let name = self.layers[self.nodes[n].layer].read().name().to_string();
                    if o == 0 {
                        name
                    } else {
                        format!("{name}_{o}")
                    }
                }
                Source::Input(i) => self.input_names()[i].clone(),
            })
            .collect()
    }

    /// Sets the losses, optimizer and metrics: `{ "optimizer", "loss", "lossWeights"?, "metrics"?,
    /// "device"?, "precision"? }`. `loss`, `lossWeights` and `metrics` may be per output.
    pub fn compile(&mut self, config: &Value) -> Result<()> {
        const KEYS: [&str; 6] = ["device", "loss", "lossWeights", "metrics", "optimizer", "precision"];
        let obj = config
            .as_object()
            .ok_or_else(|| invalid(format!("compile expects an object, got {config}")))?;
        if let Some(key) = obj.keys().find(|k| !KEYS.contains(&k.as_str())) {
            return Err(invalid(format!(
                "compile: unknown option '{key}'; expected one of: {}",
                KEYS.join(", ")
            )));
        }
        let wants_gpu = match obj.get("device") {
            None | Some(Value::Null) => None,
            Some(Value::String(d)) if d == "cpu" => None,
            Some(Value::String(d)) if d == "gpu" => Some(false),
            Some(Value::String(d)) if d == "gpu!" => Some(true),
            Some(other) => {
                return Err(invalid(format!(
                    "compile: device must be 'cpu', 'gpu' (falls back to the CPU with a warning) or 'gpu!' \
                     (fails without a usable GPU), got {other}"
                )))
            }
        };
        let precision = match obj.get("precision") {
            None | Some(Value::Null) => "float32".to_string(),
            Some(Value::String(p)) if p == "float32" => p.clone(),
            Some(Value::String(p)) if p == "mixed_float16" && wants_gpu.is_some() => p.clone(),
            Some(Value::String(p)) if p == "mixed_float16" => {
                return Err(invalid(
                    "compile: precision 'mixed_float16' runs on the GPU only; add device 'gpu' (or 'gpu!')",
                ))
            }
            Some(other) => {
                return Err(invalid(format!(
                    "compile: precision must be 'float32' or 'mixed_float16', got {other}"
                )))
            }
        };
        let names = self.output_names();
        let loss_spec = obj
            .get("loss")
            .ok_or_else(|| invalid("compile: option 'loss' is required"))?;
        let losses = per_output("loss", loss_spec, &names)?
            .into_iter()
            .zip(&names)
            .map(|(spec, name)| {
                let spec = spec.ok_or_else(|| invalid(format!("compile: no loss for output '{name}'")))?;
                Loss::parse(spec)
            })
            .collect::<Result<Vec<_>>>()?;
        let loss_weights = match obj.get("lossWeights") {
            None | Some(Value::Null) => vec![1.0; names.len()],
            Some(v @ (Value::Array(_) | Value::Object(_))) => per_output("lossWeights", v, &names)?
                .into_iter()
                .map(|w| match w {
                    None => Ok(1.0),
                    Some(Value::Number(n)) if n.as_f64().is_some_and(|f| f.is_finite() && f >= 0.0) => {
                        Ok(n.as_f64().unwrap_or(1.0) as f32)
                    }
                    Some(other) => Err(invalid(format!(
                        "compile: a loss weight must be a non-negative number, got {other}"
                    ))),
                })
                .collect::<Result<_>>()?,
            Some(other) => {
                return Err(invalid(format!(
                    "compile: lossWeights must be a list or an object keyed by output name, got {other}"
                )))
            }
        };
        let optimizer = Optimizer::parse(obj.get("optimizer").unwrap_or(&json!("rmsprop")))?;
        let metrics = match obj.get("metrics") {
            None | Some(Value::Null) => vec![Vec::new(); names.len()],
            // A flat list of names applies to every output (the single-output case included).
            Some(Value::Array(list)) if list.iter().all(Value::is_string) => losses
                .iter()
                .map(|loss| list.iter().map(|m| Metric::parse(m, loss)).collect())
                .collect::<Result<_>>()?,
            Some(v @ (Value::Array(_) | Value::Object(_))) => per_output("metrics", v, &names)?
                .into_iter()
                .zip(&losses)
                .map(|(m, loss)| match m {
                    None | Some(Value::Null) => Ok(Vec::new()),
                    Some(Value::Array(list)) => list.iter().map(|m| Metric::parse(m, loss)).collect(),
                    Some(one @ Value::String(_)) => Ok(vec![Metric::parse(one, loss)?]),
                    Some(other) => Err(invalid(format!(
                        "compile: metrics of an output must be a list of names, got {other}"
                    ))),
                })
                .collect::<Result<_>>()?,
            Some(other) => {
                return Err(invalid(format!(
                    "compile: metrics must be a list of names (or one list per output), got {other}"
                )))
            }
        };
        // A GPU compile that moved the weights (the planner refused the model) is undone by a
        // CPU compile; weights moved by the caller (`to_device`) stay where they are.
        if wants_gpu.is_none() && self.compiled.as_ref().is_some_and(|c| c.layers_on_gpu) {
            self.to_device(crate::Device::Cpu)?;
        }
        let mut trainable = HashSet::new();
        self.visit_params(&mut |_, p, layer_trainable| {
            if layer_trainable && p.trainable {
                trainable.insert(crate::nn::param::param_address(p));
            }
        });
        self.compiled = Some(Compiled {
            losses,
            loss_weights,
            optimizer,
            metrics,
            trainable,
            wants_gpu,
            precision,
            gpu: None,
            device_warning: None,
            layers_on_gpu: false,
        });
        self.attach_gpu()
    }

    /// The compile settings as JSON (losses, optimizer with its learning rate, metrics), in the
    /// single-output form when there is one output.
    pub fn compile_json(&self) -> Option<Value> {
        let c = self.compiled.as_ref()?;
        let keys = |ms: &Vec<Metric>| ms.iter().map(|m| m.key()).collect::<Vec<_>>();
        Some(if c.losses.len() == 1 {
            json!({
                "loss": c.losses[0].to_json(),
                "optimizer": c.optimizer.to_json(),
                "metrics": keys(&c.metrics[0]),
            })
        } else {
            json!({
                "loss": c.losses.iter().map(Loss::to_json).collect::<Vec<_>>(),
                "lossWeights": c.loss_weights,
                "optimizer": c.optimizer.to_json(),
                "metrics": c.metrics.iter().map(keys).collect::<Vec<_>>(),
            })
        })
    }
}
