//! The GPU side of the primitive ops: forward kernels for tensors whose storage is on the GPU,
//! and their vector-Jacobian products for [`crate::backprop`]. The public ops in this module's
//! siblings check where their inputs live ([`placement`]) and come here for GPU inputs, so a
//! layer written with ops runs on either device.

use std::sync::Arc;

use cortex_wgpu::{Activation as GpuAct, BinaryOp, Gpu, GpuTensor};

use crate::backprop::Op;
use crate::cpu::elementwise::Activation;
use crate::device::{gpu_err, shared_gpu, Device, Storage};
use crate::{Error, Result, Tensor};

/// The device all of an op's inputs are on; an Error naming the op when they disagree.
pub(crate) fn placement(op: &str, inputs: &[&Tensor]) -> Result<Device> {
    let device = inputs.first().map_or(Device::Cpu, |t| t.device());
    if inputs.iter().any(|t| t.device() != device) {
        let devices: Vec<&str> = inputs.iter().map(|t| t.device().name()).collect();
        return Err(Error::Invalid(format!(
            "{op}: its inputs are on different devices ({}); move them to one device with .to('cpu') or .to('gpu')",
            devices.join(", ")
        )));
    }
    Ok(device)
}

/// Whether an op runs on the GPU: its inputs are all there (an Error when they are split).
pub(crate) fn on_gpu(op: &str, inputs: &[&Tensor]) -> Result<bool> {
    Ok(placement(op, inputs)? == Device::Gpu)
}

/// The Error of an op that met a GPU input and has no GPU kernel yet.
pub(crate) fn no_gpu_kernel(op: &str) -> Error {
    Error::Invalid(format!(
        "{op} has no GPU kernel yet; move its inputs to the CPU with .to('cpu')"
    ))
}

/// The GPU kernel form of an activation (every activation has one).
pub fn gpu_activation(act: Activation) -> GpuAct {
    match act {
        Activation::Linear => GpuAct::Linear,
        Activation::Relu => GpuAct::Relu,
        Activation::Sigmoid => GpuAct::Sigmoid,
        Activation::Tanh => GpuAct::Tanh,
        Activation::Gelu => GpuAct::GeluErf,
        Activation::GeluTanh => GpuAct::Gelu,
        Activation::Elu(a) => GpuAct::Elu(a),
        Activation::Selu => GpuAct::Selu,
        Activation::LeakyRelu(s) => GpuAct::LeakyRelu(s),
        Activation::Swish => GpuAct::Swish,
        Activation::Softplus => GpuAct::Softplus,
    }
}

pub(super) fn buf(t: &Tensor) -> Result<GpuTensor> {
    t.gpu_tensor()
        .ok_or_else(|| Error::Invalid(format!("expected a GPU tensor, got a {} tensor", t.device().name())))
}

/// `f(gpu)` with cortex-wgpu errors as engine errors.
pub(super) fn run<T>(f: impl FnOnce(&Gpu) -> cortex_wgpu::Result<T>) -> Result<T> {
    f(shared_gpu()?.as_ref()).map_err(gpu_err)
}

/// `[rows, last]` view of a tensor of rank >= 1.
fn rows_view(t: &GpuTensor, last: usize) -> cortex_wgpu::Result<GpuTensor> {
    let rows = t.len().checked_div(last).unwrap_or(0);
    t.clone().reshape(&[rows, last])
}

pub(crate) fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (ga, gb) = (buf(a)?, buf(b)?);
    let out = run(|gpu| gpu.matmul(&ga, &gb, false, false))?;
    let shape = out.shape().to_vec();
    Ok(Tensor::from_gpu_op(
        out,
        shape,
        |_| Op::MatMul(a.clone(), b.clone()),
        &[a, b],
    ))
}

pub(crate) fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>, out_shape: Vec<usize>) -> Result<Tensor> {
    let din = w.shape()[0];
    let (gx, gw) = (buf(x)?, buf(w)?);
    let gb = b.map(buf).transpose()?;
    let out = run(|gpu| {
        let y = gpu.matmul(&rows_view(&gx, din)?, &gw, false, false)?;
        let y = match &gb {
            Some(gb) => gpu.bias_add(&y, gb)?,
            None => y,
        };
        y.reshape(&out_shape)
    })?;
    let mut inputs = vec![x, w];
    inputs.extend(b);
    Ok(Tensor::from_gpu_op(
        out,
        out_shape.clone(),
        |_| Op::Linear {
            x: x.clone(),
            w: w.clone(),
            b: b.cloned(),
        },
        &inputs,
    ))
}

