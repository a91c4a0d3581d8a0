//! Int8 forward passes of Dense and Conv2D: quantize the activations, run the `u8 x i8` GEMM
//! over blocks of rows in parallel, and dequantize each block with its bias and activation
//! while it is still in cache.

use rayon::prelude::*;

use super::{dequantize, gemm_u8i8, gemm_u8i8_image, AffineU8, ImageRows, Int8Kernel, PackedInt8};
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
/// one pass ([`conv_max_pooled`]): bit for bit the two separate passes. With a ReLU or no
/// activation the windows pool the integer sums and only their maxima are dequantized:
/// within a window every value shares its image's quantization and its channel's scale, and
/// dequantizing (a positive scale, a bias, rounding) then ReLU never reverses an order, so
/// the maximum of the outputs is the output of the maximum.
pub fn conv2d_int8_max_pool(
    x: &[f32],
    g: &Conv2dGeometry,
    w: &PackedInt8,
    bias: Option<&[f32]>,
    act: Activation,
    pool: [usize; 2],
    kernel: Int8Kernel,
) -> Result<Vec<f32>> {
    check_operands(x, g, w)?;
    let image = g.in_h * g.in_w * g.in_c;
    let (pixels, kp, ldc) = (g.out_h * g.out_w, w.padded_depth(), w.padded_width());
    let failed = std::sync::OnceLock::new();
    // No padding and every window inside the image: the GEMM can read the image's rows.
    let fits = |out: usize, stride: usize, k: usize, dil: usize, len: usize| (out - 1) * stride + (k - 1) * dil < len;
    let windows_inside = g.pad_top == 0
        && g.pad_left == 0
        && g.dil_w == 1
        && g.out_h > 0
        && g.out_w > 0
        && fits(g.out_h, g.stride_h, g.k_h, g.dil_h, g.in_h)
        && fits(g.out_w, g.stride_w, g.k_w, g.dil_w, g.in_w);
    let block = |img0: usize, images: usize, used: usize, yb: &mut [f32]| {
        let (rows, pooled) = (images * used, yb.len() / (images * w.n));
        // The block quantizes its own images, into the end of its patch scratch: no pass over
        // the batch first, no batch-sized buffer to fault in, one thread hand-off fewer.
        with_scratch(&SCRATCH, rows * kp + images * image, rows * ldc, |a, c| {
            let (a, xq) = a.split_at_mut(rows * kp);
            let mut quant = Vec::with_capacity(images);
            for (i, q) in xq.chunks_exact_mut(image.max(1)).enumerate() {
                let img = &x[(img0 + i) * image..(img0 + i + 1) * image];
                match AffineU8::of(img) {
                    Ok(params) => quant.push(params),
                    Err(e) => {
                        let _ = failed.set(e);
                        return;
                    }
                }
                quant[i].quantize_into(img, q);
            }
            // Only the columns a window covers (the MNIST convnet's 11th of 11 is in none).
            let cols = g.out_w / pool[1].max(1) * pool[1];
            if !(windows_inside && gemm_on_images(kernel, xq, g, [images, used, cols], w, c)) {
                for (i, a_img) in a.chunks_exact_mut(used * kp).enumerate() {
                    im2col(xq, g, i * pixels, used, kp, a_img, 0, |_| quant[i].zero_point);
                }
                gemm_u8i8(kernel, a, rows, w, c);
            }
            if matches!(act, Activation::Relu | Activation::Linear) {
                max_pool_sums(c, ldc, g, pool, images);
                dequantize(c, w, |r| quant[r / pooled], bias, act, yb);
            } else {
                pool_rows(g, pool, used, yb, |rows| {
                    dequantize(c, w, |r| quant[r / used], bias, act, rows)
                });
            }
        });
    };
    let y = conv_max_pooled(g, pool, kp + 4 * ldc, "int8 conv2d output", block)?;
    failed.into_inner().map_or(Ok(y), Err)
}

/// The sums of the first `used` output pixels (whole output rows) of each of `images`
/// quantized images `xq` into `c` (`used` rows an image), the GEMM reading the kernel's rows
/// from the images ([`gemm_u8i8_image`], one call per output row) for the first `cols` pixels
/// of each output row (the rows of the other pixels are left as they were); `false`, with
/// nothing written, where the kernel cannot. The caller checked that every window lies inside
/// its image, unpadded.
fn gemm_on_images(
    kernel: Int8Kernel,
    xq: &[u8],
    g: &Conv2dGeometry,
    [images, used, cols]: [usize; 3],
    w: &PackedInt8,
    c: &mut [i32],
) -> bool {
    let (image, row_bytes, ldc) = (g.in_h * g.in_w * g.in_c, g.in_w * g.in_c, w.padded_width());
    for i in 0..images {
        for oy in 0..used / g.out_w {
            let rows = ImageRows {
                start: i * image + oy * g.stride_h * row_bytes,
                pixel_stride: g.stride_w * g.in_c,
                row_stride: g.dil_h * row_bytes,
                kh: g.k_h,
            };
            let first = (i * used + oy * g.out_w) * ldc;
            if !gemm_u8i8_image(kernel, xq, &rows, cols, w, &mut c[first..]) {
                return false;
            }
        }
    }
    true
}

