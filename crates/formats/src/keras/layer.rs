//! One layer's config, Keras (snake_case, as in `.keras` config.json and tfjs' modelTopology)
//! to cortex-nn (camelCase, as `Model::from_config` reads) and back.
//!
//! Keys map by case alone; what differs is listed here: Keras-only keys that do not change the
//! computation (dtype policies, initializers: the weights come from the file), keys that must
//! hold their default because cortex-nn has no such feature (regularizers, constraints,
//! channels_first...), and the few renamed values (activation names).

use cortex_core::{Error, Result};
use serde_json::{json, Map, Value};

/// Keras keys dropped on load: they do not affect what a loaded model computes.
const IGNORED: &[&str] = &[
    "dtype",
    "seed",
    "kernel_initializer",
    "bias_initializer",
    "recurrent_initializer",
    "embeddings_initializer",
    "gamma_initializer",
    "beta_initializer",
    "moving_mean_initializer",
    "moving_variance_initializer",
    "depthwise_initializer",
    "pointwise_initializer",
    "implementation",
    "unroll",
    "synchronized",
    "lora_alpha",
    "batch_input_shape",
    "batch_shape",
    "input_shape",
    "input_length",
    "input_dim_for_build",
    "build_config",
    "sparse",
    "ragged",
    "optional",
    "registered_name",
    "module",
    "shared_object_id",
    "flash_attention",
    // Only meaningful with renorm = true, which DEFAULTS refuses.
    "renorm_clipping",
    "renorm_momentum",
];

/// Keras keys that must hold their default (null, false, 0 or the value given) because cortex-nn
/// has no such feature; anything else is refused, naming the layer, the key and the value.
const DEFAULTS: &[(&str, &str)] = &[
    ("kernel_regularizer", "null"),
    ("bias_regularizer", "null"),
    ("recurrent_regularizer", "null"),
    ("activity_regularizer", "null"),
    ("embeddings_regularizer", "null"),
    ("gamma_regularizer", "null"),
    ("beta_regularizer", "null"),
    ("kernel_constraint", "null"),
    ("bias_constraint", "null"),
    ("recurrent_constraint", "null"),
    ("embeddings_constraint", "null"),
    ("gamma_constraint", "null"),
    ("beta_constraint", "null"),
    ("quantization_config", "null"),
    ("lora_rank", "null"),
    ("data_format", "\"channels_last\""),
    ("groups", "1"),
    ("stateful", "false"),
    ("dropout", "0"),
    ("recurrent_dropout", "0"),
    ("noise_shape", "null"),
    ("attention_axes", "null"),
    ("rms_scaling", "false"),
    ("output_padding", "null"),
    ("renorm", "false"),
    ("zero_output_for_mask", "false"),
    ("time_major", "false"),
    ("use_cudnn", "\"auto\""),
    ("seed_generator", "null"),
    ("use_gate", "false"),
    ("sliding_window", "null"),
];

/// Keras 3 writes Bidirectional's backward half even when it is the default mirror of the
/// forward one (the same config, going backwards); cortex-nn builds only that mirror.
fn check_mirror(layer: &str, forward: Option<&Value>, backward: &Value) -> Result<()> {
    if backward.is_null() {
        return Ok(());
    }
    let normalized = |v: Option<&Value>| -> Option<Value> {
        let v = v?;
        let class = v.get("class_name")?.clone();
        let mut c = v.get("config")?.as_object()?.clone();
        for k in ["name", "go_backwards", "zero_output_for_mask"] {
            c.remove(k);
        }
        // Initializers may differ (they are shared objects with ids); they do not matter here.
        c.retain(|k, _| !IGNORED.contains(&k.as_str()));
        Some(json!({"class": class, "config": c}))
    };
    match (normalized(forward), normalized(Some(backward))) {
        (Some(f), Some(b)) if f == b => Ok(()),
        _ => Err(unsupported(
            layer,
            "a Bidirectional whose backward layer differs from its forward layer",
        )),
    }
}

/// Keys whose non-default values cortex-nn does support, under the camelCase name: they are
/// exempt from [`DEFAULTS`] for these classes.
const SUPPORTED: &[(&str, &str)] = &[("Dropout", "rate"), ("MultiHeadAttention", "dropout")];

/// `snake_case` to `camelCase`.
pub fn camel(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut upper = false;
    for c in key.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// `camelCase` to `snake_case` (digits stay attached: `conv2dTranspose` -> `conv2d_transpose`).
pub fn snake(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    for c in key.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Keras' `naming.to_snake_case` of a class name (`MultiHeadAttention` ->
/// `multi_head_attention`, `Conv2D` -> `conv2d`, `LSTM` -> `lstm`), which names the layer's
/// group in model.weights.h5.
pub fn class_snake(name: &str) -> String {
    let chars: Vec<char> = name.chars().filter(|c| c.is_alphanumeric() || *c == '_').collect();
    // re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    let mut first = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if i > 0 && c.is_ascii_uppercase() && chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase()) {
            first.push('_');
        }
        first.push(c);
        i += 1;
    }
    // re.sub("([a-z])([A-Z])", r"\1_\2", name)
    let chars: Vec<char> = first.chars().collect();
    let mut out = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if i > 0 && c.is_ascii_uppercase() && chars[i - 1].is_ascii_lowercase() {
            out.push('_');
        }
        out.push(c);
    }
    out.to_lowercase()
}

