//! Spatial and sequence kernels on the CPU, channels-last: 1-D convolution geometry (as a
//! height-1 2-D convolution), zero padding and its adjoint crop, nearest-neighbour upsampling,
//! masked mean over time, embedding row gather / scatter-add, and positional-table addition.
//!
//! Every kernel writes its output through [`par_new`] in chunks of whole rows (an image row,
//! a sample, a block of table rows), so each thread zeroes and fills memory it owns and the
//! results never depend on the thread count.

use crate::cpu::conv::{par_new, shape_error, sum_rows, Conv2dGeometry, Padding};
use crate::{Error, Result};

/// Padding of a 1-D convolution (Keras `Conv1D`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conv1dPadding {
    /// No padding.
    Valid,
    /// TensorFlow `same`: `out = ceil(t / stride)`, padding split low-first.
    Same,
    /// Left padding of `(kernel - 1) * dilation` only, so output step `i` sees inputs `<= i`.
    Causal,
}

impl Conv1dPadding {
    /// Parses `"valid"`, `"same"` or `"causal"` (case-insensitive).
    pub fn parse(s: &str) -> Result<Conv1dPadding> {
        match s.to_ascii_lowercase().as_str() {
            "valid" => Ok(Conv1dPadding::Valid),
            "same" => Ok(Conv1dPadding::Same),
            "causal" => Ok(Conv1dPadding::Causal),
            _ => Err(Error::Invalid(format!(
                "padding must be 'valid', 'same' or 'causal', got {s:?}"
            ))),
        }
    }

    /// The Keras name.
    pub fn name(self) -> &'static str {
        match self {
            Conv1dPadding::Valid => "valid",
            Conv1dPadding::Same => "same",
            Conv1dPadding::Causal => "causal",
        }
    }
}

/// The 2-D convolution geometry that computes a 1-D convolution of `x` (`[batch, time,
/// in_c]`) with a `[k, in_c, out_c]` kernel, viewing `x` as `[batch, 1, time, in_c]` and the
/// kernel as `[1, k, in_c, out_c]` (same memory, so no copy is needed).
pub fn conv1d_geometry(
    x_shape: &[usize],
    kernel_shape: &[usize],
    stride: usize,
    dilation: usize,
    padding: Conv1dPadding,
) -> Result<Conv2dGeometry> {
    const OP: &str = "conv1d";
    if x_shape.len() != 3 {
        return Err(shape_error(OP, "input of rank 3 [batch, steps, channels]", x_shape));
    }
    if kernel_shape.len() != 3 {
        return Err(shape_error(
            OP,
            "kernel of rank 3 [kernel_size, in_channels, out_channels]",
            kernel_shape,
        ));
    }
    if kernel_shape[1] != x_shape[2] {
        return Err(shape_error(
            OP,
            format!(
                "kernel [_, {}, _] matching the input's {} channels",
                x_shape[2], x_shape[2]
            ),
            kernel_shape,
        ));
    }
    if x_shape[1..].contains(&0) || kernel_shape.contains(&0) {
        return Err(shape_error(
            OP,
            format!(
                "input with positive steps and channels and a kernel with no zero dimension (kernel {kernel_shape:?})"
            ),
            x_shape,
        ));
    }
    if stride == 0 || dilation == 0 {
        return Err(Error::Invalid(format!(
            "{OP}: strides and dilation_rate must be positive, got {stride} and {dilation}"
        )));
    }
    let x4 = [x_shape[0], 1, x_shape[1], x_shape[2]];
    let k4 = [1, kernel_shape[0], kernel_shape[1], kernel_shape[2]];
    let pad2 = match padding {
        Conv1dPadding::Valid => Padding::Valid,
        // Causal starts from `same`, which never fails on size and has the same output
        // length ceil(t / stride); only the padding moves entirely to the left.
        Conv1dPadding::Same | Conv1dPadding::Causal => Padding::Same,
    };
    // Shapes are checked above, so only the window-size error can come back: say it in 1-D
    // terms rather than the 2-D ones.
    let mut g = Conv2dGeometry::new(&x4, &k4, [1, stride], [1, dilation], pad2).map_err(|e| match e {
        Error::Invalid(m) => Error::Invalid(m.replace("conv2d", OP).replace("width", "steps")),
        other => other,
    })?;
    if padding == Conv1dPadding::Causal {
        // The conv2d kernels skip out-of-range taps on either side, so a left pad larger
        // than `same`'s is all causal needs.
        g.pad_left = (kernel_shape[0] - 1) * dilation;
    }
    Ok(g)
}

