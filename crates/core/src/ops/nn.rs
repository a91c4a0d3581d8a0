//! Neural-network ops: activations, softmax, convolution, pooling, dropout.

use super::gpu::{self, on_gpu};
use super::gpu_spatial;
use crate::backprop::Op;
use crate::cpu::conv::{self, Conv2dGeometry, Padding};
use crate::cpu::elementwise::{self, Activation};
use crate::cpu::{conv_direct, conv_winograd, pool, softmax};
use crate::rng::Rng;
use crate::{Error, Result, Tensor};

/// Pointwise activation.
pub fn activation(x: &Tensor, act: Activation) -> Result<Tensor> {
    if act == Activation::Linear {
        return Ok(x.clone());
    }
    if on_gpu("activation", &[x])? {
        return gpu::activation(x, act);
    }
    let y = elementwise::activation_forward(act, x.data());
    Ok(Tensor::from_op(
        y,
        x.shape().to_vec(),
        |s| Op::Activation {
            x: x.clone(),
            act,
            y: s.clone(),
        },
        &[x],
    ))
}

/// [`activation`] of a tensor the caller gives up: when no gradient will flow through it and
/// nothing else holds its values (a layer's fresh output during inference), the activation is
/// applied in place, saving an allocation and a pass over a new buffer.
pub fn activation_owned(mut x: Tensor, act: Activation) -> Result<Tensor> {
    if act == Activation::Linear {
        return Ok(x);
    }
    if !(crate::tensor::grad_enabled() && x.tracks()) {
        if let Some(values) = x.data_mut() {
            elementwise::activation_in_place(act, values);
            return Ok(x);
        }
    }
    activation(&x, act)
}

fn last_axis(op: &str, x: &Tensor) -> Result<usize> {
    match x.shape().last() {
        Some(&c) if c > 0 => Ok(c),
        _ => Err(Error::shape(
            op,
            "a tensor of rank >= 1 with a non-empty last axis",
            x.shape(),
        )),
    }
}

/// Softmax over the last axis.
pub fn softmax(x: &Tensor) -> Result<Tensor> {
    let c = last_axis("softmax", x)?;
    if on_gpu("softmax", &[x])? {
        return gpu::softmax(x, false);
    }
    let y = softmax::softmax_forward(x.data(), c);
    Ok(Tensor::from_op(
        y,
        x.shape().to_vec(),
        |s| Op::Softmax {
            y: s.clone(),
            x: x.clone(),
        },
        &[x],
    ))
}

/// Log-softmax over the last axis.
pub fn log_softmax(x: &Tensor) -> Result<Tensor> {
    let c = last_axis("logSoftmax", x)?;
    if on_gpu("logSoftmax", &[x])? {
        return gpu::softmax(x, true);
    }
    let y = softmax::log_softmax_forward(x.data(), c);
    Ok(Tensor::from_op(
        y,
        x.shape().to_vec(),
        |s| Op::LogSoftmax {
            y: s.clone(),
            x: x.clone(),
        },
        &[x],
    ))
}

/// Channels-last 2-D convolution with a `[kh, kw, in, out]` kernel.
pub fn conv2d(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    strides: [usize; 2],
    dilation: [usize; 2],
    padding: Padding,
) -> Result<Tensor> {
    let geom = Conv2dGeometry::new(x.shape(), w.shape(), strides, dilation, padding)?;
    if let Some(b) = b {
        if b.shape() != [geom.out_c] {
            return Err(Error::shape("conv2d bias", [geom.out_c], b.shape()));
        }
    }
    let mut inputs = vec![x, w];
    inputs.extend(b);
    if on_gpu("conv2d", &inputs)? {
        return gpu_spatial::conv2d(x, w, b, &geom);
    }
    let y = conv::conv2d_forward(x.data(), w.data(), b.map(|b| b.data()), &geom);
    Ok(Tensor::from_op(
        y,
        geom.output_shape(),
        |_| Op::Conv2d {
            x: x.clone(),
            w: w.clone(),
            b: b.cloned(),
            geom: geom.clone(),
        },
        &inputs,
    ))
}

/// The geometry of a convolution the CPU's fused inference kernels may take: inputs on the
/// CPU, nothing recording, a direct kernel for this CPU; `None` otherwise. A bias of the wrong
/// length is an Error.
fn fused_conv_geometry(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    strides: [usize; 2],
    dilation: [usize; 2],
    padding: Padding,
) -> Result<Option<Conv2dGeometry>> {
    let mut inputs = vec![x, w];
    inputs.extend(b);
    if on_gpu("conv2d", &inputs)? || Tensor::records(&inputs) || !conv_direct::available() {
        return Ok(None);
    }
    let geom = Conv2dGeometry::new(x.shape(), w.shape(), strides, dilation, padding)?;
    if let Some(b) = b {
        if b.shape() != [geom.out_c] {
            return Err(Error::shape("conv2d bias", [geom.out_c], b.shape()));
        }
    }
    Ok(Some(geom))
}

