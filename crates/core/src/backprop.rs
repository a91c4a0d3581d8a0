//! Reverse-mode autograd: a topological sort of the recorded graph and one `match` over [`Op`]
//! giving each op's vector-Jacobian product.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::cpu::conv::{self, Conv2dGeometry};
use crate::cpu::elementwise::{self, Activation};
use crate::cpu::{matmul::sgemm, pool, softmax};
use crate::device::Storage;
use crate::tensor::{Graph, Tensor, TensorId};
use crate::{bail, Error, Result};

/// An op defined outside this file (fused kernels such as recurrent layers or attention):
/// it names its inputs and computes their gradients itself.
pub trait CustomOp: Send + Sync {
    /// Name for error messages.
    fn name(&self) -> &'static str;
    /// The tensors gradients flow to.
    fn inputs(&self) -> Vec<&Tensor>;
    /// Gradients for (some of) the inputs, given the output and the output's gradient `g`.
    /// Inputs that do not track gradients may be skipped.
    fn vjp(&self, out: &Tensor, g: &[f32]) -> Result<Vec<(Tensor, Vec<f32>)>>;
}

/// An op on GPU tensors whose backward runs on the device (fused kernels: pooling with its
/// argmax, losses, normalisation...): it names its inputs and computes their GPU gradients.
pub trait GpuCustomOp: Send + Sync {
    /// Name for error messages.
    fn name(&self) -> &'static str;
    /// The tensors gradients flow to.
    fn inputs(&self) -> Vec<&Tensor>;
    /// GPU gradients for (some of) the inputs, given the output's GPU gradient `dy`.
    fn vjp(&self, dy: &cortex_wgpu::GpuTensor) -> Result<Vec<(Tensor, Tensor)>>;
}

/// How a recorded tensor was computed: enough to send gradients to its inputs.
pub enum Op {
    /// Same data, new shape.
    Reshape(Tensor),
    /// `[m,k] x [k,n]`.
    MatMul(Tensor, Tensor),
    /// `x[..., in] · w[in, out] + b[out]`.
    Linear { x: Tensor, w: Tensor, b: Option<Tensor> },
    /// Elementwise sum of equal shapes.
    Add(Tensor, Tensor),
    /// Elementwise difference of equal shapes.
    Sub(Tensor, Tensor),
    /// Elementwise product of equal shapes.
    Mul(Tensor, Tensor),
    /// `x + b` with `b` broadcast along the last axis.
    AddLastAxis(Tensor, Tensor),
    /// `x * s` for a constant `s`.
    Scale(Tensor, f32),
    /// Pointwise activation; `y` is the output's own storage.
    Activation {
        x: Tensor,
        act: Activation,
        y: Arc<Storage>,
    },
    /// Softmax over the last axis.
    Softmax { y: Arc<Storage>, x: Tensor },
    /// Log-softmax over the last axis.
    LogSoftmax { y: Arc<Storage>, x: Tensor },
    /// Sum of all elements.
    Sum(Tensor),
    /// Mean of all elements.
    Mean(Tensor),
    /// Channels-last 2-D convolution.
    Conv2d {
        x: Tensor,
        w: Tensor,
        b: Option<Tensor>,
        geom: Conv2dGeometry,
    },
    /// Max pooling, with the flat index of each window's maximum.
    MaxPool2d {
        x: Tensor,
        argmax: Vec<u32>,
        geom: pool::Pool2dGeometry,
    },
    /// An op implemented elsewhere on GPU tensors.
    GpuCustom(Box<dyn GpuCustomOp>),
    /// Average pooling.
    AvgPool2d { x: Tensor, geom: pool::Pool2dGeometry },
    /// Mean over the spatial axes of `[b, spatial..., c]`.
    GlobalAvgPool {
        x: Tensor,
        batch: usize,
        spatial: usize,
        channels: usize,
    },
    /// `x * mask` for a constant mask (dropout).
    Mask { x: Tensor, mask: Vec<f32> },
    /// A scalar whose gradient with respect to `x` was computed with the value (fused losses).
    Precomputed { x: Tensor, grad: Vec<f32> },
    /// A contiguous run of `x`'s values starting at `start` (one output of a multi-output op,
    /// which packs its outputs into one tensor).
    Slice { x: Tensor, start: usize },
    /// An op implemented elsewhere.
    Custom(Box<dyn CustomOp>),
    /// A copy of `x` on another device; the gradient goes back to `x`'s device.
    ToDevice(Tensor),
}