/// Max pools the `i32` sums of `images` images in place (rows of `ldc`, each image's first
/// `(out_h / ph) * ph * out_w` convolution pixels): window `p` of the batch lands in row `p`,
/// which is never after the first row it reads, nor after any row a later window reads.
fn max_pool_sums(c: &mut [i32], ldc: usize, g: &Conv2dGeometry, pool: [usize; 2], images: usize) {
    // The baseline x86-64 target has no packed 32-bit max (SSE4.1): compile the loop for the
    // vector units the CPU has.
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F (checked just above).
        return unsafe { max_pool_sums_avx512(c, ldc, g, pool, images) };
    }
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { max_pool_sums_avx2(c, ldc, g, pool, images) };
    }
    max_pool_sums_plain(c, ldc, g, pool, images);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn max_pool_sums_avx512(c: &mut [i32], ldc: usize, g: &Conv2dGeometry, pool: [usize; 2], images: usize) {
    max_pool_sums_plain(c, ldc, g, pool, images);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn max_pool_sums_avx2(c: &mut [i32], ldc: usize, g: &Conv2dGeometry, pool: [usize; 2], images: usize) {
    max_pool_sums_plain(c, ldc, g, pool, images);
}

#[inline(always)]
fn max_pool_sums_plain(c: &mut [i32], ldc: usize, g: &Conv2dGeometry, [ph, pw]: [usize; 2], images: usize) {
    let (qh, qw) = (g.out_h / ph, g.out_w / pw);
    let used = qh * ph * g.out_w;
    let mut acc = vec![0i32; ldc];
    let mut p = 0;
    for img in 0..images {
        for qy in 0..qh {
            for qx in 0..qw {
                let first = img * used + qy * ph * g.out_w + qx * pw;
                acc.copy_from_slice(&c[first * ldc..(first + 1) * ldc]);
                for dy in 0..ph {
                    for dx in 0..pw {
                        let r = first + dy * g.out_w + dx;
                        for (m, &v) in acc.iter_mut().zip(&c[r * ldc..(r + 1) * ldc]) {
                            *m = (*m).max(v);
                        }
                    }
                }
                c[p * ldc..(p + 1) * ldc].copy_from_slice(&acc);
                p += 1;
            }
        }
    }
}

/// `x` and `w` agree with the geometry.
fn check_operands(x: &[f32], g: &Conv2dGeometry, w: &PackedInt8) -> Result<()> {
    if x.len() != g.batch * g.in_h * g.in_w * g.in_c || w.k != g.patch_len() || w.n != g.out_c {
        return Err(Error::shape("int8 conv2d input", g.input_shape(), x.len()));
    }
    Ok(())
}

/// Each image of `x` quantized on its own: the `u8` values and each image's parameters.
fn quantize_images(x: &[f32], g: &Conv2dGeometry, w: &PackedInt8) -> Result<(Vec<u8>, Vec<AffineU8>)> {
    check_operands(x, g, w)?;
    let image = g.in_h * g.in_w * g.in_c;
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
    /// Per-thread f32 convolution rows of a pooled block ([`pool_rows`]).
    static POOL_ROWS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A GEMM convolution followed by a plain max pooling (windows and strides `pool`, 'valid'),
/// in one pass over blocks of whole images. `block(img0, images, used, y)` writes the pooled
/// outputs `y` of `images` images from `img0` on, computing only the first `used`
/// output pixels of each image: the rows the pooling windows cover, so the rows and columns
/// past the last whole window are never computed. Each block pools while its rows are in
/// cache ([`pool_rows`] or its own way). The separate passes allocated and zeroed the whole
/// convolution output, wrote it and read it back.
/// `pixel_bytes` is the scratch one convolution output pixel takes (for the block size).
pub(crate) fn conv_max_pooled(
    g: &Conv2dGeometry,
    [ph, pw]: [usize; 2],
    pixel_bytes: usize,
    what: &str,
    block: impl Fn(usize, usize, usize, &mut [f32]) + Sync + Send,
) -> Result<Vec<f32>> {
    let o = g.out_c;
    let Some([_, qh, qw, _]) = g.pooled_shape([ph, pw]) else {
        return Err(Error::Invalid(format!(
            "a {ph}x{pw} pooling does not fit a {}x{} convolution output",
            g.out_h, g.out_w
        )));
    };
    if o == 0 || g.batch == 0 {
        return Ok(Vec::new());
    }
    let used = qh * ph * g.out_w;
    let per_image = qh * qw * o;
    let macs = g.batch * used * g.patch_len() * o;
    let per_block = block_rows(g.batch, used * (pixel_bytes + 4 * o), macs);
    blocks(g.batch, per_image, per_block, what, |bi, yb| {
        block(bi * per_block, yb.len() / per_image, used, yb)
    })
}

/// The pooled outputs `y` of the images whose `used` convolution pixels each `fill(rows)`
/// writes as f32 (`out_c` floats a pixel, into this thread's scratch).
pub(crate) fn pool_rows(
    g: &Conv2dGeometry,
    [ph, pw]: [usize; 2],
    used: usize,
    y: &mut [f32],
    fill: impl FnOnce(&mut [f32]),
) {
    let (o, row) = (g.out_c, g.out_w * g.out_c);
    let per_image = (g.out_h / ph) * (g.out_w / pw) * o;
    let len = y.len() / per_image * used * o;
    POOL_ROWS.with(|rows| {
        let mut rows = rows.borrow_mut();
        if rows.len() < len {
            rows.resize(len, 0.0);
        }
        let rows = &mut rows[..len];
        fill(rows);
        for (image, y) in rows.chunks_exact_mut(used * o).zip(y.chunks_exact_mut(per_image)) {
            for (band, y) in image
                .chunks_exact_mut(ph * row)
                .zip(y.chunks_exact_mut((g.out_w / pw) * o))
            {
                max_pool_rows(band, row, ph, pw, o, y);
            }
        }
    });
}
