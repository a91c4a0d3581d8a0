//! 2-D pooling on the CPU, NHWC (`[batch, h, w, channels]`), TensorFlow padding semantics:
//! padded positions never win a max and are not counted in an average. Parallel over images;
//! the inner loops run over the contiguous channel axis so they vectorise.

use crate::cpu::conv::{checked_numel, par_new, par_new_pair, shape_error, window_axis, Padding};
use crate::{Error, Result};

/// Shapes of a 2-D pooling.
#[derive(Clone, Debug)]
pub struct Pool2dGeometry {
    pub batch: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub channels: usize,
    pub pool_h: usize,
    pub pool_w: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    pub pad_top: usize,
    pub pad_left: usize,
    pub out_h: usize,
    pub out_w: usize,
}

impl Pool2dGeometry {
    /// Validates `x_shape` (`[batch, h, w, channels]`) and computes output size and padding.
    pub fn new(x_shape: &[usize], pool: [usize; 2], strides: [usize; 2], padding: Padding) -> Result<Self> {
        const OP: &str = "pooling2d";
        if x_shape.len() != 4 {
            return Err(shape_error(
                OP,
                "input of rank 4 [batch, height, width, channels]",
                x_shape,
            ));
        }
        if x_shape[1..].contains(&0) {
            return Err(shape_error(
                OP,
                "input with positive height, width and channels",
                x_shape,
            ));
        }
        if pool.contains(&0) {
            return Err(Error::Invalid(format!(
                "{OP}: pool_size must be positive, got {pool:?}"
            )));
        }
        if strides.contains(&0) {
            return Err(Error::Invalid(format!(
                "{OP}: strides must be positive, got {strides:?}"
            )));
        }
        let (out_h, pad_top) = window_axis(OP, "height", x_shape[1], pool[0], strides[0], 1, padding)?;
        let (out_w, pad_left) = window_axis(OP, "width", x_shape[2], pool[1], strides[1], 1, padding)?;
        let n = checked_numel(OP, "input", x_shape)?;
        if n > u32::MAX as usize {
            return Err(Error::Invalid(format!(
                "{OP}: input {x_shape:?} has {n} elements, more than the 2^32 - 1 this kernel indexes"
            )));
        }
        Ok(Pool2dGeometry {
            batch: x_shape[0],
            in_h: x_shape[1],
            in_w: x_shape[2],
            channels: x_shape[3],
            pool_h: pool[0],
            pool_w: pool[1],
            stride_h: strides[0],
            stride_w: strides[1],
            pad_top,
            pad_left,
            out_h,
            out_w,
        })
    }

    /// `[batch, out_h, out_w, channels]`.
    pub fn output_shape(&self) -> Vec<usize> {
        vec![self.batch, self.out_h, self.out_w, self.channels]
    }

    /// `[batch, in_h, in_w, channels]`.
    pub fn input_shape(&self) -> Vec<usize> {
        vec![self.batch, self.in_h, self.in_w, self.channels]
    }

    fn in_img(&self) -> usize {
        self.in_h * self.in_w * self.channels
    }

    fn out_img(&self) -> usize {
        self.out_h * self.out_w * self.channels
    }

    /// In-bounds input rows `h0..h1` and columns `w0..w1` of output pixel `(oh, ow)`.
    /// Never empty: a window always overlaps the input (padding < window).
    #[inline]
    fn window(&self, oh: usize, ow: usize) -> (usize, usize, usize, usize) {
        let h = (oh * self.stride_h) as isize - self.pad_top as isize;
        let w = (ow * self.stride_w) as isize - self.pad_left as isize;
        let h0 = h.max(0) as usize;
        let w0 = w.max(0) as usize;
        let h1 = ((h + self.pool_h as isize) as usize).min(self.in_h);
        let w1 = ((w + self.pool_w as isize) as usize).min(self.in_w);
        (h0, h1, w0, w1)
    }
}

/// Channels max pooling keeps in registers at once in the portable build (two SSE registers).
const LANES: usize = 8;

