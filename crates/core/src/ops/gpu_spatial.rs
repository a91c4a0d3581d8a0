//! The GPU side of the spatial ops (convolution, pooling) and dropout, with their
//! vector-Jacobian products: cortex-wgpu's kernels behind the same ops the layers call.

use cortex_wgpu::{Conv2dSpec, GpuTensor, Pool2dSpec};

use super::gpu::{buf, grad, run};
use crate::backprop::{GpuCustomOp, Op};
use crate::cpu::conv::Conv2dGeometry;
use crate::cpu::pool::Pool2dGeometry;
use crate::device::gpu_err;
use crate::{Result, Tensor};

/// The padding after the input that makes `out` windows of extent `extent` fit, given the
/// padding before it (the CPU geometry keeps only the leading side).
fn trailing_pad(input: usize, out: usize, stride: usize, extent: usize, lead: usize) -> usize {
    ((out.saturating_sub(1)) * stride + extent).saturating_sub(input + lead)
}

fn conv_spec(g: &Conv2dGeometry) -> Conv2dSpec {
    let (eh, ew) = (g.dil_h * (g.k_h - 1) + 1, g.dil_w * (g.k_w - 1) + 1);
    Conv2dSpec {
        strides: (g.stride_h, g.stride_w),
        dilation: (g.dil_h, g.dil_w),
        padding: [
            g.pad_top,
            g.pad_left,
            trailing_pad(g.in_h, g.out_h, g.stride_h, eh, g.pad_top),
            trailing_pad(g.in_w, g.out_w, g.stride_w, ew, g.pad_left),
        ],
    }
}

fn pool_spec(g: &Pool2dGeometry) -> Pool2dSpec {
    Pool2dSpec {
        pool: (g.pool_h, g.pool_w),
        strides: (g.stride_h, g.stride_w),
        padding: [
            g.pad_top,
            g.pad_left,
            trailing_pad(g.in_h, g.out_h, g.stride_h, g.pool_h, g.pad_top),
            trailing_pad(g.in_w, g.out_w, g.stride_w, g.pool_w, g.pad_left),
        ],
    }
}

fn input_shape(g: &Conv2dGeometry) -> [usize; 4] {
    [g.batch, g.in_h, g.in_w, g.in_c]
}

fn pool_input(g: &Pool2dGeometry) -> [usize; 4] {
    [g.batch, g.in_h, g.in_w, g.channels]
}

