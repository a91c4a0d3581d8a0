//! Int8 forward passes of Dense and Conv2D: quantize the activations, run the `u8 x i8` GEMM
//! over blocks of rows in parallel, and dequantize each block with its bias and activation
//! while it is still in cache.

use rayon::prelude::*;

use super::{dequantize, gemm_u8i8, AffineU8, Int8Kernel, PackedInt8};
use crate::cpu::conv::{im2col, par_new, Conv2dGeometry};
use crate::cpu::conv_direct::max_pool_rows;
use crate::cpu::elementwise::Activation;
use crate::{Error, Result};

/// Below this many multiply-adds the work stays on the calling thread (a batch-1 request):
/// a rayon round trip costs more than it saves.
pub(crate) const PARALLEL_MACS: usize = 1 << 17;
/// Rows per block: the block's `u8` rows, `i32` sums and outputs stay within L2.
const BLOCK_BYTES: usize = 1 << 18;

/// A thread's block scratch: the converted activation rows and the GEMM sums.
pub(crate) type Scratch<A, C> = std::cell::RefCell<(Vec<A>, Vec<C>)>;

thread_local! {
    /// Per-thread `u8` rows and `i32` sums of a block, reused across calls (no page faults or
    /// zeroing per call). Bytes of a row past its `k` values may hold stale values: the packed
    /// weights are zero there.
    static SCRATCH: Scratch<u8, i32> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// Runs `f` with this thread's `scratch` grown to `a_len` rows values and `c_len` sums (shared
/// with the bf16 forward passes, which keep their own `u16`/`f32` scratch).
pub(crate) fn with_scratch<A: Copy + Default, C: Copy + Default, R>(
    scratch: &'static std::thread::LocalKey<Scratch<A, C>>,
    a_len: usize,
    c_len: usize,
    f: impl FnOnce(&mut [A], &mut [C]) -> R,
) -> R {
    scratch.with(|s| {
        let mut s = s.borrow_mut();
        let (a, c) = &mut *s;
        if a.len() < a_len {
            a.resize(a_len, A::default());
        }
        if c.len() < c_len {
            c.resize(c_len, C::default());
        }
        f(&mut a[..a_len], &mut c[..c_len])
    })
}

/// Runs `run(block, output)` over `rows x n` outputs in blocks of `block` rows: inline for one
/// block, else on the rayon pool.
pub(crate) fn blocks(
    rows: usize,
    n: usize,
    block: usize,
    what: &str,
    run: impl Fn(usize, &mut [f32]) + Sync + Send,
) -> Result<Vec<f32>> {
    if block >= rows {
        let mut y = crate::alloc::try_with_capacity(what, rows * n)?;
        y.resize(rows * n, 0.0);
        run(0, &mut y);
        return Ok(y);
    }
    Ok(par_new(rows * n, block * n, run))
}

pub(crate) fn block_rows(rows: usize, bytes_per_row: usize, macs: usize) -> usize {
    let threads = if macs < PARALLEL_MACS {
        1
    } else {
        rayon::current_num_threads().max(1)
    };
    let fit = (BLOCK_BYTES / bytes_per_row.max(1)).max(1);
    fit.min(rows.div_ceil(threads)).max(1)
}

/// `act(x · W + bias)` with `x` of `rows x w.k`, each row quantized on its own.
pub fn linear_int8(
    x: &[f32],
    rows: usize,
    w: &PackedInt8,
    bias: Option<&[f32]>,
    act: Activation,
    kernel: Int8Kernel,
) -> Result<Vec<f32>> {
    let (k, n, kp, ldc) = (w.k, w.n, w.padded_depth(), w.padded_width());
    if x.len() != rows * k {
        return Err(Error::shape("int8 dense input", [rows, k], x.len()));
    }
    let quant: Vec<AffineU8> = if rows * k >= PARALLEL_MACS {
        x.par_chunks(k.max(1)).map(AffineU8::of).collect::<Result<_>>()?
    } else {
        x.chunks(k.max(1)).map(AffineU8::of).collect::<Result<_>>()?
    };
    let block = block_rows(rows, kp + 8 * ldc, rows * k * n);
    let run = |bi: usize, yb: &mut [f32]| {
        let (r0, nr) = (bi * block, yb.len() / n);
        with_scratch(&SCRATCH, nr * kp, nr * ldc, |a, c| {
            for (r, arow) in a.chunks_exact_mut(kp).enumerate() {
                quant[r0 + r].quantize_into(&x[(r0 + r) * k..(r0 + r + 1) * k], arow);
            }
            gemm_u8i8(kernel, a, nr, w, c);
            dequantize(c, w, |r| quant[r0 + r], bias, act, yb);
        });
    };
    blocks(rows, n, block, "int8 dense output", run)
}

/// `y = x · W` for `rows` rows of `x`, each quantized on its own, on the calling thread into
/// `y` (`rows x w.n`): the recurrent product of one RNN chunk at one time step.
pub fn matmul_int8_serial(x: &[f32], rows: usize, w: &PackedInt8, kernel: Int8Kernel, y: &mut [f32]) -> Result<()> {
    let (k, n, kp, ldc) = (w.k, w.n, w.padded_depth(), w.padded_width());
    if x.len() < rows * k || y.len() < rows * n {
        return Err(Error::shape("int8 matmul input", [rows, k], x.len()));
    }
    let quant: Vec<AffineU8> = x[..rows * k]
        .chunks(k.max(1))
        .map(AffineU8::of)
        .collect::<Result<_>>()?;
    with_scratch(&SCRATCH, rows * kp, rows * ldc, |a, c| {
        for (r, arow) in a.chunks_exact_mut(kp).enumerate() {
            quant[r].quantize_into(&x[r * k..(r + 1) * k], arow);
        }
        gemm_u8i8(kernel, a, rows, w, c);
        dequantize(c, w, |r| quant[r], None, Activation::Linear, &mut y[..rows * n]);
    });
    Ok(())
}

/// Convolution of `x` (NHWC, `g`'s shapes) with the packed `[kh * kw * in_c, out_c]` kernel,
/// each image quantized on its own; then `+ bias` and `act`.
pub fn conv2d_int8(
    x: &[f32],
    g: &Conv2dGeometry,
    w: &PackedInt8,
    bias: Option<&[f32]>,
    act: Activation,
    kernel: Int8Kernel,
) -> Result<Vec<f32>> {
    let (xq, quant) = quantize_images(x, g, w)?;
    let pixels = g.out_h * g.out_w;
    let (rows, n, kp, ldc) = (g.batch * pixels, w.n, w.padded_depth(), w.padded_width());
    let block = block_rows(rows, kp + 8 * ldc, rows * w.k * n);
    let run = |bi: usize, yb: &mut [f32]| {
        let (r0, nr) = (bi * block, yb.len() / n);
        with_scratch(&SCRATCH, nr * kp, nr * ldc, |a, c| {
            im2col(&xq, g, r0, nr, kp, a, 0, |img| quant[img].zero_point);
            gemm_u8i8(kernel, a, nr, w, c);
            dequantize(c, w, |r| quant[(r0 + r) / pixels], bias, act, yb);
        });
    };
    blocks(rows, n, block, "int8 conv2d output", run)
}

/// [`conv2d_int8`] followed by max pooling over non-overlapping `pool` windows ('valid'), in
/// one pass ([`conv_max_pooled`]): bit for bit the two separate passes.
pub fn conv2d_int8_max_pool(
    x: &[f32],
    g: &Conv2dGeometry,
    w: &PackedInt8,
    bias: Option<&[f32]>,
    act: Activation,
    pool: [usize; 2],
    kernel: Int8Kernel,
) -> Result<Vec<f32>> {
    let (xq, quant) = quantize_images(x, g, w)?;
    let (pixels, kp, ldc) = (g.out_h * g.out_w, w.padded_depth(), w.padded_width());
    let conv = |img0: usize, used: usize, y: &mut [f32]| {
        let rows = y.len() / w.n;
        with_scratch(&SCRATCH, rows * kp, rows * ldc, |a, c| {
            for (i, a_img) in a.chunks_exact_mut(used * kp).enumerate() {
                let img = img0 + i;
                im2col(&xq, g, img * pixels, used, kp, a_img, 0, |_| quant[img].zero_point);
            }
            gemm_u8i8(kernel, a, rows, w, c);
            dequantize(c, w, |r| quant[img0 + r / used], bias, act, y);
        });
    };
    conv_max_pooled(g, pool, kp + 4 * ldc, "int8 conv2d output", conv)
}

/// Each image of `x` quantized on its own: the `u8` values and each image's parameters.
fn quantize_images(x: &[f32], g: &Conv2dGeometry, w: &PackedInt8) -> Result<(Vec<u8>, Vec<AffineU8>)> {
    let image = g.in_h * g.in_w * g.in_c;
    if x.len() != g.batch * image || w.k != g.k_h * g.k_w * g.in_c || w.n != g.out_c {
        return Err(Error::shape("int8 conv2d input", g.input_shape(), x.len()));
    }
    let mut xq = crate::alloc::try_with_capacity::<u8>("int8 conv2d input", x.len())?;
    xq.resize(x.len(), 0);
    let quantize = |(img, q): (&[f32], &mut [u8])| -> Result<AffineU8> {
        let params = AffineU8::of(img)?;
        params.quantize_into(img, q);
        Ok(params)
    };
    let step = image.max(1);
    let quant: Vec<AffineU8> = if x.len() >= PARALLEL_MACS {
        x.par_chunks(step)
            .zip(xq.par_chunks_mut(step))
            .map(quantize)
            .collect::<Result<_>>()?
    } else {
        x.chunks(step)
            .zip(xq.chunks_mut(step))
            .map(quantize)
            .collect::<Result<_>>()?
    };
    Ok((xq, quant))
}

thread_local! {
    /// Per-thread f32 convolution rows of a pooled block ([`conv_max_pooled`]).
    static POOL_ROWS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A GEMM convolution followed by a plain max pooling (windows and strides `pool`, 'valid'),
/// in one pass over blocks of whole images. `conv(img0, used, rows)` writes, for the images
/// from `img0` on (as many as `rows` holds), the first `used` output pixels of each image
/// (`out_c` floats a pixel): the rows the pooling windows cover, so the rows and columns past
/// the last whole window are never computed. Each block pools its rows while they are in cache.
/// The separate passes allocated and zeroed the whole convolution output, wrote it and read it
/// back: on the MNIST convnet's int8 predict, about 10% of the time.
/// `pixel_bytes` is the scratch one convolution output pixel takes (for the block size).
pub(crate) fn conv_max_pooled(
    g: &Conv2dGeometry,
    [ph, pw]: [usize; 2],
    pixel_bytes: usize,
    what: &str,
    conv: impl Fn(usize, usize, &mut [f32]) + Sync + Send,
) -> Result<Vec<f32>> {
    let o = g.out_c;
    let (qh, qw) = (g.out_h / ph.max(1), g.out_w / pw.max(1));
    if qh == 0 || qw == 0 || o == 0 || g.batch == 0 {
        return Ok(Vec::new());
    }
    let (row, used) = (g.out_w * o, qh * ph * g.out_w);
    let per_image = qh * qw * o;
    let macs = g.batch * used * g.patch_len() * o;
    let block = block_rows(g.batch, used * (pixel_bytes + 4 * o), macs);
    blocks(g.batch, per_image, block, what, |bi, yb| {
        let images = yb.len() / per_image;
        POOL_ROWS.with(|rows| {
            let mut rows = rows.borrow_mut();
            if rows.len() < images * used * o {
                rows.resize(images * used * o, 0.0);
            }
            let rows = &mut rows[..images * used * o];
            conv(bi * block, used, rows);
            for (image, y) in rows.chunks_exact_mut(used * o).zip(yb.chunks_exact_mut(per_image)) {
                for (band, y) in image.chunks_exact_mut(ph * row).zip(y.chunks_exact_mut(qw * o)) {
                    max_pool_rows(band, row, ph, pw, o, y);
                }
            }
        });
    })
}
