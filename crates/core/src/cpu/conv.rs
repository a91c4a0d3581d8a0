//! 2-D convolution on the CPU, Keras/TensorFlow layout: `x` is NHWC `[batch, h, w, in_c]`,
//! the kernel is `[kh, kw, in_c, out_c]`, the output is NHWC `[batch, out_h, out_w, out_c]`.
//!
//! Everything goes through im2col + GEMM. With this layout one output pixel's receptive field,
//! flattened in `(kh, kw, in_c)` order, is exactly one row of the kernel viewed as a
//! `[kh*kw*in_c, out_c]` matrix, so for a block of output pixels:
//!
//! * forward: `y[rows] = patches[rows] x kernel` (+ bias),
//! * filter gradient: `dkernel += patches[rows]^T x dy[rows]`,
//! * input gradient: `cols = dy[rows] x kernel^T`, then scatter-add `cols` back (col2im).
//!
//! The patch matrix is never built whole: rows are processed in blocks small enough to stay
//! in cache, the blocks run in parallel on rayon (each with a serial GEMM into a per-thread
//! scratch buffer), and a lone block uses the GEMM's own parallelism instead. Each output
//! block is zeroed by the thread that fills it ([`par_new`]), never in a serial pass first.
//! The bias rides in the GEMM as a ones column of the patches (forward, and the fused
//! [`conv2d_backward_filter_bias`]), so it costs no extra pass over the output.
//! 1x1 stride-1 convolutions skip im2col entirely: `x` already is the patch matrix.

use std::cell::RefCell;

use rayon::prelude::*;

use crate::cpu::matmul::sgemm;
use crate::{Error, Result};

/// Padding mode, TensorFlow semantics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    /// No padding: only windows that fit entirely inside the input.
    Valid,
    /// `out = ceil(in / stride)`; the zero padding needed for that is split low-first, any odd
    /// element going to the high (bottom/right) side.
    Same,
}

impl Padding {
    /// Parses `"valid"` or `"same"` (case-insensitive).
    pub fn parse(s: &str) -> Result<Padding> {
        match s.to_ascii_lowercase().as_str() {
            "valid" => Ok(Padding::Valid),
            "same" => Ok(Padding::Same),
            _ => Err(Error::Invalid(format!("padding must be 'valid' or 'same', got {s:?}"))),
        }
    }
}

/// A shape error whose `expected` is free text (no Debug quotes) and `got` a shape.
pub(crate) fn shape_error(op: &str, expected: impl Into<String>, got: &[usize]) -> Error {
    Error::Shape {
        op: op.to_string(),
        expected: expected.into(),
        got: format!("{got:?}"),
    }
}

/// Output size and low-side padding of one spatial axis of a sliding window.
pub(crate) fn window_axis(
    op: &str,
    axis: &str,
    input: usize,
    window: usize,
    stride: usize,
    dilation: usize,
    padding: Padding,
) -> Result<(usize, usize)> {
    let span = (window - 1) * dilation + 1;
    match padding {
        Padding::Valid => {
            if input < span {
                let detail = if dilation > 1 {
                    format!(" (size {window}, dilation {dilation})")
                } else {
                    String::new()
                };
                return Err(Error::Invalid(format!(
                    "{op}: input {axis} {input} is smaller than the window {axis} {span}{detail} \
                     with padding 'valid'"
                )));
            }
            Ok(((input - span) / stride + 1, 0))
        }
        Padding::Same => {
            let out = input.div_ceil(stride);
            let total = ((out - 1) * stride + span).saturating_sub(input);
            Ok((out, total / 2))
        }
    }
}

/// Checks that a list of dimensions has no zero.
fn check_positive(op: &str, what: &str, v: &[usize]) -> Result<()> {
    if v.contains(&0) {
        return Err(Error::Invalid(format!("{op}: {what} must be positive, got {v:?}")));
    }
    Ok(())
}

/// Checks that the product of `dims` fits in memory indexing.
pub(crate) fn checked_numel(op: &str, what: &str, dims: &[usize]) -> Result<usize> {
    crate::alloc::checked_numel(&format!("{op}: {what}"), dims)
}

