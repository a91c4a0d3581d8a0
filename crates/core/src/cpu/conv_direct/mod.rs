//! Direct NHWC convolution for inference on x86-64 (AVX-512F, or AVX2 + FMA).
//!
//! The im2col + GEMM path (`conv.rs`) writes every patch out before multiplying: for the MNIST
//! convnet's second layer that is 9x the input, and with the separate bias, activation and
//! pooling passes the profile of a batch-256 predict spent more time moving memory than in
//! the GEMM. Here a tile of `PX` output pixels x `NV` vectors of output channels lives in
//! registers while the kernel walks the window: each step broadcasts one input value per
//! pixel, straight from the input, and multiplies it by `NV` vectors of the Keras-layout
//! kernel `[kh, kw, in_c, out_c]` (out_c is contiguous, so the kernel needs no packing when
//! out_c is a multiple of the vector width). The bias starts the accumulators, and the
//! layer's pointwise activation runs over each finished block while it is still in cache. A
//! plain max pooling after the layer can run in the same pass ([`conv2d_direct_max_pool`]):
//! a model's predict fuses the two when the pooling is the convolution's only consumer.
//!
//! No gradient flows through this path: `ops::conv2d_act` uses it only when nothing records.

// The kernels are x86-64 only (AVX2/AVX-512); elsewhere `available()` is false and the
// helpers they share are unused, which is expected rather than dead code.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code, unused_imports, unused_macros))]

use super::conv::{par_new, par_new_written, Conv2dGeometry};
use super::elementwise::{activation_in_place, Activation};
#[cfg(target_arch = "x86_64")]
use super::simd::Lanes;

/// Output floats per parallel block: small enough to stay in L2 for the activation pass,
/// large enough that a block amortises the hand-off to a thread.
const BLOCK_FLOATS: usize = 1 << 14;

/// Whether this CPU has a direct kernel.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        isa().is_some()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(target_arch = "x86_64")]
use super::simd::{isa, Isa};

/// Everything a tile needs besides its position: the (padded) input geometry in floats.
struct Plan<'a> {
    /// Padded input, `[batch, hp, wp, in_c]`.
    x: &'a [f32],
    /// Kernel `[kh * kw * in_c, o_pad]`, out_c padded with zeros to a whole vector.
    w: &'a [f32],
    /// Bias padded like the kernel's columns (zeros without a bias).
    bias: &'a [f32],
    o_pad: usize,
    /// Offset of each kernel tap `(kh, kw)` from the window's origin, in floats.
    taps: Vec<usize>,
    /// Floats between the windows of neighbouring output pixels of a row.
    px_stride: usize,
    /// Floats between the windows of neighbouring output rows.
    row_stride: usize,
    img_len: usize,
}

/// `conv(x, kernel) + bias`, then `act`, or `None` when this CPU has no direct kernel.
///
/// Panics if a slice's length disagrees with `g` (the geometry is validated upstream).
pub fn conv2d_direct(
    x: &[f32],
    kernel: &[f32],
    bias: Option<&[f32]>,
    g: &Conv2dGeometry,
    act: Activation,
) -> Option<Vec<f32>> {
    #[cfg(target_arch = "x86_64")]
    {
        let isa = isa()?;
        let lanes = match isa {
            Isa::Avx512 => 16,
            Isa::Avx2 => 8,
        };
        Some(run(x, kernel, bias, g, act, isa, lanes))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (x, kernel, bias, g, act);
        None
    }
}

/// [`conv2d_direct`] followed by max pooling over non-overlapping `pool` windows (strides equal
/// to the window, 'valid': `floor(out / pool)` windows per axis), in one pass: each block of
/// pooled rows computes its `pool[0]` convolution rows into a scratch buffer that stays in L1
/// and writes only their maxima. The separate passes wrote the whole convolution output and
/// read it back, which for the MNIST convnet's first layer (26x26x32 floats an image) made the
/// pooling 15% of a batch-256 predict. `None` when this CPU has no direct kernel.
pub fn conv2d_direct_max_pool(
    x: &[f32],
    kernel: &[f32],
    bias: Option<&[f32]>,
    g: &Conv2dGeometry,
    act: Activation,
    pool: [usize; 2],
) -> Option<Vec<f32>> {
    #[cfg(target_arch = "x86_64")]
    {
        let isa = isa()?;
        let lanes = match isa {
            Isa::Avx512 => 16,
            Isa::Avx2 => 8,
        };
        Some(run_with(x, kernel, bias, g, act, isa, lanes, Some(pool)))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (x, kernel, bias, g, act, pool);
        None
    }
}

