//! Fused (flash) scaled dot-product attention, forward and backward (shaders `attention_d32`,
//! `attention_d64`: one WGSL source compiled for two head-dim bounds).
//!
//! Tensors use the `[batch, seq, heads, head_dim]` layout: a projection GEMM on
//! `[batch * seq, heads * head_dim]` produces it directly, so multi-head attention needs no
//! head-splitting transposes. The softmax scale is `1 / sqrt(head_dim)` and the optional
//! causal mask lets query `i` see keys `j <= i` (top-left aligned, as the CPU engine's).
//!
//! The forward pass is FlashAttention-style: one workgroup per (64-query tile, batch * head),
//! keys and values streamed through workgroup memory with an online softmax; it saves the
//! per-row logsumexp. The backward pass recomputes the probabilities from it
//! (FlashAttention-2): one pass computes `delta = rowsum(dout * out)` and dq over query
//! tiles, a second computes dk and dv over key tiles, so no atomics are needed.

use super::u32_of;
use crate::{DType, Gpu, GpuError, GpuTensor, Result};

/// Largest supported head dimension.
pub const MAX_HEAD_DIM: usize = 64;

/// Rows per workgroup (one per thread), as in the shader.
const ROWS: usize = 64;

/// Output of [`Gpu::attention_forward`].
#[derive(Debug)]
pub struct AttentionOutput {
    /// `softmax(scale * q kᵀ) v`, `[batch, seq_q, heads, head_dim]`.
    pub out: GpuTensor,
    /// Natural-log logsumexp of each row of scaled scores, `[batch, heads, seq_q]`
    /// (what [`Gpu::attention_backward`] needs to recompute the probabilities).
    pub lse: GpuTensor,
}

/// Gradients of [`Gpu::attention_backward`], shaped like q, k and v.
#[derive(Debug)]
pub struct AttentionGrads {
    /// Gradient wrt q, `[batch, seq_q, heads, head_dim]`.
    pub dq: GpuTensor,
    /// Gradient wrt k, `[batch, seq_k, heads, head_dim]`.
    pub dk: GpuTensor,
    /// Gradient wrt v, `[batch, seq_k, heads, head_dim]`.
    pub dv: GpuTensor,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    batch: u32,
    heads: u32,
    seq_q: u32,
    seq_k: u32,
    d: u32,
    causal: u32,
    pad: [u32; 2],
    scale_log2: f32,
    scale: f32,
    pad1: [f32; 2],
}

/// Validated dimensions of one attention call.
struct Dims {
    batch: usize,
    heads: usize,
    seq_q: usize,
    seq_k: usize,
    d: usize,
}

impl Dims {
    fn of(op: &'static str, q: &GpuTensor, k: &GpuTensor, v: &GpuTensor) -> Result<Dims> {
        for t in [q, k, v] {
            t.expect_f32(op)?;
            if t.shape().len() != 4 {
                return Err(GpuError::Shape {
                    op,
                    expected: "rank 4 [batch, seq, heads, head_dim]".into(),
                    got: format!("{:?}", t.shape()),
                });
            }
        }
        let (qs, ks) = (q.shape(), k.shape());
        if ks != v.shape() || ks[0] != qs[0] || ks[2] != qs[2] || ks[3] != qs[3] {
            return Err(GpuError::Shape {
                op,
                expected: format!(
                    "k and v [{}, seq_k, {}, {}] (batch, heads, head_dim of q)",
                    qs[0], qs[2], qs[3]
                ),
                got: format!("k {ks:?}, v {:?}", v.shape()),
            });
        }
        let dims = Dims {
            batch: qs[0],
            heads: qs[2],
            seq_q: qs[1],
            seq_k: ks[1],
            d: qs[3],
        };
        if dims.d == 0 || dims.d > MAX_HEAD_DIM {
            return Err(GpuError::Invalid {
                op,
                message: format!("head_dim {} not in 1..={MAX_HEAD_DIM}", dims.d),
            });
        }
        if dims.seq_k == 0 {
            // Softmax over no keys is undefined (0 / 0).
            return Err(GpuError::Invalid {
                op,
                message: "seq_k is 0".into(),
            });
        }
        Ok(dims)
    }

    fn is_empty(&self) -> bool {
        self.batch * self.heads * self.seq_q == 0
    }

    /// The shader variant: the smallest compiled head-dim bound that holds `d`.
    fn shader(&self) -> &'static str {
        if self.d <= 32 {
            "attention_d32"
        } else {
            "attention_d64"
        }
    }

    fn params(&self, causal: bool) -> Result<Params> {
        let scale = 1.0 / (self.d as f32).sqrt();
        Ok(Params {
            batch: u32_of("batch", self.batch)?,
            heads: u32_of("heads", self.heads)?,
            seq_q: u32_of("seq_q", self.seq_q)?,
            seq_k: u32_of("seq_k", self.seq_k)?,
            d: u32_of("head_dim", self.d)?,
            causal: causal as u32,
            pad: [0; 2],
            scale_log2: scale * std::f32::consts::LOG2_E,
            scale,
            pad1: [0.0; 2],
        })
    }

    /// Workgroups for `rows` rows per (batch, head).
    fn groups(&self, rows: usize) -> Result<(u32, u32, u32)> {
        Ok((
            u32_of("attention row tiles", rows.div_ceil(ROWS))?,
            u32_of("batch * heads", self.batch * self.heads)?,
            1,
        ))
    }
}

