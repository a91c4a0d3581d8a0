//! Winograd F(2x2, 3x3) convolution for inference on x86-64 (AVX-512F, or AVX2 + FMA).
//!
//! At batch 256 the direct kernel (`conv_direct`) runs the MNIST convnet's second layer close
//! to the machine's FMA peak, so going faster takes fewer multiplies. F(2x2, 3x3) (Lavin and
//! Gray, 2015) computes each 2x2 block of outputs from the 4x4 block of inputs under it: both
//! are transformed, multiplied position by position (16 products per pair of input and output
//! channels instead of 36), and the products are transformed back. Over channels, each of the
//! 16 positions is one GEMM `[tiles, in_c] x [in_c, out_c]`, run on the direct kernel's
//! register tiles. The data transforms only add and subtract, and the kernel's is computed in
//! f64, so the result stays within a few roundings of the direct sum (tested against f64).
//!
//! A parallel block is a run of whole images; inside it, groups of tile rows keep the
//! transformed input and the products in L2. Each image is padded into a scratch frame, so
//! nothing batch-sized is allocated besides the output. No gradient flows through this path:
//! `ops::conv2d_act` uses it only when nothing records.

// The kernels are x86-64 only (AVX2/AVX-512); elsewhere `available()` is false and the
// helpers they share are unused, which is expected rather than dead code.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code, unused_imports, unused_macros))]

use std::sync::{Arc, Mutex};

use super::conv::{par_new_written, with_scratch, Conv2dGeometry};
#[cfg(target_arch = "x86_64")]
use super::conv_direct::gemm_rows;
use super::elementwise::{activation_in_place, Activation};
#[cfg(target_arch = "x86_64")]
use super::simd::{isa, Isa, Lanes};

/// Input channels below which the transforms cost more than the saved products.
const MIN_IN_C: usize = 8;
/// Output channels below which the same holds for the output transform.
const MIN_OUT_C: usize = 8;
/// Bytes of transformed input plus products per group of tile rows (a share of L2).
const GROUP_BYTES: usize = 512 << 10;

/// Whether [`conv2d_winograd`] takes this convolution: a 3x3 window with stride 1 and no
/// dilation, enough channels, a CPU with a kernel, and at least one image per thread (a
/// parallel block is a run of whole images; smaller batches go to the direct kernel, which
/// splits rows across threads).
pub fn applies(g: &Conv2dGeometry) -> bool {
    (g.k_h, g.k_w, g.stride_h, g.stride_w, g.dil_h, g.dil_w) == (3, 3, 1, 1, 1, 1)
        && g.in_c >= MIN_IN_C
        && g.out_c >= MIN_OUT_C
        && g.batch >= rayon::current_num_threads().max(1)
        && available()
}

fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        isa().is_some()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A 3x3 kernel in the Winograd domain (`U`, see [`transform_kernel`]), padded for this
/// CPU's vector width.
pub struct WinogradKernel {
    u: Vec<f32>,
    c: usize,
    o: usize,
}

impl WinogradKernel {
    /// Transforms a `[3, 3, c, o]` kernel, or `None` when this CPU has no kernel.
    pub fn new(kernel: &[f32], c: usize, o: usize) -> Option<Self> {
        assert_eq!(kernel.len(), 9 * c * o, "winograd: kernel length");
        let o_pad = o.div_ceil(lanes()?) * lanes()?;
        Some(Self {
            u: transform_kernel(kernel, c, o, o_pad),
            c,
            o,
        })
    }
}

/// A layer's transformed kernel and the parameter version it came from: the transform costs
/// about as much as a small batch's convolution, so it runs once per weight change.
#[derive(Default)]
pub struct KernelCache(Mutex<Option<(u64, Arc<WinogradKernel>)>>);

impl KernelCache {
    /// The transform of `kernel` at `version` (read before the value: a change in between
    /// costs one more transform, never a stale one).
    fn get(&self, version: u64, kernel: &[f32], c: usize, o: usize) -> Option<Arc<WinogradKernel>> {
        let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((v, k)) = slot.as_ref() {
            if *v == version && (k.c, k.o) == (c, o) {
                return Some(k.clone());
            }
        }
        let k = Arc::new(WinogradKernel::new(kernel, c, o)?);
        *slot = Some((version, k.clone()));
        Some(k)
    }
}