/// Everything a 2-D convolution needs to know about its shapes.
#[derive(Clone, Debug)]
pub struct Conv2dGeometry {
    pub batch: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub in_c: usize,
    pub out_c: usize,
    pub k_h: usize,
    pub k_w: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    pub dil_h: usize,
    pub dil_w: usize,
    pub pad_top: usize,
    pub pad_left: usize,
    pub out_h: usize,
    pub out_w: usize,
}

impl Conv2dGeometry {
    /// Validates `x_shape` (`[batch, h, w, in_c]`) against `kernel_shape`
    /// (`[kh, kw, in_c, out_c]`) and computes output size and padding.
    pub fn new(
        x_shape: &[usize],
        kernel_shape: &[usize],
        strides: [usize; 2],
        dilation: [usize; 2],
        padding: Padding,
    ) -> Result<Self> {
        const OP: &str = "conv2d";
        if x_shape.len() != 4 {
            return Err(shape_error(
                OP,
                "input of rank 4 [batch, height, width, channels]",
                x_shape,
            ));
        }
        if kernel_shape.len() != 4 {
            return Err(shape_error(
                OP,
                "kernel of rank 4 [kernel_h, kernel_w, in_channels, out_channels]",
                kernel_shape,
            ));
        }
        if kernel_shape[2] != x_shape[3] {
            return Err(shape_error(
                OP,
                format!(
                    "kernel [_, _, {}, _] matching the input's {} channels",
                    x_shape[3], x_shape[3]
                ),
                kernel_shape,
            ));
        }
        if x_shape[1..].contains(&0) {
            return Err(shape_error(
                OP,
                "input with positive height, width and channels",
                x_shape,
            ));
        }
        if kernel_shape.contains(&0) {
            return Err(shape_error(OP, "kernel with no zero dimension", kernel_shape));
        }
        check_positive(OP, "strides", &strides)?;
        check_positive(OP, "dilation_rate", &dilation)?;
        let (out_h, pad_top) = window_axis(
            OP,
            "height",
            x_shape[1],
            kernel_shape[0],
            strides[0],
            dilation[0],
            padding,
        )?;
        let (out_w, pad_left) = window_axis(
            OP,
            "width",
            x_shape[2],
            kernel_shape[1],
            strides[1],
            dilation[1],
            padding,
        )?;
        checked_numel(OP, "input", x_shape)?;
        checked_numel(OP, "kernel", kernel_shape)?;
        checked_numel(OP, "output", &[x_shape[0], out_h, out_w, kernel_shape[3]])?;
        Ok(Conv2dGeometry {
            batch: x_shape[0],
            in_h: x_shape[1],
            in_w: x_shape[2],
            in_c: x_shape[3],
            out_c: kernel_shape[3],
            k_h: kernel_shape[0],
            k_w: kernel_shape[1],
            stride_h: strides[0],
            stride_w: strides[1],
            dil_h: dilation[0],
            dil_w: dilation[1],
            pad_top,
            pad_left,
            out_h,
            out_w,
        })
    }

    /// `[batch, out_h, out_w, out_c]`.
    pub fn output_shape(&self) -> Vec<usize> {
        vec![self.batch, self.out_h, self.out_w, self.out_c]
    }

    /// `[batch, out_h / ph, out_w / pw, out_c]`: the output after a max pooling over
    /// non-overlapping `[ph, pw]` windows ('valid'), when at least one window fits.
    pub fn pooled_shape(&self, [ph, pw]: [usize; 2]) -> Option<[usize; 4]> {
        let fits = ph > 0 && pw > 0 && self.out_h >= ph && self.out_w >= pw;
        fits.then(|| [self.batch, self.out_h / ph, self.out_w / pw, self.out_c])
    }

    /// `[batch, in_h, in_w, in_c]`.
    pub fn input_shape(&self) -> Vec<usize> {
        vec![self.batch, self.in_h, self.in_w, self.in_c]
    }

    /// `[k_h, k_w, in_c, out_c]`.
    pub fn kernel_shape(&self) -> Vec<usize> {
        vec![self.k_h, self.k_w, self.in_c, self.out_c]
    }

    fn input_len(&self) -> usize {
        self.batch * self.in_h * self.in_w * self.in_c
    }

    fn output_len(&self) -> usize {
        self.batch * self.out_h * self.out_w * self.out_c
    }

    /// Length of one im2col row: `kh * kw * in_c`.
    pub fn patch_len(&self) -> usize {
        self.k_h * self.k_w * self.in_c
    }

