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
    let mut inputs = vec![x, w];
    inputs.extend(b);
    if !on_gpu("conv2d", &inputs)? && !Tensor::records(&inputs) && conv_direct::available() {
        let geom = Conv2dGeometry::new(x.shape(), w.shape(), strides, dilation, padding)?;
        if let Some(b) = b {
            if b.shape() != [geom.out_c] {
                return Err(Error::shape("conv2d bias", [geom.out_c], b.shape()));
            }
        }
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
    let keep = 1.0 / (1.0 - rate);
    // Two 32-bit draws per generator step, compared as integers: the mask costs about a
    // nanosecond per element instead of a float conversion per element.
    let threshold = (f64::from(rate) * 4_294_967_296.0) as u64;
    let draw = |bits: u64| if bits < threshold { 0.0 } else { keep };
    let mut mask = Vec::with_capacity(x.len() + 1);
    while mask.len() < x.len() {
        let r = rng.next_u64();
        mask.push(draw(r & 0xffff_ffff));
        mask.push(draw(r >> 32));
    }
    mask.truncate(x.len());
    let y = elementwise::map_binary(x.data(), &mask, |v, m| v * m);
    Ok(Tensor::from_op(
        y,
        x.shape().to_vec(),
        |_| Op::Mask { x: x.clone(), mask },
        &[x],
    ))
}
