//! Multi-head attention for inference with the query/key/value projections inside the per-head
//! pass: each `(batch, head)` task projects its own `q`, `k`, `v` slices straight from the
//! inputs and the kernels' head columns, then runs the flash forward of [`super::attention`] on
//! them.
//!
//! Why: at small batches (one 128-token sequence) the unfused path is three projection GEMMs,
//! three head-splitting copies and the attention, each its own parallel region with its own
//! allocations; the thread wake-ups, page faults and copies cost as much as the arithmetic.
//! Here the whole thing is one parallel region and the head-major inputs never exist as whole
//! tensors. Nothing is recorded, so it serves `predict` (no tape) only; training keeps the
//! differentiable path.

use rayon::prelude::*;

use super::attention::{forward_flash, merge_heads, AttnMask, Dims, Head, Scratch, BR};
use crate::{Error, Result, Tensor};

/// One projection's input `x [b, t, din]` (row-major values) and its Keras kernel viewed as
/// `[din, heads * size]`, plus the bias `[heads * size]`.
pub struct Projection<'a> {
    /// The input values, `b * t * din`.
    pub x: &'a [f32],
    /// Sequence length `t` of the input.
    pub t: usize,
    /// Feature size of the input.
    pub din: usize,
    /// The kernel, `din * heads * size` values.
    pub kernel: &'a [f32],
    /// The bias, `heads * size` values.
    pub bias: Option<&'a [f32]>,
}

