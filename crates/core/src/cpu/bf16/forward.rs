//! bf16 forward passes of Dense and Conv2D: round the activations to bf16, run the bf16 GEMM
//! over blocks of rows in parallel, and add bias and activation to each block while it is still
//! in cache. The blocking and threading are int8's (`crate::cpu::int8::forward`).

use rayon::prelude::*;

use super::{convert_into, finish, gemm_bf16, Bf16Kernel, PackedBf16};
use crate::cpu::conv::{im2col, Conv2dGeometry};
use crate::cpu::elementwise::Activation;
use crate::cpu::int8::{block_rows, blocks, conv_max_pooled, pool_rows, with_scratch, Scratch, PARALLEL_MACS};
use crate::{Error, Result};

thread_local! {
    /// Per-thread bf16 rows and f32 sums of a block, reused across calls.
    static SCRATCH: Scratch<u16, f32> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// `act(x · W + bias)` with `x` of `rows x w.k`.
pub fn linear_bf16(
    x: &[f32],
    rows: usize,
    w: &PackedBf16,
    bias: Option<&[f32]>,
    act: Activation,
    kernel: Bf16Kernel,
) -> Result<Vec<f32>> {
    let (k, n, kp, ldc) = (w.k, w.n, w.padded_depth(), w.padded_width());
    if x.len() != rows * k {
        return Err(Error::shape("bf16 dense input", [rows, k], x.len()));
    }
    let block = block_rows(rows, 2 * kp + 4 * ldc, rows * k * n);
    blocks(rows, n, block, "bf16 dense output", |bi, yb| {
        let (r0, nr) = (bi * block, yb.len() / n);
        with_scratch(&SCRATCH, nr * kp, nr * ldc, |a, c| {
            for (r, arow) in a.chunks_exact_mut(kp).enumerate() {
                convert_into(&x[(r0 + r) * k..(r0 + r + 1) * k], arow);
                arow[k..].fill(0);
            }
            gemm_bf16(kernel, a, nr, w, c);
            finish(c, ldc, n, bias, act, yb);
        });
    })
}

/// Convolution of `x` (NHWC, `g`'s shapes) with the packed `[kh * kw * in_c, out_c]` kernel,
/// then `+ bias` and `act`.
pub fn conv2d_bf16(
    x: &[f32],
    g: &Conv2dGeometry,
    w: &PackedBf16,
    bias: Option<&[f32]>,
    act: Activation,
    kernel: Bf16Kernel,
) -> Result<Vec<f32>> {
    let xb = convert_images(x, g, w)?;
    let (k, n, kp, ldc) = (w.k, w.n, w.padded_depth(), w.padded_width());
    let rows = g.batch * g.out_h * g.out_w;
    let block = block_rows(rows, 2 * kp + 4 * ldc, rows * k * n);
    blocks(rows, n, block, "bf16 conv2d output", |bi, yb| {
        let (r0, nr) = (bi * block, yb.len() / n);
        with_scratch(&SCRATCH, nr * kp, nr * ldc, |a, c| {
            patches(&xb, g, r0, nr, kp, k, a);
            gemm_bf16(kernel, a, nr, w, c);
            finish(c, ldc, n, bias, act, yb);
        });
    })
}

/// [`conv2d_bf16`] followed by max pooling over non-overlapping `pool` windows ('valid'), in
/// one pass (`int8::conv_max_pooled`): bit for bit the two separate passes.
pub fn conv2d_bf16_max_pool(
    x: &[f32],
    g: &Conv2dGeometry,
    w: &PackedBf16,
    bias: Option<&[f32]>,
    act: Activation,
    pool: [usize; 2],
    kernel: Bf16Kernel,
) -> Result<Vec<f32>> {
    let xb = convert_images(x, g, w)?;
    let (k, n, kp, ldc) = (w.k, w.n, w.padded_depth(), w.padded_width());
    let pixels = g.out_h * g.out_w;
    let block = |img0: usize, images: usize, used: usize, yb: &mut [f32]| {
        let rows = images * used;
        with_scratch(&SCRATCH, rows * kp, rows * ldc, |a, c| {
            for (i, a_img) in a.chunks_exact_mut(used * kp).enumerate() {
                patches(&xb, g, (img0 + i) * pixels, used, kp, k, a_img);
            }
            gemm_bf16(kernel, a, rows, w, c);
            pool_rows(g, pool, used, yb, |y| finish(c, ldc, n, bias, act, y));
        });
    };
    conv_max_pooled(g, pool, 2 * kp + 4 * ldc, "bf16 conv2d output", block)
}

/// `x` rounded to bf16, after checking it against the geometry and the kernel.
fn convert_images(x: &[f32], g: &Conv2dGeometry, w: &PackedBf16) -> Result<Vec<u16>> {
    if x.len() != g.batch * g.in_h * g.in_w * g.in_c || w.k != g.patch_len() || w.n != g.out_c {
        return Err(Error::shape("bf16 conv2d input", g.input_shape(), x.len()));
    }
    let mut xb = crate::alloc::try_with_capacity::<u16>("bf16 conv2d input", x.len())?;
    xb.resize(x.len(), 0);
    if x.len() >= PARALLEL_MACS {
        x.par_chunks(1 << 14)
            .zip(xb.par_chunks_mut(1 << 14))
            .for_each(|(x, o)| convert_into(x, o));
    } else {
        convert_into(x, &mut xb);
    }
    Ok(xb)
}

/// The patches of output pixels `r0 .. r0 + rows` (rows of `kp` values), zero past `k`: a
/// stale value there could be NaN, and NaN times the zero padding of the weights is NaN.
fn patches(xb: &[u16], g: &Conv2dGeometry, r0: usize, rows: usize, kp: usize, k: usize, a: &mut [u16]) {
    im2col(xb, g, r0, rows, kp, a, 0, |_| 0);
    if kp > k {
        a.chunks_exact_mut(kp).for_each(|row| row[k..].fill(0));
    }
}