#[cfg(target_arch = "x86_64")]
fn run(
    x: &[f32],
    kernel: &[f32],
    bias: Option<&[f32]>,
    g: &Conv2dGeometry,
    act: Activation,
    isa: Isa,
    lanes: usize,
) -> Vec<f32> {
    run_with(x, kernel, bias, g, act, isa, lanes, None)
}

/// The convolution, with the pooling of [`conv2d_direct_max_pool`] when `pool` is given.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
fn run_with(
    x: &[f32],
    kernel: &[f32],
    bias: Option<&[f32]>,
    g: &Conv2dGeometry,
    act: Activation,
    isa: Isa,
    lanes: usize,
    pool: Option<[usize; 2]>,
) -> Vec<f32> {
    let c = g.in_c;
    let o = g.out_c;
    assert_eq!(x.len(), g.batch * g.in_h * g.in_w * c, "conv2d_direct: input length");
    assert_eq!(kernel.len(), g.k_h * g.k_w * c * o, "conv2d_direct: kernel length");
    let total = g.batch * g.out_h * g.out_w;
    if total == 0 {
        return Vec::new();
    }
    // Pad the input once so every window lies inside it (TensorFlow 'same' puts the extra
    // row or column at the bottom / right).
    let need_h = (g.out_h - 1) * g.stride_h + (g.k_h - 1) * g.dil_h + 1;
    let need_w = (g.out_w - 1) * g.stride_w + (g.k_w - 1) * g.dil_w + 1;
    let hp = need_h.max(g.in_h + g.pad_top);
    let wp = need_w.max(g.in_w + g.pad_left);
    let padded;
    let xp = if hp == g.in_h && wp == g.in_w {
        x
    } else {
        padded = pad_images(x, g, hp, wp);
        &padded[..]
    };
    // Kernel and bias with out_c rounded up to whole vectors, so the inner loop never masks.
    let o_pad = o.div_ceil(lanes) * lanes;
    let (w_owned, b_owned);
    let (w, b): (&[f32], &[f32]) = if o_pad == o {
        b_owned = bias.map_or_else(|| vec![0.0; o], <[f32]>::to_vec);
        (kernel, &b_owned)
    } else {
        let mut wk = vec![0.0; kernel.len() / o * o_pad];
        for (dst, src) in wk.chunks_exact_mut(o_pad).zip(kernel.chunks_exact(o)) {
            dst[..o].copy_from_slice(src);
        }
        let mut bb = vec![0.0; o_pad];
        if let Some(bias) = bias {
            bb[..o].copy_from_slice(bias);
        }
        w_owned = wk;
        b_owned = bb;
        (&w_owned, &b_owned)
    };
    let taps = (0..g.k_h)
        .flat_map(|kh| (0..g.k_w).map(move |kw| (kh * g.dil_h * wp + kw * g.dil_w) * c))
        .collect();
    let plan = Plan {
        x: xp,
        w,
        bias: b,
        o_pad,
        taps,
        px_stride: g.stride_w * c,
        row_stride: g.stride_h * wp * c,
        img_len: hp * wp * c,
    };
    let relu = act == Activation::Relu;
    // SAFETY (for the calls below): `isa()` checked the CPU's features; the padded geometry
    // keeps every window of every output row inside `plan.x`, and each destination holds
    // `out_w * o` floats for the pixels asked for.
    let conv_row = |x_row: usize, pixels: usize, y: *mut f32| unsafe {
        match isa {
            Isa::Avx512 => row_avx512(&plan, x_row, pixels, o, relu, y),
            Isa::Avx2 => row_avx2(&plan, x_row, pixels, o, relu, y),
        }
    };
    if let Some(pool) = pool {
        // 2x2 windows pool in registers; after other activations (not monotone, or not
        // fused into the tile) or other windows, the rows go through a scratch buffer.
        // SAFETY: as for `conv_row`, for the row below as well: `pooled` asks only for rows
        // whose window the geometry covers.
        let pool_2x2 = |x_row: usize, pixels: usize, y: *mut f32| unsafe {
            match isa {
                Isa::Avx512 => pooled_rows_avx512(&plan, x_row, pixels, o, relu, y),
                Isa::Avx2 => pooled_rows_avx2(&plan, x_row, pixels, o, relu, y),
            }
        };
        let in_registers = pool == [2, 2] && matches!(act, Activation::Relu | Activation::Linear);
        let pool_2x2: &(dyn Fn(usize, usize, *mut f32) + Sync) = &pool_2x2;
        let rows = Rows {
            img_len: plan.img_len,
            row_stride: plan.row_stride,
            conv: &conv_row,
            pool_2x2: in_registers.then_some(pool_2x2),
        };
        return pooled(isa, g, pool, act, &rows);
    }
    let rows = g.batch * g.out_h;
    let row_floats = g.out_w * o;
    let share = rows.div_ceil(2 * rayon::current_num_threads().max(1));
    let block_rows = (BLOCK_FLOATS / row_floats.max(1)).clamp(1, share.max(1));
    par_new_written(total * o, block_rows * row_floats, |bi, yb| {
        let r0 = bi * block_rows;
        for (i, y_row) in yb.chunks_exact_mut(row_floats).enumerate() {
            let r = r0 + i;
            let (n, oh) = (r / g.out_h, r % g.out_h);
            conv_row(
                n * plan.img_len + oh * plan.row_stride,
                g.out_w,
                y_row.as_mut_ptr().cast(),
            );
        }
        if !relu {
            // SAFETY: the rows above wrote every element of the block (every pixel of every
            // row, channels 0..o), and `MaybeUninit<f32>` has the layout of `f32`.
            let yb = unsafe { &mut *(yb as *mut [std::mem::MaybeUninit<f32>] as *mut [f32]) };
            activation_in_place(act, yb);
        }
    })
}