/// Max pooling forward. Returns the output and, per output element, the flat index into `x`
/// of the element that won (first maximum in window order; a NaN wins and sticks, so NaN
/// propagates like in PyTorch and TensorFlow).
pub fn max_pool2d_forward(x: &[f32], g: &Pool2dGeometry) -> (Vec<f32>, Vec<u32>) {
    assert_eq!(x.len(), g.batch * g.in_img(), "max_pool2d_forward: input length");
    let (in_img, out_img) = (g.in_img(), g.out_img());
    if g.batch * out_img == 0 {
        return (Vec::new(), Vec::new());
    }
    par_new_pair(g.batch * out_img, out_img, |n, yi, ai| {
        max_pool_image_dispatch::<true>(&x[n * in_img..(n + 1) * in_img], g, (n * in_img) as u32, yi, ai);
    })
}

/// Max pooling forward without the argmax (inference: nothing will route a gradient back).
pub fn max_pool2d_values(x: &[f32], g: &Pool2dGeometry) -> Vec<f32> {
    assert_eq!(x.len(), g.batch * g.in_img(), "max_pool2d_values: input length");
    let (in_img, out_img) = (g.in_img(), g.out_img());
    if g.batch * out_img == 0 {
        return Vec::new();
    }
    // Several images per task: one small image is too little work to hand to a thread.
    let per_task = (4096 / out_img.max(1)).max(1);
    par_new(g.batch * out_img, per_task * out_img, |t, y| {
        for (i, yi) in y.chunks_exact_mut(out_img).enumerate() {
            let n = t * per_task + i;
            let xi = &x[n * in_img..(n + 1) * in_img];
            #[cfg(target_arch = "x86_64")]
            if g.channels.is_multiple_of(16) && std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU supports AVX-512F (checked); the lengths are the geometry's.
                unsafe { max_values_image_avx512(xi, g, yi) };
                continue;
            }
            max_pool_image_dispatch::<false>(xi, g, 0, yi, &mut []);
        }
    })
}

/// Max pooling of one image without the argmax, 64 (then 16) channels per pass: `vmaxps` over
/// the window into independent registers (the argmax path's compare-and-select chain is
/// latency-bound), then NaN wherever the window held one.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn max_values_image_avx512(xi: &[f32], g: &Pool2dGeometry, yi: &mut [f32]) {
    let c = g.channels;
    assert!(xi.len() >= g.in_img() && yi.len() >= g.out_img() && c.is_multiple_of(16));
    for oh in 0..g.out_h {
        for ow in 0..g.out_w {
            let win = g.window(oh, ow);
            let o = (oh * g.out_w + ow) * c;
            let mut j = 0;
            // SAFETY: every window lies inside the image (Pool2dGeometry::window) and the
            // channels j..j + 16 * NV <= c, so loads stay in `xi` and stores in pixel `o`.
            unsafe {
                while j + 64 <= c {
                    max_values_window::<4>(xi.as_ptr(), g, win, j, yi.as_mut_ptr().add(o + j));
                    j += 64;
                }
                while j < c {
                    max_values_window::<1>(xi.as_ptr(), g, win, j, yi.as_mut_ptr().add(o + j));
                    j += 16;
                }
            }
        }
    }
}

/// Max of one window over channels `j..j + 16 * NV`, into `y`.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn max_values_window<const NV: usize>(
    x: *const f32,
    g: &Pool2dGeometry,
    (h0, h1, w0, w1): (usize, usize, usize, usize),
    j: usize,
    y: *mut f32,
) {
    use std::arch::x86_64::*;
    let mut best = [_mm512_set1_ps(f32::NEG_INFINITY); NV];
    let mut nan: [__mmask16; NV] = [0; NV];
    // SAFETY: the caller's bounds.
    unsafe {
        for ih in h0..h1 {
            for iw in w0..w1 {
                let base = x.add((ih * g.in_w + iw) * g.channels + j);
                for v in 0..NV {
                    let val = _mm512_loadu_ps(base.add(16 * v));
                    nan[v] |= _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(val, val);
                    best[v] = _mm512_max_ps(best[v], val);
                }
            }
        }
        for v in 0..NV {
            let out = _mm512_mask_mov_ps(best[v], nan[v], _mm512_set1_ps(f32::NAN));
            _mm512_storeu_ps(y.add(16 * v), out);
        }
    }
}

