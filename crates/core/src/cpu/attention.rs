//! Scaled dot-product attention over projected heads, fused and tiled FlashAttention-style.
//!
//! Inputs are the projected `q [b, tq, h*kd]`, `k [b, tv, h*kd]`, `v [b, tv, h*vd]` (the layout a
//! `[d, heads, dim]` Keras kernel produces). Work runs in parallel over `batch x heads`; inside
//! one head, query tiles meet key tiles with a running row max and sum (online softmax), so the
//! `tq x tv` probability matrix is never stored: the forward keeps only the output and each
//! row's log-sum-exp, and the backward recomputes the probabilities tile by tile from them
//! (FlashAttention-2). When the caller asks for the attention scores the forward materialises
//! them instead (Keras `return_attention_scores`), and their cotangent joins the backward.
//!
//! Masking follows Keras: a query may attend to key `j` only where the query mask, the value
//! (and key) mask, the causal rule `j <= i` and an explicit `[b, tq, tv]` mask all allow it;
//! a query with nothing to attend to gets all-zero probabilities (Keras >= 3.10 multiplies the
//! softmax by its mask). Dropout on the probabilities draws its keep mask from a counter-based
//! hash of `(seed, head, i, j)`, so the backward regenerates it instead of storing it.

use rayon::prelude::*;

pub use super::attention_mask::{AttnDropout, AttnMask};
use crate::backprop::CustomOp;
use crate::cpu::matmul::sgemm;
use crate::{ops, Error, Result, Tensor};

/// Query rows per tile.
pub(super) const BR: usize = 128;
/// Key columns per tile.
const BC: usize = 128;

