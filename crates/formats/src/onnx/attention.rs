//! MultiHeadAttention as a MatMul/Softmax subgraph (opset 17 has no attention op).
//!
//! Projections are Keras EinsumDense kernels `[d, heads, dim]` (row-major the same as a dense
//! `[d, heads*dim]`), the output kernel `[heads, vdim, out]` likewise `[heads*vdim, out]`.
//! Masks (the causal rule `j <= i`, Keras query/value/key masks, an explicit `[b, tq, tv]`
//! attention-mask input) combine into one "allowed" tensor; scores where it is 0 are replaced
//! by -1e30 before the softmax and the probabilities are multiplied by it afterwards, so a
//! fully masked query row gets all-zero probabilities, as in the engine.

use cortex_core::Result;

use super::core::linear;
use super::graph::{Builder, LayerCtx, Value};
use super::proto::{Attr, FLOAT};

/// MultiHeadAttention; `None` for other classes.
pub fn emit(b: &mut Builder, l: &LayerCtx, ins: &[Value]) -> Option<Result<Vec<Value>>> {
    (l.class == "MultiHeadAttention").then(|| mha(b, l, ins))
}

fn heads_first(b: &mut Builder, x: &str, t: usize, h: usize, d: usize, perm: &[i64], hint: &str) -> String {
    let r = b.reshape_batch(x, &[t, h, d], hint);
    b.transpose(&r, perm, hint)
}

fn mha(b: &mut Builder, l: &LayerCtx, ins: &[Value]) -> Result<Vec<Value>> {
    let explicit_input = l.bool("attentionMaskInput", false);
    let (tensors, explicit) = if explicit_input {
        (&ins[..ins.len() - 1], ins.last())
    } else {
        (ins, None)
    };
    // A single input is self-attention (the layer's `forward`).
    let query = &tensors[0];
    let value = tensors.get(1).unwrap_or(query);
    let key = tensors.get(2).unwrap_or(value);
    let h = l.usize("numHeads", 1);
    let kd = l.usize("keyDim", 1);
    let vd = l.usize("valueDim", kd);
    let (tq, dq) = (query.shape[0], query.shape[1]);
    let (tv, dv, dk) = (value.shape[0], value.shape[1], key.shape[1]);
    let out_dim = l.maybe("attention_output/kernel").map_or(dq, |(s, _)| s[2]);
    let n = &l.name;

    let q = linear(b, l, &query.name, "query/", dq, h * kd)?;
    let k = linear(b, l, &key.name, "key/", dk, h * kd)?;
    let v = linear(b, l, &value.name, "value/", dv, h * vd)?;
    let q = heads_first(b, &q, tq, h, kd, &[0, 2, 1, 3], n); // [b, h, tq, kd]
    let k = heads_first(b, &k, tv, h, kd, &[0, 2, 3, 1], n); // [b, h, kd, tv]
    let v = heads_first(b, &v, tv, h, vd, &[0, 2, 1, 3], n); // [b, h, tv, vd]
                                                             // The engine scales the queries by 1/sqrt(kd) before the product.
    let scale = b.scalar(1.0 / (kd as f32).sqrt());
    let q = b.op("Mul", &[&q, &scale], vec![], n);
    let scores = b.op("MatMul", &[&q, &k], vec![], n); // [b, h, tq, tv]

    // Data-dependent masks, as float 0/1 factors broadcasting to [b, h, tq, tv].
    let mut factors: Vec<String> = Vec::new();
    let mask_of = |v: &Value| -> Result<Option<String>> {
        match &v.mask {
            Some(m) if m.dims.len() != 1 => Err(l.unsupported("an input mask is not [batch, time]")),
            m => Ok(m.as_ref().map(|m| m.name.clone())),
        }
    };
    let (qm, vm) = (mask_of(query)?, mask_of(value)?);
    let km = if tensors.len() == 3 { mask_of(key)? } else { None };
    let value_mask = match (vm, km) {
        (Some(a), Some(c)) => Some(b.op("Mul", &[&a, &c], vec![], n)),
        (a, c) => a.or(c),
    };
    if let Some(m) = &qm {
        factors.push(b.unsqueeze(m, &[1, 3], n));
    }
    if let Some(m) = value_mask {
        factors.push(b.unsqueeze(&m, &[1, 2], n));
    }
    if let Some(m) = explicit {
        // Entries > 0.5 keep, as the engine reads masks.
        let half = b.scalar(0.5);
        let keep = b.op("Greater", &[&m.name, &half], vec![], n);
        let keep = b.op("Cast", &[&keep], vec![("to", Attr::Int(i64::from(FLOAT)))], n);
        factors.push(b.unsqueeze(&keep, &[1], n));
    }
    let causal = l.bool("useCausalMask", false);
    let mut allowed = None;
    if causal {
        let lower: Vec<f32> = (0..tq)
            .flat_map(|i| (0..tv).map(move |j| if j <= i { 1.0 } else { 0.0 }))
            .collect();
        let c = b.weight(&format!("{n}/causal_mask"), &[tq, tv], lower);
        allowed = Some(c);
    }
    let data_masks = !factors.is_empty();
    for f in factors {
        allowed = Some(match allowed {
            None => f,
            Some(a) => b.op("Mul", &[&a, &f], vec![], n),
        });
    }
    let probs = match &allowed {
        None => b.op("Softmax", &[&scores], vec![("axis", Attr::Int(-1))], n),
        Some(a) => {
            let half = b.scalar(0.5);
            let keep = b.op("Greater", &[a, &half], vec![], n);
            let low = b.scalar(-1e30);
            let masked = b.op("Where", &[&keep, &scores, &low], vec![], n);
            let p = b.op("Softmax", &[&masked], vec![("axis", Attr::Int(-1))], n);
            if data_masks {
                // Zero rows with nothing to attend to (the causal rule alone never empties one).
                b.op("Mul", &[&p, a], vec![], n)
            } else {
                p
            }
        }
    };
    let o = b.op("MatMul", &[&probs, &v], vec![], n); // [b, h, tq, vd]
    let o = b.transpose(&o, &[0, 2, 1, 3], n);
    let o = b.reshape_batch(&o, &[tq, h * vd], n);
    let y = linear(b, l, &o, "attention_output/", h * vd, out_dim)?;
    let mut out = vec![Value::new(y, vec![tq, out_dim])];
    if l.bool("returnAttentionScores", false) {
        out.push(Value::new(probs, vec![h, tq, tv]));
    }
    Ok(out)
}