    /// Output pixels per image.
    fn pixels(&self) -> usize {
        self.out_h * self.out_w
    }

    /// 1x1, stride 1, no padding: the input already is the patch matrix.
    fn is_pointwise(&self) -> bool {
        self.k_h == 1
            && self.k_w == 1
            && self.stride_h == 1
            && self.stride_w == 1
            && self.pad_top == 0
            && self.pad_left == 0
    }
}

/// Floats one block of rows may touch (patches + output rows): 512 KiB, half of L2.
const BLOCK_FLOATS: usize = 1 << 17;

/// Rows (output pixels) per block: as many as fit [`BLOCK_FLOATS`] at `floats_per_row`, but
/// no more than an even share of the work per thread.
fn block_rows(total_rows: usize, floats_per_row: usize) -> usize {
    let fit = (BLOCK_FLOATS / floats_per_row.max(1)).max(1);
    let share = total_rows.div_ceil(rayon::current_num_threads().max(1)).max(1);
    fit.min(share)
}

/// Allocates `len` elements and hands consecutive chunks of `chunk` elements, zeroed, to
/// `f(chunk_index, chunk)` in parallel. Unlike `vec![0; len]` + a parallel loop, the zeroing
/// is done by the thread that then uses the chunk, while it is in cache, instead of in one
/// serial pass over memory first.
pub(crate) fn par_new<T, F>(len: usize, chunk: usize, f: F) -> Vec<T>
where
    T: Copy + Default + Send + Sync,
    F: Fn(usize, &mut [T]) + Sync + Send,
{
    let mut v: Vec<T> = crate::alloc::reserve_or_unwind("a kernel output", len);
    v.spare_capacity_mut()[..len]
        .par_chunks_mut(chunk.max(1))
        .enumerate()
        .for_each(|(i, c)| {
            for e in c.iter_mut() {
                e.write(T::default());
            }
            // SAFETY: every element of `c` was initialised just above; `MaybeUninit<T>` has
            // the layout of `T`.
            let c = unsafe { &mut *(c as *mut [std::mem::MaybeUninit<T>] as *mut [T]) };
            f(i, c);
        });
    // SAFETY: the chunks cover `0..len` and each was initialised above (a panic in `f`
    // propagates before this line, dropping `v` with length 0).
    unsafe { v.set_len(len) };
    v
}

/// [`par_new`] for kernels that write every element of their chunk: the chunks are handed out
/// uninitialised, which saves a pass of zeros over an output too large for the cache.
/// `f` must initialise every element of its chunk (if it panics, the vector is dropped with
/// length 0 and nothing reads the rest).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // only the x86-64 kernels use it
pub(crate) fn par_new_written<F>(len: usize, chunk: usize, f: F) -> Vec<f32>
where
    F: Fn(usize, &mut [std::mem::MaybeUninit<f32>]) + Sync + Send,
{
    let mut v: Vec<f32> = crate::alloc::reserve_or_unwind("a kernel output", len);
    v.spare_capacity_mut()[..len]
        .par_chunks_mut(chunk.max(1))
        .enumerate()
        .for_each(|(i, c)| f(i, c));
    // SAFETY: `f` initialised every element of every chunk, and the chunks cover `0..len`.
    unsafe { v.set_len(len) };
    v
}

/// [`par_new`] for two outputs of the same length, chunked alike.
pub(crate) fn par_new_pair<A, B, F>(len: usize, chunk: usize, f: F) -> (Vec<A>, Vec<B>)
where
    A: Copy + Default + Send + Sync,
    B: Copy + Default + Send + Sync,
    F: Fn(usize, &mut [A], &mut [B]) + Sync + Send,
{
    let mut a: Vec<A> = crate::alloc::reserve_or_unwind("a kernel output", len);
    let mut b: Vec<B> = crate::alloc::reserve_or_unwind("a kernel output", len);
    a.spare_capacity_mut()[..len]
        .par_chunks_mut(chunk.max(1))
        .zip(b.spare_capacity_mut()[..len].par_chunks_mut(chunk.max(1)))
        .enumerate()
        .for_each(|(i, (ca, cb))| {
            for e in ca.iter_mut() {
                e.write(A::default());
            }
            for e in cb.iter_mut() {
                e.write(B::default());
            }
            // SAFETY: as in `par_new`: both chunks were fully initialised just above.
            let ca = unsafe { &mut *(ca as *mut [std::mem::MaybeUninit<A>] as *mut [A]) };
            let cb = unsafe { &mut *(cb as *mut [std::mem::MaybeUninit<B>] as *mut [B]) };
            f(i, ca, cb);
        });
    // SAFETY: the chunks cover `0..len` of both vectors and were all initialised above.
    unsafe {
        a.set_len(len);
        b.set_len(len);
    }
    (a, b)
}

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on a per-thread scratch buffer of `len` floats (contents unspecified).
pub(crate) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                buf.resize(len, 0.0);
            }
            f(&mut buf[..len])
        }
        // Re-entered on the same thread (cannot happen with serial GEMMs, but be safe).
        Err(_) => f(&mut vec![0.0; len]),
    })
}