impl Op {
    /// The op's name, for error messages.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Reshape(_) => "reshape",
            Op::MatMul(..) => "matMul",
            Op::Linear { .. } => "dense",
            Op::Add(..) => "add",
            Op::Sub(..) => "sub",
            Op::Mul(..) => "mul",
            Op::AddLastAxis(..) => "bias add",
            Op::Scale(..) => "scale",
            Op::Activation { .. } => "activation",
            Op::Softmax { .. } => "softmax",
            Op::LogSoftmax { .. } => "logSoftmax",
            Op::Sum(_) => "sum",
            Op::Mean(_) => "mean",
            Op::Conv2d { .. } => "conv2d",
            Op::MaxPool2d { .. } => "maxPool2d",
            Op::GpuCustom(op) => op.name(),
            Op::AvgPool2d { .. } => "avgPool2d",
            Op::GlobalAvgPool { .. } => "globalAveragePooling",
            Op::Mask { .. } => "dropout",
            Op::Precomputed { .. } => "loss",
            Op::Slice { .. } => "slice",
            Op::Custom(op) => op.name(),
            Op::ToDevice(_) => "to",
        }
    }
}

/// One tensor's gradient, on the device of the tensor.
enum Grad {
    Host(Vec<f32>),
    /// A GPU tensor (its host copy is made when [`Grads::get`] reads it).
    Device(Tensor),
}

/// Gradients of one backward pass, keyed by tensor.
#[derive(Default)]
pub struct Grads(HashMap<TensorId, Grad>);

impl Grads {
    /// The gradient of `t` in host memory, if it received one (a GPU gradient is read back).
    pub fn get(&self, t: &Tensor) -> Option<&[f32]> {
        self.0.get(&t.id()).map(|g| match g {
            Grad::Host(v) => v.as_slice(),
            Grad::Device(d) => d.data(),
        })
    }

    /// The gradient of `t` as a tensor on `t`'s device (a constant), if it received one.
    pub fn tensor(&self, t: &Tensor) -> Option<Result<Tensor>> {
        self.0.get(&t.id()).map(|g| match g {
            Grad::Host(v) => Tensor::new(v.clone(), t.shape()),
            Grad::Device(d) => d.reshape(t.shape()),
        })
    }

    /// Takes the gradient of `t` out of the map (a GPU gradient is read back).
    pub fn remove(&mut self, t: &Tensor) -> Option<Vec<f32>> {
        self.0.remove(&t.id()).map(|g| match g {
            Grad::Host(v) => v,
            Grad::Device(d) => d.to_vec(),
        })
    }

    fn accumulate(&mut self, t: &Tensor, g: Grad) -> Result<()> {
        let Some(acc) = self.0.get_mut(&t.id()) else {
            self.0.insert(t.id(), g);
            return Ok(());
        };
        match (acc, g) {
            (Grad::Host(acc), Grad::Host(g)) => acc.iter_mut().zip(&g).for_each(|(a, b)| *a += b),
            (Grad::Device(acc), Grad::Device(g)) => *acc = crate::ops::gpu::add_grads(acc, &g)?,
            _ => {
                return Err(Error::Invalid(format!(
                    "backward: gradients of a {} tensor arrived on two devices",
                    t.device().name()
                )))
            }
        }
        Ok(())
    }
}

/// A gradient moved to `device` (the backward of [`Tensor::to`]).
fn grad_to(g: Grad, shape: &[usize], device: crate::Device) -> Result<Grad> {
    Ok(match (g, device) {
        (Grad::Host(v), crate::Device::Cpu) => Grad::Host(v),
        (Grad::Host(v), crate::Device::Gpu) => Grad::Device(Tensor::new(v, shape)?.to(device)?),
        (Grad::Device(d), crate::Device::Gpu) => Grad::Device(d),
        (Grad::Device(d), crate::Device::Cpu) => Grad::Host(d.host_values()?.to_vec()),
    })
}