/// The row kernels of [`pooled`], which place a row by the float offset of its first window.
#[cfg(target_arch = "x86_64")]
struct Rows<'a> {
    img_len: usize,
    row_stride: usize,
    /// `conv(x_row, pixels, y)` writes the first `pixels` outputs of the convolution row.
    conv: &'a (dyn Fn(usize, usize, *mut f32) + Sync),
    /// `pool_2x2(x_row, pixels, y)` writes the `pixels / 2` maxima of 2x2 windows over that
    /// row and the next, where the kernel can pool in registers.
    pool_2x2: Option<&'a (dyn Fn(usize, usize, *mut f32) + Sync)>,
}

/// The pooled pass of [`conv2d_direct_max_pool`].
#[cfg(target_arch = "x86_64")]
fn pooled(isa: Isa, g: &Conv2dGeometry, [ph, pw]: [usize; 2], act: Activation, kernels: &Rows) -> Vec<f32> {
    let (img_len, row_stride) = (kernels.img_len, kernels.row_stride);
    let o = g.out_c;
    let (qh, qw) = (g.out_h / ph.max(1), g.out_w / pw.max(1));
    let q_rows = g.batch * qh;
    // Only the columns the windows cover are computed.
    let (used_w, q_row_floats) = (qw * pw, qw * o);
    if q_rows == 0 || qw == 0 {
        return Vec::new();
    }
    let scratch_len = ph * used_w * o;
    let share = q_rows.div_ceil(2 * rayon::current_num_threads().max(1));
    let block_rows = (BLOCK_FLOATS / scratch_len.max(1)).clamp(1, share.max(1));
    if let Some(pool_2x2) = kernels.pool_2x2 {
        return par_new_written(q_rows * q_row_floats, block_rows * q_row_floats, |bi, yb| {
            for (i, y_row) in yb.chunks_exact_mut(q_row_floats).enumerate() {
                let r = bi * block_rows + i;
                let (n, qy) = (r / qh, r % qh);
                // Writes every channel of the row's `qw` pooled pixels.
                pool_2x2(n * img_len + 2 * qy * row_stride, used_w, y_row.as_mut_ptr().cast());
            }
        });
    }
    par_new_written(q_rows * q_row_floats, block_rows * q_row_floats, |bi, yb| {
        let mut scratch = vec![0.0f32; scratch_len];
        let mut maxima = vec![0.0f32; q_row_floats];
        for (i, y_row) in yb.chunks_exact_mut(q_row_floats).enumerate() {
            let r = bi * block_rows + i;
            let (n, qy) = (r / qh, r % qh);
            for (dy, rows) in scratch.chunks_exact_mut(used_w * o).enumerate() {
                (kernels.conv)(n * img_len + (qy * ph + dy) * row_stride, used_w, rows.as_mut_ptr());
            }
            if act != Activation::Relu {
                activation_in_place(act, &mut scratch);
            }
            // SAFETY: `isa` came from `isa()`, which checked these features.
            unsafe {
                match isa {
                    Isa::Avx512 => pool_windows_avx512(&mut scratch, used_w * o, ph, pw, o, &mut maxima),
                    Isa::Avx2 => pool_windows_avx2(&mut scratch, used_w * o, ph, pw, o, &mut maxima),
                }
            }
            for (y, &m) in y_row.iter_mut().zip(&maxima) {
                y.write(m);
            }
        }
    })
}

