//! Core layers: activations, Dense, Dropout, Flatten, Reshape, the merge layers, the
//! normalizations and the embeddings. Everything stays channels-last, so these are plain
//! last-axis ONNX ops with broadcasting over the dynamic batch axis.

use cortex_core::Result;

use super::graph::{Builder, LayerCtx, Mask, Value};
use super::proto::{Attr, INT64};

/// Applies the named Keras activation (every name the engine's `ActivationSpec` parses).
/// Formulas follow the engine's (`cpu::elementwise::Activation`): ELU alpha 1, leaky slope 0.2,
/// exact GELU through `Erf` (the `Gelu` op only exists from opset 20).
pub fn activation(b: &mut Builder, l: &LayerCtx, x: &str, name: &str) -> Result<String> {
    let h = format!("{}/{name}", l.name);
    let unary = |b: &mut Builder, op: &str, attrs| b.op(op, &[x], attrs, &h);
    Ok(match name {
        "linear" | "none" => x.to_string(),
        "relu" => unary(b, "Relu", vec![]),
        "sigmoid" => unary(b, "Sigmoid", vec![]),
        "tanh" => unary(b, "Tanh", vec![]),
        "softmax" => unary(b, "Softmax", vec![("axis", Attr::Int(-1))]),
        "log_softmax" | "logSoftmax" => unary(b, "LogSoftmax", vec![("axis", Attr::Int(-1))]),
        "elu" => unary(b, "Elu", vec![("alpha", Attr::Float(1.0))]),
        // ONNX's default alpha/gamma are the same self-normalising constants.
        "selu" => unary(b, "Selu", vec![]),
        "leaky_relu" | "leakyRelu" => unary(b, "LeakyRelu", vec![("alpha", Attr::Float(0.2))]),
        "softplus" => unary(b, "Softplus", vec![]),
        "swish" | "silu" => {
            let s = unary(b, "Sigmoid", vec![]);
            b.op("Mul", &[x, &s], vec![], &h)
        }
        "gelu" => {
            // 0.5 x (1 + erf(x / sqrt 2))
            let r = b.scalar(std::f32::consts::FRAC_1_SQRT_2);
            let xs = b.op("Mul", &[x, &r], vec![], &h);
            let e = b.op("Erf", &[&xs], vec![], &h);
            let one = b.scalar(1.0);
            let e1 = b.op("Add", &[&e, &one], vec![], &h);
            let half = b.scalar(0.5);
            let hx = b.op("Mul", &[x, &half], vec![], &h);
            b.op("Mul", &[&hx, &e1], vec![], &h)
        }
        "gelu_tanh" | "geluTanh" => {
            // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
            let x2 = b.op("Mul", &[x, x], vec![], &h);
            let x3 = b.op("Mul", &[&x2, x], vec![], &h);
            let c = b.scalar(0.044_715);
            let cx3 = b.op("Mul", &[&x3, &c], vec![], &h);
            let inner = b.op("Add", &[x, &cx3], vec![], &h);
            let k = b.scalar(0.797_884_6);
            let scaled = b.op("Mul", &[&inner, &k], vec![], &h);
            let t = b.op("Tanh", &[&scaled], vec![], &h);
            let one = b.scalar(1.0);
            let t1 = b.op("Add", &[&t, &one], vec![], &h);
            let half = b.scalar(0.5);
            let hx = b.op("Mul", &[x, &half], vec![], &h);
            b.op("Mul", &[&hx, &t1], vec![], &h)
        }
        other => return Err(l.unsupported(format!("activation '{other}' has no ONNX mapping"))),
    })
}

/// `x · W + b` on the last axis (MatMul broadcasts over every leading axis).
pub fn linear(b: &mut Builder, l: &LayerCtx, x: &str, prefix: &str, din: usize, dout: usize) -> Result<String> {
    let (_, k) = l.param(&format!("{prefix}kernel"))?;
    let w = b.weight(&format!("{}/{prefix}kernel", l.name), &[din, dout], k.to_vec());
    let y = b.op("MatMul", &[x, &w], vec![], &l.name);
    Ok(match l.maybe(&format!("{prefix}bias")) {
        Some((_, bias)) => {
            let bn = b.weight(&format!("{}/{prefix}bias", l.name), &[dout], bias.to_vec());
            b.op("Add", &[&y, &bn], vec![], &l.name)
        }
        None => y,
    })
}