/// The gradients `op` sends to its inputs, on each input's device.
fn propagate(op: &Op, out: &Tensor, g: Grad) -> Result<Vec<(Tensor, Grad)>> {
    Ok(match (op, g) {
        (Op::ToDevice(x), g) => vec![(x.clone(), grad_to(g, x.shape(), x.device())?)],
        (op, Grad::Host(g)) => vjp(op, out, g)?.into_iter().map(|(t, g)| (t, Grad::Host(g))).collect(),
        (op, Grad::Device(g)) => crate::ops::gpu::vjp(op, &g)?
            .into_iter()
            .map(|(t, g)| (t, Grad::Device(g)))
            .collect(),
    })
}

/// Gradients of the scalar `root` with respect to every tracked tensor it depends on.
pub fn backward(root: &Tensor) -> Result<Grads> {
    if root.len() != 1 {
        return Err(Error::Invalid(format!(
            "backward needs a scalar (one-element) result, got shape {:?}; reduce it with sum or mean first",
            root.shape()
        )));
    }
    backward_with_seed(root, vec![1.0])
}

/// Gradients of `sum(root * seed)`. The graph is freed as it is walked (as PyTorch does without
/// `retain_graph`): a second backward through the same ops is an error, not silent zeros.
pub fn backward_with_seed(root: &Tensor, seed: Vec<f32>) -> Result<Grads> {
    run_backward(root, seed, false, None)
}

/// An op's output gradient as an observer sees it: in host memory, or a GPU tensor it may read
/// back ([`ObservedGrad::to_vec`]) when it needs the values.
pub enum ObservedGrad<'a> {
    /// A host gradient.
    Host(&'a [f32]),
    /// A GPU gradient.
    Device(&'a Tensor),
}

impl ObservedGrad<'_> {
    /// The values in host memory (a GPU gradient is read back).
    pub fn to_vec(&self) -> Result<Vec<f32>> {
        match self {
            ObservedGrad::Host(v) => Ok(v.to_vec()),
            ObservedGrad::Device(t) => t.host_values().map(<[f32]>::to_vec),
        }
    }
}

/// A function shown each recorded op and its output's gradient during a backward pass; an
/// Error it returns ends the pass.
pub type Observer<'a> = dyn FnMut(&Op, ObservedGrad<'_>) -> Result<()> + 'a;

/// Like [`backward`], showing `observe` every recorded op with its output's gradient just
/// before the op's vector-Jacobian product (DP-SGD reads per-sample gradients there: a layer's
/// input activations and the gradient of its pre-activation output).
pub fn backward_observing(root: &Tensor, observe: &mut Observer) -> Result<Grads> {
    if root.len() != 1 {
        return Err(Error::Invalid(format!(
            "backward needs a scalar (one-element) result, got shape {:?}",
            root.shape()
        )));
    }
    run_backward(root, vec![1.0], false, Some(observe))
}

/// Like [`backward`], keeping the graph for another backward pass through the same ops.
pub fn backward_retaining_graph(root: &Tensor) -> Result<Grads> {
    run_backward(root, vec![1.0], true, None)
}

fn run_backward(
    root: &Tensor,
    seed: Vec<f32>,
    retain_graph: bool,
    mut observe: Option<&mut Observer>,
) -> Result<Grads> {
    if seed.len() != root.len() {
        return Err(Error::shape("backward seed", root.shape(), seed.len()));
    }
    let mut grads = Grads::default();
    if !root.tracks() {
        return Ok(grads);
    }
    let mut order = topological_order(root)?;
    let seed = grad_to(Grad::Host(seed), root.shape(), root.device())?;
    grads.0.insert(root.id(), seed);
    // Popping drops each node's handle once its gradient has been pushed to its inputs, so
    // activations no one else holds are freed during the pass rather than after it.
    while let Some(node) = order.pop() {
        // Interior gradients are dropped as soon as they are used; leaves keep theirs.
        let pairs = if retain_graph {
            let graph = node.graph();
            let Graph::Recorded(op) = &*graph else { continue };
            let Some(g) = grads.0.remove(&node.id()) else { continue };
            propagate(op, &node, g)?
        } else {
            let Some(op) = node.release_graph() else { continue };
            let Some(g) = grads.0.remove(&node.id()) else { continue };
            if let Some(f) = observe.as_mut() {
                f(
                    &op,
                    match &g {
                        Grad::Host(v) => ObservedGrad::Host(v),
                        Grad::Device(t) => ObservedGrad::Device(t),
                    },
                )?;
            }
            propagate(&op, &node, g)?
        };
        for (input, gi) in pairs {
            if input.tracks() {
                grads.accumulate(&input, gi)?;
            }
        }
    }
    Ok(grads)
}