/// Picks the widest vector build of [`max_pool_image`] this CPU runs.
fn max_pool_image_dispatch<const ARG: bool>(xi: &[f32], g: &Pool2dGeometry, off: u32, yi: &mut [f32], ai: &mut [u32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F (checked just above).
            unsafe { max_pool_image_avx512::<ARG>(xi, g, off, yi, ai) };
            return;
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            unsafe { max_pool_image_avx2::<ARG>(xi, g, off, yi, ai) };
            return;
        }
    }
    max_pool_image::<LANES, ARG>(xi, g, off, yi, ai);
}

/// [`max_pool_image`] compiled for AVX2: the compare-and-select loop is instruction-bound,
/// and the baseline x86-64 build only has SSE2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn max_pool_image_avx2<const ARG: bool>(
    xi: &[f32],
    g: &Pool2dGeometry,
    off: u32,
    yi: &mut [f32],
    ai: &mut [u32],
) {
    max_pool_image::<8, ARG>(xi, g, off, yi, ai);
}

/// [`max_pool_image`] compiled for AVX-512 (16 channels per register, mask-register selects).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn max_pool_image_avx512<const ARG: bool>(
    xi: &[f32],
    g: &Pool2dGeometry,
    off: u32,
    yi: &mut [f32],
    ai: &mut [u32],
) {
    max_pool_image::<16, ARG>(xi, g, off, yi, ai);
}

/// Max pooling of one image; `off` is the image's offset in the batch (for the argmax, which
/// is written to `ai` only when `ARG`).
#[inline(always)]
fn max_pool_image<const L: usize, const ARG: bool>(
    xi: &[f32],
    g: &Pool2dGeometry,
    off: u32,
    yi: &mut [f32],
    ai: &mut [u32],
) {
    let c = g.channels;
    for oh in 0..g.out_h {
        for ow in 0..g.out_w {
            let o = (oh * g.out_w + ow) * c;
            let win = g.window(oh, ow);
            let mut j = 0;
            while j + L <= c {
                max_window::<L, ARG>(xi, g, win, j, off, &mut yi[o + j..], arg_at::<ARG>(ai, o + j));
                j += L;
            }
            while j + 4 <= c {
                max_window::<4, ARG>(xi, g, win, j, off, &mut yi[o + j..], arg_at::<ARG>(ai, o + j));
                j += 4;
            }
            while j < c {
                max_window::<1, ARG>(xi, g, win, j, off, &mut yi[o + j..], arg_at::<ARG>(ai, o + j));
                j += 1;
            }
        }
    }
}

#[inline(always)]
fn arg_at<const ARG: bool>(ai: &mut [u32], at: usize) -> &mut [u32] {
    if ARG {
        &mut ai[at..]
    } else {
        &mut []
    }
}

/// Max (and, when `ARG`, argmax) over one window for channels `j..j + N`, kept in registers.
#[inline(always)]
fn max_window<const N: usize, const ARG: bool>(
    xi: &[f32],
    g: &Pool2dGeometry,
    (h0, h1, w0, w1): (usize, usize, usize, usize),
    j: usize,
    off: u32,
    y: &mut [f32],
    arg: &mut [u32],
) {
    let c = g.channels;
    let first = (h0 * g.in_w + w0) * c + j;
    let mut best: [f32; N] = xi[first..first + N].try_into().expect("N lanes");
    let mut idx = [0u32; N];
    if ARG {
        for (l, i) in idx.iter_mut().enumerate() {
            *i = off + (first + l) as u32;
        }
    }
    for ih in h0..h1 {
        for iw in w0..w1 {
            let base = (ih * g.in_w + iw) * c + j;
            let xs: &[f32; N] = xi[base..base + N].try_into().expect("N lanes");
            let i0 = off + base as u32;
            for l in 0..N {
                let v = xs[l];
                #[allow(clippy::eq_op)]
                let take = (v > best[l]) | (v != v);
                best[l] = if take { v } else { best[l] };
                if ARG {
                    idx[l] = if take { i0 + l as u32 } else { idx[l] };
                }
            }
        }
    }
    y[..N].copy_from_slice(&best);
    if ARG {
        arg[..N].copy_from_slice(&idx);
    }
}