/// Zero padding of NHWC images `[b, h, w, c]` by `[top, bottom, left, right]`.
pub fn pad2d(x: &[f32], shape: [usize; 4], pads: [usize; 4]) -> Vec<f32> {
    let [b, h, w, c] = shape;
    assert_eq!(x.len(), b * h * w * c, "pad2d: input length");
    let (oh, ow) = (h + pads[0] + pads[1], w + pads[2] + pads[3]);
    let row = ow * c;
    if b * oh * row == 0 {
        return Vec::new();
    }
    par_new(b * oh * row, row, |r, out| {
        let (n, y) = (r / oh, r % oh);
        if y < pads[0] || y >= pads[0] + h {
            return;
        }
        let src = (n * h + y - pads[0]) * w * c;
        out[pads[2] * c..(pads[2] + w) * c].copy_from_slice(&x[src..src + w * c]);
    })
}

/// The adjoint of [`pad2d`]: keeps the interior of `y` (`[b, h + top + bottom, w + left +
/// right, c]`), returning `[b, h, w, c]` (`shape` is the unpadded shape).
pub fn crop2d(y: &[f32], shape: [usize; 4], pads: [usize; 4]) -> Vec<f32> {
    let [b, h, w, c] = shape;
    let (oh, ow) = (h + pads[0] + pads[1], w + pads[2] + pads[3]);
    assert_eq!(y.len(), b * oh * ow * c, "crop2d: input length");
    let row = w * c;
    if b * h * row == 0 {
        return Vec::new();
    }
    par_new(b * h * row, row, |r, out| {
        let (n, i) = (r / h, r % h);
        let src = ((n * oh + i + pads[0]) * ow + pads[2]) * c;
        out.copy_from_slice(&y[src..src + row]);
    })
}

/// Nearest-neighbour upsampling of NHWC images `[b, h, w, c]` by `[sh, sw]`:
/// output pixel `(i, j)` is input pixel `(i / sh, j / sw)`.
pub fn upsample_nearest2d(x: &[f32], shape: [usize; 4], size: [usize; 2]) -> Vec<f32> {
    let [b, h, w, c] = shape;
    assert_eq!(x.len(), b * h * w * c, "upsample_nearest2d: input length");
    let (oh, row) = (h * size[0], w * size[1] * c);
    if b * oh * row == 0 {
        return Vec::new();
    }
    par_new(b * oh * row, row, |r, out| {
        let (n, i) = (r / oh, r % oh);
        let src = &x[(n * h + i / size[0]) * w * c..][..w * c];
        for (px, dst) in src.chunks_exact(c).zip(out.chunks_exact_mut(size[1] * c)) {
            for d in dst.chunks_exact_mut(c) {
                d.copy_from_slice(px);
            }
        }
    })
}

/// Gradient of [`upsample_nearest2d`]: each input pixel gets the sum of the `sh x sw` output
/// gradients it was copied to. `shape` is the input shape.
pub fn upsample_nearest2d_backward(dy: &[f32], shape: [usize; 4], size: [usize; 2]) -> Vec<f32> {
    let [b, h, w, c] = shape;
    let (oh, orow) = (h * size[0], w * size[1] * c);
    assert_eq!(dy.len(), b * oh * orow, "upsample_nearest2d_backward: dy length");
    let row = w * c;
    if b * h * row == 0 {
        return Vec::new();
    }
    par_new(b * h * row, row, |r, out| {
        let (n, i) = (r / h, r % h);
        for k in 0..size[0] {
            let src = &dy[(n * oh + i * size[0] + k) * orow..][..orow];
            for (acc, block) in out.chunks_exact_mut(c).zip(src.chunks_exact(size[1] * c)) {
                for d in block.chunks_exact(c) {
                    acc.iter_mut().zip(d).for_each(|(a, v)| *a += v);
                }
            }
        }
    })
}

