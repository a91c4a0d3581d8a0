//! MultiHeadAttention on the GPU: Q/K/V projections written straight into the
//! `[batch, seq, heads, key_dim]` layout of cortex-wgpu's fused flash-attention kernel, the
//! kernel itself (forward, and backward by recomputation), and the output projection.

use cortex_wgpu::{Gpu, GpuTensor, MatmulKernel};
use serde_json::Value;

use super::steps::accumulate;
use super::{gpu_err, unsupported};
use crate::{Error, Result};

/// Largest head size the fused kernel takes.
const MAX_KEY_DIM: usize = 64;

/// A planned MultiHeadAttention layer: sizes and the indices of its weights.
#[derive(Clone, Debug)]
pub(crate) struct MhaPlan {
    heads: usize,
    key_dim: usize,
    causal: bool,
    /// Kernel and optional bias of the query, key, value and output projections.
    kernels: [usize; 4],
    biases: [Option<usize>; 4],
}

/// Checks a MultiHeadAttention config against what the GPU path implements.
pub(super) fn plan_mha(name: &str, config: &Value, first: usize, count: usize) -> Result<MhaPlan> {
    let num = |k: &str| config.get(k).and_then(Value::as_f64);
    let flag = |k: &str| config.get(k).and_then(Value::as_bool).unwrap_or(false);
    let heads = num("numHeads").unwrap_or(0.0) as usize;
    let key_dim = num("keyDim").unwrap_or(0.0) as usize;
    let value_dim = num("valueDim").map_or(key_dim, |v| v as usize);
    let lacks = |what: &str| Err(unsupported(&format!("MultiHeadAttention {what} (layer '{name}')")));
    if value_dim != key_dim {
        return lacks("with valueDim != keyDim");
    }
    if key_dim == 0 || key_dim > MAX_KEY_DIM {
        return lacks(&format!("with keyDim {key_dim} (1..={MAX_KEY_DIM} on the GPU)"));
    }
    if num("dropout").unwrap_or(0.0) > 0.0 {
        return lacks("attention dropout");
    }
    if flag("returnAttentionScores") {
        return lacks("returnAttentionScores (the fused kernel never forms the scores)");
    }
    if flag("attentionMaskInput") {
        return lacks("attention masks");
    }
    let use_bias = config.get("useBias").and_then(Value::as_bool).unwrap_or(true);
    let per = if use_bias { 2 } else { 1 };
    if count != 4 * per {
        return Err(Error::Invalid(format!(
            "gpu: MultiHeadAttention '{name}' has {count} weights, expected {}",
            4 * per
        )));
    }
    let kernels = [0, 1, 2, 3].map(|i| first + i * per);
    let biases = [0, 1, 2, 3].map(|i| use_bias.then_some(first + i * per + 1));
    Ok(MhaPlan {
        heads,
        key_dim,
        causal: flag("useCausalMask"),
        kernels,
        biases,
    })
}

/// The layer's device weights, kernels viewed as 2-D matrices.
pub(super) struct MhaWeights {
    kernels: [GpuTensor; 4],
    biases: [Option<GpuTensor>; 4],
}

impl MhaWeights {
    /// Views of `w`'s tensors: Q/K/V kernels `[d, heads * key_dim]`, the output kernel
    /// `[heads * key_dim, d_out]`, biases flat (Keras stores `[d, heads, key_dim]` and
    /// `[heads, key_dim, d_out]`, the same bytes).
    pub(super) fn of(plan: &MhaPlan, w: &[GpuTensor]) -> MhaWeights {
        let hk = plan.heads * plan.key_dim;
        let kernels = [0, 1, 2, 3].map(|i| {
            let t = w[plan.kernels[i]].clone();
            let rows = if i == 3 { hk } else { t.len() / hk.max(1) };
            let shape = [rows, t.len() / rows.max(1)];
            t.clone().reshape(&shape).unwrap_or(t)
        });
        let biases = plan.biases.map(|b| b.map(|b| w[b].clone()));
        MhaWeights { kernels, biases }
    }
}

/// What backward needs: the projection inputs (2-D), the projected heads, the attention
/// output and its logsumexp.
pub(super) struct MhaTape {
    inputs: [GpuTensor; 3],
    q: GpuTensor,
    k: GpuTensor,
    v: GpuTensor,
    attended: GpuTensor,
    lse: GpuTensor,
    /// Number of layer inputs (2: key is value; 3: query, value, key).
    arity: usize,
    out_shape: Vec<usize>,
}

fn rows2d(x: &GpuTensor) -> Result<GpuTensor> {
    let s = x.shape();
    if s.len() != 3 {
        return Err(Error::Invalid(format!(
            "gpu: MultiHeadAttention expects [batch, seq, features] inputs, got {s:?}"
        )));
    }
    x.clone().reshape(&[s[0] * s[1], s[2]]).map_err(gpu_err)
}