/// `out[q, c]` = the maximum of channel `c` over pooling window `q` of `scratch`: `rows` rows
/// of `row` floats, window `q` covering pixels `q * pw .. (q + 1) * pw` of `o` channels each
/// (`out` has `qw * o` floats), NaN where the window holds one (as the pooling layer). First
/// the rows' elementwise maximum (into the first row),
/// then each window's maximum over its pixels: every vector is independent of the others, so
/// the max latency overlaps (walking one window at a time was latency-bound and cost half as
/// much as the convolution).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn pool_windows<V: Lanes>(scratch: &mut [f32], row: usize, rows: usize, pw: usize, o: usize, out: &mut [f32]) {
    let qw = out.len() / o.max(1);
    assert!(
        scratch.len() >= rows * row && row >= qw * pw * o,
        "pool_windows: lengths"
    );
    let (s, y) = (scratch.as_mut_ptr(), out.as_mut_ptr());
    // SAFETY: the assert bounds every row of `scratch` and `out` holds `qw * o` floats;
    // partial vectors load and store only their first `n` lanes.
    unsafe {
        // Whole vectors first (no masks: building one per vector cost as much as the max).
        let mut i = 0;
        while i + V::L <= row {
            let mut acc = V::load(s.add(i));
            for dy in 1..rows {
                acc = V::max_nan(acc, V::load(s.add(dy * row + i)));
            }
            acc.store(s.add(i));
            i += V::L;
        }
        while i < row {
            let n = (row - i).min(V::L);
            let mut acc = V::load_first(s.add(i), n);
            for dy in 1..rows {
                acc = V::max_nan(acc, V::load_first(s.add(dy * row + i), n));
            }
            acc.store_first(s.add(i), n);
            i += V::L;
        }
        for q in 0..qw {
            let mut c = 0;
            while c + V::L <= o {
                let mut acc = V::load(s.add(q * pw * o + c));
                for dx in 1..pw {
                    acc = V::max_nan(acc, V::load(s.add((q * pw + dx) * o + c)));
                }
                acc.store(y.add(q * o + c));
                c += V::L;
            }
            while c < o {
                let n = (o - c).min(V::L);
                let mut acc = V::load_first(s.add(q * pw * o + c), n);
                for dx in 1..pw {
                    acc = V::max_nan(acc, V::load_first(s.add((q * pw + dx) * o + c), n));
                }
                acc.store_first(y.add(q * o + c), n);
                c += V::L;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn pool_windows_avx512(scratch: &mut [f32], row: usize, rows: usize, pw: usize, o: usize, out: &mut [f32]) {
    // SAFETY: the caller checked the features; `pool_windows` checks the lengths.
    unsafe { pool_windows::<std::arch::x86_64::__m512>(scratch, row, rows, pw, o, out) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn pool_windows_avx2(scratch: &mut [f32], row: usize, rows: usize, pw: usize, o: usize, out: &mut [f32]) {
    // SAFETY: the caller checked the features; `pool_windows` checks the lengths.
    unsafe { pool_windows::<std::arch::x86_64::__m256>(scratch, row, rows, pw, o, out) }
}

/// The window maxima of [`pool_windows`] on any CPU (the quantized convolutions pool their
/// rows with it): `rows` rows of `row` floats in `scratch` (its first row is overwritten),
/// windows of `pw` pixels of `o` channels, `out` holding `qw * o` floats. NaN propagates.
pub(crate) fn max_pool_rows(scratch: &mut [f32], row: usize, rows: usize, pw: usize, o: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if let Some(isa) = isa() {
        // SAFETY: `isa()` checked the features; `pool_windows` checks the lengths.
        return unsafe {
            match isa {
                Isa::Avx512 => pool_windows_avx512(scratch, row, rows, pw, o, out),
                Isa::Avx2 => pool_windows_avx2(scratch, row, rows, pw, o, out),
            }
        };
    }
    max_pool_rows_plain(scratch, row, rows, pw, o, out);
}

/// [`max_pool_rows`] without vector units (scalar, window by window; `scratch` is not written).
fn max_pool_rows_plain(scratch: &[f32], row: usize, rows: usize, pw: usize, o: usize, out: &mut [f32]) {
    let qw = out.len() / o.max(1);
    assert!(
        scratch.len() >= rows * row && row >= qw * pw * o,
        "max_pool_rows: lengths"
    );
    let max_nan = |a: f32, b: f32| if a.is_nan() || b.is_nan() { f32::NAN } else { a.max(b) };
    for (q, maxima) in out.chunks_exact_mut(o.max(1)).enumerate() {
        for (c, m) in maxima.iter_mut().enumerate() {
            let window = (0..rows).flat_map(|dy| (0..pw).map(move |dx| dy * row + (q * pw + dx) * o + c));
            *m = window.map(|i| scratch[i]).fold(f32::NEG_INFINITY, max_nan);
        }
    }
}

/// `c[rows, o_pad] = a[rows, k] · w[k, o_pad]` on this thread, with the direct kernel's register
/// tiles (a 1x1 convolution over `rows` pixels): Winograd's 16 per-position products use it.
/// `zeros` holds `o_pad` zeros (the tiles start their accumulators at a bias).
#[cfg(target_arch = "x86_64")]
pub(super) fn gemm_rows(isa: Isa, a: &[f32], k: usize, w: &[f32], zeros: &[f32], c: &mut [f32]) {
    let o_pad = zeros.len();
    let rows = c.len() / o_pad.max(1);
    assert!(
        a.len() >= rows * k && w.len() == k * o_pad && c.len() == rows * o_pad,
        "gemm_rows: lengths"
    );
    if rows == 0 || k == 0 {
        c.fill(0.0);
        return;
    }
    let plan = Plan {
        x: a,
        w,
        bias: zeros,
        o_pad,
        taps: vec![0],
        px_stride: k,
        row_stride: 0,
        img_len: 0,
    };
    // SAFETY: `isa` came from `isa()`; pixel `p`'s window is row `p` of `a` (checked above),
    // and `c` holds `rows * o_pad` floats.
    unsafe {
        match isa {
            Isa::Avx512 => row_avx512(&plan, 0, rows, o_pad, false, c.as_mut_ptr()),
            Isa::Avx2 => row_avx2(&plan, 0, rows, o_pad, false, c.as_mut_ptr()),
        }
    }
}

/// Copies each image into a zero frame of `hp x wp` at `(pad_top, pad_left)`.
fn pad_images(x: &[f32], g: &Conv2dGeometry, hp: usize, wp: usize) -> Vec<f32> {
    let c = g.in_c;
    let (img_in, img_out) = (g.in_h * g.in_w * c, hp * wp * c);
    par_new(g.batch * img_out, img_out, |n, dst| {
        let src = &x[n * img_in..(n + 1) * img_in];
        for (h, row) in src.chunks_exact(g.in_w * c).enumerate() {
            let at = ((h + g.pad_top) * wp + g.pad_left) * c;
            dst[at..at + row.len()].copy_from_slice(row);
        }
    })
}

/// `PX` output pixels x `NV` channel vectors starting at channel `co`: accumulators start at
/// the bias, every tap and input channel adds `x * w`, and the first `o - co` channels (at
/// most `NV * L`) are stored to `y` (pixel `p` at `y + p * o`).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn tile<V: Lanes, const PX: usize, const NV: usize>(
    plan: &Plan,
    x0: usize,
    co: usize,
    o: usize,
    relu: bool,
    y: *mut f32,
) {
    // SAFETY: the caller checked the CPU features and that the plan keeps every window of
    // these pixels inside `plan.x` and `PX` pixels x `o - co` channels inside `y`.
    unsafe {
        let c = plan.w.len() / plan.taps.len() / plan.o_pad;
        let xp = plan.x.as_ptr().add(x0);
        let wp = plan.w.as_ptr().add(co);
        let mut acc = [[V::load(plan.bias.as_ptr().add(co)); NV]; PX];
        for p in 0..PX {
            for v in 0..NV {
                acc[p][v] = V::load(plan.bias.as_ptr().add(co + v * V::L));
            }
        }
        for (t, &off) in plan.taps.iter().enumerate() {
            let xt = xp.add(off);
            let wt = wp.add(t * c * plan.o_pad);
            for ci in 0..c {
                let mut wv = [V::load(wt.add(ci * plan.o_pad)); NV];
                for (v, w) in wv.iter_mut().enumerate().skip(1) {
                    *w = V::load(wt.add(ci * plan.o_pad + v * V::L));
                }
                for p in 0..PX {
                    let xv = V::splat(xt.add(p * plan.px_stride + ci));
                    for v in 0..NV {
                        acc[p][v] = V::mul_add(xv, wv[v], acc[p][v]);
                    }
                }
            }
        }
        let valid = o - co;
        if relu {
            let zero = V::zero();
            for row in acc.iter_mut() {
                for a in row.iter_mut() {
                    *a = V::max(*a, zero);
                }
            }
        }
        for (p, row) in acc.iter().enumerate() {
            let yp = y.add(p * o);
            for (v, a) in row.iter().enumerate() {
                let first = v * V::L;
                if first + V::L <= valid {
                    a.store(yp.add(first));
                } else if first < valid {
                    a.store_first(yp.add(first), valid - first);
                }
            }
        }
    }
}

/// [`tile`] for two adjacent output rows pooled 2x2 in registers: `PX` (even) pixels of the
/// row whose windows start at `x0` and of the row below, then the maximum of each 2x2 window,
/// NaN where one holds a NaN (`relu` maps NaN to 0 first, as [`tile`] does), taken in
/// [`pool_windows`]' order (rows, then pixels) so the ties between -0 and +0 come out the same.
/// Stores `PX / 2` pooled pixels (pixel `q` at `y + q * o`). The convolution outputs never
/// leave the registers: the scratch rows of [`pooled`] cost a store and two reloads each.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn tile_pooled<V: Lanes, const PX: usize, const NV: usize>(
    plan: &Plan,
    x0: usize,
    co: usize,
    o: usize,
    relu: bool,
    y: *mut f32,
) {
    // SAFETY: the caller checked the CPU features and that the plan keeps every window of
    // these pixels of both rows inside `plan.x` and `PX / 2` pixels x `o - co` channels
    // inside `y`.
    unsafe {
        let c = plan.w.len() / plan.taps.len() / plan.o_pad;
        let xp = plan.x.as_ptr().add(x0);
        let wp = plan.w.as_ptr().add(co);
        let mut bias = [V::zero(); NV];
        for (v, b) in bias.iter_mut().enumerate() {
            *b = V::load(plan.bias.as_ptr().add(co + v * V::L));
        }
        let mut acc = [[bias; PX]; 2];
        for (t, &off) in plan.taps.iter().enumerate() {
            let xt = xp.add(off);
            let wt = wp.add(t * c * plan.o_pad);
            for ci in 0..c {
                let mut wv = [V::zero(); NV];
                for (v, w) in wv.iter_mut().enumerate() {
                    *w = V::load(wt.add(ci * plan.o_pad + v * V::L));
                }
                // Index loops: iterators over the nested array made the compiler keep the
                // accumulators on the stack.
                for r in 0..2 {
                    for p in 0..PX {
                        let xv = V::splat(xt.add(r * plan.row_stride + p * plan.px_stride + ci));
                        for v in 0..NV {
                            acc[r][p][v] = V::mul_add(xv, wv[v], acc[r][p][v]);
                        }
                    }
                }
            }
        }
        if relu {
            let zero = V::zero();
            for r in 0..2 {
                for p in 0..PX {
                    for v in 0..NV {
                        acc[r][p][v] = V::max(acc[r][p][v], zero);
                    }
                }
            }
        }
        let valid = o - co;
        for q in 0..PX / 2 {
            let yq = y.add(q * o);
            for v in 0..NV {
                let left = V::max_nan(acc[0][2 * q][v], acc[1][2 * q][v]);
                let right = V::max_nan(acc[0][2 * q + 1][v], acc[1][2 * q + 1][v]);
                let m = V::max_nan(left, right);
                let first = v * V::L;
                if first + V::L <= valid {
                    m.store(yq.add(first));
                } else if first < valid {
                    m.store_first(yq.add(first), valid - first);
                }
            }
        }
    }
}

/// Row kernels: channel blocks of up to `NVMAX` vectors, pixel tiles of up to `PXMAX` pixels,
/// each tile a whole number of `GROUP`-pixel groups, run by `$tiles!` (the last tile of the row
/// takes what is left). `GROUP` is 1 for one convolution row ([`tile`]; pixel `p` written at
/// `y + p * o`) and 2 for two rows pooled 2x2 ([`tile_pooled`]; `out_w / 2` pooled pixels,
/// `out_w` even).
macro_rules! row_kernel {
    ($name:ident, $feat:literal, $v:ty, $tiles:ident, group $group:literal, $nvmax:literal,
     [$($nv:literal => $pxmax:literal),*]) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $feat)]
        unsafe fn $name(plan: &Plan, x_row: usize, out_w: usize, o: usize, relu: bool, y: *mut f32) {
            // SAFETY: as for `tile` / `tile_pooled`; the caller checked the features.
            unsafe {
                let lanes = <$v as Lanes>::L;
                let mut co = 0;
                while co < o {
                    let nv = ((o - co).div_ceil(lanes)).min($nvmax);
                    match nv {
                        $($nv => {
                            let mut ow = 0;
                            while (out_w - ow) / $group > 0 {
                                let px = (out_w - ow).min($pxmax) / $group * $group;
                                let x0 = x_row + ow * plan.px_stride;
                                let yo = y.add(ow / $group * o + co);
                                $tiles!($v, $nv, px, plan, x0, co, o, relu, yo);
                                ow += px;
                            }
                        })*
                        _ => unreachable!("nv is in 1..=NVMAX"),
                    }
                    co += nv * lanes;
                }
            }
        }
    };
}