/// Mean over time of `x` (`[b, t, c]`) weighted by `mask` (`[b, t]`, 1 keep / 0 padded):
/// `y[n] = sum_t mask[n, t] x[n, t] / sum_t mask[n, t]`, `[b, c]`. A sample whose mask is all
/// zero gets zeros (not the 0/0 NaN), so one empty sequence cannot poison a batch.
pub fn masked_mean_time(x: &[f32], mask: &[f32], b: usize, t: usize, c: usize) -> Vec<f32> {
    assert_eq!(x.len(), b * t * c, "masked_mean_time: input length");
    assert_eq!(mask.len(), b * t, "masked_mean_time: mask length");
    if b * c == 0 {
        return Vec::new();
    }
    par_new(b * c, c, |n, out| {
        let m = &mask[n * t..(n + 1) * t];
        for (step, &w) in x[n * t * c..(n + 1) * t * c].chunks_exact(c).zip(m) {
            if w != 0.0 {
                out.iter_mut().zip(step).for_each(|(a, v)| *a += w * v);
            }
        }
        let count: f32 = m.iter().sum();
        let inv = if count != 0.0 { 1.0 / count } else { 0.0 };
        out.iter_mut().for_each(|a| *a *= inv);
    })
}

/// Gradient of [`masked_mean_time`] with respect to `x`: `dx[n, t] = mask[n, t] / count[n] *
/// dy[n]`.
pub fn masked_mean_time_backward(dy: &[f32], mask: &[f32], b: usize, t: usize, c: usize) -> Vec<f32> {
    assert_eq!(dy.len(), b * c, "masked_mean_time_backward: dy length");
    assert_eq!(mask.len(), b * t, "masked_mean_time_backward: mask length");
    if b * t * c == 0 {
        return Vec::new();
    }
    par_new(b * t * c, t * c, |n, out| {
        let m = &mask[n * t..(n + 1) * t];
        let count: f32 = m.iter().sum();
        let inv = if count != 0.0 { 1.0 / count } else { 0.0 };
        let g = &dy[n * c..(n + 1) * c];
        for (step, &w) in out.chunks_exact_mut(c).zip(m) {
            if w != 0.0 {
                let s = w * inv;
                step.iter_mut().zip(g).for_each(|(d, v)| *d = s * v);
            }
        }
    })
}

/// Checks that every value of `x` is an integer index in `[0, rows)` and converts them.
/// `what` names the caller in the error, which also gives the bad value and where it is.
pub fn indices(what: &str, x: &[f32], rows: usize) -> Result<Vec<u32>> {
    x.iter()
        .enumerate()
        .map(|(i, &v)| {
            if v.fract() == 0.0 && v >= 0.0 && (v as usize) < rows && rows <= u32::MAX as usize {
                Ok(v as u32)
            } else {
                Err(Error::Invalid(format!(
                    "{what}: index {v} at flat position {i} is not valid; expected integers in [0, {rows})"
                )))
            }
        })
        .collect()
}

/// Rows per parallel chunk when gathering: enough floats per chunk to amortise the task.
fn rows_per_chunk(total_rows: usize, dim: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    (4096 / dim.max(1))
        .max(1)
        .max(total_rows.div_ceil(4 * threads))
        .min(total_rows.max(1))
}

/// `out[r] = table[idx[r]]` for rows of `dim` floats.
pub fn gather_rows(table: &[f32], dim: usize, idx: &[u32]) -> Vec<f32> {
    let n = idx.len();
    if n * dim == 0 {
        return Vec::new();
    }
    let per = rows_per_chunk(n, dim);
    par_new(n * dim, per * dim, |ci, out| {
        for (dst, &i) in out.chunks_exact_mut(dim).zip(&idx[ci * per..]) {
            dst.copy_from_slice(&table[i as usize * dim..(i as usize + 1) * dim]);
        }
    })
}

