//! Multi-head scaled dot-product attention on GPU tensors, behind `cpu::attention`'s entry
//! point. The common case (no padding or explicit mask, no dropout, scores not returned, equal
//! key and value sizes up to 64) runs cortex-wgpu's flash attention, forward and backward,
//! never materialising the score matrix. Everything else is composed from primitive kernels
//! (head swap, batched matmul, softmax, elementwise products): it stores the `[b, h, tq, tv]`
//! probabilities, as Keras does, and follows the CPU's masking and dropout exactly.

use cortex_wgpu::{Gpu, GpuTensor};

use super::gpu::{buf, grad, run};
use crate::backprop::{GpuCustomOp, Op};
use crate::cpu::attention::{AttnOptions, Dims};
use crate::device::gpu_err;
use crate::{ops, Error, Result, Tensor};

/// The flash kernels' largest head size.
const MAX_HEAD: usize = 64;

/// Added to masked scores before the softmax: `exp` of it is exactly 0 next to any real score,
/// and a row with nothing allowed is zeroed by the mask product after the softmax (Keras'
/// "large negative number" and its `softmax * mask`).
const MASKED: f32 = 1e9;

/// `softmax(q kᵀ / sqrt(kd)) v` per head for projected `q [b, tq, h*kd]`, `k [b, tv, h*kd]`,
/// `v [b, tv, h*vd]`: `[b, tq, h*vd]`, and the probabilities `[b, h, tq, tv]` when asked for.
pub(crate) fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    opts: &AttnOptions,
    d: &Dims,
) -> Result<(Tensor, Option<Tensor>)> {
    let m = &opts.mask;
    let dropout = opts.dropout.filter(|dr| dr.rate > 0.0);
    let plain_mask = m.query.is_none() && m.value.is_none() && m.explicit.is_none();
    if plain_mask && dropout.is_none() && !opts.return_scores && d.kd == d.vd && d.kd <= MAX_HEAD {
        return Ok((flash(q, k, v, m.causal, d)?, None));
    }
    let allowed = (!m.is_empty()).then(|| m.allowed(d));
    let keep = dropout.map(|dr| {
        let block = d.tq * d.tv;
        let mut keep = vec![0.0; d.b * d.h * block];
        for (bh, part) in keep.chunks_exact_mut(block.max(1)).enumerate() {
            dr.fill(bh, 0, 0, d.tv, part);
        }
        keep
    });
    composed(q, k, v, allowed, keep, opts.return_scores, d)
}

fn flash(q: &Tensor, k: &Tensor, v: &Tensor, causal: bool, d: &Dims) -> Result<Tensor> {
    let Dims { b, h, tq, tv, kd, vd } = *d;
    let heads = |t: &Tensor, steps: usize| buf(t)?.reshape(&[b, steps, h, kd]).map_err(gpu_err);
    let (gq, gk, gv) = (heads(q, tq)?, heads(k, tv)?, heads(v, tv)?);
    let out = run(|gpu| gpu.attention_forward(&gq, &gk, &gv, causal))?;
    let y = out.out.clone().reshape(&[b, tq, h * vd]).map_err(gpu_err)?;
    Ok(Tensor::from_gpu_op(
        y,
        vec![b, tq, h * vd],
        |_| {
            Op::GpuCustom(Box::new(FlashBackward {
                inputs: [q.clone(), k.clone(), v.clone()],
                heads: [gq, gk, gv],
                out: out.out,
                lse: out.lse,
                causal,
            }))
        },
        &[q, k, v],
    ))
}

struct FlashBackward {
    inputs: [Tensor; 3],
    /// q, k, v as `[b, steps, heads, head size]` views.
    heads: [GpuTensor; 3],
    out: GpuTensor,
    lse: GpuTensor,
    causal: bool,
}

impl GpuCustomOp for FlashBackward {
    fn name(&self) -> &'static str {
        "attention"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        self.inputs.iter().collect()
    }
    fn vjp(&self, dy: &GpuTensor) -> Result<Vec<(Tensor, Tensor)>> {
        let [q, k, v] = &self.heads;
        let dout = dy.clone().reshape(self.out.shape()).map_err(gpu_err)?;
        let g = run(|gpu| gpu.attention_backward(q, k, v, &self.out, &self.lse, &dout, self.causal))?;
        let mut result = Vec::with_capacity(3);
        for (t, d) in self.inputs.iter().zip([g.dq, g.dk, g.dv]) {
            result.push((t.clone(), grad(d.reshape(t.shape()).map_err(gpu_err)?)));
        }
        Ok(result)
    }
}

/// `[b, steps, h*size]` as head-major `[b*h, steps, size]`, and back.
fn to_heads(gpu: &Gpu, x: &GpuTensor, d: &Dims, steps: usize, size: usize) -> cortex_wgpu::Result<GpuTensor> {
    gpu.swap_axes12(&x.clone().reshape(&[d.b, steps, d.h, size])?)?
        .reshape(&[d.b * d.h, steps, size])
}

fn from_heads(gpu: &Gpu, x: &GpuTensor, d: &Dims, steps: usize, size: usize) -> cortex_wgpu::Result<GpuTensor> {
    gpu.swap_axes12(&x.clone().reshape(&[d.b, d.h, steps, size])?)?
        .reshape(&[d.b, steps, d.h * size])
}