/// Max pooling backward: routes each `dy` element to the input element that won.
pub fn max_pool2d_backward(dy: &[f32], argmax: &[u32], g: &Pool2dGeometry) -> Vec<f32> {
    let (in_img, out_img) = (g.in_img(), g.out_img());
    assert_eq!(dy.len(), g.batch * out_img, "max_pool2d_backward: dy length");
    assert_eq!(argmax.len(), dy.len(), "max_pool2d_backward: argmax length");
    if g.batch * in_img == 0 {
        return Vec::new();
    }
    par_new(g.batch * in_img, in_img, |n, dxi| {
        let off = n * in_img;
        let dyi = &dy[n * out_img..(n + 1) * out_img];
        let ai = &argmax[n * out_img..(n + 1) * out_img];
        for (&d, &a) in dyi.iter().zip(ai) {
            dxi[a as usize - off] += d;
        }
    })
}

/// Average pooling forward; each window is divided by its count of in-bounds elements.
pub fn avg_pool2d_forward(x: &[f32], g: &Pool2dGeometry) -> Vec<f32> {
    assert_eq!(x.len(), g.batch * g.in_img(), "avg_pool2d_forward: input length");
    let c = g.channels;
    let (in_img, out_img) = (g.in_img(), g.out_img());
    if g.batch * out_img == 0 {
        return Vec::new();
    }
    par_new(g.batch * out_img, out_img, |n, yi| {
        let xi = &x[n * in_img..(n + 1) * in_img];
        for oh in 0..g.out_h {
            for ow in 0..g.out_w {
                let o = (oh * g.out_w + ow) * c;
                let yo = &mut yi[o..o + c];
                let (h0, h1, w0, w1) = g.window(oh, ow);
                for ih in h0..h1 {
                    let row = &xi[(ih * g.in_w + w0) * c..(ih * g.in_w + w1) * c];
                    for px in row.chunks_exact(c) {
                        for (a, v) in yo.iter_mut().zip(px) {
                            *a += *v;
                        }
                    }
                }
                let inv = 1.0 / ((h1 - h0) * (w1 - w0)) as f32;
                for a in yo.iter_mut() {
                    *a *= inv;
                }
            }
        }
    })
}

/// Average pooling backward: each `dy` element is spread evenly over its window's in-bounds
/// elements.
pub fn avg_pool2d_backward(dy: &[f32], g: &Pool2dGeometry) -> Vec<f32> {
    let c = g.channels;
    let (in_img, out_img) = (g.in_img(), g.out_img());
    assert_eq!(dy.len(), g.batch * out_img, "avg_pool2d_backward: dy length");
    if g.batch * in_img == 0 {
        return Vec::new();
    }
    par_new(g.batch * in_img, in_img, |n, dxi| {
        let dyi = &dy[n * out_img..(n + 1) * out_img];
        let mut scaled = vec![0.0f32; c];
        for oh in 0..g.out_h {
            for ow in 0..g.out_w {
                let o = (oh * g.out_w + ow) * c;
                let (h0, h1, w0, w1) = g.window(oh, ow);
                let inv = 1.0 / ((h1 - h0) * (w1 - w0)) as f32;
                for (s, d) in scaled.iter_mut().zip(&dyi[o..o + c]) {
                    *s = *d * inv;
                }
                for ih in h0..h1 {
                    let row = &mut dxi[(ih * g.in_w + w0) * c..(ih * g.in_w + w1) * c];
                    for px in row.chunks_exact_mut(c) {
                        for (a, s) in px.iter_mut().zip(&scaled) {
                            *a += *s;
                        }
                    }
                }
            }
        }
    })
}