/// Forward pass on `[query, value]` or `[query, value, key]` (a single input attends to itself).
pub(super) fn mha_forward(
    g: &Gpu,
    mm: MatmulKernel,
    plan: &MhaPlan,
    w: &MhaWeights,
    xs: Vec<GpuTensor>,
) -> Result<(GpuTensor, MhaTape)> {
    let arity = xs.len();
    let (query, value, key) = match xs.as_slice() {
        [q] => (q.clone(), q.clone(), q.clone()),
        [q, v] => (q.clone(), v.clone(), v.clone()),
        [q, v, k] => (q.clone(), v.clone(), k.clone()),
        _ => {
            return Err(Error::Invalid(format!(
                "gpu: MultiHeadAttention takes 1-3 inputs, got {arity}"
            )))
        }
    };
    let (b, tq, tk) = (query.shape()[0], query.shape()[1], key.shape()[1]);
    let inputs = [rows2d(&query)?, rows2d(&key)?, rows2d(&value)?];
    let project = |i: usize, x: &GpuTensor, t: usize| -> Result<GpuTensor> {
        let mut y = g.matmul_on(x, &w.kernels[i], false, false, mm).map_err(gpu_err)?;
        if let Some(bias) = &w.biases[i] {
            y = g.bias_add(&y, bias).map_err(gpu_err)?;
        }
        y.reshape(&[b, t, plan.heads, plan.key_dim]).map_err(gpu_err)
    };
    let q = project(0, &inputs[0], tq)?;
    let k = project(1, &inputs[1], tk)?;
    let v = project(2, &inputs[2], tk)?;
    let out = g.attention_forward(&q, &k, &v, plan.causal).map_err(gpu_err)?;
    let flat = out
        .out
        .clone()
        .reshape(&[b * tq, plan.heads * plan.key_dim])
        .map_err(gpu_err)?;
    let mut y = g.matmul_on(&flat, &w.kernels[3], false, false, mm).map_err(gpu_err)?;
    if let Some(bias) = &w.biases[3] {
        y = g.bias_add(&y, bias).map_err(gpu_err)?;
    }
    let out_shape = vec![b, tq, y.shape()[1]];
    let y = y.reshape(&out_shape).map_err(gpu_err)?;
    let tape = MhaTape {
        inputs,
        q,
        k,
        v,
        attended: flat,
        lse: out.lse,
        arity,
        out_shape,
    };
    Ok((y, tape))
}

/// Backward pass: weight gradients into `grads`, and one gradient per layer input.
pub(super) fn mha_backward(
    g: &Gpu,
    mm: MatmulKernel,
    plan: &MhaPlan,
    w: &MhaWeights,
    tape: MhaTape,
    dy: GpuTensor,
    grads: &mut [Option<GpuTensor>],
) -> Result<Vec<Option<GpuTensor>>> {
    let [b, tq, d_out] = [tape.out_shape[0], tape.out_shape[1], tape.out_shape[2]];
    let dy = dy.reshape(&[b * tq, d_out]).map_err(gpu_err)?;
    accumulate(
        g,
        &mut grads[plan.kernels[3]],
        g.matmul_on(&tape.attended, &dy, true, false, mm).map_err(gpu_err)?,
    )?;
    if let Some(i) = plan.biases[3] {
        accumulate(g, &mut grads[i], g.sum_rows(&dy).map_err(gpu_err)?)?;
    }
    let d_attended = g.matmul_on(&dy, &w.kernels[3], false, true, mm).map_err(gpu_err)?;
    let d_attended = d_attended.reshape(tape.q.shape()).map_err(gpu_err)?;
    let attended = tape.attended.reshape(tape.q.shape()).map_err(gpu_err)?;
    let back = g
        .attention_backward(
            &tape.q,
            &tape.k,
            &tape.v,
            &attended,
            &tape.lse,
            &d_attended,
            plan.causal,
        )
        .map_err(gpu_err)?;
    let hk = plan.heads * plan.key_dim;
    let mut d_inputs = Vec::with_capacity(3);
    for (i, d_proj) in [back.dq, back.dk, back.dv].into_iter().enumerate() {
        let rows = tape.inputs[i].shape()[0];
        let d_proj = d_proj.reshape(&[rows, hk]).map_err(gpu_err)?;
        let dw = g
            .matmul_on(&tape.inputs[i], &d_proj, true, false, mm)
            .map_err(gpu_err)?;
        accumulate(g, &mut grads[plan.kernels[i]], dw)?;
        if let Some(bi) = plan.biases[i] {
            accumulate(g, &mut grads[bi], g.sum_rows(&d_proj).map_err(gpu_err)?)?;
        }
        d_inputs.push(g.matmul_on(&d_proj, &w.kernels[i], false, true, mm).map_err(gpu_err)?);
    }
    let [dq, dk, dv]: [GpuTensor; 3] = d_inputs.try_into().map_err(|_| Error::Invalid("gpu: mha".into()))?;
    let shaped = |d: GpuTensor, like: &GpuTensor| -> Result<GpuTensor> {
        let rows = like.shape()[0];
        d.reshape(&[b, rows / b.max(1), like.shape()[1]]).map_err(gpu_err)
    };
    let dq = shaped(dq, &tape.inputs[0])?;
    let dk = shaped(dk, &tape.inputs[1])?;
    let dv = shaped(dv, &tape.inputs[2])?;
    Ok(match tape.arity {
        1 => vec![Some(g.add(&g.add(&dq, &dk).map_err(gpu_err)?, &dv).map_err(gpu_err)?)],
        2 => vec![Some(dq), Some(g.add(&dv, &dk).map_err(gpu_err)?)],
        _ => vec![Some(dq), Some(dv), Some(dk)],
    })
}
