//! How a model describes itself: the JSON stored in model files and the Keras-style summary.

use super::*;

impl Model {
    /// The description that rebuilds this model (new layers, not references), as stored in files.
    pub fn to_json(&self) -> Value {
        let layers: Vec<Value> = self
            .layers
            .iter()
            .map(|cell| {
                let l = cell.read();
                let mut config = l.config();
                if !cell.trainable() {
                    config["trainable"] = json!(false);
                }
                json!({ "className": l.class_name(), "config": config })
            })
            .collect();
        let mut v = json!({ "className": if self.functional { "Functional" } else { "Sequential" }, "name": self.name, "layers": layers });
        if self.functional {
            let src = |s: &Source| match *s {
                Source::Input(i) => json!([-1, i]),
                Source::Node(n, o) => json!([n, o]),
            };
            v["inputs"] = json!(self.inputs);
            if !self.input_names.is_empty() {
                v["inputNames"] = json!(self.input_names);
            }
            v["nodes"] = self
                .nodes
                .iter()
                .map(|n| json!({"layer": n.layer, "inputs": n.inputs.iter().map(src).collect::<Vec<_>>()}))
                .collect();
            v["outputs"] = self.outputs.iter().map(src).collect();
        } else if let Some(s) = self.input_shape() {
            v["inputShape"] = json!(s);
        }
        v
    }

    /// A Keras-like table of layers, output shapes and parameter counts.
    pub fn summary(&self) -> String {
        let mut lines = vec![format!("Model: \"{}\"", self.name)];
        let rule = "─".repeat(72);
        lines.push(rule.clone());
        lines.push(format!("{:<34}{:<24}{:>14}", "Layer (type)", "Output Shape", "Param #"));
        lines.push(rule.clone());
        let (mut total, mut trainable) = (0, 0);
        for cell in &self.layers {
            let layer = cell.read();
            let mut count = 0;
            let mut train = 0;
            let mut count_param = |_: &str, p: &Param, t: bool| {
                count += numel(&p.shape());
                if t && p.trainable {
                    train += numel(&p.shape());
                }
            };
            match layer.as_model() {
                Some(inner) => inner.visit_params(&mut count_param),
                None => layer
                    .params()
                    .into_iter()
                    .for_each(|p| count_param("", p, cell.trainable())),
            }
            total += count;
            trainable += train;
            let shown = cell.built_shapes().map_or("?".to_string(), |(_, outs)| {
                let each: Vec<String> = outs
                    .iter()
                    .map(|s| {
                        format!(
                            "(None, {})",
                            s.iter().map(usize::to_string).collect::<Vec<_>>().join(", ")
                        )
                    })
                    .collect();
                each.join(", ")
            });
            lines.push(format!(
                "{:<34}{:<24}{:>14}",
                format!("{} ({})", layer.name(), layer.class_name()),
                shown,
                count
            ));
        }
        lines.push(rule);
        lines.push(format!("Total params: {total}"));
        lines.push(format!("Trainable params: {trainable}"));
        lines.push(format!("Non-trainable params: {}", total - trainable));
        lines.join("\n")
    }
}
