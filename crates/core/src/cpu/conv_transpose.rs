//! Transposed 2-D convolution on the CPU, Keras/TensorFlow layout: `x` is NHWC `[batch, h, w,
//! in_c]`, the kernel `[kh, kw, out_c, in_c]`, the output `[batch, out_h, out_w, out_c]`.
//!
//! A transposed convolution is the adjoint of a regular one. Take the convolution `C` that maps
//! an `[batch, out_h, out_w, out_c]` image to `[batch, h, w, in_c]` with the same kernel read
//! as `[kh, kw, out_c, in_c]` (exactly the transposed layout, so no reordering is needed),
//! with the same strides, dilation and padding. Then
//!
//! * forward: `y = C^T x` is [`conv2d_backward_input`] of `C` with `x` as its output gradient,
//! * input gradient: `dx = C dy` is [`conv2d_forward`] of `C` on `dy`,
//! * filter gradient: [`conv2d_backward_filter`] of `C` with `dy` as its input and `x` as its
//!   output gradient.
//!
//! So everything runs on the im2col + GEMM kernels of [`crate::cpu::conv`], and TensorFlow's
//! padding split falls out of `C`'s own `same` padding computed on the output size, which is
//! how TensorFlow defines `conv2d_transpose` (as `conv2d_backprop_input`).
//!
//! With stride 1 the forward pass instead runs as an ordinary convolution of `x` with the
//! spatially flipped, channel-swapped kernel: same result, but the forward im2col + GEMM is
//! about twice as fast as the GEMM + col2im scatter of an input gradient. (With larger strides
//! that form would multiply by zeros inserted between input pixels, so the adjoint form stays.)

use rayon::prelude::*;

use crate::cpu::conv::{
    checked_numel, conv2d_backward_filter, conv2d_backward_input, conv2d_forward, shape_error, sum_rows,
    Conv2dGeometry, Padding,
};
use crate::{Error, Result};

/// Keras' output length of a transposed convolution along one axis (`deconv_output_length`
/// without output padding): `valid`: `in * stride + max(span - stride, 0)`, `same`:
/// `in * stride`, where `span = (kernel - 1) * dilation + 1`.
pub fn conv_transpose_output_len(
    input: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    padding: Padding,
) -> usize {
    let span = (kernel.max(1) - 1) * dilation + 1;
    match padding {
        Padding::Valid => input * stride + span.saturating_sub(stride),
        Padding::Same => input * stride,
    }
}

/// Shapes of a transposed 2-D convolution, held as the geometry of its adjoint convolution.
#[derive(Clone, Debug)]
pub struct ConvTranspose2dGeometry {
    /// The convolution whose input is this op's output and whose output is this op's input.
    pub conv: Conv2dGeometry,
    /// For stride 1: the ordinary convolution of the input with the flipped kernel that gives
    /// the same output (see [`conv2d_transpose_forward`]).
    pub direct: Option<Conv2dGeometry>,
}

/// The stride-1 transposed convolution as a direct one: `y[r] = sum_a x[r + pad - a*d] K[a]`
/// is, with `a' = k - 1 - a`, a convolution with the flipped kernel and low padding
/// `span - 1 - pad` (the high side follows from the output size).
fn direct_geometry(adj: &Conv2dGeometry) -> Conv2dGeometry {
    let span_h = (adj.k_h - 1) * adj.dil_h + 1;
    let span_w = (adj.k_w - 1) * adj.dil_w + 1;
    Conv2dGeometry {
        batch: adj.batch,
        in_h: adj.out_h,
        in_w: adj.out_w,
        in_c: adj.out_c,
        out_c: adj.in_c,
        k_h: adj.k_h,
        k_w: adj.k_w,
        stride_h: 1,
        stride_w: 1,
        dil_h: adj.dil_h,
        dil_w: adj.dil_w,
        pad_top: span_h - 1 - adj.pad_top,
        pad_left: span_w - 1 - adj.pad_left,
        out_h: adj.in_h,
        out_w: adj.in_w,
    }
}

/// `[kh, kw, out_c, in_c]` -> `[kh, kw, in_c, out_c]`, both spatial axes reversed.
fn flip_kernel(kernel: &[f32], kh: usize, kw: usize, o: usize, c: usize) -> Vec<f32> {
    let mut out = vec![0.0; kernel.len()];
    for a in 0..kh {
        for e in 0..kw {
            let src = &kernel[((kh - 1 - a) * kw + (kw - 1 - e)) * o * c..][..o * c];
            let dst = &mut out[(a * kw + e) * c * o..][..c * o];
            for (oi, row) in src.chunks_exact(c).enumerate() {
                for (ci, v) in row.iter().enumerate() {
                    dst[ci * o + oi] = *v;
                }
            }
        }
    }
    out
}