/// The adjoint of [`gather_rows`]: a `[rows, dim]` table gradient with `g[r]` added to row
/// `idx[r]`. Parallel over blocks of table rows; each block scans all indices and adds only
/// its own rows, so no two threads write the same memory and repeated indices sum in order.
pub fn scatter_add_rows(g: &[f32], dim: usize, idx: &[u32], rows: usize) -> Vec<f32> {
    assert_eq!(g.len(), idx.len() * dim, "scatter_add_rows: gradient length");
    if rows * dim == 0 {
        return Vec::new();
    }
    let threads = rayon::current_num_threads().max(1);
    let per = rows.div_ceil(threads).max(1);
    par_new(rows * dim, per * dim, |ci, out| {
        let lo = (ci * per) as u32;
        let hi = lo + (out.len() / dim) as u32;
        for (src, &i) in g.chunks_exact(dim).zip(idx) {
            if i >= lo && i < hi {
                let dst = &mut out[(i - lo) as usize * dim..][..dim];
                dst.iter_mut().zip(src).for_each(|(a, v)| *a += v);
            }
        }
    })
}

/// `y[n, s] = x[n, s] + table[s]` for `x` of `[b, t, dim]` and a table with at least `t` rows.
pub fn add_positions(x: &[f32], table: &[f32], b: usize, t: usize, dim: usize) -> Vec<f32> {
    assert_eq!(x.len(), b * t * dim, "add_positions: input length");
    assert!(table.len() >= t * dim, "add_positions: table too short");
    let len = t * dim;
    if b * len == 0 {
        return Vec::new();
    }
    par_new(b * len, len, |n, out| {
        let xs = &x[n * len..(n + 1) * len];
        for ((o, v), p) in out.iter_mut().zip(xs).zip(&table[..len]) {
            *o = v + p;
        }
    })
}

/// Gradient of [`add_positions`] for the table (`rows` rows): `dy` summed over the batch in
/// the first `t` rows, zeros after.
pub fn add_positions_backward_table(dy: &[f32], rows: usize, t: usize, dim: usize) -> Vec<f32> {
    let mut g = sum_rows(dy, t * dim);
    g.resize(rows * dim, 0.0);
    g
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pad_and_crop_are_adjoint() {
        let x: Vec<f32> = (0..2 * 2 * 3 * 2).map(|v| v as f32).collect();
        let shape = [2, 2, 3, 2];
        let pads = [1, 2, 0, 3];
        let y = pad2d(&x, shape, pads);
        assert_eq!(y.len(), 2 * 5 * 6 * 2);
        assert_eq!(crop2d(&y, shape, pads), x);
        // Row 0 of image 0 is padding; row 1 starts with x's first pixel.
        assert!(y[..12].iter().all(|&v| v == 0.0));
        assert_eq!(&y[12..14], &[0.0, 1.0]);
    }

    #[test]
    fn upsampling_repeats_and_its_gradient_sums() {
        let x = [1.0, 2.0, 3.0, 4.0];
        let y = upsample_nearest2d(&x, [1, 2, 2, 1], [2, 3]);
        assert_eq!(&y[..6], &[1.0, 1.0, 1.0, 2.0, 2.0, 2.0]);
        assert_eq!(&y[6..12], &[1.0, 1.0, 1.0, 2.0, 2.0, 2.0]);
        assert_eq!(&y[12..18], &[3.0, 3.0, 3.0, 4.0, 4.0, 4.0]);
        let g = upsample_nearest2d_backward(&[1.0; 24], [1, 2, 2, 1], [2, 3]);
        assert_eq!(g, vec![6.0; 4]);
    }

    #[test]
    fn scatter_add_sums_repeated_indices() {
        let g = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let out = scatter_add_rows(&g, 2, &[2, 0, 2], 4);
        assert_eq!(out, vec![3.0, 4.0, 0.0, 0.0, 6.0, 8.0, 0.0, 0.0]);
        assert!(indices("t", &[0.0, 3.5], 4).is_err());
        assert!(indices("t", &[4.0], 4).is_err());
        assert!(indices("t", &[-1.0], 4).is_err());
        assert!(indices("t", &[f32::NAN], 4).is_err());
    }
}