/// Keras' activation names to cortex-nn's and back (the rest are spelled the same).
const ACTIVATIONS: &[(&str, &str)] = &[
    ("leaky_relu", "leakyRelu"),
    ("log_softmax", "logSoftmax"),
    ("silu", "swish"),
];

fn activation_from_keras(v: &Value, layer: &str) -> Result<Value> {
    // Keras 3 may serialize an activation as {"class_name": "function", "config": "relu", ...}.
    let name = match v {
        Value::String(s) => s.clone(),
        Value::Object(o) => match o.get("config") {
            Some(Value::String(s)) => s.clone(),
            _ => {
                return Err(unsupported(
                    layer,
                    format!("activation {v} (a custom or parameterised activation)"),
                ))
            }
        },
        Value::Null => "linear".into(),
        other => return Err(unsupported(layer, format!("activation {other}"))),
    };
    let name = ACTIVATIONS
        .iter()
        .find(|(k, _)| *k == name)
        .map_or(name.clone(), |(_, c)| c.to_string());
    Ok(Value::String(name))
}

fn activation_to_keras(v: &Value) -> Value {
    match v.as_str() {
        Some(name) => {
            let name = ACTIVATIONS.iter().find(|(_, c)| *c == name).map_or(name, |(k, _)| k);
            let name = if name == "geluTanh" { "gelu" } else { name };
            Value::String(name.to_string())
        }
        None => v.clone(),
    }
}

pub(crate) fn unsupported(layer: &str, what: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("layer '{layer}': {what} is not supported by cortex-nn"))
}

fn is_default(v: &Value, default: &str) -> bool {
    let d: Value = serde_json::from_str(default).unwrap_or(Value::Null);
    match (v, &d) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        _ => *v == d,
    }
}

/// Keras layer classes cortex-nn reads under another name.
const CLASS_ALIASES: &[(&str, &str)] = &[
    ("Convolution2D", "Conv2D"),
    ("Convolution1D", "Conv1D"),
    ("MaxPool2D", "MaxPooling2D"),
    ("AvgPool2D", "AveragePooling2D"),
    ("GlobalAvgPool2D", "GlobalAveragePooling2D"),
    ("GlobalAvgPool1D", "GlobalAveragePooling1D"),
    ("Conv2DTranspose", "Conv2DTranspose"),
];

/// The cortex-nn class for a Keras class name.
pub fn class_from_keras(class: &str) -> &str {
    CLASS_ALIASES
        .iter()
        .find(|(k, _)| *k == class)
        .map_or(class, |(_, c)| c)
}

/// A Keras layer config (the `config` object) as cortex-nn's, for layer class `class`.
pub fn config_from_keras(class: &str, config: &Value) -> Result<Value> {
    let map = config
        .as_object()
        .ok_or_else(|| Error::Invalid(format!("a {class} layer's config must be an object, got {config}")))?;
    let layer = map.get("name").and_then(Value::as_str).unwrap_or(class).to_string();
    let mut out = Map::new();
    for (key, value) in map {
        if IGNORED.contains(&key.as_str()) {
            continue;
        }
        // Keras 3 records the default attention axis of a (batch, time, features) input as [1].
        if key == "attention_axes" && value == &json!([1]) {
            continue;
        }
        if key == "backward_layer" {
            check_mirror(&layer, map.get("layer"), value)?;
            continue;
        }
        let supported = SUPPORTED.iter().any(|(c, k)| *c == class && *k == key);
        if let Some((_, default)) = DEFAULTS.iter().find(|(k, _)| k == key) {
            if !supported {
                if !is_default(value, default) {
                    return Err(unsupported(&layer, format!("{key} = {value} (on a {class})")));
                }
                continue;
            }
        }
        if value.is_null() {
            continue;
        }
        let converted = match key.as_str() {
            "activation" | "recurrent_activation" => activation_from_keras(value, &layer)?,
            // Bidirectional wraps a layer config of its own.
            "layer" => {
                let inner_class = value.get("class_name").and_then(Value::as_str).unwrap_or("");
                let inner_class = class_from_keras(inner_class);
                let mut inner = value.get("config").cloned().unwrap_or(Value::Null);
                // Bidirectional sets zero_output_for_mask on its halves (masked steps output
                // zeros when returning sequences); cortex-nn's Bidirectional does the same.
                if let Some(m) = inner.as_object_mut() {
                    m.remove("zero_output_for_mask");
                }
                let mut inner = config_from_keras(inner_class, &inner)?;
                if let Some(m) = inner.as_object_mut() {
                    m.remove("trainable");
                }
                json!({"className": inner_class, "config": inner})
            }
            _ => value.clone(),
        };
        out.insert(camel(key), converted);
    }
    Ok(Value::Object(out))
}