/// Walks output pixels `(n, oh, ow)` in row-major order starting at global row `r0`.
#[derive(Clone, Copy)]
struct PixelCursor {
    n: usize,
    oh: usize,
    ow: usize,
}

impl PixelCursor {
    fn at(g: &Conv2dGeometry, r0: usize) -> Self {
        let px = g.pixels();
        let rem = r0 % px;
        PixelCursor {
            n: r0 / px,
            oh: rem / g.out_w,
            ow: rem % g.out_w,
        }
    }

    fn advance(&mut self, g: &Conv2dGeometry) {
        self.ow += 1;
        if self.ow == g.out_w {
            self.ow = 0;
            self.oh += 1;
            if self.oh == g.out_h {
                self.oh = 0;
                self.n += 1;
            }
        }
    }
}

/// Fills `out` with the patches of global rows `r0..r0 + nrows`, one row every `ld` values;
/// when `ld > patch_len` the element right after each patch is set to `tail_value` (1 for the bias
/// column of the f32 path). Padding reads as `pad(image)` (0, or an int8 zero point).
/// `x` holds the images the cursor's `n` indexes into.
pub(crate) fn im2col<T: Copy>(
    x: &[T],
    g: &Conv2dGeometry,
    r0: usize,
    nrows: usize,
    ld: usize,
    out: &mut [T],
    tail_value: T,
    pad: impl Fn(usize) -> T,
) {
    let c = g.in_c;
    let k = g.patch_len();
    let img_len = g.in_h * g.in_w * c;
    let row_len = g.k_w * c;
    let span_w = ((g.k_w - 1) * g.dil_w + 1) as isize;
    let mut cur = PixelCursor::at(g, r0);
    for row in out[..nrows * ld].chunks_exact_mut(ld) {
        let (row, tail) = row.split_at_mut(k);
        if let Some(one) = tail.first_mut() {
            *one = tail_value;
        }
        let xi = &x[cur.n * img_len..(cur.n + 1) * img_len];
        let ih0 = (cur.oh * g.stride_h) as isize - g.pad_top as isize;
        let iw0 = (cur.ow * g.stride_w) as isize - g.pad_left as isize;
        let contiguous = g.dil_w == 1 && iw0 >= 0 && iw0 + span_w <= g.in_w as isize;
        for (kh, dst) in row.chunks_exact_mut(row_len).enumerate() {
            let ih = ih0 + (kh * g.dil_h) as isize;
            if ih < 0 || ih >= g.in_h as isize {
                dst.fill(pad(cur.n));
                continue;
            }
            let xrow = &xi[ih as usize * g.in_w * c..(ih as usize + 1) * g.in_w * c];
            if contiguous {
                let s = iw0 as usize * c;
                copy_small(dst, &xrow[s..s + row_len]);
            } else {
                for (kw, d) in dst.chunks_exact_mut(c).enumerate() {
                    let iw = iw0 + (kw * g.dil_w) as isize;
                    if iw < 0 || iw >= g.in_w as isize {
                        d.fill(pad(cur.n));
                    } else {
                        let s = iw as usize * c;
                        copy_small(d, &xrow[s..s + c]);
                    }
                }
            }
        }
        cur.advance(g);
    }
}