pub(crate) fn conv2d(x: &Tensor, w: &Tensor, b: Option<&Tensor>, geom: &Conv2dGeometry) -> Result<Tensor> {
    let (gx, gw) = (buf(x)?, buf(w)?);
    let gb = b.map(buf).transpose()?;
    let spec = conv_spec(geom);
    let out = run(|gpu| gpu.conv2d_bias(&gx, &gw, gb.as_ref(), &spec))?;
    let mut inputs = vec![x, w];
    inputs.extend(b);
    Ok(Tensor::from_gpu_op(
        out,
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

pub(crate) fn max_pool2d(x: &Tensor, geom: &Pool2dGeometry) -> Result<Tensor> {
    let gx = buf(x)?;
    let pooled = run(|gpu| gpu.max_pool2d(&gx, &pool_spec(geom)))?;
    let argmax = pooled.argmax;
    Ok(Tensor::from_gpu_op(
        pooled.output,
        geom.output_shape(),
        |_| {
            Op::GpuCustom(Box::new(MaxPoolBackward {
                x: x.clone(),
                argmax,
                geom: geom.clone(),
            }))
        },
        &[x],
    ))
}

pub(crate) fn avg_pool2d(x: &Tensor, geom: &Pool2dGeometry) -> Result<Tensor> {
    let gx = buf(x)?;
    let out = run(|gpu| gpu.avg_pool2d(&gx, &pool_spec(geom)))?;
    Ok(Tensor::from_gpu_op(
        out,
        geom.output_shape(),
        |_| Op::AvgPool2d {
            x: x.clone(),
            geom: geom.clone(),
        },
        &[x],
    ))
}

/// Mean over the `spatial` positions of `[batch, spatial..., channels]`: `[batch, channels]`.
pub(crate) fn global_avg_pool(x: &Tensor, batch: usize, spatial: usize, channels: usize) -> Result<Tensor> {
    let gx = buf(x)?.reshape(&[batch, spatial, 1, channels]).map_err(gpu_err)?;
    let out = run(|gpu| gpu.global_avg_pool2d(&gx))?;
    Ok(Tensor::from_gpu_op(
        out,
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

/// Inverted dropout on the device: the mask is a hash of `(seed, index)`, so the backward pass
/// is the same kernel on the gradient and nothing is stored.
pub(crate) fn dropout(x: &Tensor, rate: f32, seed: u64) -> Result<Tensor> {
    let gx = buf(x)?;
    let out = run(|gpu| gpu.dropout(&gx, rate, seed))?;
    Ok(Tensor::from_gpu_op(
        out,
        x.shape().to_vec(),
        |_| {
            Op::GpuCustom(Box::new(DropoutBackward {
                x: x.clone(),
                rate,
                seed,
            }))
        },
        &[x],
    ))
}

/// The vector-Jacobian products of the ops above, for a GPU gradient `dy`; `None` for an op
/// that is not one of them.
pub(crate) fn vjp(op: &Op, dy: &GpuTensor) -> Option<Result<Vec<(Tensor, Tensor)>>> {
    let e = gpu_err;
    Some(match op {
        Op::Conv2d { x, w, b, geom } => (|| {
            let spec = conv_spec(geom);
            let mut v = Vec::with_capacity(3);
            if x.tracks() {
                let gw = buf(w)?;
                let gx = run(|gpu| gpu.conv2d_backward_input(dy, &gw, input_shape(geom), &spec))?;
                v.push((x.clone(), grad(gx)));
            }
            if w.tracks() {
                let gx = buf(x)?;
                let gw = run(|gpu| gpu.conv2d_backward_filter(&gx, dy, (geom.k_h, geom.k_w), &spec))?;
                v.push((w.clone(), grad(gw)));
            }
            if let Some(b) = b.as_ref().filter(|b| b.tracks()) {
                let rows = dy
                    .clone()
                    .reshape(&[dy.len() / geom.out_c.max(1), geom.out_c])
                    .map_err(e)?;
                v.push((b.clone(), grad(run(|gpu| gpu.sum_rows(&rows))?)));
            }
            Ok(v)
        })(),
        Op::AvgPool2d { x, geom } => run(|gpu| gpu.avg_pool2d_backward(dy, pool_input(geom), &pool_spec(geom)))
            .map(|gx| vec![(x.clone(), grad(gx))]),
        Op::GlobalAvgPool {
            x,
            batch,
            spatial,
            channels,
        } => run(|gpu| gpu.global_avg_pool2d_backward(dy, [*batch, *spatial, 1, *channels])).and_then(|gx| {
            let gx = gx.reshape(x.shape()).map_err(e)?;
            Ok(vec![(x.clone(), grad(gx))])
        }),
        _ => return None,
    })
}

/// Max pooling's backward: each gradient goes to its window's argmax, kept on the device.
struct MaxPoolBackward {
    x: Tensor,
    argmax: GpuTensor,
    geom: Pool2dGeometry,
}

impl GpuCustomOp for MaxPoolBackward {
    fn name(&self) -> &'static str {
        "maxPool2d"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.x]
    }
    fn vjp(&self, dy: &GpuTensor) -> Result<Vec<(Tensor, Tensor)>> {
        let (geom, argmax) = (&self.geom, &self.argmax);
        let gx = run(|gpu| gpu.max_pool2d_backward(dy, argmax, pool_input(geom), &pool_spec(geom)))?;
        Ok(vec![(self.x.clone(), grad(gx))])
    }
}

/// Dropout's backward: the same hashed mask applied to the gradient.
struct DropoutBackward {
    x: Tensor,
    rate: f32,
    seed: u64,
}

impl GpuCustomOp for DropoutBackward {
    fn name(&self) -> &'static str {
        "dropout"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.x]
    }
    fn vjp(&self, dy: &GpuTensor) -> Result<Vec<(Tensor, Tensor)>> {
        let gx = run(|gpu| gpu.dropout(dy, self.rate, self.seed))?;
        Ok(vec![(self.x.clone(), grad(gx))])
    }
}

/// Zero padding of `x` (`shape`, NHWC) by `pads` = `[top, bottom, left, right]`.
pub(crate) fn pad2d(x: &Tensor, shape: [usize; 4], pads: [usize; 4]) -> Result<Tensor> {
    let gx = buf(x)?;
    let out = run(|gpu| gpu.zero_pad2d(&gx, pads))?;
    let out_shape = out.shape().to_vec();
    Ok(Tensor::from_gpu_op(
        out,
        out_shape,
        |_| {
            Op::GpuCustom(Box::new(Resize2dBackward {
                x: x.clone(),
                shape,
                kind: Resize::Pad(pads),
            }))
        },
        &[x],
    ))
}

/// Nearest-neighbour upsampling of `x` (`shape`, NHWC) by `size` (rows, columns).
pub(crate) fn upsample2d(x: &Tensor, shape: [usize; 4], size: [usize; 2]) -> Result<Tensor> {
    let gx = buf(x)?;
    let out = run(|gpu| gpu.upsample_nearest2d(&gx, (size[0], size[1])))?;
    let out_shape = out.shape().to_vec();
    Ok(Tensor::from_gpu_op(
        out,
        out_shape,
        |_| {
            Op::GpuCustom(Box::new(Resize2dBackward {
                x: x.clone(),
                shape,
                kind: Resize::Upsample(size),
            }))
        },
        &[x],
    ))
}

enum Resize {
    Pad([usize; 4]),
    Upsample([usize; 2]),
}

/// The backward of zero padding (the interior of the gradient) or of nearest upsampling (each
/// pixel's copies summed).
struct Resize2dBackward {
    x: Tensor,
    shape: [usize; 4],
    kind: Resize,
}

impl GpuCustomOp for Resize2dBackward {
    fn name(&self) -> &'static str {
        match self.kind {
            Resize::Pad(_) => "zeroPadding2d",
            Resize::Upsample(_) => "upSampling2d",
        }
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.x]
    }
    fn vjp(&self, dy: &GpuTensor) -> Result<Vec<(Tensor, Tensor)>> {
        let gx = run(|gpu| match self.kind {
            Resize::Pad(pads) => gpu.zero_pad2d_backward(dy, self.shape, pads),
            Resize::Upsample(size) => gpu.upsample_nearest2d_backward(dy, self.shape, (size[0], size[1])),
        })?;
        Ok(vec![(self.x.clone(), grad(gx))])
    }
}