/// What the composed backward reads: the head-major inputs (q already scaled), the softmax
/// output, the probabilities after mask and dropout, and the mask and keep factors.
struct Composed {
    inputs: [Tensor; 3],
    d: Dims,
    qh: GpuTensor,
    kh: GpuTensor,
    vh: GpuTensor,
    softmax: GpuTensor,
    dropped: GpuTensor,
    allowed: Option<GpuTensor>,
    keep: Option<GpuTensor>,
    /// Output length when the probabilities are packed after the output.
    packed_scores: Option<usize>,
}

fn composed(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    allowed: Option<Vec<f32>>,
    keep: Option<Vec<f32>>,
    return_scores: bool,
    d: &Dims,
) -> Result<(Tensor, Option<Tensor>)> {
    let Dims { b, h, tq, tv, kd, vd } = *d;
    let (gq, gk, gv) = (buf(q)?, buf(k)?, buf(v)?);
    let o_len = b * tq * h * vd;
    let p_shape = [b * h, tq, tv];
    let (out, saved) = run(|gpu| {
        let upload = |x: Option<Vec<f32>>| x.map(|x| gpu.upload(&x, &p_shape)).transpose();
        let (allowed, keep) = (upload(allowed)?, upload(keep)?);
        let qh = gpu.scale(&to_heads(gpu, &gq, d, tq, kd)?, 1.0 / (kd as f32).sqrt(), 0.0)?;
        let (kh, vh) = (to_heads(gpu, &gk, d, tv, kd)?, to_heads(gpu, &gv, d, tv, vd)?);
        let mut scores = gpu.matmul(&qh, &kh, false, true)?;
        if let Some(a) = &allowed {
            scores = gpu.add(&scores, &gpu.scale(a, MASKED, -MASKED)?)?;
        }
        let softmax = gpu.softmax(&scores)?;
        let probs = match &allowed {
            Some(a) => gpu.mul(&softmax, a)?,
            None => softmax.clone(),
        };
        let dropped = match &keep {
            Some(kp) => gpu.mul(&probs, kp)?,
            None => probs.clone(),
        };
        let o = from_heads(gpu, &gpu.matmul(&dropped, &vh, false, false)?, d, tq, vd)?;
        let out = if return_scores {
            let parts = [o.reshape(&[1, o_len])?, probs.reshape(&[1, b * h * tq * tv])?];
            gpu.concat_last(&[&parts[0], &parts[1]])?
        } else {
            o
        };
        let saved = Composed {
            inputs: [q.clone(), k.clone(), v.clone()],
            d: *d,
            qh,
            kh,
            vh,
            softmax,
            dropped,
            allowed,
            keep,
            packed_scores: return_scores.then_some(o_len),
        };
        Ok((out, saved))
    })?;
    let shape = if return_scores {
        vec![out.len()]
    } else {
        vec![b, tq, h * vd]
    };
    let out = out.reshape(&shape).map_err(gpu_err)?;
    let y = Tensor::from_gpu_op(out, shape, |_| Op::GpuCustom(Box::new(saved)), &[q, k, v]);
    if !return_scores {
        return Ok((y, None));
    }
    let mut parts = ops::split(&y, &[vec![b, tq, h * vd], vec![b, h, tq, tv]])?.into_iter();
    match (parts.next(), parts.next()) {
        (Some(o), Some(p)) => Ok((o, Some(p))),
        _ => Err(Error::Invalid(
            "attention: splitting the packed output lost a part".into(),
        )),
    }
}

impl GpuCustomOp for Composed {
    fn name(&self) -> &'static str {
        "attention"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        self.inputs.iter().collect()
    }
    fn vjp(&self, dy: &GpuTensor) -> Result<Vec<(Tensor, Tensor)>> {
        let d = &self.d;
        let Dims { b, h, tq, tv, kd, vd } = *d;
        let grads = run(|gpu| {
            let (dout, dscores) = match self.packed_scores {
                Some(o_len) => {
                    let flat = dy.clone().reshape(&[1, dy.len()])?;
                    let dp = gpu.slice_last(&flat, o_len, dy.len() - o_len)?;
                    (gpu.slice_last(&flat, 0, o_len)?, Some(dp.reshape(&[b * h, tq, tv])?))
                }
                None => (dy.clone(), None),
            };
            let dout = to_heads(gpu, &dout, d, tq, vd)?;
            let dv = gpu.matmul(&self.dropped, &dout, true, false)?;
            let mut dprobs = gpu.matmul(&dout, &self.vh, false, true)?;
            if let Some(kp) = &self.keep {
                dprobs = gpu.mul(&dprobs, kp)?;
            }
            if let Some(ds) = &dscores {
                dprobs = gpu.add(&dprobs, ds)?;
            }
            if let Some(a) = &self.allowed {
                dprobs = gpu.mul(&dprobs, a)?;
            }
            let dscore = gpu.softmax_backward(&self.softmax, &dprobs)?;
            // q entered scaled: d(q) = d(scaled q) / sqrt(kd).
            let dq = gpu.scale(
                &gpu.matmul(&dscore, &self.kh, false, false)?,
                1.0 / (kd as f32).sqrt(),
                0.0,
            )?;
            let dk = gpu.matmul(&dscore, &self.qh, true, false)?;
            Ok([
                from_heads(gpu, &dq, d, tq, kd)?,
                from_heads(gpu, &dk, d, tv, kd)?,
                from_heads(gpu, &dv, d, tv, vd)?,
            ])
        })?;
        Ok(self
            .inputs
            .iter()
            .zip(grads)
            .map(|(t, g)| (t.clone(), grad(g)))
            .collect())
    }
}