/// Adds the patch rows `cols` of global rows `r0..r0+nrows` back into `dx` (col2im).
/// `dx` holds the images the cursor's `n` indexes into.
fn col2im(cols: &[f32], g: &Conv2dGeometry, r0: usize, nrows: usize, dx: &mut [f32]) {
    let c = g.in_c;
    let k = g.patch_len();
    let img_len = g.in_h * g.in_w * c;
    let row_len = g.k_w * c;
    let span_w = ((g.k_w - 1) * g.dil_w + 1) as isize;
    let mut cur = PixelCursor::at(g, r0);
    for row in cols[..nrows * k].chunks_exact(k) {
        let xi = &mut dx[cur.n * img_len..(cur.n + 1) * img_len];
        let ih0 = (cur.oh * g.stride_h) as isize - g.pad_top as isize;
        let iw0 = (cur.ow * g.stride_w) as isize - g.pad_left as isize;
        let contiguous = g.dil_w == 1 && iw0 >= 0 && iw0 + span_w <= g.in_w as isize;
        for (kh, src) in row.chunks_exact(row_len).enumerate() {
            let ih = ih0 + (kh * g.dil_h) as isize;
            if ih < 0 || ih >= g.in_h as isize {
                continue;
            }
            let xrow = &mut xi[ih as usize * g.in_w * c..(ih as usize + 1) * g.in_w * c];
            if contiguous {
                let s = iw0 as usize * c;
                add_into(&mut xrow[s..s + row_len], src);
            } else {
                for (kw, sv) in src.chunks_exact(c).enumerate() {
                    let iw = iw0 + (kw * g.dil_w) as isize;
                    if iw >= 0 && iw < g.in_w as isize {
                        let s = iw as usize * c;
                        add_into(&mut xrow[s..s + c], sv);
                    }
                }
            }
        }
        cur.advance(g);
    }
}

/// `dst.copy_from_slice(src)` without a `memcpy` call for the short rows of im2col (a 3x3
/// kernel on a 1-channel image copies 3 floats at a time; on 32 channels of int8 activations,
/// 96 bytes): the call and its size dispatch cost more than the copy, and im2col makes three
/// per output pixel.
#[inline(always)]
fn copy_small<T: Copy>(dst: &mut [T], src: &[T]) {
    const CHUNK: usize = 16;
    assert_eq!(dst.len(), src.len(), "copy_small: lengths");
    let bytes = std::mem::size_of_val(dst);
    if bytes > 256 {
        dst.copy_from_slice(src);
    } else if bytes < CHUNK {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = *s;
        }
    } else {
        let (d, s) = (dst.as_mut_ptr().cast::<u8>(), src.as_ptr().cast::<u8>());
        // SAFETY: both slices span `bytes` bytes (asserted) and cannot overlap (one is borrowed
        // mutably); every access is a CHUNK-byte unaligned read or write inside them (the last
        // one ends at `bytes`, overlapping the one before); `T: Copy` copies as bytes.
        unsafe {
            let copy = |at: usize| {
                let v = s.add(at).cast::<[u8; CHUNK]>().read_unaligned();
                d.add(at).cast::<[u8; CHUNK]>().write_unaligned(v);
            };
            let mut at = 0;
            while at + CHUNK <= bytes {
                copy(at);
                at += CHUNK;
            }
            if at < bytes {
                copy(bytes - CHUNK);
            }
        }
    }
}

#[inline(always)]
fn add_into(dst: &mut [f32], src: &[f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d += *s;
    }
}