impl Projection<'_> {
    /// An Error unless the lengths agree with `b` samples and `heads * size` outputs.
    fn check(&self, what: &str, b: usize, out: usize) -> Result<()> {
        let want = [
            (self.x.len(), b * self.t * self.din),
            (self.kernel.len(), self.din * out),
            (self.bias.map_or(out, <[f32]>::len), out),
        ];
        match want.iter().find(|(got, want)| got != want) {
            Some((got, want)) => Err(Error::Invalid(format!(
                "fused attention {what}: expected {want} values, got {got}"
            ))),
            None => Ok(()),
        }
    }

    /// Head-major `out [g, t, size]` for heads `head0..head0 + g`:
    /// `scale * (x[sample] . kernel[:, head] + bias[head])`. The `g` heads' kernel columns are
    /// adjacent, so they are one GEMM into `wide [t, g * size]`, then split per head.
    #[allow(clippy::too_many_arguments)]
    fn heads(
        &self,
        sample: usize,
        head0: usize,
        g: usize,
        size: usize,
        heads: usize,
        scale: f32,
        wide: &mut Vec<f32>,
        out: &mut [f32],
    ) {
        let (t, din, n) = (self.t, self.din, g * size);
        let x = &self.x[sample * t * din..][..t * din];
        let col0 = head0 * size;
        let dst: &mut [f32] = if g == 1 {
            &mut out[..t * size]
        } else {
            wide.resize(t * n, 0.0);
            &mut wide[..]
        };
        if let Some(bias) = self.bias {
            for row in dst.chunks_exact_mut(n) {
                row.iter_mut()
                    .zip(&bias[col0..col0 + n])
                    .for_each(|(o, &b)| *o = b * scale);
            }
        }
        // The kernel's columns of these heads: `din` rows of `n` values, `heads * size` apart.
        let rhs = &self.kernel[col0..];
        assert!(dst.len() >= t * n && rhs.len() >= (din - 1) * heads * size + n);
        // SAFETY: the assert bounds every index gemm reads (`rhs[r * heads * size + c]` for
        // r < din, c < n) or writes (`dst[i * n + c]`, i < t), and `dst` is a unique borrow.
        unsafe {
            gemm::gemm(
                t,
                n,
                din,
                dst.as_mut_ptr(),
                1,
                n as isize,
                self.bias.is_some(),
                x.as_ptr(),
                1,
                din as isize,
                rhs.as_ptr(),
                1,
                (heads * size) as isize,
                1.0,
                scale,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
        if g > 1 {
            for (j, head) in out.chunks_exact_mut(t * size).enumerate() {
                for (row, src) in head.chunks_exact_mut(size).zip(wide.chunks_exact(n)) {
                    row.copy_from_slice(&src[j * size..][..size]);
                }
            }
        }
    }
}

/// Per-task buffers: the projected inputs of a task's heads, head-major, the log-sum-exp of
/// their query rows, and the projection GEMM's output before the split into heads.
#[derive(Default)]
struct HeadInputs {
    qs: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    lse: Vec<f32>,
    wide: Vec<f32>,
}

/// Heads per task: adjacent heads share one projection GEMM, whose kernel runs wider (faster)
/// tiles for 64 output columns than for 32, as long as every thread still gets a task.
fn heads_per_task(b: usize, heads: usize, width: usize) -> usize {
    let threads = rayon::current_num_threads();
    (1..=heads)
        .rev()
        .find(|&g| heads.is_multiple_of(g) && g * width <= 64 && b * (heads / g) >= threads)
        .unwrap_or(1)
}

/// Whether the fused path pays: enough `(batch, head)` tasks to keep every thread busy (the
/// unfused path also splits one head's query rows across threads).
pub fn worth_fusing(b: usize, heads: usize) -> bool {
    b * heads >= rayon::current_num_threads()
}

/// Attention output `[b, tq, heads * vd]` (before the output projection) of queries, keys and
/// values projected from `query`, `key`, `value`; the query is scaled by `1/sqrt(kd)` as in
/// Keras. Not differentiable: the result is a constant.
#[allow(clippy::too_many_arguments)]
pub fn project_and_attend(
    b: usize,
    heads: usize,
    kd: usize,
    vd: usize,
    query: &Projection,
    key: &Projection,
    value: &Projection,
    mask: &AttnMask,
) -> Result<Tensor> {
    let (tq, tv) = (query.t, value.t);
    if b == 0 || heads == 0 || kd == 0 || vd == 0 || tq == 0 || tv == 0 || key.t != tv {
        return Err(Error::Invalid(format!(
            "fused attention: expected positive sizes and keys as long as values, got batch {b}, \
             {heads} heads of {kd}/{vd}, query {tq}, key {}, value {tv}",
            key.t
        )));
    }
    query.check("query", b, heads * kd)?;
    key.check("key", b, heads * kd)?;
    value.check("value", b, heads * vd)?;
    mask.check(b, tq, tv)?;
    let d = Dims {
        b,
        h: heads,
        tq,
        tv,
        kd,
        vd,
    };
    let scale = 1.0 / (kd as f32).sqrt();
    let mut oh = crate::alloc::try_filled("an attention output", b * heads * tq * vd, 0.0)?;
    let g = heads_per_task(b, heads, kd.max(vd));
    oh.par_chunks_mut(g * tq * vd).enumerate().for_each_init(
        || (Scratch::default(), HeadInputs::default()),
        |(sc, inputs), (task, o)| {
            let (bi, h0) = (task * g / heads, task * g % heads);
            let fit = |v: &mut Vec<f32>, n: usize| v.resize(n, 0.0);
            fit(&mut inputs.qs, g * tq * kd);
            fit(&mut inputs.k, g * tv * kd);
            fit(&mut inputs.v, g * tv * vd);
            fit(&mut inputs.lse, tq);
            let wide = &mut inputs.wide;
            query.heads(bi, h0, g, kd, heads, scale, wide, &mut inputs.qs);
            key.heads(bi, h0, g, kd, heads, 1.0, wide, &mut inputs.k);
            value.heads(bi, h0, g, vd, heads, 1.0, wide, &mut inputs.v);
            for (j, o) in o.chunks_exact_mut(tq * vd).enumerate() {
                let head = Head {
                    b: bi,
                    bh: bi * heads + h0 + j,
                    qs: &inputs.qs[j * tq * kd..][..tq * kd],
                    k: &inputs.k[j * tv * kd..][..tv * kd],
                    v: &inputs.v[j * tv * vd..][..tv * vd],
                };
                let tiles = o.chunks_mut(BR * vd).zip(inputs.lse.chunks_mut(BR));
                for (tile, (o, lse)) in tiles.enumerate() {
                    forward_flash(&d, mask, None, &head, tile * BR, o, lse, sc);
                }
            }
        },
    );
    Tensor::new(merge_heads(&oh, b, tq, heads, vd, 1.0), &[b, tq, heads * vd])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::attention::{attention, AttnOptions};
    use crate::ops;
    use crate::rng::Rng;

    fn values(n: usize, rng: &mut Rng) -> Vec<f32> {
        (0..n).map(|_| 2.0 * rng.uniform() - 1.0).collect()
    }

    /// The fused path against the differentiable one (projections by `ops::linear`, then
    /// `attention`), with cross-attention sizes, biases on some projections and every mask kind;
    /// with one sample a task holds one head, with two (on two threads) three heads.
    #[test]
    fn matches_the_unfused_path() {
        for b in [1, 2] {
            matches_the_unfused_path_with(b);
        }
    }

    fn matches_the_unfused_path_with(b: usize) {
        let (h, tq, tv, kd, vd, dq, dv, dk) = (3, 5, 7, 4, 6, 8, 5, 9);
        let mut rng = Rng::new(7);
        let xq = values(b * tq * dq, &mut rng);
        let xv = values(b * tv * dv, &mut rng);
        let xk = values(b * tv * dk, &mut rng);
        let (wq, wk, wv) = (
            values(dq * h * kd, &mut rng),
            values(dk * h * kd, &mut rng),
            values(dv * h * vd, &mut rng),
        );
        let (bq, bv) = (values(h * kd, &mut rng), values(h * vd, &mut rng));
        let masks = [
            AttnMask::default(),
            AttnMask {
                causal: true,
                ..AttnMask::default()
            },
            AttnMask {
                query: Some((0..b * tq).map(|i| (i % 4 != 1) as u8 as f32).collect()),
                value: Some((0..b * tv).map(|i| (i % 3 != 0) as u8 as f32).collect()),
                explicit: Some((0..b * tq * tv).map(|i| (i % 5 != 2) as u8 as f32).collect()),
                causal: false,
            },
        ];
        let t = |v: &[f32], s: &[usize]| Tensor::new(v.to_vec(), s).unwrap();
        let q = ops::linear(&t(&xq, &[b, tq, dq]), &t(&wq, &[dq, h * kd]), Some(&t(&bq, &[h * kd]))).unwrap();
        let k = ops::linear(&t(&xk, &[b, tv, dk]), &t(&wk, &[dk, h * kd]), None).unwrap();
        let v = ops::linear(&t(&xv, &[b, tv, dv]), &t(&wv, &[dv, h * vd]), Some(&t(&bv, &[h * vd]))).unwrap();
        for mask in masks {
            let opts = AttnOptions {
                heads: h,
                mask: mask.clone(),
                dropout: None,
                return_scores: false,
            };
            let (want, _) = attention(&q, &k, &v, &opts).unwrap();
            let got = project_and_attend(
                b,
                h,
                kd,
                vd,
                &Projection {
                    x: &xq,
                    t: tq,
                    din: dq,
                    kernel: &wq,
                    bias: Some(&bq),
                },
                &Projection {
                    x: &xk,
                    t: tv,
                    din: dk,
                    kernel: &wk,
                    bias: None,
                },
                &Projection {
                    x: &xv,
                    t: tv,
                    din: dv,
                    kernel: &wv,
                    bias: Some(&bv),
                },
                &mask,
            )
            .unwrap();
            assert_eq!(got.shape(), want.shape());
            for (g, w) in got.data().iter().zip(want.data()) {
                assert!((g - w).abs() <= 1e-5 * (1.0 + w.abs()), "fused {g} vs unfused {w}");
            }
        }
    }

    #[test]
    fn mismatched_lengths_are_errors() {
        let x = vec![0.0; 2 * 3 * 4];
        let w = vec![0.0; 4 * 2 * 2];
        let p = Projection {
            x: &x,
            t: 3,
            din: 4,
            kernel: &w,
            bias: None,
        };
        let short = Projection {
            x: &x[1..],
            t: 3,
            din: 4,
            kernel: &w,
            bias: None,
        };
        let ok = project_and_attend(2, 2, 2, 2, &p, &p, &p, &AttnMask::default());
        assert!(ok.is_ok());
        let err = project_and_attend(2, 2, 2, 2, &short, &p, &p, &AttnMask::default()).unwrap_err();
        assert!(err.to_string().contains("query"), "{err}");
        let bad_mask = AttnMask {
            value: Some(vec![1.0; 5]),
            ..AttnMask::default()
        };
        assert!(project_and_attend(2, 2, 2, 2, &p, &p, &p, &bad_mask).is_err());
    }
}