fn lanes() -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    {
        Some(match isa()? {
            Isa::Avx512 => 16,
            Isa::Avx2 => 8,
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}

/// `act(conv(x, kernel) + bias)` by Winograd F(2x2, 3x3), or `None` when [`applies`] is false.
/// `cache` (with the kernel's parameter version) keeps the kernel's transform between calls.
///
/// Panics if a slice's length disagrees with `g` (the geometry is validated upstream).
pub fn conv2d_winograd(
    x: &[f32],
    kernel: &[f32],
    bias: Option<&[f32]>,
    g: &Conv2dGeometry,
    act: Activation,
    cache: Option<(&KernelCache, u64)>,
) -> Option<Vec<f32>> {
    if !applies(g) {
        return None;
    }
    let u = match cache {
        Some((cache, version)) => cache.get(version, kernel, g.in_c, g.out_c)?,
        None => Arc::new(WinogradKernel::new(kernel, g.in_c, g.out_c)?),
    };
    #[cfg(target_arch = "x86_64")]
    {
        Some(run(x, &u, bias, g, act, isa()?))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (x, u, bias, act);
        None
    }
}

/// `U[ξ][ci][co] = (G g G^T)[ξ]` for every channel pair, out_c padded to `o_pad` with zeros,
/// where `g` is the 3x3 window of the pair and `G = [1 0 0; ½ ½ ½; ½ -½ ½; 0 0 1]`.
fn transform_kernel(kernel: &[f32], c: usize, o: usize, o_pad: usize) -> Vec<f32> {
    let mut u = vec![0.0; 16 * c * o_pad];
    let rows = |a: f64, b: f64, d: f64| [a, 0.5 * (a + b + d), 0.5 * (a - b + d), d];
    for ci in 0..c {
        for co in 0..o {
            let w = |kh: usize, kw: usize| f64::from(kernel[((kh * 3 + kw) * c + ci) * o + co]);
            // G g (4 x 3), column by column.
            let cols: [[f64; 4]; 3] = std::array::from_fn(|kw| rows(w(0, kw), w(1, kw), w(2, kw)));
            for i in 0..4 {
                // Row i of (G g) G^T.
                let r = rows(cols[0][i], cols[1][i], cols[2][i]);
                for (j, v) in r.into_iter().enumerate() {
                    u[((i * 4 + j) * c + ci) * o_pad + co] = v as f32;
                }
            }
        }
    }
    u
}

/// Sizes shared by every group.
#[cfg(target_arch = "x86_64")]
struct Shape {
    c: usize,
    o: usize,
    o_pad: usize,
    out_h: usize,
    out_w: usize,
    /// Tiles per row.
    tw: usize,
    /// Width of the padded frame.
    wp: usize,
}

#[cfg(target_arch = "x86_64")]
fn run(
    x: &[f32],
    kernel: &WinogradKernel,
    bias: Option<&[f32]>,
    g: &Conv2dGeometry,
    act: Activation,
    isa: Isa,
) -> Vec<f32> {
    let (c, o) = (g.in_c, g.out_c);
    let img_in = g.in_h * g.in_w * c;
    assert_eq!(x.len(), g.batch * img_in, "conv2d_winograd: input length");
    assert_eq!((kernel.c, kernel.o), (c, o), "conv2d_winograd: kernel shape");
    let img_out = g.out_h * g.out_w * o;
    if g.batch * img_out == 0 {
        return Vec::new();
    }
    let o_pad = kernel.u.len() / (16 * c);
    let u = &kernel.u;
    let mut b = vec![0.0; o_pad];
    if let Some(bias) = bias {
        b[..o].copy_from_slice(bias);
    }
    let (th, tw) = (g.out_h.div_ceil(2), g.out_w.div_ceil(2));
    // Every 4x4 input tile lies inside the frame; the input sits at (pad_top, pad_left).
    let hp = (2 * th + 2).max(g.in_h + g.pad_top);
    let wp = (2 * tw + 2).max(g.in_w + g.pad_left);
    let shape = Shape {
        c,
        o,
        o_pad,
        out_h: g.out_h,
        out_w: g.out_w,
        tw,
        wp,
    };
    let group_rows = (GROUP_BYTES / 4 / (16 * (c + o_pad)) / tw).clamp(1, th);
    let per_block = g.batch.div_ceil(4 * rayon::current_num_threads().max(1)).max(1);
    let relu = act == Activation::Relu;
    par_new_written(g.batch * img_out, per_block * img_out, |bi, yb| {
        let (frame_len, v_len, m_len) = (hp * wp * c, 16 * group_rows * tw * c, 16 * group_rows * tw * o_pad);
        with_scratch(frame_len + v_len + m_len + o_pad, |scratch| {
            let (frame, rest) = scratch.split_at_mut(frame_len);
            let (v, rest) = rest.split_at_mut(v_len);
            let (m, zeros) = rest.split_at_mut(m_len);
            // The frame's border stays zero: each image rewrites only the interior. `v` and `m`
            // are written before they are read.
            frame.fill(0.0);
            zeros.fill(0.0);
            for (k, y_img) in yb.chunks_exact_mut(img_out).enumerate() {
                let n = bi * per_block + k;
                for (h, row) in x[n * img_in..(n + 1) * img_in].chunks_exact(g.in_w * c).enumerate() {
                    let at = ((h + g.pad_top) * wp + g.pad_left) * c;
                    frame[at..at + row.len()].copy_from_slice(row);
                }
                for ty0 in (0..th).step_by(group_rows) {
                    let nt = group_rows.min(th - ty0) * tw;
                    let (v, m) = (&mut v[..16 * nt * c], &mut m[..16 * nt * o_pad]);
                    let y = y_img.as_mut_ptr().cast::<f32>();
                    // SAFETY: `isa()` checked the CPU's features; the frame holds every tile of
                    // the group, `v` and `m` hold `16 * nt` rows, and `y` holds the image's output.
                    unsafe {
                        match isa {
                            Isa::Avx512 => group_avx512(&shape, frame, u, &b, zeros, v, m, ty0, relu, y),
                            Isa::Avx2 => group_avx2(&shape, frame, u, &b, zeros, v, m, ty0, relu, y),
                        }
                    }
                }
            }
        });
        if !relu {
            // SAFETY: the groups above wrote every output pixel of every image of the block
            // (each pixel lies in exactly one tile), and `MaybeUninit<f32>` has f32's layout.
            let yb = unsafe { &mut *(yb as *mut [std::mem::MaybeUninit<f32>] as *mut [f32]) };
            activation_in_place(act, yb);
        }
    })
}

/// The tiles of tile rows `ty0..` (`v.len() / 16 / c` of them): input transform into `v`
/// (`[16][nt][c]`), the 16 products into `m` (`[16][nt][o_pad]`), output transform into `y`.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn group<V: Lanes>(
    isa: Isa,
    s: &Shape,
    frame: &[f32],
    u: &[f32],
    bias: &[f32],
    zeros: &[f32],
    v: &mut [f32],
    m: &mut [f32],
    ty0: usize,
    relu: bool,
    y: *mut f32,
) {
    let (c, o, o_pad) = (s.c, s.o, s.o_pad);
    let nt = v.len() / 16 / c;
    // SAFETY (whole body): the caller checked the CPU's features; every 4x4 tile lies inside
    // `frame`, loads and stores past a channel count are masked, and output pixels are
    // bounds-checked against out_h x out_w before storing.
    unsafe {
        // B^T d B with B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1], across channels.
        for t in 0..nt {
            let (ty, tx) = (ty0 + t / s.tw, t % s.tw);
            let origin = frame.as_ptr().add((2 * ty * s.wp + 2 * tx) * c);
            let vt = v.as_mut_ptr().add(t * c);
            let mut ci = 0;
            while ci < c {
                let n = (c - ci).min(V::L);
                let load = |r: usize, q: usize| {
                    let p = origin.add((r * s.wp + q) * c + ci);
                    if n == V::L {
                        V::load(p)
                    } else {
                        V::load_first(p, n)
                    }
                };
                let d: [[V; 4]; 4] = std::array::from_fn(|r| std::array::from_fn(|q| load(r, q)));
                let rows: [[V; 4]; 4] = std::array::from_fn(|q| {
                    let col = [d[0][q], d[1][q], d[2][q], d[3][q]];
                    winograd_in(col)
                });
                for i in 0..4 {
                    let out = winograd_in([rows[0][i], rows[1][i], rows[2][i], rows[3][i]]);
                    for (j, val) in out.into_iter().enumerate() {
                        let p = vt.add(((i * 4 + j) * nt) * c + ci);
                        if n == V::L {
                            val.store(p);
                        } else {
                            val.store_first(p, n);
                        }
                    }
                }
                ci += V::L;
            }
        }
        for xi in 0..16 {
            gemm_rows(
                isa,
                &v[xi * nt * c..(xi + 1) * nt * c],
                c,
                &u[xi * c * o_pad..(xi + 1) * c * o_pad],
                zeros,
                &mut m[xi * nt * o_pad..(xi + 1) * nt * o_pad],
            );
        }
        // A^T M A with A^T = [1 1 1 0; 0 1 -1 -1], plus bias (and ReLU), across channels.
        let zero = V::zero();
        for t in 0..nt {
            let (ty, tx) = (ty0 + t / s.tw, t % s.tw);
            let mt = m.as_ptr().add(t * o_pad);
            let mut co = 0;
            while co < o {
                let mv: [[V; 4]; 4] =
                    std::array::from_fn(|i| std::array::from_fn(|j| V::load(mt.add(((i * 4 + j) * nt) * o_pad + co))));
                let b = V::load(bias.as_ptr().add(co));
                // Column q of A^T M, then each of its two rows times A.
                let cols: [[V; 2]; 4] = std::array::from_fn(|q| winograd_out([mv[0][q], mv[1][q], mv[2][q], mv[3][q]]));
                let n = (o - co).min(V::L);
                for r in 0..2 {
                    let oh = 2 * ty + r;
                    let out = winograd_out([cols[0][r], cols[1][r], cols[2][r], cols[3][r]]);
                    for (q, val) in out.into_iter().enumerate() {
                        let ow = 2 * tx + q;
                        if oh >= s.out_h || ow >= s.out_w {
                            continue;
                        }
                        let mut val = V::add(val, b);
                        if relu {
                            val = V::max(val, zero);
                        }
                        let p = y.add((oh * s.out_w + ow) * o + co);
                        if n == V::L {
                            val.store(p);
                        } else {
                            val.store_first(p, n);
                        }
                    }
                }
                co += V::L;
            }
        }
    }
}

/// `B^T d` for one column `d` of four values.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn winograd_in<V: Lanes>(d: [V; 4]) -> [V; 4] {
    // SAFETY: register arithmetic; the caller checked the CPU's features.
    unsafe {
        [
            V::sub(d[0], d[2]),
            V::add(d[1], d[2]),
            V::sub(d[2], d[1]),
            V::sub(d[1], d[3]),
        ]
    }
}