/// [`conv2d`] followed by a pointwise activation. When nothing records (inference) and the
/// CPU has a direct kernel, the two run fused in one pass: Winograd F(2x2, 3x3) for 3x3
/// windows with stride 1 and enough channels (`cpu::conv_winograd`), else `cpu::conv_direct`.
/// A layer passes its `winograd` cache with the kernel's parameter version, so the kernel's
/// transform runs once per weight change rather than once per call.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_act(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    strides: [usize; 2],
    dilation: [usize; 2],
    padding: Padding,
    act: Activation,
    winograd: Option<(&conv_winograd::KernelCache, u64)>,
) -> Result<Tensor> {
    if let Some(geom) = fused_conv_geometry(x, w, b, strides, dilation, padding)? {
        let (xd, wd, bd) = (x.data(), w.data(), b.map(|b| b.data()));
        if let Some(y) = conv_winograd::conv2d_winograd(xd, wd, bd, &geom, act, winograd) {
            return Tensor::new(y, &geom.output_shape());
        }
        if let Some(y) = conv_direct::conv2d_direct(xd, wd, bd, &geom, act) {
            return Tensor::new(y, &geom.output_shape());
        }
    }
    activation_owned(conv2d(x, w, b, strides, dilation, padding)?, act)
}

/// [`conv2d_act`] followed by max pooling over non-overlapping `pool` windows ('valid'), fused
/// into one pass (`cpu::conv_direct::conv2d_direct_max_pool`) when nothing records, the input
/// is on the CPU and the convolution takes the direct kernel (Winograd's layers keep their own
/// kernel and a separate pooling); `None` otherwise, and the caller runs the two ops.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_act_max_pool(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    strides: [usize; 2],
    dilation: [usize; 2],
    padding: Padding,
    act: Activation,
    pool: [usize; 2],
) -> Result<Option<Tensor>> {
    let Some(geom) = fused_conv_geometry(x, w, b, strides, dilation, padding)? else {
        return Ok(None);
    };
    let Some(shape) = geom.pooled_shape(pool) else {
        return Ok(None);
    };
    if conv_winograd::applies(&geom) {
        return Ok(None);
    }
    let (xd, wd, bd) = (x.data(), w.data(), b.map(|b| b.data()));
    let Some(y) = conv_direct::conv2d_direct_max_pool(xd, wd, bd, &geom, act, pool) else {
        return Ok(None);
    };
    Tensor::new(y, &shape).map(Some)
}

/// Max pooling over NHWC windows.
pub fn max_pool2d(x: &Tensor, pool_size: [usize; 2], strides: [usize; 2], padding: Padding) -> Result<Tensor> {
    let geom = pool::Pool2dGeometry::new(x.shape(), pool_size, strides, padding)?;
    if on_gpu("maxPool2d", &[x])? {
        return gpu_spatial::max_pool2d(x, &geom);
    }
    if !Tensor::records(&[x]) {
        return Tensor::new(pool::max_pool2d_values(x.data(), &geom), &geom.output_shape());
    }
    let (y, argmax) = pool::max_pool2d_forward(x.data(), &geom);
    Ok(Tensor::from_op(
        y,
        geom.output_shape(),
        |_| Op::MaxPool2d {
            x: x.clone(),
            argmax,
            geom: geom.clone(),
        },
        &[x],
    ))
}

/// Average pooling over NHWC windows (TensorFlow `same`: padding is not counted).
pub fn avg_pool2d(x: &Tensor, pool_size: [usize; 2], strides: [usize; 2], padding: Padding) -> Result<Tensor> {
    let geom = pool::Pool2dGeometry::new(x.shape(), pool_size, strides, padding)?;
    if on_gpu("avgPool2d", &[x])? {
        return gpu_spatial::avg_pool2d(x, &geom);
    }
    let y = pool::avg_pool2d_forward(x.data(), &geom);
    Ok(Tensor::from_op(
        y,
        geom.output_shape(),
        |_| Op::AvgPool2d {
            x: x.clone(),
            geom: geom.clone(),
        },
        &[x],
    ))
}