fn inputs(op: &Op) -> Vec<&Tensor> {
    match op {
        Op::Reshape(x)
        | Op::Scale(x, _)
        | Op::Sum(x)
        | Op::Mean(x)
        | Op::Activation { x, .. }
        | Op::Softmax { x, .. }
        | Op::LogSoftmax { x, .. }
        | Op::MaxPool2d { x, .. }
        | Op::AvgPool2d { x, .. }
        | Op::GlobalAvgPool { x, .. }
        | Op::Mask { x, .. }
        | Op::Precomputed { x, .. }
        | Op::Slice { x, .. }
        | Op::ToDevice(x) => vec![x],
        Op::Custom(op) => op.inputs(),
        Op::GpuCustom(op) => op.inputs(),
        Op::MatMul(a, b) | Op::Add(a, b) | Op::Sub(a, b) | Op::Mul(a, b) | Op::AddLastAxis(a, b) => vec![a, b],
        Op::Linear { x, w, b } | Op::Conv2d { x, w, b, .. } => {
            let mut v = vec![x, w];
            v.extend(b.iter());
            v
        }
    }
}

fn topological_order(root: &Tensor) -> Result<Vec<Tensor>> {
    let mut order = Vec::new();
    let mut seen = HashSet::new();
    // Iterative post-order DFS: deep graphs (long unrolled sequences) must not overflow the stack.
    let mut stack = vec![(root.clone(), false)];
    while let Some((t, expanded)) = stack.pop() {
        if expanded {
            order.push(t);
            continue;
        }
        if !seen.insert(t.id()) {
            continue;
        }
        stack.push((t.clone(), true));
        match &*t.graph() {
            Graph::Recorded(op) => {
                for i in inputs(op) {
                    if i.tracks() && !seen.contains(&i.id()) {
                        stack.push((i.clone(), false));
                    }
                }
            }
            Graph::Leaf => {}
            Graph::Released => {
                return Err(Error::Invalid(format!(
                    "backward: the graph of a tensor of shape {:?} was freed by an earlier backward pass; \
                     run the forward computation again (or keep the graph with a retaining backward)",
                    t.shape()
                )))
            }
        }
    }
    Ok(order)
}