pub(crate) fn binary(kind: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (ga, gb) = (buf(a)?, buf(b)?);
    let out = run(|gpu| gpu.binary(kind, &ga, &gb))?;
    let op = |_: &Arc<Storage>| match kind {
        BinaryOp::Add => Op::Add(a.clone(), b.clone()),
        BinaryOp::Sub => Op::Sub(a.clone(), b.clone()),
        BinaryOp::Mul => Op::Mul(a.clone(), b.clone()),
    };
    Ok(Tensor::from_gpu_op(out, a.shape().to_vec(), op, &[a, b]))
}

pub(crate) fn add_last_axis(x: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (gx, gb) = (buf(x)?, buf(b)?);
    let out = run(|gpu| gpu.bias_add(&gx, &gb))?;
    Ok(Tensor::from_gpu_op(
        out,
        x.shape().to_vec(),
        |_| Op::AddLastAxis(x.clone(), b.clone()),
        &[x, b],
    ))
}

pub(crate) fn scale(x: &Tensor, s: f32) -> Result<Tensor> {
    let gx = buf(x)?;
    let out = run(|gpu| gpu.scale(&gx, s, 0.0))?;
    Ok(Tensor::from_gpu_op(
        out,
        x.shape().to_vec(),
        |_| Op::Scale(x.clone(), s),
        &[x],
    ))
}

/// Sum (`mean: false`) or mean of all elements, as a scalar.
pub(crate) fn reduce_all(x: &Tensor, mean: bool) -> Result<Tensor> {
    let gx = buf(x)?;
    let out = run(|gpu| if mean { gpu.mean(&gx) } else { gpu.sum(&gx) }?.reshape(&[]))?;
    let op = |_: &Arc<Storage>| if mean { Op::Mean(x.clone()) } else { Op::Sum(x.clone()) };
    Ok(Tensor::from_gpu_op(out, vec![], op, &[x]))
}

pub(crate) fn activation(x: &Tensor, act: Activation) -> Result<Tensor> {
    let gx = buf(x)?;
    let out = run(|gpu| gpu.activation(gpu_activation(act), &gx))?;
    Ok(Tensor::from_gpu_op(
        out,
        x.shape().to_vec(),
        |s| Op::Activation {
            x: x.clone(),
            act,
            y: s.clone(),
        },
        &[x],
    ))
}

/// Softmax (`log: false`) or log-softmax over the last axis.
pub(crate) fn softmax(x: &Tensor, log: bool) -> Result<Tensor> {
    let gx = buf(x)?;
    let out = run(|gpu| if log { gpu.log_softmax(&gx) } else { gpu.softmax(&gx) })?;
    let op = |s: &Arc<Storage>| match log {
        true => Op::LogSoftmax {
            y: s.clone(),
            x: x.clone(),
        },
        false => Op::Softmax {
            y: s.clone(),
            x: x.clone(),
        },
    };
    Ok(Tensor::from_gpu_op(out, x.shape().to_vec(), op, &[x]))
}

/// `a + b` of two GPU gradients, as a constant.
pub(crate) fn add_grads(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (ga, gb) = (buf(a)?, buf(b)?);
    Ok(grad(run(|gpu| gpu.add(&ga, &gb))?))
}

/// A gradient buffer as a constant tensor.
pub(super) fn grad(t: GpuTensor) -> Tensor {
    Tensor::from_gpu(t)
}

/// `g` broadcast to every element of a tensor of `shape` (the backward of sum and mean).
pub(super) fn fill(gpu: &Gpu, g: &GpuTensor, shape: &[usize], factor: f32) -> cortex_wgpu::Result<GpuTensor> {
    let n: usize = shape.iter().product();
    let zeros = gpu.zeros(&[n, 1])?;
    let filled = gpu.bias_add(&zeros, &g.clone().reshape(&[1])?)?;
    let filled = if factor == 1.0 {
        filled
    } else {
        gpu.scale(&filled, factor, 0.0)?
    };
    filled.reshape(shape)
}

/// The output's device buffer (softmax saves it for backward).
fn saved(y: &Storage, shape: &[usize]) -> Result<GpuTensor> {
    let t = y
        .gpu_tensor()
        .ok_or_else(|| Error::Invalid("a GPU op saved a CPU output".into()))?;
    t.clone().reshape(shape).map_err(gpu_err)
}