/// Dense, Activation, Dropout, Flatten, Reshape, the merges, the normalizations, the embeddings;
/// `None` for other classes.
pub fn emit(b: &mut Builder, l: &LayerCtx, ins: &[Value]) -> Option<Result<Vec<Value>>> {
    let one = |v: Result<Value>| Some(v.map(|v| vec![v]));
    let x = &ins[0];
    match l.class.as_str() {
        "Dense" => one(dense(b, l, x)),
        "Activation" => {
            one(activation(b, l, &x.name, &l.str("activation", "linear")).map(|n| Value::new(n, x.shape.clone())))
        }
        // Inference graph: dropout is the identity.
        "Dropout" => one(Ok(Value::new(x.name.clone(), x.shape.clone()))),
        "Flatten" => {
            let n: usize = x.shape.iter().product();
            // Keras flattens channels-last data row-major, which is exactly the layout here.
            one(Ok(Value::new(b.reshape_batch(&x.name, &[n], &l.name), vec![n])))
        }
        "Reshape" => {
            let target: Vec<usize> = l
                .config
                .get("targetShape")
                .and_then(|v| v.as_array())
                .map(|a| a.iter().filter_map(|d| d.as_u64().map(|d| d as usize)).collect())
                .unwrap_or_default();
            one(Ok(Value::new(b.reshape_batch(&x.name, &target, &l.name), target)))
        }
        "Add" | "Multiply" => {
            let op = if l.class == "Add" { "Add" } else { "Mul" };
            let mut acc = x.name.clone();
            for v in &ins[1..] {
                acc = b.op(op, &[&acc, &v.name], vec![], &l.name);
            }
            one(Ok(Value::new(acc, x.shape.clone())))
        }
        "Concatenate" => one(concatenate(b, l, ins)),
        "LayerNormalization" => one(layer_norm(b, l, x)),
        "BatchNormalization" => one(batch_norm(b, l, x)),
        "Embedding" => one(embedding(b, l, x)),
        "PositionalEmbedding" => one(positional(b, l, x)),
        _ => None,
    }
}

fn dense(b: &mut Builder, l: &LayerCtx, x: &Value) -> Result<Value> {
    let din = *x.shape.last().unwrap_or(&0);
    let units = l.usize("units", 0);
    let y = linear(b, l, &x.name, "", din, units)?;
    let y = activation(b, l, &y, &l.str("activation", "linear"))?;
    let mut shape = x.shape.clone();
    *shape.last_mut().expect("Dense input has rank >= 1") = units;
    Ok(Value::new(y, shape))
}

fn concatenate(b: &mut Builder, l: &LayerCtx, ins: &[Value]) -> Result<Value> {
    let rank = ins[0].shape.len() as i64;
    let axis = l.config.get("axis").and_then(|v| v.as_i64()).unwrap_or(-1);
    // Keras counts the batch axis; negative axes count from the end of the full rank.
    let full = if axis < 0 { rank + 1 + axis } else { axis };
    if full <= 0 || full > rank {
        return Err(l.unsupported(format!("axis {axis} out of range")));
    }
    let names: Vec<&str> = ins.iter().map(|v| v.name.as_str()).collect();
    let y = b.op("Concat", &names, vec![("axis", Attr::Int(full))], &l.name);
    let mut shape = ins[0].shape.clone();
    let a = full as usize - 1;
    shape[a] = ins.iter().map(|v| v.shape[a]).sum();
    Ok(Value::new(y, shape))
}

