//! Multi-head scaled dot-product attention on GPU tensors: cortex-wgpu's flash attention
//! (forward and backward, never materialising the score matrix) behind `cpu::attention`'s
//! entry point, for what the kernels cover.

use cortex_wgpu::GpuTensor;

use super::gpu::{buf, grad, no_gpu_kernel, run};
use crate::backprop::{GpuCustomOp, Op};
use crate::cpu::attention::AttnOptions;
use crate::device::gpu_err;
use crate::{Result, Tensor};

/// The flash kernels' largest head size.
const MAX_HEAD: usize = 64;

/// `softmax(q kᵀ / sqrt(kd)) v` per head for projected `q [b, tq, h*kd]`, `k [b, tv, h*kd]`,
/// `v [b, tv, h*vd]`: `[b, tq, h*vd]`.
pub(crate) fn attention(q: &Tensor, k: &Tensor, v: &Tensor, opts: &AttnOptions) -> Result<Tensor> {
    let m = &opts.mask;
    if m.query.is_some() || m.value.is_some() || m.explicit.is_some() {
        return Err(no_gpu_kernel("attention with padding or explicit masks"));
    }
    if opts.dropout.is_some() || opts.return_scores {
        return Err(no_gpu_kernel("attention with dropout or returned scores"));
    }
    let h = opts.heads.max(1);
    let (b, tq, tv) = (q.shape()[0], q.shape()[1], k.shape()[1]);
    let (kd, vd) = (q.shape()[2] / h, v.shape()[2] / h);
    if kd != vd || kd > MAX_HEAD {
        return Err(no_gpu_kernel(&format!(
            "attention with key size {kd} and value size {vd} (the kernels take equal sizes up to {MAX_HEAD})"
        )));
    }
    let heads = |t: &Tensor, steps: usize| buf(t)?.reshape(&[b, steps, h, kd]).map_err(gpu_err);
    let (gq, gk, gv) = (heads(q, tq)?, heads(k, tv)?, heads(v, tv)?);
    let out = run(|gpu| gpu.attention_forward(&gq, &gk, &gv, m.causal))?;
    let y = out.out.clone().reshape(&[b, tq, h * vd]).map_err(gpu_err)?;
    Ok(Tensor::from_gpu_op(
        y,
        vec![b, tq, h * vd],
        |_| {
            Op::GpuCustom(Box::new(AttentionBackward {
                inputs: [q.clone(), k.clone(), v.clone()],
                heads: [gq, gk, gv],
                out: out.out,
                lse: out.lse,
                causal: m.causal,
            }))
        },
        &[q, k, v],
    ))
}

struct AttentionBackward {
    inputs: [Tensor; 3],
    /// q, k, v as `[b, steps, heads, head size]` views.
    heads: [GpuTensor; 3],
    out: GpuTensor,
    lse: GpuTensor,
    causal: bool,
}

impl GpuCustomOp for AttentionBackward {
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