fn expect_shape(op: &'static str, what: &str, t: &GpuTensor, shape: &[usize]) -> Result<()> {
    t.expect_f32(op)?;
    if t.shape() != shape {
        return Err(GpuError::Shape {
            op,
            expected: format!("{what} {shape:?}"),
            got: format!("{:?}", t.shape()),
        });
    }
    Ok(())
}

impl Gpu {
    /// Scaled dot-product attention `softmax(q kᵀ / sqrt(head_dim)) v` per (batch, head),
    /// optionally causal, with q `[batch, seq_q, heads, head_dim]` and k, v
    /// `[batch, seq_k, heads, head_dim]`; `head_dim <= 64`, `seq_k >= 1`.
    ///
    /// Returns the output (q's shape) and the row logsumexp for [`Gpu::attention_backward`].
    pub fn attention_forward(
        &self,
        q: &GpuTensor,
        k: &GpuTensor,
        v: &GpuTensor,
        causal: bool,
    ) -> Result<AttentionOutput> {
        let op = "attention_forward";
        let dims = Dims::of(op, q, k, v)?;
        let out = self.empty(q.shape(), DType::F32)?;
        let lse = self.empty(&[dims.batch, dims.heads, dims.seq_q], DType::F32)?;
        if dims.is_empty() {
            return Ok(AttentionOutput { out, lse });
        }
        let p = dims.params(causal)?;
        let mut batch = self.batch();
        batch.dispatch(
            dims.shader(),
            "forward",
            &p,
            &[
                (1, q.buffer()),
                (2, k.buffer()),
                (3, v.buffer()),
                (4, out.buffer()),
                (5, lse.buffer()),
            ],
            dims.groups(dims.seq_q)?,
        )?;
        batch.submit()?;
        Ok(AttentionOutput { out, lse })
    }

    /// Gradients of [`Gpu::attention_forward`] wrt q, k and v, given its inputs, its output
    /// `out` and logsumexp `lse`, the upstream gradient `dout` (out's shape) and the same
    /// `causal` flag.
    #[allow(clippy::too_many_arguments)]
    pub fn attention_backward(
        &self,
        q: &GpuTensor,
        k: &GpuTensor,
        v: &GpuTensor,
        out: &GpuTensor,
        lse: &GpuTensor,
        dout: &GpuTensor,
        causal: bool,
    ) -> Result<AttentionGrads> {
        let op = "attention_backward";
        let dims = Dims::of(op, q, k, v)?;
        expect_shape(op, "out (q's shape)", out, q.shape())?;
        expect_shape(op, "dout (q's shape)", dout, q.shape())?;
        expect_shape(op, "lse", lse, &[dims.batch, dims.heads, dims.seq_q])?;
        let dq = self.empty(q.shape(), DType::F32)?;
        if dims.is_empty() {
            // No query rows: nothing flows back to k and v.
            return Ok(AttentionGrads {
                dq,
                dk: self.zeros(k.shape())?,
                dv: self.zeros(v.shape())?,
            });
        }
        let dk = self.empty(k.shape(), DType::F32)?;
        let dv = self.empty(v.shape(), DType::F32)?;
        let delta = self.empty(&[dims.batch, dims.heads, dims.seq_q], DType::F32)?;
        let p = dims.params(causal)?;
        let mut batch = self.batch();
        batch.dispatch(
            dims.shader(),
            "backward_dq",
            &p,
            &[
                (1, q.buffer()),
                (2, k.buffer()),
                (3, v.buffer()),
                (6, out.buffer()),
                (7, dout.buffer()),
                (8, lse.buffer()),
                (9, delta.buffer()),
                (10, dq.buffer()),
            ],
            dims.groups(dims.seq_q)?,
        )?;
        // Separate compute passes in one encoder: wgpu orders the delta write before this read.
        batch.dispatch(
            dims.shader(),
            "backward_dkdv",
            &p,
            &[
                (1, q.buffer()),
                (2, k.buffer()),
                (3, v.buffer()),
                (7, dout.buffer()),
                (8, lse.buffer()),
                (11, delta.buffer()),
                (12, dk.buffer()),
                (13, dv.buffer()),
            ],
            dims.groups(dims.seq_k)?,
        )?;
        batch.submit()?;
        drop(delta);
        Ok(AttentionGrads { dq, dk, dv })
    }
}