/// Mean over every axis between the batch and the channels: `[b, ..., c] -> [b, c]`.
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    if x.rank() < 3 {
        return Err(Error::shape(
            "globalAveragePooling",
            "[batch, ..., channels] (rank >= 3)",
            x.shape(),
        ));
    }
    let batch = x.shape()[0];
    let channels = *x.shape().last().expect("rank checked");
    let spatial = x.len() / (batch * channels).max(1);
    if on_gpu("globalAveragePooling", &[x])? {
        return gpu_spatial::global_avg_pool(x, batch, spatial, channels);
    }
    let y = pool::global_avg_pool2d_forward(x.data(), batch, spatial, channels);
    Ok(Tensor::from_op(
        y,
        vec![batch, channels],
        |_| Op::GlobalAvgPool {
            x: x.clone(),
            batch,
            spatial,
            channels,
        },
        &[x],
    ))
}

/// Inverted dropout: zeroes each value with probability `rate` and scales the rest by
/// `1 / (1 - rate)`, so inference needs no rescaling.
pub fn dropout(x: &Tensor, rate: f32, rng: &mut Rng) -> Result<Tensor> {
    if !(0.0..1.0).contains(&rate) {
        return Err(Error::Invalid(format!("dropout rate must be in [0, 1), got {rate}")));
    }
    if rate == 0.0 {
        return Ok(x.clone());
    }
    if on_gpu("dropout", &[x])? {
        // One draw from the layer's generator seeds the device mask: seeded runs repeat.
        return gpu_spatial::dropout(x, rate, rng.next_u64());
    }
    // One draw seeds the mask, as on the GPU: the same seed gives the same mask on both devices.
    let mask = dropout_mask(x.len(), rate, rng.next_u64());
    let y = elementwise::map_binary(x.data(), &mask, |v, m| v * m);
    Ok(Tensor::from_op(
        y,
        x.shape().to_vec(),
        |_| Op::Mask { x: x.clone(), mask },
        &[x],
    ))
}

/// PCG hash (O'Neill's permuted congruential step), as `pcg_hash` in elementwise.wgsl.
fn pcg_hash(v: u32) -> u32 {
    let s = v.wrapping_mul(747_796_405).wrapping_add(2_891_336_453);
    let w = ((s >> ((s >> 28) + 4)) ^ s).wrapping_mul(277_803_737);
    (w >> 22) ^ w
}

/// The inverted-dropout mask of `n` elements: 0 where the hash of (`seed`, index) falls under
/// `rate * 2^32`, else `1 / (1 - rate)`. The GPU kernel (elementwise.wgsl `dropout`) computes
/// the same hash, so a seed gives one mask on either device; a counter hash also fills the mask
/// in parallel, where a generator would be one serial stream.
pub(crate) fn dropout_mask(n: usize, rate: f32, seed: u64) -> Vec<f32> {
    let keep = 1.0 / (1.0 - rate);
    let threshold = (f64::from(rate) * 4_294_967_296.0).min(f64::from(u32::MAX)) as u32;
    let key = pcg_hash(seed as u32 ^ pcg_hash((seed >> 32) as u32));
    let fill = |start: usize, chunk: &mut [f32]| {
        for (i, m) in (start..).zip(chunk.iter_mut()) {
            // Indices wrap at 2^32 as the GPU kernel's u32 index would.
            *m = if pcg_hash(i as u32 ^ key) < threshold {
                0.0
            } else {
                keep
            };
        }
    };
    let mut mask = crate::alloc::zeros_or_unwind("a dropout mask", n);
    const CHUNK: usize = 1 << 14;
    if n >= 4 * CHUNK {
        use rayon::prelude::*;
        mask.par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(c, chunk)| fill(c * CHUNK, chunk));
    } else {
        fill(0, &mut mask);
    }
    mask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropout_masks_drop_about_the_rate_and_repeat_per_seed() {
        let n = 200_000;
        let mask = dropout_mask(n, 0.3, 42);
        let dropped = mask.iter().filter(|&&m| m == 0.0).count() as f64 / n as f64;
        assert!((dropped - 0.3).abs() < 0.005, "dropped {dropped}");
        assert!(mask.iter().all(|&m| m == 0.0 || (m - 1.0 / 0.7).abs() < 1e-6));
        assert_eq!(mask, dropout_mask(n, 0.3, 42));
        assert_ne!(mask, dropout_mask(n, 0.3, 43));
        // The serial and parallel fills agree on a shared prefix.
        assert_eq!(dropout_mask(1000, 0.3, 42), mask[..1000]);
    }
}