/// Global average pooling: `x` is `[batch, spatial, channels]` (spatial = h * w), the result
/// `[batch, channels]`.
pub fn global_avg_pool2d_forward(x: &[f32], batch: usize, spatial: usize, channels: usize) -> Vec<f32> {
    assert_eq!(
        x.len(),
        batch * spatial * channels,
        "global_avg_pool2d_forward: input length"
    );
    if batch * channels == 0 {
        return Vec::new();
    }
    if spatial == 0 {
        return vec![0.0; batch * channels];
    }
    let inv = 1.0 / spatial as f32;
    par_new(batch * channels, channels, |n, yi| {
        for px in x[n * spatial * channels..(n + 1) * spatial * channels].chunks_exact(channels) {
            for (a, v) in yi.iter_mut().zip(px) {
                *a += *v;
            }
        }
        for a in yi.iter_mut() {
            *a *= inv;
        }
    })
}

/// Global average pooling backward: `dy` is `[batch, channels]`, the result
/// `[batch, spatial, channels]`.
pub fn global_avg_pool2d_backward(dy: &[f32], batch: usize, spatial: usize, channels: usize) -> Vec<f32> {
    assert_eq!(dy.len(), batch * channels, "global_avg_pool2d_backward: dy length");
    if batch * spatial * channels == 0 {
        return Vec::new();
    }
    let inv = 1.0 / spatial as f32;
    par_new(batch * spatial * channels, spatial * channels, |n, dxi| {
        let scaled: Vec<f32> = dy[n * channels..(n + 1) * channels].iter().map(|d| d * inv).collect();
        for px in dxi.chunks_exact_mut(channels) {
            px.copy_from_slice(&scaled);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every lane width (AVX-512, AVX2 and portable builds) gives the same max and argmax.
    #[test]
    fn max_pool_lane_widths_agree() {
        let g = Pool2dGeometry::new(&[2, 7, 6, 37], [3, 2], [2, 2], Padding::Same).unwrap();
        let x: Vec<f32> = (0..2 * 7 * 6 * 37).map(|i| ((i * 7919) % 263) as f32 - 131.0).collect();
        let (y, a) = max_pool2d_forward(&x, &g);
        let (in_img, out_img) = (g.in_img(), g.out_img());
        for lanes in [1usize, 4, 8, 16] {
            let mut y2 = vec![0.0; y.len()];
            let mut a2 = vec![0u32; a.len()];
            for n in 0..g.batch {
                let xi = &x[n * in_img..(n + 1) * in_img];
                let (yi, ai) = (
                    &mut y2[n * out_img..(n + 1) * out_img],
                    &mut a2[n * out_img..(n + 1) * out_img],
                );
                let off = (n * in_img) as u32;
                match lanes {
                    1 => max_pool_image::<1, true>(xi, &g, off, yi, ai),
                    4 => max_pool_image::<4, true>(xi, &g, off, yi, ai),
                    8 => max_pool_image::<8, true>(xi, &g, off, yi, ai),
                    _ => max_pool_image::<16, true>(xi, &g, off, yi, ai),
                }
            }
            assert_eq!(y2, y, "{lanes} lanes");
            assert_eq!(a2, a, "{lanes} lanes");
        }
    }

    /// The values-only path (vmaxps, 16 to 80 channels) equals the argmax path, NaN included.
    #[test]
    fn max_values_match_the_argmax_path() {
        for (shape, pool, strides, padding) in [
            ([3, 9, 8, 16], [2, 2], [2, 2], Padding::Valid),
            ([2, 7, 6, 80], [3, 2], [2, 1], Padding::Same),
            ([1, 5, 5, 48], [3, 3], [1, 1], Padding::Same),
        ] {
            let g = Pool2dGeometry::new(&shape, pool, strides, padding).unwrap();
            let mut x: Vec<f32> = (0..shape.iter().product::<usize>())
                .map(|i| ((i * 7919) % 263) as f32 - 131.0)
                .collect();
            x[5] = f32::NAN;
            x[shape[3] * 3 + 17] = f32::NAN;
            let (want, _) = max_pool2d_forward(&x, &g);
            let got = max_pool2d_values(&x, &g);
            assert_eq!(got.len(), want.len());
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!(a == b || (a.is_nan() && b.is_nan()), "{shape:?} [{i}]: {a} vs {b}");
            }
            assert!(got.iter().any(|v| v.is_nan()));
        }
    }
}