/// Keys cortex-nn writes that Keras reads under another name or not at all.
const DROPPED_ON_SAVE: &[&str] = &[
    "inputShape",
    "kernelInitializer",
    "biasInitializer",
    "recurrentInitializer",
    "embeddingsInitializer",
    "gammaInitializer",
    "betaInitializer",
    "movingMeanInitializer",
    "movingVarianceInitializer",
];

/// cortex-nn's config of a layer as Keras 3 writes it (`{module, class_name, config,
/// registered_name}`), for a `.keras` config.json or a tfjs modelTopology.
pub fn layer_to_keras(class: &str, config: &Value) -> Result<Value> {
    let map = config
        .as_object()
        .ok_or_else(|| Error::Invalid(format!("a {class} layer's config must be an object, got {config}")))?;
    let layer = map.get("name").and_then(Value::as_str).unwrap_or(class).to_string();
    if class == "EIDense" || class == "EIRNN" {
        return Err(Error::Invalid(format!(
            "layer '{layer}': {class} (Dale's law sign constraints) has no Keras or TensorFlow.js equivalent; \
             save the model in the cortex format"
        )));
    }
    if class == "PositionalEmbedding" {
        return Err(Error::Invalid(format!(
            "layer '{layer}': PositionalEmbedding has no Keras 3 core equivalent (keras_hub's PositionEmbedding \
             differs); it cannot be written to a Keras file"
        )));
    }
    let mut out = Map::new();
    out.insert("name".into(), json!(layer));
    out.insert(
        "trainable".into(),
        json!(map.get("trainable").and_then(Value::as_bool).unwrap_or(true)),
    );
    out.insert("dtype".into(), dtype_policy());
    for (key, value) in map {
        if DROPPED_ON_SAVE.contains(&key.as_str()) || key == "name" || key == "trainable" {
            continue;
        }
        let converted = match key.as_str() {
            "activation" | "recurrentActivation" => activation_to_keras(value),
            "layer" => {
                let inner_class = value.get("className").and_then(Value::as_str).unwrap_or("");
                let inner = value.get("config").cloned().unwrap_or(Value::Null);
                layer_to_keras(inner_class, &inner)?
            }
            "attentionMaskInput" | "returnAttentionScores" if value == &Value::Bool(true) => {
                return Err(Error::Invalid(format!(
                    "layer '{layer}': {key} has no Keras config equivalent (in Keras it is a call argument)"
                )))
            }
            "attentionMaskInput" | "returnAttentionScores" | "useCausalMask" => continue,
            _ => value.clone(),
        };
        out.insert(snake(key), converted);
    }
    Ok(json!({
        "module": "keras.layers",
        "class_name": class,
        "config": Value::Object(out),
        "registered_name": null,
    }))
}

/// Keras 3's float32 dtype policy object.
pub fn dtype_policy() -> Value {
    json!({"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}, "registered_name": null})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_names_snake_like_keras() {
        for (class, want) in [
            ("MultiHeadAttention", "multi_head_attention"),
            ("Conv2D", "conv2d"),
            ("LSTM", "lstm"),
            ("GRU", "gru"),
            ("SimpleRNN", "simple_rnn"),
            ("GlobalAveragePooling1D", "global_average_pooling1d"),
            ("Conv2DTranspose", "conv2d_transpose"),
            ("UpSampling2D", "up_sampling2d"),
            ("BatchNormalization", "batch_normalization"),
            ("InputLayer", "input_layer"),
        ] {
            assert_eq!(class_snake(class), want, "{class}");
        }
    }

    #[test]
    fn keys_change_case_both_ways() {
        assert_eq!(camel("return_sequences"), "returnSequences");
        assert_eq!(snake("returnSequences"), "return_sequences");
        assert_eq!(snake("dilationRate"), "dilation_rate");
    }

    #[test]
    fn refuses_regularizers_and_channels_first_naming_the_layer() {
        let cfg = json!({"name": "d1", "units": 3, "kernel_regularizer": {"class_name": "L2"}});
        let e = config_from_keras("Dense", &cfg).unwrap_err().to_string();
        assert!(e.contains("'d1'") && e.contains("kernel_regularizer"), "{e}");
        let cfg = json!({"name": "c", "filters": 3, "kernel_size": [3, 3], "data_format": "channels_first"});
        assert!(config_from_keras("Conv2D", &cfg).is_err());
    }

    #[test]
    fn converts_a_keras_lstm_config() {
        let cfg = json!({"name": "l", "units": 4, "activation": "tanh", "recurrent_activation": "sigmoid",
            "return_sequences": true, "dropout": 0.0, "recurrent_dropout": 0.0, "stateful": false,
            "unroll": false, "kernel_initializer": {"class_name": "GlorotUniform"}, "seed": null});
        let c = config_from_keras("LSTM", &cfg).unwrap();
        assert_eq!(
            c,
            json!({"name": "l", "units": 4, "activation": "tanh", "recurrentActivation": "sigmoid", "returnSequences": true})
        );
    }
}