/// Convolution forward: `y = conv(x, kernel) + bias`, NHWC.
///
/// Panics if a slice's length disagrees with `g` (the geometry is validated upstream).
pub fn conv2d_forward(x: &[f32], kernel: &[f32], bias: Option<&[f32]>, g: &Conv2dGeometry) -> Vec<f32> {
    assert_eq!(x.len(), g.input_len(), "conv2d_forward: input length");
    assert_eq!(kernel.len(), g.patch_len() * g.out_c, "conv2d_forward: kernel length");
    if let Some(b) = bias {
        assert_eq!(b.len(), g.out_c, "conv2d_forward: bias length");
    }
    let (o, k) = (g.out_c, g.patch_len());
    let total = g.batch * g.pixels();
    if total == 0 {
        return Vec::new();
    }
    if g.is_pointwise() {
        let rows = block_rows(total, o);
        let single = rows >= total;
        return par_new(total * o, rows * o, |bi, yb| {
            let r0 = bi * rows;
            let nr = yb.len() / o;
            if let Some(b) = bias {
                for row in yb.chunks_exact_mut(o) {
                    row.copy_from_slice(b);
                }
            }
            sgemm(
                nr,
                o,
                k,
                &x[r0 * k..(r0 + nr) * k],
                false,
                kernel,
                false,
                yb,
                bias.is_some(),
                single,
            );
        });
    }
    // With a bias the patches get a trailing 1 and the kernel a trailing bias row, so the
    // GEMM adds the bias for free instead of a separate pass over the output.
    let aug_kernel;
    let (ld, w) = match bias {
        Some(b) => {
            let mut kb = Vec::with_capacity((k + 1) * o);
            kb.extend_from_slice(kernel);
            kb.extend_from_slice(b);
            aug_kernel = kb;
            (k + 1, &aug_kernel[..])
        }
        None => (k, kernel),
    };
    let rows = block_rows(total, ld + o);
    let single = rows >= total;
    par_new(total * o, rows * o, |bi, yb| {
        let r0 = bi * rows;
        let nr = yb.len() / o;
        with_scratch(nr * ld, |p| {
            im2col(x, g, r0, nr, ld, p, 1.0, |_| 0.0);
            sgemm(nr, o, ld, p, false, w, false, yb, false, single);
        });
    })
}

/// Gradient of the convolution with respect to its input: `dy` is `[batch, out_h, out_w,
/// out_c]`, the result `[batch, in_h, in_w, in_c]`.
pub fn conv2d_backward_input(dy: &[f32], kernel: &[f32], g: &Conv2dGeometry) -> Vec<f32> {
    assert_eq!(dy.len(), g.output_len(), "conv2d_backward_input: dy length");
    assert_eq!(
        kernel.len(),
        g.patch_len() * g.out_c,
        "conv2d_backward_input: kernel length"
    );
    let (o, k) = (g.out_c, g.patch_len());
    let len = g.input_len();
    if len == 0 {
        return Vec::new();
    }
    let px = g.pixels();
    if g.is_pointwise() {
        // dx = dy x kernel^T, one pixel per row.
        let total = g.batch * px;
        let rows = block_rows(total, k + o);
        let single = rows >= total;
        return par_new(len, rows * k, |bi, dxb| {
            let r0 = bi * rows;
            let nr = dxb.len() / k;
            sgemm(
                nr,
                k,
                o,
                &dy[r0 * o..(r0 + nr) * o],
                false,
                kernel,
                true,
                dxb,
                false,
                single,
            );
        });
    }
    // col2im scatters across a whole image, so parallel work is split by images; inside a
    // group the rows go block by block through a scratch buffer.
    let threads = rayon::current_num_threads().max(1);
    let groups = g.batch.min(4 * threads).max(1);
    let imgs = g.batch.div_ceil(groups);
    let single = imgs >= g.batch;
    let img_len = g.in_h * g.in_w * g.in_c;
    let grp_rows = imgs * px;
    let rows = (BLOCK_FLOATS / (k + o)).max(1).min(grp_rows);
    par_new(len, imgs * img_len, |gi, dxg| {
        let row0 = gi * grp_rows;
        let nrows = dxg.len() / img_len * px;
        let mut r = 0;
        while r < nrows {
            let nr = rows.min(nrows - r);
            with_scratch(nr * k, |cols| {
                let dyb = &dy[(row0 + r) * o..(row0 + r + nr) * o];
                sgemm(nr, k, o, dyb, false, kernel, true, cols, false, single);
                col2im(cols, g, r, nr, dxg);
            });
            r += nr;
        }
    })
}