/// The vector-Jacobian product of a primitive op whose output `out` is on the GPU, given the
/// output's gradient `g` (a GPU tensor): a GPU gradient for each input that needs one.
pub(crate) fn vjp(op: &Op, g: &Tensor) -> Result<Vec<(Tensor, Tensor)>> {
    let gpu = shared_gpu()?;
    let gpu = gpu.as_ref();
    let dy = buf(g)?;
    let e = gpu_err;
    Ok(match op {
        Op::Reshape(x) => vec![(x.clone(), grad(dy.reshape(x.shape()).map_err(e)?))],
        Op::MatMul(a, b) => {
            let mut v = Vec::with_capacity(2);
            if a.tracks() {
                v.push((a.clone(), grad(gpu.matmul(&dy, &buf(b)?, false, true).map_err(e)?)));
            }
            if b.tracks() {
                v.push((b.clone(), grad(gpu.matmul(&buf(a)?, &dy, true, false).map_err(e)?)));
            }
            v
        }
        Op::Linear { x, w, b } => {
            let (din, dout) = (w.shape()[0], w.shape()[1]);
            let dy2 = rows_view(&dy, dout).map_err(e)?;
            let mut v = Vec::with_capacity(3);
            if x.tracks() {
                let gx = gpu.matmul(&dy2, &buf(w)?, false, true).map_err(e)?;
                v.push((x.clone(), grad(gx.reshape(x.shape()).map_err(e)?)));
            }
            if w.tracks() {
                let x2 = rows_view(&buf(x)?, din).map_err(e)?;
                v.push((w.clone(), grad(gpu.matmul(&x2, &dy2, true, false).map_err(e)?)));
            }
            if let Some(b) = b.as_ref().filter(|b| b.tracks()) {
                v.push((b.clone(), grad(gpu.sum_rows(&dy2).map_err(e)?)));
            }
            v
        }
        Op::Add(a, b) => vec![(a.clone(), g.clone()), (b.clone(), g.clone())],
        Op::Sub(a, b) => vec![
            (a.clone(), g.clone()),
            (b.clone(), grad(gpu.scale(&dy, -1.0, 0.0).map_err(e)?)),
        ],
        Op::Mul(a, b) => {
            let mut v = Vec::with_capacity(2);
            if a.tracks() {
                v.push((a.clone(), grad(gpu.mul(&dy, &buf(b)?).map_err(e)?)));
            }
            if b.tracks() {
                v.push((b.clone(), grad(gpu.mul(&dy, &buf(a)?).map_err(e)?)));
            }
            v
        }
        Op::AddLastAxis(x, b) => {
            let gb = gpu.sum_rows(&rows_view(&dy, b.len()).map_err(e)?).map_err(e)?;
            vec![(x.clone(), g.clone()), (b.clone(), grad(gb))]
        }
        Op::Scale(x, s) => vec![(x.clone(), grad(gpu.scale(&dy, *s, 0.0).map_err(e)?))],
        Op::Activation { x, act, .. } => {
            let gx = gpu
                .activation_backward(gpu_activation(*act), &buf(x)?, &dy)
                .map_err(e)?;
            vec![(x.clone(), grad(gx))]
        }
        Op::Softmax { y, x } => {
            let gx = gpu.softmax_backward(&saved(y, x.shape())?, &dy).map_err(e)?;
            vec![(x.clone(), grad(gx))]
        }
        Op::LogSoftmax { y, x } => {
            let gx = gpu.log_softmax_backward(&saved(y, x.shape())?, &dy).map_err(e)?;
            vec![(x.clone(), grad(gx))]
        }
        Op::Sum(x) => vec![(x.clone(), grad(fill(gpu, &dy, x.shape(), 1.0).map_err(e)?))],
        Op::Mean(x) => {
            let factor = 1.0 / x.len().max(1) as f32;
            vec![(x.clone(), grad(fill(gpu, &dy, x.shape(), factor).map_err(e)?))]
        }
        Op::GpuCustom(op) => return op.vjp(&dy),
        other => {
            if let Some(result) = super::gpu_spatial::vjp(other, &dy) {
                return result;
            }
            return Err(Error::Invalid(format!(
                "backward of {} has no GPU kernel yet; run it on the CPU (.to('cpu'))",
                other.name()
            )));
        }
    })
}