/// Options of one [`attention`] call.
#[derive(Clone, Debug)]
pub struct AttnOptions {
    /// Number of heads the last axes of `q`, `k`, `v` split into.
    pub heads: usize,
    /// Masks.
    pub mask: AttnMask,
    /// Probability dropout, `None` outside training.
    pub dropout: Option<AttnDropout>,
    /// Materialise and return the probabilities `[b, h, tq, tv]`.
    pub return_scores: bool,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Dims {
    pub(crate) b: usize,
    pub(crate) h: usize,
    pub(crate) tq: usize,
    pub(crate) tv: usize,
    pub(crate) kd: usize,
    pub(crate) vd: usize,
}

/// Runs `body` compiled for AVX-512 or AVX2+FMA when the CPU has them (the crate is built for
/// baseline x86-64, where these loops would only get SSE2), else as is.
macro_rules! multiversion {
    ($(#[$m:meta])* fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                unsafe fn v4($($arg: $ty),*) $(-> $ret)? { body($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn v3($($arg: $ty),*) $(-> $ret)? { body($($arg),*) }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU supports the features `v4` was compiled for.
                    return unsafe { v4($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU supports the features `v3` was compiled for.
                    return unsafe { v3($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}

/// `e^x` to about 2 ulp, branch-free so loops over it vectorise; exactly 0 below -87
/// (masked scores are -inf).
#[inline(always)]
fn exp(x: f32) -> f32 {
    let xc = x.clamp(-87.3, 88.3);
    // Round x/ln2 to nearest with the 1.5 * 2^23 trick (vectorises where `round` does not).
    let t = xc * std::f32::consts::LOG2_E + 12_582_912.0;
    let n = t - 12_582_912.0;
    let r = xc - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 1.666_666_5e-1)
        * r
        + 0.5;
    let p = p * r * r + r + 1.0;
    let e = (t.to_bits() as i32 - 0x4B40_0000 + 127) << 23;
    let y = p * f32::from_bits(e as u32);
    if x < -87.0 {
        0.0
    } else {
        y
    }
}

multiversion! {
    /// Maximum of a row (-inf for an empty or fully masked row).
    fn row_max(row: &[f32]) -> f32 {
        let mut acc = [f32::NEG_INFINITY; 16];
        let chunks = row.chunks_exact(16);
        let tail = chunks.remainder();
        for c in chunks {
            for l in 0..16 {
                acc[l] = acc[l].max(c[l]);
            }
        }
        tail.iter().chain(&acc).fold(f32::NEG_INFINITY, |m, &v| m.max(v))
    }
}

multiversion! {
    /// `row = e^(row - m)`; returns the sum of the new row.
    fn exp_sub_sum(row: &mut [f32], m: f32) -> f32 {
        let mut acc = [0.0f32; 16];
        let mut chunks = row.chunks_exact_mut(16);
        for c in &mut chunks {
            for l in 0..16 {
                c[l] = exp(c[l] - m);
                acc[l] += c[l];
            }
        }
        let mut sum = 0.0;
        for v in chunks.into_remainder() {
            *v = exp(*v - m);
            sum += *v;
        }
        sum + acc.iter().sum::<f32>()
    }
}

multiversion! {
    /// `dp = p * (dp - d)`: the softmax backward of one row.
    fn softmax_grad_row(p: &[f32], dp: &mut [f32], d: f32) {
        for (g, &p) in dp.iter_mut().zip(p) {
            *g = p * (*g - d);
        }
    }
}

multiversion! {
    /// `a *= b` elementwise.
    fn mul_in_place(a: &mut [f32], b: &[f32]) {
        for (x, &y) in a.iter_mut().zip(b) {
            *x *= y;
        }
    }
}

multiversion! {
    /// `a += b` elementwise.
    fn add_in_place(a: &mut [f32], b: &[f32]) {
        for (x, &y) in a.iter_mut().zip(b) {
            *x += y;
        }
    }
}

multiversion! {
    /// Dot product.
    fn dot(a: &[f32], b: &[f32]) -> f32 {
        let mut acc = [0.0f32; 16];
        let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
        let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
        for (x, y) in ca.zip(cb) {
            for l in 0..16 {
                acc[l] += x[l] * y[l];
            }
        }
        tail + acc.iter().sum::<f32>()
    }
}

/// `[b, t, h, c]` -> `[b, h, t, c]`, times `scale`.
fn split_heads(x: &[f32], b: usize, t: usize, h: usize, c: usize, scale: f32) -> Vec<f32> {
    let mut out = vec![0.0; b * t * h * c];
    out.par_chunks_mut((t * c).max(1)).enumerate().for_each(|(bh, dst)| {
        let (bi, hi) = (bh / h, bh % h);
        for (ti, row) in dst.chunks_exact_mut(c).enumerate() {
            let src = &x[((bi * t + ti) * h + hi) * c..][..c];
            row.iter_mut().zip(src).for_each(|(o, &v)| *o = v * scale);
        }
    });
    out
}

/// `[b, h, t, c]` -> `[b, t, h, c]`, times `scale`.
pub(super) fn merge_heads(x: &[f32], b: usize, t: usize, h: usize, c: usize, scale: f32) -> Vec<f32> {
    let mut out = vec![0.0; b * t * h * c];
    merge_heads_into(x, t, h, c, scale, &mut out);
    out
}

/// [`merge_heads`] into `out`.
fn merge_heads_into(x: &[f32], t: usize, h: usize, c: usize, scale: f32, out: &mut [f32]) {
    out.par_chunks_mut((h * c).max(1)).enumerate().for_each(|(bt, dst)| {
        let (bi, ti) = (bt / t, bt % t);
        for (hi, row) in dst.chunks_exact_mut(c).enumerate() {
            let src = &x[((bi * h + hi) * t + ti) * c..][..c];
            row.iter_mut().zip(src).for_each(|(o, &v)| *o = v * scale);
        }
    });
}

/// Per-thread work buffers, reused across heads.
#[derive(Default)]
pub(super) struct Scratch {
    s: Vec<f32>,
    dp: Vec<f32>,
    keep: Vec<f32>,
    acc: Vec<f32>,
    m: Vec<f32>,
    l: Vec<f32>,
}

fn resized(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    v.resize(n, 0.0);
    &mut v[..n]
}

/// One head's inputs, head-major: `qs` already scaled by `1/sqrt(kd)`.
pub(super) struct Head<'a> {
    pub(super) b: usize,
    pub(super) bh: usize,
    pub(super) qs: &'a [f32],
    pub(super) k: &'a [f32],
    pub(super) v: &'a [f32],
}

/// Flash forward of query rows `i0..i0 + o.len() / vd` of one head: writes their output `o` and
/// log-sum-exp `lse` (+inf for rows that attend to nothing).
pub(super) fn forward_flash(
    d: &Dims,
    mask: &AttnMask,
    drop: Option<&AttnDropout>,
    hd: &Head,
    i0: usize,
    o: &mut [f32],
    lse: &mut [f32],
    sc: &mut Scratch,
) {
    let (kd, vd, rows) = (d.kd, d.vd, lse.len());
    let acc = resized(&mut sc.acc, rows * vd);
    acc.fill(0.0);
    let m = resized(&mut sc.m, rows);
    m.fill(f32::NEG_INFINITY);
    let l = resized(&mut sc.l, rows);
    l.fill(0.0);
    for j0 in (0..d.tv).step_by(BC) {
        if mask.skips(i0 + rows, j0) {
            break;
        }
        let cols = BC.min(d.tv - j0);
        let s = resized(&mut sc.s, rows * cols);
        sgemm(
            rows,
            cols,
            kd,
            &hd.qs[i0 * kd..],
            false,
            &hd.k[j0 * kd..],
            true,
            s,
            false,
            false,
        );
        mask.apply(d, hd.b, i0, j0, cols, s);
        for (r, row) in s.chunks_exact_mut(cols).enumerate() {
            let m_new = m[r].max(row_max(row));
            if m_new == f32::NEG_INFINITY {
                row.fill(0.0);
                continue;
            }
            let alpha = exp(m[r] - m_new);
            l[r] = l[r] * alpha + exp_sub_sum(row, m_new);
            m[r] = m_new;
            if alpha != 1.0 {
                acc[r * vd..(r + 1) * vd].iter_mut().for_each(|a| *a *= alpha);
            }
        }
        if let Some(drop) = drop {
            let keep = resized(&mut sc.keep, rows * cols);
            drop.fill(hd.bh, i0, j0, cols, keep);
            mul_in_place(s, keep);
        }
        sgemm(rows, vd, cols, s, false, &hd.v[j0 * vd..], false, acc, true, false);
    }
    for r in 0..rows {
        let out = &mut o[r * vd..][..vd];
        if l[r] > 0.0 {
            let inv = 1.0 / l[r];
            out.iter_mut().zip(&acc[r * vd..]).for_each(|(o, a)| *o = a * inv);
            lse[r] = m[r] + l[r].ln();
        } else {
            out.fill(0.0);
            lse[r] = f32::INFINITY;
        }
    }
}

/// Materialising forward of query rows `i0..` of one head: also writes their probabilities `p`.
fn forward_scores(
    d: &Dims,
    mask: &AttnMask,
    drop: Option<&AttnDropout>,
    hd: &Head,
    i0: usize,
    o: &mut [f32],
    lse: &mut [f32],
    p: &mut [f32],
    sc: &mut Scratch,
) {
    let (kd, vd, tv, rows) = (d.kd, d.vd, d.tv, lse.len());
    sgemm(rows, tv, kd, &hd.qs[i0 * kd..], false, hd.k, true, p, false, false);
    mask.apply(d, hd.b, i0, 0, tv, p);
    for (r, row) in p.chunks_exact_mut(tv).enumerate() {
        let mx = row_max(row);
        if mx == f32::NEG_INFINITY {
            row.fill(0.0);
            lse[r] = f32::INFINITY;
            continue;
        }
        let sum = exp_sub_sum(row, mx);
        let inv = 1.0 / sum;
        row.iter_mut().for_each(|v| *v *= inv);
        lse[r] = mx + sum.ln();
    }
    let weights: &[f32] = match drop {
        Some(drop) => {
            let keep = resized(&mut sc.keep, rows * tv);
            drop.fill(hd.bh, i0, 0, tv, keep);
            mul_in_place(keep, p);
            keep
        }
        None => p,
    };
    sgemm(rows, vd, tv, weights, false, hd.v, false, o, false, false);
}

/// What the backward of one head reads besides the inputs.
struct HeadGrad<'a> {
    o: &'a [f32],
    dout: &'a [f32],
    lse: &'a [f32],
    /// `(p, dp)`: the materialised probabilities and their cotangent, `[tq, tv]` each.
    scores: Option<(&'a [f32], &'a [f32])>,
}

/// FlashAttention-2 backward of one head: recomputes `P` tile by tile from `lse`, accumulates
/// `dq` (unscaled: the caller multiplies by `1/sqrt(kd)`), `dk`, `dv` (all zero on entry).
fn backward_head(
    d: &Dims,
    mask: &AttnMask,
    drop: Option<&AttnDropout>,
    hd: &Head,
    hg: &HeadGrad,
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
    sc: &mut Scratch,
) {
    let (kd, vd, tv) = (d.kd, d.vd, d.tv);
    // D_i = rowsum(dO * O) (+ rowsum(P * dP_scores)): the softmax backward's row term.
    let dsum = resized(&mut sc.m, d.tq);
    for i in 0..d.tq {
        dsum[i] = dot(&hg.dout[i * vd..][..vd], &hg.o[i * vd..][..vd]);
        if let Some((p, dp)) = hg.scores {
            dsum[i] += dot(&p[i * tv..][..tv], &dp[i * tv..][..tv]);
        }
    }
    for j0 in (0..tv).step_by(BC) {
        let cols = BC.min(tv - j0);
        for i0 in (0..d.tq).step_by(BR) {
            let rows = BR.min(d.tq - i0);
            if mask.skips(i0 + rows, j0) {
                continue;
            }
            let s = resized(&mut sc.s, rows * cols);
            sgemm(
                rows,
                cols,
                kd,
                &hd.qs[i0 * kd..],
                false,
                &hd.k[j0 * kd..],
                true,
                s,
                false,
                false,
            );
            mask.apply(d, hd.b, i0, j0, cols, s);
            for (r, row) in s.chunks_exact_mut(cols).enumerate() {
                // exp(s - lse) is the probability; -inf (masked) and +inf lse (dead row) give 0.
                exp_sub_sum(row, hg.lse[i0 + r]);
            }
            let dp = resized(&mut sc.dp, rows * cols);
            sgemm(
                rows,
                cols,
                vd,
                &hg.dout[i0 * vd..],
                false,
                &hd.v[j0 * vd..],
                true,
                dp,
                false,
                false,
            );
            let douts = &hg.dout[i0 * vd..];
            match drop {
                Some(drop) => {
                    let keep = resized(&mut sc.keep, rows * cols);
                    drop.fill(hd.bh, i0, j0, cols, keep);
                    mul_in_place(dp, keep);
                    // keep := P * keep, the probabilities that reached V.
                    mul_in_place(keep, s);
                    sgemm(
                        cols,
                        vd,
                        rows,
                        keep,
                        true,
                        douts,
                        false,
                        &mut dv[j0 * vd..],
                        true,
                        false,
                    );
                }
                None => sgemm(cols, vd, rows, s, true, douts, false, &mut dv[j0 * vd..], true, false),
            }
            for r in 0..rows {
                let dpr = &mut dp[r * cols..(r + 1) * cols];
                if let Some((_, dps)) = hg.scores {
                    add_in_place(dpr, &dps[(i0 + r) * tv + j0..][..cols]);
                }
                softmax_grad_row(&s[r * cols..(r + 1) * cols], dpr, dsum[i0 + r]);
            }
            sgemm(
                rows,
                kd,
                cols,
                dp,
                false,
                &hd.k[j0 * kd..],
                false,
                &mut dq[i0 * kd..],
                true,
                false,
            );
            sgemm(
                cols,
                kd,
                rows,
                dp,
                true,
                &hd.qs[i0 * kd..],
                false,
                &mut dk[j0 * kd..],
                true,
                false,
            );
        }
    }
}

/// Checks the shapes of one call and returns its sizes.
fn dims_of(q: &Tensor, k: &Tensor, v: &Tensor, opts: &AttnOptions) -> Result<Dims> {
    let h = opts.heads;
    let bad = |what: &str, want: String, got: &[usize]| Err(Error::shape(&format!("attention {what}"), want, got));
    if h == 0 {
        return Err(Error::Invalid(
            "attention: the number of heads must be positive, got 0".into(),
        ));
    }
    let (qs, ks, vs) = (q.shape(), k.shape(), v.shape());
    if qs.len() != 3 || qs[2] % h != 0 || qs[2] == 0 {
        return bad(
            "query",
            format!("[batch, tq, heads*keyDim] with a last axis divisible by {h} heads"),
            qs,
        );
    }
    let (b, tq, kd) = (qs[0], qs[1], qs[2] / h);
    if tq == 0 || ks.get(1) == Some(&0) {
        return Err(Error::Invalid(format!(
            "attention: expected non-empty query and key/value sequences, got query {qs:?} and key {ks:?}"
        )));
    }
    if ks.len() != 3 || ks[0] != b || ks[2] != h * kd {
        return bad("key", format!("[{b}, tv, {}]", h * kd), ks);
    }
    let tv = ks[1];
    if vs.len() != 3 || vs[0] != b || vs[1] != tv || vs[2] % h != 0 || vs[2] == 0 {
        return bad(
            "value",
            format!("[{b}, {tv}, heads*valueDim] with a last axis divisible by {h} heads"),
            vs,
        );
    }
    opts.mask.check(b, tq, tv)?;
    if let Some(dr) = &opts.dropout {
        if !(0.0..1.0).contains(&dr.rate) {
            return Err(Error::Invalid(format!(
                "attention dropout must be in [0, 1), got {}",
                dr.rate
            )));
        }
    }
    Ok(Dims {
        b,
        h,
        tq,
        tv,
        kd,
        vd: vs[2] / h,
    })
}

/// Multi-head scaled dot-product attention on projected `q [b, tq, h*kd]`, `k [b, tv, h*kd]`,
/// `v [b, tv, h*vd]`: returns the heads' outputs `[b, tq, h*vd]` and, when
/// `opts.return_scores`, the probabilities `[b, h, tq, tv]`. Differentiable in `q`, `k`, `v`.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, opts: &AttnOptions) -> Result<(Tensor, Option<Tensor>)> {
    let d = dims_of(q, k, v, opts)?;
    if crate::ops::on_gpu("attention", &[q, k, v])? {
        return crate::ops::gpu_attention::attention(q, k, v, opts, &d);
    }
    let Dims { b, h, tq, tv, kd, vd } = d;
    let scale = 1.0 / (kd as f32).sqrt();
    let qh = split_heads(q.data(), b, tq, h, kd, scale);
    let kh = split_heads(k.data(), b, tv, h, kd, 1.0);
    let vh = split_heads(v.data(), b, tv, h, vd, 1.0);
    let mut oh = vec![0.0; b * h * tq * vd];
    let mut lse = vec![0.0; b * h * tq];
    // One buffer holds the output then, when asked for, the probabilities: it becomes the
    // packed output of the recorded op.
    let o_len = b * tq * h * vd;
    let p_len = if opts.return_scores { b * h * tq * tv } else { 0 };
    let mut packed = vec![0.0; o_len + p_len];
    let (mask, dropout) = (&opts.mask, opts.dropout.as_ref().filter(|dr| dr.rate > 0.0));
    let head = |bh: usize| Head {
        b: bh / h,
        bh,
        qs: &qh[bh * tq * kd..][..tq * kd],
        k: &kh[bh * tv * kd..][..tv * kd],
        v: &vh[bh * tv * vd..][..tv * vd],
    };
    let (o_part, p_part) = packed.split_at_mut(o_len);
    // Query tiles are independent in the forward: parallel over (batch, head, query tile), so a
    // single long sequence still uses every thread.
    let heads = oh.par_chunks_mut(tq * vd).zip(lse.par_chunks_mut(tq)).enumerate();
    if opts.return_scores {
        heads
            .zip(p_part.par_chunks_mut(tq * tv))
            .flat_map(|((bh, (o, l)), p)| {
                let tiles = o
                    .par_chunks_mut(BR * vd)
                    .zip(l.par_chunks_mut(BR))
                    .zip(p.par_chunks_mut(BR * tv));
                tiles.enumerate().map(move |(t, ((o, l), p))| (bh, t * BR, o, l, p))
            })
            .for_each_init(Scratch::default, |sc, (bh, i0, o, l, p)| {
                forward_scores(&d, mask, dropout, &head(bh), i0, o, l, p, sc)
            });
    } else {
        heads
            .flat_map(|(bh, (o, l))| {
                let tiles = o.par_chunks_mut(BR * vd).zip(l.par_chunks_mut(BR));
                tiles.enumerate().map(move |(t, (o, l))| (bh, t * BR, o, l))
            })
            .for_each_init(Scratch::default, |sc, (bh, i0, o, l)| {
                forward_flash(&d, mask, dropout, &head(bh), i0, o, l, sc)
            });
    }
    merge_heads_into(&oh, tq, h, vd, 1.0, o_part);
    let op = {
        let (q, k, v, opts) = (q.clone(), k.clone(), v.clone(), opts.clone());
        move || -> Box<dyn CustomOp> {
            Box::new(AttentionOp {
                q,
                k,
                v,
                opts,
                d,
                qh,
                kh,
                vh,
                oh,
                lse,
                o_len,
            })
        }
    };
    if !opts.return_scores {
        return Ok((ops::custom(packed, vec![b, tq, h * vd], op, &[q, k, v])?, None));
    }
    let packed = ops::custom(packed, vec![o_len + p_len], op, &[q, k, v])?;
    let mut parts = ops::split(&packed, &[vec![b, tq, h * vd], vec![b, h, tq, tv]])?.into_iter();
    match (parts.next(), parts.next()) {
        (Some(o), Some(p)) => Ok((o, Some(p))),
        _ => Err(Error::Invalid(
            "attention: splitting the packed output lost a part".into(),
        )),
    }
}

/// The recorded attention: keeps the head-major inputs and output plus each row's log-sum-exp.
struct AttentionOp {
    q: Tensor,
    k: Tensor,
    v: Tensor,
    opts: AttnOptions,
    d: Dims,
    qh: Vec<f32>,
    kh: Vec<f32>,
    vh: Vec<f32>,
    oh: Vec<f32>,
    lse: Vec<f32>,
    o_len: usize,
}

impl CustomOp for AttentionOp {
    fn name(&self) -> &'static str {
        "multiHeadAttention"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.q, &self.k, &self.v]
    }
    fn vjp(&self, out: &Tensor, g: &[f32]) -> Result<Vec<(Tensor, Vec<f32>)>> {
        let d = self.d;
        let Dims { b, h, tq, tv, kd, vd } = d;
        if g.len() != out.len() || g.len() < self.o_len {
            return Err(Error::shape("attention backward", out.len(), g.len()));
        }
        let doh = split_heads(&g[..self.o_len], b, tq, h, vd, 1.0);
        let scores = self
            .opts
            .return_scores
            .then(|| (&out.data()[self.o_len..], &g[self.o_len..]));
        let mut dq = vec![0.0; b * h * tq * kd];
        let mut dk = vec![0.0; b * h * tv * kd];
        let mut dv = vec![0.0; b * h * tv * vd];
        let (mask, drop) = (&self.opts.mask, self.opts.dropout.as_ref().filter(|dr| dr.rate > 0.0));
        dq.par_chunks_mut((tq * kd).max(1))
            .zip(dk.par_chunks_mut((tv * kd).max(1)))
            .zip(dv.par_chunks_mut((tv * vd).max(1)))
            .enumerate()
            .for_each_init(Scratch::default, |sc, (bh, ((dq, dk), dv))| {
                let hd = Head {
                    b: bh / h,
                    bh,
                    qs: &self.qh[bh * tq * kd..][..tq * kd],
                    k: &self.kh[bh * tv * kd..][..tv * kd],
                    v: &self.vh[bh * tv * vd..][..tv * vd],
                };
                let hg = HeadGrad {
                    o: &self.oh[bh * tq * vd..][..tq * vd],
                    dout: &doh[bh * tq * vd..][..tq * vd],
                    lse: &self.lse[bh * tq..][..tq],
                    scores: scores.map(|(p, dp)| (&p[bh * tq * tv..][..tq * tv], &dp[bh * tq * tv..][..tq * tv])),
                };
                backward_head(&d, mask, drop, &hd, &hg, dq, dk, dv, sc);
            });
        let scale = 1.0 / (kd as f32).sqrt();
        let mut grads = Vec::with_capacity(3);
        if self.q.tracks() {
            grads.push((self.q.clone(), merge_heads(&dq, b, tq, h, kd, scale)));
        }
        if self.k.tracks() {
            grads.push((self.k.clone(), merge_heads(&dk, b, tv, h, kd, 1.0)));
        }
        if self.v.tracks() {
            grads.push((self.v.clone(), merge_heads(&dv, b, tv, h, vd, 1.0)));
        }
        Ok(grads)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_accurate_and_zero_for_masked_scores() {
        let mut worst = 0.0f64;
        for i in -86_900..88_000 {
            let x = i as f32 * 1e-3;
            let want = (x as f64).exp();
            worst = worst.max(((exp(x) as f64 - want) / want).abs());
        }
        assert!(worst < 5e-7, "relative error {worst}");
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-1e9), 0.0);
        assert_eq!(exp(0.0), 1.0);
        let mut row: Vec<f32> = (0..37).map(|i| i as f32 * 0.1).collect();
        row[5] = f32::NEG_INFINITY;
        let want: f32 = row.iter().map(|v| (v - 3.0).exp()).sum();
        assert!((exp_sub_sum(&mut row, 3.0) - want).abs() < 1e-5 * want);
        assert_eq!(row[5], 0.0);
    }
}