/// `A^T m` for one column `m` of four values.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn winograd_out<V: Lanes>(m: [V; 4]) -> [V; 2] {
    // SAFETY: register arithmetic; the caller checked the CPU's features.
    unsafe { [V::add(V::add(m[0], m[1]), m[2]), V::sub(V::sub(m[1], m[2]), m[3])] }
}

macro_rules! group_for {
    ($name:ident, $feat:literal, $v:ty, $isa:expr) => {
        #[cfg(target_arch = "x86_64")]
        #[allow(clippy::too_many_arguments)]
        #[target_feature(enable = $feat)]
        unsafe fn $name(
            s: &Shape,
            frame: &[f32],
            u: &[f32],
            bias: &[f32],
            zeros: &[f32],
            v: &mut [f32],
            m: &mut [f32],
            ty0: usize,
            relu: bool,
            y: *mut f32,
        ) {
            // SAFETY: as for `group`; the caller checked the features.
            unsafe { group::<$v>($isa, s, frame, u, bias, zeros, v, m, ty0, relu, y) }
        }
    };
}

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::{__m256, __m512};
group_for!(group_avx512, "avx512f", __m512, Isa::Avx512);
group_for!(group_avx2, "avx2,fma", __m256, Isa::Avx2);

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use crate::cpu::conv::Padding;

    /// `act(conv + bias)` in f64, straight from the definition.
    fn reference(x: &[f32], w: &[f32], b: &[f32], g: &Conv2dGeometry) -> Vec<f64> {
        let (c, o) = (g.in_c, g.out_c);
        let mut y = vec![0.0; g.batch * g.out_h * g.out_w * o];
        for n in 0..g.batch {
            for oh in 0..g.out_h {
                for ow in 0..g.out_w {
                    for co in 0..o {
                        let mut acc = f64::from(b[co]);
                        for kh in 0..3 {
                            for kw in 0..3 {
                                let (ih, iw) = (
                                    (oh + kh) as isize - g.pad_top as isize,
                                    (ow + kw) as isize - g.pad_left as isize,
                                );
                                if ih < 0 || iw < 0 || ih as usize >= g.in_h || iw as usize >= g.in_w {
                                    continue;
                                }
                                let xi = ((n * g.in_h + ih as usize) * g.in_w + iw as usize) * c;
                                for ci in 0..c {
                                    acc += f64::from(x[xi + ci]) * f64::from(w[((kh * 3 + kw) * c + ci) * o + co]);
                                }
                            }
                        }
                        y[((n * g.out_h + oh) * g.out_w + ow) * o + co] = acc;
                    }
                }
            }
        }
        y
    }

    fn check(x_shape: [usize; 4], out_c: usize, padding: Padding, act: Activation) {
        let Some(isa) = isa() else {
            eprintln!("skipped: this CPU has no Winograd kernel (needs AVX2+FMA or AVX-512F)");
            return;
        };
        let k = [3, 3, x_shape[3], out_c];
        let g = Conv2dGeometry::new(&x_shape, &k, [1, 1], [1, 1], padding).unwrap();
        let x: Vec<f32> = (0..x_shape.iter().product::<usize>())
            .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
            .collect();
        let w: Vec<f32> = (0..k.iter().product::<usize>())
            .map(|i| ((i * 53 % 97) as f32 / 48.0) - 1.0)
            .collect();
        let b: Vec<f32> = (0..out_c).map(|i| i as f32 * 0.1 - 0.3).collect();
        let got = run(
            &x,
            &WinogradKernel::new(&w, k[2], out_c).unwrap(),
            Some(&b),
            &g,
            act,
            isa,
        );
        let mut want: Vec<f32> = reference(&x, &w, &b, &g).iter().map(|&v| v as f32).collect();
        activation_in_place(act, &mut want);
        // Every sum has 9 * in_c terms of magnitude up to 1: hold the error to a few f32
        // roundings of that scale.
        let scale = 9.0 * x_shape[3] as f32;
        let tol = 8.0 * f32::EPSILON * scale;
        assert_eq!(got.len(), want.len());
        for (i, (a, r)) in got.iter().zip(&want).enumerate() {
            assert!(
                (a - r).abs() <= tol,
                "{x_shape:?} -> {out_c} at {i}: {a} vs {r} (tolerance {tol})"
            );
        }
    }

    #[test]
    fn winograd_matches_f64_convolution() {
        // The convnet's second layer; 'same' padding with odd sizes (a last tile half outside
        // the output); channel counts that are not whole vectors on either side; one image
        // taller than a tile group.
        check([3, 13, 13, 32], 64, Padding::Valid, Activation::Relu);
        check([2, 9, 11, 17], 70, Padding::Same, Activation::Relu);
        check([2, 6, 7, 8], 8, Padding::Valid, Activation::Tanh);
        check([1, 5, 5, 12], 20, Padding::Same, Activation::Linear);
        check([1, 70, 9, 64], 96, Padding::Same, Activation::Relu);
    }

    #[test]
    fn applies_only_to_unit_stride_3x3() {
        let geom = |k: usize, s: usize, c: usize| {
            Conv2dGeometry::new(&[64, 12, 12, c], &[k, k, c, 16], [s, s], [1, 1], Padding::Valid).unwrap()
        };
        assert_eq!(applies(&geom(3, 1, 16)), isa().is_some());
        assert!(!applies(&geom(5, 1, 16)));
        assert!(!applies(&geom(3, 2, 16)));
        assert!(!applies(&geom(3, 1, 1)), "one input channel stays on the direct kernel");
    }
}