/// The vector-Jacobian product of one op: the gradient for each input given the output's `g`.
/// `g` is owned so pointwise ops can reuse its buffer instead of allocating.
fn vjp(op: &Op, out: &Tensor, mut g: Vec<f32>) -> Result<Vec<(Tensor, Vec<f32>)>> {
    let g_ref: &[f32] = &g;
    Ok(match op {
        Op::Reshape(x) => vec![(x.clone(), g)],
        Op::MatMul(a, b) => {
            let (m, k, n) = (a.shape()[0], a.shape()[1], b.shape()[1]);
            let mut ga = vec![0.0; m * k];
            let mut gb = vec![0.0; k * n];
            if a.tracks() {
                sgemm(m, k, n, g_ref, false, b.data(), true, &mut ga, false, true);
            }
            if b.tracks() {
                sgemm(k, n, m, a.data(), true, g_ref, false, &mut gb, false, true);
            }
            vec![(a.clone(), ga), (b.clone(), gb)]
        }
        Op::Linear { x, w, b } => {
            let (din, dout) = (w.shape()[0], w.shape()[1]);
            let rows = x.len() / din;
            let mut v = Vec::with_capacity(3);
            if x.tracks() {
                let mut gx = vec![0.0; rows * din];
                sgemm(rows, din, dout, g_ref, false, w.data(), true, &mut gx, false, true);
                v.push((x.clone(), gx));
            }
            if w.tracks() {
                let mut gw = vec![0.0; din * dout];
                sgemm(din, dout, rows, x.data(), true, g_ref, false, &mut gw, false, true);
                v.push((w.clone(), gw));
            }
            if let Some(b) = b {
                v.push((b.clone(), elementwise::sum_rows(g_ref, dout)));
            }
            v
        }
        Op::Add(a, b) => vec![(a.clone(), g.clone()), (b.clone(), g)],
        Op::Sub(a, b) => {
            let neg = elementwise::map_unary(g_ref, |v| -v);
            vec![(a.clone(), g), (b.clone(), neg)]
        }
        Op::Mul(a, b) => vec![
            (a.clone(), elementwise::map_binary(g_ref, b.data(), |g, b| g * b)),
            (b.clone(), elementwise::map_binary(g_ref, a.data(), |g, a| g * a)),
        ],
        Op::AddLastAxis(x, b) => {
            let gb = elementwise::sum_rows(g_ref, b.len());
            vec![(x.clone(), g), (b.clone(), gb)]
        }
        Op::Scale(x, s) => {
            elementwise::scale_in_place(&mut g, *s);
            vec![(x.clone(), g)]
        }
        Op::Activation { x, act, y } => {
            elementwise::activation_backward_in_place(*act, x.data(), y.as_slice(), &mut g);
            vec![(x.clone(), g)]
        }
        Op::Softmax { y, x } => {
            let cols = *x.shape().last().unwrap_or(&1);
            vec![(x.clone(), softmax::softmax_backward(y.as_slice(), g_ref, cols))]
        }
        Op::LogSoftmax { y, x } => {
            let cols = *x.shape().last().unwrap_or(&1);
            vec![(x.clone(), softmax::log_softmax_backward(y.as_slice(), g_ref, cols))]
        }
        Op::Sum(x) => vec![(x.clone(), vec![g[0]; x.len()])],
        Op::Mean(x) => vec![(x.clone(), vec![g[0] / x.len() as f32; x.len()])],
        Op::Conv2d { x, w, b, geom } => {
            let mut v = Vec::with_capacity(3);
            if x.tracks() {
                v.push((x.clone(), conv::conv2d_backward_input(g_ref, w.data(), geom)));
            }
            match (w.tracks(), b) {
                // One pass over dy gives both (the bias rides in the GEMM as a ones column).
                (true, Some(b)) if b.tracks() => {
                    let (gw, gb) = conv::conv2d_backward_filter_bias(x.data(), g_ref, geom);
                    v.push((w.clone(), gw));
                    v.push((b.clone(), gb));
                }
                (w_tracks, b) => {
                    if w_tracks {
                        v.push((w.clone(), conv::conv2d_backward_filter(x.data(), g_ref, geom)));
                    }
                    if let Some(b) = b {
                        v.push((b.clone(), conv::conv2d_backward_bias(g_ref, geom)));
                    }
                }
            }
            v
        }
        Op::MaxPool2d { x, argmax, geom } => vec![(x.clone(), pool::max_pool2d_backward(g_ref, argmax, geom))],
        Op::AvgPool2d { x, geom } => vec![(x.clone(), pool::avg_pool2d_backward(g_ref, geom))],
        Op::GlobalAvgPool {
            x,
            batch,
            spatial,
            channels,
        } => {
            vec![(
                x.clone(),
                pool::global_avg_pool2d_backward(g_ref, *batch, *spatial, *channels),
            )]
        }
        Op::Mask { x, mask } => {
            elementwise::mul_in_place(&mut g, mask);
            vec![(x.clone(), g)]
        }
        Op::Slice { x, start } => {
            let mut gx = vec![0.0; x.len()];
            gx[*start..*start + g.len()].copy_from_slice(g_ref);
            vec![(x.clone(), gx)]
        }
        Op::Custom(op) => op.vjp(out, g_ref)?,
        Op::ToDevice(_) | Op::GpuCustom(_) => {
            bail!("backward: the GPU op {} got a host gradient", op.name())
        }
        Op::Precomputed { x, grad } => {
            let s = g[0];
            debug_assert_eq!(out.len(), 1);
            vec![(x.clone(), grad.iter().map(|v| v * s).collect())]
        }
    })
}