impl ConvTranspose2dGeometry {
    /// Validates `x_shape` (`[batch, h, w, in_c]`) against `kernel_shape` (`[kh, kw, out_c,
    /// in_c]`) and computes the Keras output size.
    pub fn new(
        x_shape: &[usize],
        kernel_shape: &[usize],
        strides: [usize; 2],
        dilation: [usize; 2],
        padding: Padding,
    ) -> Result<Self> {
        const OP: &str = "conv2dTranspose";
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
                "kernel of rank 4 [kernel_h, kernel_w, out_channels, in_channels]",
                kernel_shape,
            ));
        }
        if kernel_shape[3] != x_shape[3] {
            return Err(shape_error(
                OP,
                format!(
                    "kernel [_, _, _, {}] matching the input's {} channels",
                    x_shape[3], x_shape[3]
                ),
                kernel_shape,
            ));
        }
        if x_shape[1..].contains(&0) || kernel_shape.contains(&0) {
            return Err(shape_error(
                OP,
                format!(
                    "input with positive height, width and channels and a kernel with no zero \
                     dimension (kernel {kernel_shape:?})"
                ),
                x_shape,
            ));
        }
        if strides.contains(&0) || dilation.contains(&0) {
            return Err(Error::Invalid(format!(
                "{OP}: strides and dilation_rate must be positive, got {strides:?} and {dilation:?}"
            )));
        }
        let out_h = conv_transpose_output_len(x_shape[1], kernel_shape[0], strides[0], dilation[0], padding);
        let out_w = conv_transpose_output_len(x_shape[2], kernel_shape[1], strides[1], dilation[1], padding);
        let out_shape = [x_shape[0], out_h, out_w, kernel_shape[2]];
        checked_numel(OP, "output", &out_shape)?;
        let conv = Conv2dGeometry::new(&out_shape, kernel_shape, strides, dilation, padding)?;
        // By construction the adjoint convolution maps the output size back to the input size
        // (valid: (out - span) / s + 1 = in; same: ceil(out / s) = in).
        if conv.out_h != x_shape[1] || conv.out_w != x_shape[2] {
            return Err(Error::Invalid(format!(
                "{OP}: internal size mismatch: output {out_h}x{out_w} maps back to {}x{}, expected {}x{}",
                conv.out_h, conv.out_w, x_shape[1], x_shape[2]
            )));
        }
        let direct = (strides == [1, 1]).then(|| direct_geometry(&conv));
        Ok(ConvTranspose2dGeometry { conv, direct })
    }

    /// `[batch, out_h, out_w, out_c]`.
    pub fn output_shape(&self) -> Vec<usize> {
        self.conv.input_shape()
    }

    /// `[batch, h, w, in_c]`.
    pub fn input_shape(&self) -> Vec<usize> {
        self.conv.output_shape()
    }

    /// `[kh, kw, out_c, in_c]`.
    pub fn kernel_shape(&self) -> Vec<usize> {
        self.conv.kernel_shape()
    }

    /// Output channels (`filters`).
    pub fn out_channels(&self) -> usize {
        self.conv.in_c
    }
}

/// Transposed convolution forward: `y = conv_transpose(x, kernel) + bias`, NHWC.
///
/// Panics if a slice's length disagrees with `g` (the geometry is validated upstream).
pub fn conv2d_transpose_forward(
    x: &[f32],
    kernel: &[f32],
    bias: Option<&[f32]>,
    g: &ConvTranspose2dGeometry,
) -> Vec<f32> {
    if let Some(d) = &g.direct {
        // Stride 1: the im2col forward GEMM (bias fused) runs about twice as fast as the
        // GEMM + col2im scatter of the input gradient, and the kernel flip is negligible.
        let flipped = flip_kernel(kernel, d.k_h, d.k_w, d.out_c, d.in_c);
        return conv2d_forward(x, &flipped, bias, d);
    }
    let mut y = conv2d_backward_input(x, kernel, &g.conv);
    if let Some(b) = bias {
        let c = g.out_channels();
        assert_eq!(b.len(), c, "conv2d_transpose_forward: bias length");
        // Chunks of whole pixels, large enough to amortise a rayon task.
        let chunk = c * (8192 / c).max(1);
        y.par_chunks_mut(chunk).for_each(|block| {
            for px in block.chunks_exact_mut(c) {
                px.iter_mut().zip(b).for_each(|(v, bv)| *v += bv);
            }
        });
    }
    y
}

/// Gradient with respect to the input: `dy` is `[batch, out_h, out_w, out_c]`, the result
/// `[batch, h, w, in_c]`.
pub fn conv2d_transpose_backward_input(dy: &[f32], kernel: &[f32], g: &ConvTranspose2dGeometry) -> Vec<f32> {
    conv2d_forward(dy, kernel, None, &g.conv)
}

/// Gradient with respect to the kernel, `[kh, kw, out_c, in_c]`.
pub fn conv2d_transpose_backward_filter(x: &[f32], dy: &[f32], g: &ConvTranspose2dGeometry) -> Vec<f32> {
    conv2d_backward_filter(dy, x, &g.conv)
}

/// Gradient with respect to the bias: `dy` summed over batch and space, `[out_c]`.
pub fn conv2d_transpose_backward_bias(dy: &[f32], g: &ConvTranspose2dGeometry) -> Vec<f32> {
    let c = g.out_channels();
    assert_eq!(
        dy.len(),
        g.output_shape().iter().product::<usize>(),
        "conv2d_transpose_backward_bias: dy length"
    );
    sum_rows(dy, c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_sizes_follow_keras() {
        assert_eq!(conv_transpose_output_len(4, 4, 2, 1, Padding::Same), 8);
        assert_eq!(conv_transpose_output_len(3, 3, 2, 1, Padding::Valid), 7);
        // Kernel smaller than the stride: Keras pads to in * stride.
        assert_eq!(conv_transpose_output_len(3, 1, 2, 1, Padding::Valid), 6);
        let g = ConvTranspose2dGeometry::new(&[2, 3, 5, 4], &[3, 1, 6, 4], [2, 3], [1, 1], Padding::Valid).unwrap();
        assert_eq!(g.output_shape(), vec![2, 7, 15, 6]);
        let e = ConvTranspose2dGeometry::new(&[2, 3, 5, 4], &[3, 3, 6, 5], [1, 1], [1, 1], Padding::Same)
            .unwrap_err()
            .to_string();
        assert!(e.contains("[3, 3, 6, 5]") && e.contains("4 channels"), "{e}");
    }
}