fn layer_norm(b: &mut Builder, l: &LayerCtx, x: &Value) -> Result<Value> {
    let c = *x.shape.last().unwrap_or(&0);
    let gamma = l.maybe("gamma").map_or_else(|| vec![1.0; c], |(_, d)| d.to_vec());
    let beta = l.maybe("beta").map_or_else(|| vec![0.0; c], |(_, d)| d.to_vec());
    let g = b.weight(&format!("{}/gamma", l.name), &[c], gamma);
    let be = b.weight(&format!("{}/beta", l.name), &[c], beta);
    let y = b.op(
        "LayerNormalization",
        &[&x.name, &g, &be],
        vec![
            ("axis", Attr::Int(-1)),
            ("epsilon", Attr::Float(l.f32("epsilon", 1e-3))),
        ],
        &l.name,
    );
    Ok(Value::new(y, x.shape.clone()))
}

/// Inference-mode batch normalization over the last axis as one multiply-add with the moving
/// statistics folded in (`scale = gamma / sqrt(var + eps)`, `shift = beta - mean * scale`, in
/// f64): channels-last, so no transpose is needed around an NCHW `BatchNormalization` op.
fn batch_norm(b: &mut Builder, l: &LayerCtx, x: &Value) -> Result<Value> {
    let c = *x.shape.last().unwrap_or(&0);
    let eps = f64::from(l.f32("epsilon", 1e-3));
    let (_, mean) = l.param("moving_mean")?;
    let (_, var) = l.param("moving_variance")?;
    let gamma = l.maybe("gamma").map(|(_, d)| d);
    let beta = l.maybe("beta").map(|(_, d)| d);
    let mut scale = Vec::with_capacity(c);
    let mut shift = Vec::with_capacity(c);
    for i in 0..c {
        let s = gamma.map_or(1.0, |g| f64::from(g[i])) / (f64::from(var[i]) + eps).sqrt();
        scale.push(s as f32);
        shift.push((beta.map_or(0.0, |bt| f64::from(bt[i])) - f64::from(mean[i]) * s) as f32);
    }
    let s = b.weight(&format!("{}/scale", l.name), &[c], scale);
    let t = b.weight(&format!("{}/shift", l.name), &[c], shift);
    let y = b.op("Mul", &[&x.name, &s], vec![], &l.name);
    let y = b.op("Add", &[&y, &t], vec![], &l.name);
    Ok(Value::new(y, x.shape.clone()))
}

fn embedding(b: &mut Builder, l: &LayerCtx, x: &Value) -> Result<Value> {
    let (shape, table) = l.param("embeddings")?;
    let (rows, dim) = (shape[0], shape[1]);
    let t = b.weight(&format!("{}/embeddings", l.name), &[rows, dim], table.to_vec());
    // The model's inputs are float32 (as predict takes them); indices are whole numbers.
    let idx = b.op("Cast", &[&x.name], vec![("to", Attr::Int(i64::from(INT64)))], &l.name);
    let y = b.op("Gather", &[&t, &idx], vec![("axis", Attr::Int(0))], &l.name);
    let mut out = x.shape.clone();
    out.push(dim);
    let mut v = Value::new(y, out);
    if l.bool("maskZero", false) {
        // mask = float(index != 0), as the engine's Embedding sets it.
        let zero = b.ints(&[0]);
        let eq = b.op("Equal", &[&idx, &zero], vec![], &format!("{}/mask", l.name));
        let ne = b.op("Not", &[&eq], vec![], &format!("{}/mask", l.name));
        let m = b.op(
            "Cast",
            &[&ne],
            vec![("to", Attr::Int(i64::from(super::proto::FLOAT)))],
            &format!("{}/mask", l.name),
        );
        v.mask = Some(Mask {
            name: m,
            dims: x.shape.clone(),
        });
    }
    Ok(v)
}

fn positional(b: &mut Builder, l: &LayerCtx, x: &Value) -> Result<Value> {
    let (shape, table) = l.param("embeddings")?;
    let dim = shape[1];
    let t = x.shape[0];
    // Only the first `t` positions are ever added (the input length is fixed in the graph).
    let p = b.weight(&format!("{}/embeddings", l.name), &[t, dim], table[..t * dim].to_vec());
    let y = b.op("Add", &[&x.name, &p], vec![], &l.name);
    Ok(Value::new(y, x.shape.clone()))
}