/// Transposed convolution as the convolution `C` it is the adjoint of (see
/// `nn/gpu_model/conv_steps.rs`): forward is `C`'s backward-input pass, the input gradient
/// `C`'s forward pass, the kernel gradient `C`'s backward-filter pass with roles swapped.
pub(crate) fn conv2d_transpose(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    geom: &crate::cpu::conv_transpose::ConvTranspose2dGeometry,
) -> Result<Tensor> {
    let (gx, gw) = (buf(x)?, buf(w)?);
    let gb = b.map(buf).transpose()?;
    let spec = conv_spec(&geom.conv);
    let out_shape = geom.output_shape();
    let out4 = [out_shape[0], out_shape[1], out_shape[2], out_shape[3]];
    let y = run(|gpu| {
        let z = gpu.conv2d_backward_input(&gx, &gw, out4, &spec)?;
        match &gb {
            Some(gb) => gpu.bias_add(&z, gb),
            None => Ok(z),
        }
    })?;
    let mut inputs = vec![x, w];
    inputs.extend(b);
    Ok(Tensor::from_gpu_op(
        y,
        out_shape,
        |_| {
            Op::GpuCustom(Box::new(ConvTransposeBackward {
                x: x.clone(),
                w: w.clone(),
                b: b.cloned(),
                spec,
            }))
        },
        &inputs,
    ))
}

struct ConvTransposeBackward {
    x: Tensor,
    w: Tensor,
    b: Option<Tensor>,
    spec: Conv2dSpec,
}

impl GpuCustomOp for ConvTransposeBackward {
    fn name(&self) -> &'static str {
        "conv2dTranspose"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        let mut v = vec![&self.x, &self.w];
        v.extend(self.b.iter());
        v
    }
    fn vjp(&self, dy: &GpuTensor) -> Result<Vec<(Tensor, Tensor)>> {
        let (gx, gw) = (buf(&self.x)?, buf(&self.w)?);
        let ks = self.w.shape();
        let mut v = Vec::with_capacity(3);
        if self.x.tracks() {
            v.push((self.x.clone(), grad(run(|gpu| gpu.conv2d(dy, &gw, &self.spec))?)));
        }
        if self.w.tracks() {
            let dk = run(|gpu| gpu.conv2d_backward_filter(dy, &gx, (ks[0], ks[1]), &self.spec))?;
            v.push((self.w.clone(), grad(dk)));
        }
        if let Some(b) = self.b.as_ref().filter(|b| b.tracks()) {
            let cout = *dy.shape().last().unwrap_or(&1);
            let rows = dy.clone().reshape(&[dy.len() / cout.max(1), cout]).map_err(gpu_err)?;
            v.push((b.clone(), grad(run(|gpu| gpu.sum_rows(&rows))?)));
        }
        Ok(v)
    }
}