/// Calls `tile_pooled::<V, px, NV>` for a run-time even `px` in 2..=8.
macro_rules! pooled_tiles {
    ($v:ty, $nv:literal, $px:expr, $($arg:expr),*) => {
        match $px {
            2 => tile_pooled::<$v, 2, $nv>($($arg),*),
            4 => tile_pooled::<$v, 4, $nv>($($arg),*),
            6 => tile_pooled::<$v, 6, $nv>($($arg),*),
            _ => tile_pooled::<$v, 8, $nv>($($arg),*),
        }
    };
}

/// Calls `tile::<V, px, NV>` for a run-time `px` in 1..=8.
macro_rules! tiles {
    ($v:ty, $nv:literal, $px:expr, $($arg:expr),*) => {
        match $px {
            1 => tile::<$v, 1, $nv>($($arg),*),
            2 => tile::<$v, 2, $nv>($($arg),*),
            3 => tile::<$v, 3, $nv>($($arg),*),
            4 => tile::<$v, 4, $nv>($($arg),*),
            5 => tile::<$v, 5, $nv>($($arg),*),
            6 => tile::<$v, 6, $nv>($($arg),*),
            7 => tile::<$v, 7, $nv>($($arg),*),
            _ => tile::<$v, 8, $nv>($($arg),*),
        }
    };
}

// AVX-512 has 32 registers: 4 x 6 accumulators + 4 kernel vectors + 1 broadcast, or up to
// 8 pixels when fewer channel vectors are live. AVX2 has 16: 2 x 6 + 2 + 1.
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::{__m256, __m512};
row_kernel!(row_avx512, "avx512f", __m512, tiles, group 1, 4, [4 => 6, 3 => 7, 2 => 8, 1 => 8]);
row_kernel!(row_avx2, "avx2,fma", __m256, tiles, group 1, 2, [2 => 6, 1 => 8]);
// Two rows: 2 x PX x NV accumulators + NV kernel vectors + 1 broadcast.
row_kernel!(pooled_rows_avx512, "avx512f", __m512, pooled_tiles, group 2, 4, [4 => 2, 3 => 4, 2 => 6, 1 => 8]);
row_kernel!(pooled_rows_avx2, "avx2,fma", __m256, pooled_tiles, group 2, 2, [2 => 2, 1 => 4]);

#[cfg(test)]
mod tests;