/// `[k or k+1, o]` gradient of the patches (with a trailing ones column when `ld > k`):
/// `patches^T x dy`, accumulated block by block in parallel.
fn filter_grad(x: &[f32], dy: &[f32], g: &Conv2dGeometry, ld: usize) -> Vec<f32> {
    let o = g.out_c;
    let total = g.batch * g.pixels();
    if total == 0 {
        return vec![0.0; ld * o];
    }
    let rows = block_rows(total, ld + o);
    let blocks = total.div_ceil(rows);
    let single = blocks == 1;
    let pointwise = g.is_pointwise() && ld == g.patch_len();
    (0..blocks)
        .into_par_iter()
        .fold(
            || vec![0.0f32; ld * o],
            |mut acc, bi| {
                let r0 = bi * rows;
                let nr = rows.min(total - r0);
                let dyb = &dy[r0 * o..(r0 + nr) * o];
                if pointwise {
                    let xb = &x[r0 * ld..(r0 + nr) * ld];
                    sgemm(ld, o, nr, xb, true, dyb, false, &mut acc, true, single);
                } else {
                    with_scratch(nr * ld, |p| {
                        im2col(x, g, r0, nr, ld, p, 1.0, |_| 0.0);
                        sgemm(ld, o, nr, p, true, dyb, false, &mut acc, true, single);
                    });
                }
                acc
            },
        )
        .reduce_with(|mut a, b| {
            add_into(&mut a, &b);
            a
        })
        .unwrap_or_else(|| vec![0.0; ld * o])
}

/// Gradient of the convolution with respect to its kernel, `[kh, kw, in_c, out_c]`.
pub fn conv2d_backward_filter(x: &[f32], dy: &[f32], g: &Conv2dGeometry) -> Vec<f32> {
    assert_eq!(x.len(), g.input_len(), "conv2d_backward_filter: input length");
    assert_eq!(dy.len(), g.output_len(), "conv2d_backward_filter: dy length");
    filter_grad(x, dy, g, g.patch_len())
}

/// Kernel and bias gradients in one pass over `dy` (the bias gradient comes out of the same
/// GEMM through a ones column in the patches): `([kh, kw, in_c, out_c], [out_c])`.
/// Same results as [`conv2d_backward_filter`] and [`conv2d_backward_bias`].
pub fn conv2d_backward_filter_bias(x: &[f32], dy: &[f32], g: &Conv2dGeometry) -> (Vec<f32>, Vec<f32>) {
    assert_eq!(x.len(), g.input_len(), "conv2d_backward_filter_bias: input length");
    assert_eq!(dy.len(), g.output_len(), "conv2d_backward_filter_bias: dy length");
    let k = g.patch_len();
    let mut dk = filter_grad(x, dy, g, k + 1);
    let db = dk.split_off(k * g.out_c);
    (dk, db)
}

/// Gradient of the convolution with respect to its bias: `dy` summed over batch and space.
pub fn conv2d_backward_bias(dy: &[f32], g: &Conv2dGeometry) -> Vec<f32> {
    assert_eq!(dy.len(), g.output_len(), "conv2d_backward_bias: dy length");
    sum_rows(dy, g.out_c)
}

/// Column sums of a row-major `[rows, cols]` matrix, in parallel.
pub(crate) fn sum_rows(m: &[f32], cols: usize) -> Vec<f32> {
    if m.is_empty() || cols == 0 {
        return vec![0.0; cols];
    }
    let rows = m.len() / cols;
    let per = (1usize << 14)
        .div_ceil(cols)
        .max(rows.div_ceil(4 * rayon::current_num_threads().max(1)));
    m.par_chunks(per * cols)
        .fold(
            || vec![0.0f32; cols],
            |mut acc, chunk| {
                for row in chunk.chunks_exact(cols) {
                    add_into(&mut acc, row);
                }
                acc
            },
        )
        .reduce_with(|mut a, b| {
            add_into(&mut a, &b);
            a
        })
        .unwrap_or_else(|| vec![0.0; cols])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_follows_tensorflow() {
        // in 7, k 3, stride 2: out 4, total pad (3*2+3-7)=2 -> 1 on top.
        assert_eq!(window_axis("t", "h", 7, 3, 2, 1, Padding::Same).unwrap(), (4, 1));
        // in 8, k 3, stride 2: out 4, total pad (3*2+3-8)=1 -> 0 on top, 1 below.
        assert_eq!(window_axis("t", "h", 8, 3, 2, 1, Padding::Same).unwrap(), (4, 0));
        // in 7, k 3, dilation 2: span 5, total pad 4 -> 2.
        assert_eq!(window_axis("t", "h", 7, 3, 1, 2, Padding::Same).unwrap(), (7, 2));
        assert_eq!(window_axis("t", "h", 9, 5, 2, 1, Padding::Valid).unwrap(), (3, 0));
        assert!(window_axis("t", "h", 4, 3, 1, 2, Padding::Valid).is_err());
    }
}
