//! The layers of a GPU model: planning one from its config ([`plan`]), and its forward and
//! backward passes on cortex-wgpu kernels ([`Step::forward`], [`Step::backward`]).
//!
//! A step maps its input tensors to one output; backward maps the output gradient to one
//! gradient per input (`None` where nothing upstream needs it) and adds the weight gradients
//! into the model's gradient list (summed when a layer is applied more than once).

use cortex_wgpu::{Activation as GpuAct, Conv2dSpec, Gpu, GpuTensor, MatmulDesc, MatmulKernel, Pool2dSpec};
use serde_json::Value;

use super::attention::{self, MhaTape, MhaWeights};
use super::batchnorm::{self, BatchNormPlan, BatchNormTape};
use super::bidirectional::{self, BiPlan, BiTape};
use super::conv_steps::{self, ConvPlan};
use super::merge::{self, MergePlan, MergeTape};
use super::sequence::{self, Cell, RnnPlan, RnnTape};
use super::spatial::{self, SpatialPlan};
use super::{gpu_err, unsupported};
use crate::cpu::elementwise::Activation;
use crate::ops::gpu_activation;
use crate::rng::Rng;
use crate::{Error, Result};

/// An activation, with softmax kept apart: it may only end the model (where a
/// cross-entropy loss can fold it in).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Act {
    Plain(GpuAct),
    Softmax,
}

/// The CPU layers' own activation parser (one list of names and defaults), mapped to kernels.
pub(super) fn parse_act(layer: &str, name: &str) -> Result<Act> {
    if name == "softmax" {
        return Ok(Act::Softmax);
    }
    Activation::parse(name)
        .map(|a| Act::Plain(gpu_activation(a)))
        .ok_or_else(|| unsupported(&format!("activation '{name}' (in layer '{layer}')")))
}

/// One layer of the plan; weight fields index the model's device weights.
#[derive(Clone, Debug)]
pub(super) enum Step {
    Dense {
        w: usize,
        b: Option<usize>,
        act: Act,
    },
    Conv {
        w: usize,
        b: Option<usize>,
        kernel_hw: (usize, usize),
        strides: (usize, usize),
        dilation: (usize, usize),
        same: bool,
        act: Act,
    },
    /// Conv1D or Conv2DTranspose, on the conv2d kernels (see `conv_steps.rs`).
    ConvExt(ConvPlan),
    MaxPool {
        pool: (usize, usize),
        strides: (usize, usize),
        same: bool,
    },
    /// Flatten, or Reshape to `[batch, ..target]` (None: flatten).
    Reshape(Option<Vec<usize>>),
    Dropout(f32),
    Activation(Act),
    Add,
    /// Concatenate (last axis) or Multiply (see `merge.rs`).
    Merge(MergePlan),
    Embedding {
        table: usize,
        vocab: usize,
        /// Keras `maskZero`: token 0 masks its step (see `masking.rs`).
        mask_zero: bool,
    },
    Recurrent(RnnPlan),
    Bidirectional(BiPlan),
    LayerNorm {
        gamma: usize,
        beta: usize,
        eps: f32,
    },
    Mha(attention::MhaPlan),
    PositionalEmbedding {
        table: usize,
    },
    GlobalAvgPool1d,
    /// AveragePooling2D, GlobalAveragePooling2D, ZeroPadding2D or UpSampling2D.
    Spatial(SpatialPlan),
    BatchNorm(BatchNormPlan),
}

/// What a step's backward pass needs from its forward pass.
pub(super) enum Saved {
    Dense {
        x: GpuTensor,
        z: Option<GpuTensor>,
        lead: Vec<usize>,
    },
    Conv {
        x: GpuTensor,
        z: Option<GpuTensor>,
        spec: Conv2dSpec,
    },
    Pool {
        argmax: GpuTensor,
        x_shape: [usize; 4],
        spec: Pool2dSpec,
    },
    Shape(Vec<usize>),
    /// The mask's seed (None: dropout was inactive).
    Dropout(Option<u64>),
    Act(Option<GpuTensor>),
    Inputs(usize),
    Merge(MergeTape),
    Embedding(GpuTensor),
    Rnn(RnnTape),
    Bidirectional(Box<BiTape>),
    LayerNorm {
        x: GpuTensor,
        mean: GpuTensor,
        rstd: GpuTensor,
    },
    Mha(Box<MhaTape>),
    BatchNorm(BatchNormTape),
}

/// Reads a `[a, b]` config entry (Keras writes kernelSize, strides... as pairs).
fn pair(config: &Value, key: &str) -> Option<(usize, usize)> {
    let a = config.get(key)?.as_array()?;
    Some((a.first()?.as_u64()? as usize, a.get(1)?.as_u64()? as usize))
}

/// Plans layer `name` of class `class`; its weights start at index `first` and number `count`.
pub(super) fn plan(class: &str, name: &str, config: &Value, first: usize, count: usize) -> Result<Step> {
    let index = |k: usize| (k < count).then_some(first + k);
    let need =
        |k: usize, what: &str| index(k).ok_or_else(|| Error::Invalid(format!("gpu: layer '{name}' has no {what}")));
    let act = || {
        parse_act(
            name,
            config.get("activation").and_then(Value::as_str).unwrap_or("linear"),
        )
    };
    let same = config.get("padding").and_then(Value::as_str) == Some("same");
    Ok(match class {
        "Dense" => Step::Dense {
            w: need(0, "kernel")?,
            b: index(1),
            act: act()?,
        },
        "Conv2D" => Step::Conv {
            w: need(0, "kernel")?,
            b: index(1),
            kernel_hw: pair(config, "kernelSize").unwrap_or((3, 3)),
            strides: pair(config, "strides").unwrap_or((1, 1)),
            dilation: pair(config, "dilationRate").unwrap_or((1, 1)),
            same,
            act: act()?,
        },
        "Conv1D" | "Conv2DTranspose" => Step::ConvExt(conv_steps::plan(
            class,
            name,
            config,
            need(0, "kernel")?,
            index(1),
            act()?,
        )?),
        "MaxPooling2D" => {
            let pool = pair(config, "poolSize").unwrap_or((2, 2));
            Step::MaxPool {
                pool,
                strides: pair(config, "strides").unwrap_or(pool),
                same,
            }
        }
        "Flatten" => Step::Reshape(None),
        "Reshape" => {
            let target = config
                .get("targetShape")
                .and_then(Value::as_array)
                .and_then(|a| {
                    a.iter()
                        .map(|d| d.as_u64().map(|v| v as usize))
                        .collect::<Option<Vec<_>>>()
                })
                .ok_or_else(|| Error::Invalid(format!("gpu: reshape '{name}' has no targetShape")))?;
            Step::Reshape(Some(target))
        }
        "Dropout" => Step::Dropout(config.get("rate").and_then(Value::as_f64).unwrap_or(0.0) as f32),
        "Activation" => Step::Activation(act()?),
        "Add" => Step::Add,
        "Concatenate" | "Multiply" => Step::Merge(merge::plan(class, name, config)?),
        "Embedding" => {
            let (vocab, mask_zero) = sequence::check_embedding(name, config)?;
            Step::Embedding {
                table: need(0, "table")?,
                vocab,
                mask_zero,
            }
        }
        "LSTM" | "GRU" | "SimpleRNN" => {
            let cell = Cell::of_class(class).expect("a recurrent class");
            Step::Recurrent(RnnPlan::plan(cell, name, config, first, count)?)
        }
        "Bidirectional" => Step::Bidirectional(bidirectional::plan(name, config, first, count)?),
        "LayerNormalization" => {
            let flag = |k: &str| config.get(k).and_then(Value::as_bool).unwrap_or(true);
            if !flag("center") || !flag("scale") {
                return Err(unsupported(&format!(
                    "LayerNormalization without center or scale (layer '{name}')"
                )));
            }
            Step::LayerNorm {
                gamma: need(0, "gamma")?,
                beta: need(1, "beta")?,
                eps: config.get("epsilon").and_then(Value::as_f64).unwrap_or(1e-3) as f32,
            }
        }
        "MultiHeadAttention" => Step::Mha(attention::plan_mha(name, config, first, count)?),
        "PositionalEmbedding" => Step::PositionalEmbedding {
            table: need(0, "table")?,
        },
        "GlobalAveragePooling1D" => Step::GlobalAvgPool1d,
        "BatchNormalization" => Step::BatchNorm(batchnorm::plan(name, config, first, count)?),
        "AveragePooling2D" | "GlobalAveragePooling2D" | "ZeroPadding2D" | "UpSampling2D" => {
            Step::Spatial(spatial::plan(class, name, config)?)
        }
        other => return Err(unsupported(&format!("the {other} layer ('{name}')"))),
    })
}

impl Step {
    /// The step's layer kind, for profiles.
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Step::Dense { .. } => "dense",
            Step::Conv { .. } => "conv2d",
            Step::ConvExt(p) => p.kind_name(),
            Step::MaxPool { .. } => "max_pool",
            Step::Reshape(_) => "reshape",
            Step::Dropout(_) => "dropout",
            Step::Activation(_) => "activation",
            Step::Add => "add",
            Step::Merge(m) => m.kind(),
            Step::Embedding { .. } => "embedding",
            Step::Bidirectional(_) => "bidirectional",
            Step::Recurrent(p) => match p.cell {
                Cell::Lstm => "lstm",
                Cell::Gru => "gru",
                Cell::SimpleRnn => "simple_rnn",
            },
            Step::LayerNorm { .. } => "layer_norm",
            Step::Mha(_) => "attention",
            Step::PositionalEmbedding { .. } => "positional",
            Step::GlobalAvgPool1d => "avg_pool_1d",
            Step::Spatial(sp) => sp.kind(),
            Step::BatchNorm(_) => "batch_norm",
        }
    }

    /// The weights this step's forward pass changes on the device in a training step
    /// (BatchNormalization's moving statistics), besides what the optimizer updates.
    pub(super) fn state_weights(&self) -> Vec<usize> {
        match self {
            Step::BatchNorm(p) => p.state_weights(),
            _ => Vec::new(),
        }
    }

    /// Whether this step applies a softmax (allowed only at the model's output).
    pub(super) fn is_softmax(&self) -> bool {
        matches!(
            self,
            Step::Dense { act: Act::Softmax, .. }
                | Step::Conv { act: Act::Softmax, .. }
                | Step::ConvExt(ConvPlan { act: Act::Softmax, .. })
                | Step::Activation(Act::Softmax)
        )
    }
}

/// Inputs of a forward step.
pub(super) struct Forward<'a> {
    pub g: &'a Gpu,
    pub weights: &'a [GpuTensor],
    pub training: bool,
    /// Keep what backward needs.
    pub keep: bool,
    /// Leave this step's softmax to the loss (it ends the model and the loss folds it in).
    pub fuse_softmax: bool,
    pub rng: &'a mut Rng,
    /// The GEMM kernel of dense layers and attention projections (mixed precision or Auto).
    pub matmul: MatmulKernel,
    /// The Keras mask `[batch, time]` this step consumes (recurrent layers only).
    pub mask: Option<&'a GpuTensor>,
}

/// What every step's backward pass reads besides its own tape.
pub(super) struct BackwardCx<'a> {
    pub g: &'a Gpu,
    pub weights: &'a [GpuTensor],
    /// As [`Forward::matmul`].
    pub matmul: MatmulKernel,
}

fn one(op: &str, mut xs: Vec<GpuTensor>) -> Result<GpuTensor> {
    if xs.len() != 1 {
        return Err(Error::Invalid(format!("gpu: {op} takes one input, got {}", xs.len())));
    }
    Ok(xs.remove(0))
}

/// Adds `grad` into the gradient slot of a weight (a shared layer contributes once per use).
pub(super) fn accumulate(g: &Gpu, slot: &mut Option<GpuTensor>, grad: GpuTensor) -> Result<()> {
    *slot = Some(match slot.take() {
        Some(old) => g.add(&old, &grad).map_err(gpu_err)?,
        None => grad,
    });
    Ok(())
}

/// `x [batch..., n] · w [n, units]` (+ bias) with the leading axes flattened.
fn linear(
    g: &Gpu,
    mm: MatmulKernel,
    x: &GpuTensor,
    w: &GpuTensor,
    b: Option<&GpuTensor>,
) -> Result<(GpuTensor, Vec<usize>)> {
    let shape = x.shape().to_vec();
    let lead = shape[..shape.len() - 1].to_vec();
    let rows: usize = lead.iter().product();
    let x2 = x.clone().reshape(&[rows, shape[shape.len() - 1]]).map_err(gpu_err)?;
    let mut z = g.matmul_on(&x2, w, false, false, mm).map_err(gpu_err)?;
    if let Some(b) = b {
        z = g.bias_add(&z, b).map_err(gpu_err)?;
    }
    Ok((z, lead))
}

/// Mean over axis 1 of `[batch, t, d]` as a batched GEMM with a broadcast `1/t` row.
fn mean_over_steps(g: &Gpu, x: &GpuTensor) -> Result<GpuTensor> {
    let &[b, t, d] = x.shape() else {
        return Err(Error::Invalid(format!(
            "gpu: GlobalAveragePooling1D expects [batch, steps, features], got {:?}",
            x.shape()
        )));
    };
    let row = g.upload(&vec![1.0 / t as f32; t], &[1, t]).map_err(gpu_err)?;
    let desc = MatmulDesc {
        m: 1,
        n: d,
        k: t,
        batch: b,
        trans_a: false,
        trans_b: false,
        stride_a: 0,
        stride_b: t * d,
    };
    let y = g.matmul_with(&row, x, &desc).map_err(gpu_err)?;
    y.reshape(&[b, d]).map_err(gpu_err)
}

/// Gradient of [`mean_over_steps`]: `dy [batch, d]` spread as `dy / t` over `t` steps.
fn spread_over_steps(g: &Gpu, dy: &GpuTensor, t: usize) -> Result<GpuTensor> {
    let (b, d) = (dy.shape()[0], dy.shape()[1]);
    let col = g.upload(&vec![1.0 / t as f32; t], &[t, 1]).map_err(gpu_err)?;
    let desc = MatmulDesc {
        m: t,
        n: d,
        k: 1,
        batch: b,
        trans_a: false,
        trans_b: false,
        stride_a: 0,
        stride_b: d,
    };
    g.matmul_with(&col, dy, &desc).map_err(gpu_err)
}

impl Step {
    /// Runs the step on `xs`; returns its output and (when `cx.keep`) what backward needs.
    pub(super) fn forward(&self, cx: &mut Forward, xs: Vec<GpuTensor>) -> Result<(GpuTensor, Option<Saved>)> {
        let g = cx.g;
        let w = cx.weights;
        let keep = cx.keep;
        let fuse = cx.fuse_softmax;
        let activate = |z: GpuTensor, act: Act| -> Result<(GpuTensor, Option<GpuTensor>)> {
            match act {
                Act::Plain(GpuAct::Linear) => Ok((z, None)),
                Act::Plain(a) => {
                    let y = g.activation(a, &z).map_err(gpu_err)?;
                    Ok((y, keep.then_some(z)))
                }
                Act::Softmax if fuse => Ok((z, None)),
                Act::Softmax => Ok((g.softmax(&z).map_err(gpu_err)?, None)),
            }
        };
        let (y, saved) = match self {
            &Step::Dense { w: k, b, act } => {
                let x = one("Dense", xs)?;
                let (z, lead) = linear(g, cx.matmul, &x, &w[k], b.map(|b| &w[b]))?;
                let (y, z) = activate(z, act)?;
                let units = y.shape()[1];
                let y = y.reshape(&[lead.clone(), vec![units]].concat()).map_err(gpu_err)?;
                let rows: usize = lead.iter().product();
                let x2 = x.reshape(&[rows, w[k].shape()[0]]).map_err(gpu_err)?;
                (y, Saved::Dense { x: x2, z, lead })
            }
            &Step::Conv {
                w: k,
                b,
                kernel_hw,
                strides,
                dilation,
                same,
                act,
            } => {
                let x = one("Conv2D", xs)?;
                let s = x.shape();
                let spec = Conv2dSpec {
                    strides,
                    dilation,
                    padding: padding(same, [s[1], s[2]], kernel_hw, strides, dilation),
                };
                // A first layer's short k adds the bias inside the convolution (one pass
                // over the layer's largest output instead of two).
                let z = g.conv2d_bias(&x, &w[k], b.map(|b| &w[b]), &spec).map_err(gpu_err)?;
                let (y, z) = activate(z, act)?;
                (y, Saved::Conv { x, z, spec })
            }
            Step::ConvExt(p) => {
                let (z, x, spec) = p.forward(g, w, one(p.class(), xs)?)?;
                let (y, z) = activate(z, p.act)?;
                (y, Saved::Conv { x, z, spec })
            }
            &Step::MaxPool { pool, strides, same } => {
                let x = one("MaxPooling2D", xs)?;
                let s = x.shape();
                let x_shape = [s[0], s[1], s[2], s[3]];
                let spec = Pool2dSpec {
                    pool,
                    strides,
                    padding: padding(same, [s[1], s[2]], pool, strides, (1, 1)),
                };
                let out = g.max_pool2d(&x, &spec).map_err(gpu_err)?;
                let saved = Saved::Pool {
                    argmax: out.argmax,
                    x_shape,
                    spec,
                };
                (out.output, saved)
            }
            Step::Reshape(target) => {
                let x = one("Reshape", xs)?;
                let s = x.shape().to_vec();
                let shape = match target {
                    Some(t) => [&[s[0]], t.as_slice()].concat(),
                    None => vec![s[0], s[1..].iter().product()],
                };
                (x.reshape(&shape).map_err(gpu_err)?, Saved::Shape(s))
            }
            &Step::Dropout(rate) if cx.training && rate > 0.0 => {
                // The mask is generated on the device from a seed (a host-made mask cost 11 ms
                // per MNIST step at batch 1024 on an H200: generation plus upload).
                let seed = cx.rng.next_u64();
                let y = g.dropout(&one("Dropout", xs)?, rate, seed).map_err(gpu_err)?;
                (y, Saved::Dropout(Some(seed)))
            }
            Step::Dropout(_) => (one("Dropout", xs)?, Saved::Dropout(None)),
            &Step::Activation(act) => {
                let (y, z) = activate(one("Activation", xs)?, act)?;
                (y, Saved::Act(z))
            }
            Step::Add => {
                let n = xs.len();
                let mut it = xs.into_iter();
                let mut sum = it
                    .next()
                    .ok_or_else(|| Error::Invalid("gpu: Add needs inputs".into()))?;
                for x in it {
                    if x.shape() != sum.shape() {
                        return Err(Error::shape("gpu: Add", sum.shape(), x.shape()));
                    }
                    sum = g.add(&sum, &x).map_err(gpu_err)?;
                }
                (sum, Saved::Inputs(n))
            }
            Step::Merge(m) => {
                let (y, tape) = m.forward(g, xs)?;
                (y, Saved::Merge(tape))
            }
            &Step::Embedding { table, .. } => {
                let ids = one("Embedding", xs)?;
                (g.embedding(&w[table], &ids).map_err(gpu_err)?, Saved::Embedding(ids))
            }
            Step::Recurrent(p) => match p.forward(g, w, one(p.cell.name(), xs)?, cx.mask, keep, false)? {
                (y, Some(t)) => (y, Saved::Rnn(t)),
                (y, None) => return Ok((y, None)),
            },
            Step::Bidirectional(p) => match p.forward(g, w, one("Bidirectional", xs)?, cx.mask, keep)? {
                (y, Some(t)) => (y, Saved::Bidirectional(Box::new(t))),
                (y, None) => return Ok((y, None)),
            },
            &Step::LayerNorm { gamma, beta, eps } => {
                let x = one("LayerNormalization", xs)?;
                let out = g.layer_norm(&x, &w[gamma], &w[beta], eps).map_err(gpu_err)?;
                let saved = Saved::LayerNorm {
                    x,
                    mean: out.mean,
                    rstd: out.rstd,
                };
                (out.y, saved)
            }
            Step::Mha(plan) => {
                let (y, tape) = attention::mha_forward(g, cx.matmul, plan, &MhaWeights::of(plan, w), xs)?;
                (y, Saved::Mha(Box::new(tape)))
            }
            &Step::PositionalEmbedding { table } => {
                let x = one("PositionalEmbedding", xs)?;
                let s = x.shape().to_vec();
                let flat = x.reshape(&[s[0], s[1..].iter().product()]).map_err(gpu_err)?;
                let y = g.bias_add(&flat, &w[table]).map_err(gpu_err)?;
                (y.reshape(&s).map_err(gpu_err)?, Saved::Shape(s))
            }
            Step::Spatial(sp) => {
                let x = one(sp.class(), xs)?;
                let s = x.shape().to_vec();
                (sp.forward(g, &x)?, Saved::Shape(s))
            }
            Step::BatchNorm(p) => {
                // Batch statistics whenever a gradient is taken (keep): a training step, or
                // output_and_gradients; only a training step moves the moving statistics.
                let x = one("BatchNormalization", xs)?;
                let (y, tape) = p.forward(g, w, x, keep, cx.training, keep)?;
                match tape {
                    Some(t) => (y, Saved::BatchNorm(t)),
                    None => return Ok((y, None)),
                }
            }
            Step::GlobalAvgPool1d => {
                let x = one("GlobalAveragePooling1D", xs)?;
                let s = x.shape().to_vec();
                (mean_over_steps(g, &x)?, Saved::Shape(s))
            }
        };
        Ok((y, keep.then_some(saved)))
    }

    /// Gradients wrt each input (`need[i]` false: not computed) from the output gradient `dy`,
    /// adding the weight gradients into `grads`.
    pub(super) fn backward(
        &self,
        bx: &BackwardCx,
        saved: Saved,
        dy: GpuTensor,
        need: &[bool],
        grads: &mut [Option<GpuTensor>],
    ) -> Result<Vec<Option<GpuTensor>>> {
        let (g, w, mm) = (bx.g, bx.weights, bx.matmul);
        let needed = |i: usize| need.get(i).copied().unwrap_or(false);
        let act_back = |act: Act, z: &Option<GpuTensor>, dy: GpuTensor| -> Result<GpuTensor> {
            match (act, z) {
                (Act::Plain(a), Some(z)) => g.activation_backward(a, z, &dy).map_err(gpu_err),
                // Linear, or a softmax fused into the loss: the gradient passes through.
                _ => Ok(dy),
            }
        };
        Ok(match (self, saved) {
            (&Step::Dense { w: k, b, act }, Saved::Dense { x, z, lead }) => {
                let rows: usize = lead.iter().product();
                let units = dy.len() / rows.max(1);
                let dz = act_back(act, &z, dy.reshape(&[rows, units]).map_err(gpu_err)?)?;
                accumulate(
                    g,
                    &mut grads[k],
                    g.matmul_on(&x, &dz, true, false, mm).map_err(gpu_err)?,
                )?;
                if let Some(b) = b {
                    accumulate(g, &mut grads[b], g.sum_rows(&dz).map_err(gpu_err)?)?;
                }
                if !needed(0) {
                    return Ok(vec![None]);
                }
                let dx = g.matmul_on(&dz, &w[k], false, true, mm).map_err(gpu_err)?;
                let inputs = dx.shape()[1];
                vec![Some(dx.reshape(&[lead, vec![inputs]].concat()).map_err(gpu_err)?)]
            }
            (
                &Step::Conv {
                    w: k,
                    b,
                    kernel_hw,
                    act,
                    ..
                },
                Saved::Conv { x, z, spec },
            ) => {
                let dz = act_back(act, &z, dy)?;
                let xs = x.shape();
                let x_shape = [xs[0], xs[1], xs[2], xs[3]];
                let dk = g.conv2d_backward_filter(&x, &dz, kernel_hw, &spec).map_err(gpu_err)?;
                accumulate(g, &mut grads[k], dk)?;
                if let Some(b) = b {
                    let cout = dz.shape()[3];
                    let flat = dz.clone().reshape(&[dz.len() / cout.max(1), cout]).map_err(gpu_err)?;
                    accumulate(g, &mut grads[b], g.sum_rows(&flat).map_err(gpu_err)?)?;
                }
                if !needed(0) {
                    return Ok(vec![None]);
                }
                let dx = g.conv2d_backward_input(&dz, &w[k], x_shape, &spec).map_err(gpu_err)?;
                vec![Some(dx)]
            }
            (Step::ConvExt(p), Saved::Conv { x, z, spec }) => {
                let dz = act_back(p.act, &z, dy)?;
                vec![p.backward(g, w, &x, &spec, dz, needed(0), grads)?]
            }
            (Step::MaxPool { .. }, Saved::Pool { argmax, x_shape, spec }) => {
                vec![Some(
                    g.max_pool2d_backward(&dy, &argmax, x_shape, &spec).map_err(gpu_err)?,
                )]
            }
            (Step::Reshape(_), Saved::Shape(shape)) => vec![Some(dy.reshape(&shape).map_err(gpu_err)?)],
            (&Step::Dropout(rate), Saved::Dropout(Some(seed))) => {
                vec![Some(g.dropout(&dy, rate, seed).map_err(gpu_err)?)]
            }
            (Step::Dropout(_), Saved::Dropout(None)) => vec![Some(dy)],
            (&Step::Activation(act), Saved::Act(z)) => vec![Some(act_back(act, &z, dy)?)],
            (Step::Add, Saved::Inputs(n)) => (0..n).map(|i| needed(i).then(|| dy.clone())).collect(),
            (Step::Merge(m), Saved::Merge(tape)) => m.backward(g, tape, dy, needed)?,
            (&Step::Embedding { table, vocab, .. }, Saved::Embedding(ids)) => {
                accumulate(
                    g,
                    &mut grads[table],
                    g.embedding_backward(&ids, &dy, vocab).map_err(gpu_err)?,
                )?;
                vec![None] // token ids have no gradient
            }
            (Step::Recurrent(p), Saved::Rnn(tape)) => vec![Some(p.backward(g, w, tape, dy, grads)?)],
            (Step::Bidirectional(p), Saved::Bidirectional(t)) => vec![Some(p.backward(g, w, *t, dy, grads)?)],
            (&Step::LayerNorm { gamma, beta, .. }, Saved::LayerNorm { x, mean, rstd }) => {
                let out = g
                    .layer_norm_backward(&x, &w[gamma], &mean, &rstd, &dy)
                    .map_err(gpu_err)?;
                accumulate(g, &mut grads[gamma], out.dgamma)?;
                accumulate(g, &mut grads[beta], out.dbeta)?;
                vec![Some(out.dx)]
            }
            (Step::Mha(plan), Saved::Mha(tape)) => {
                attention::mha_backward(g, mm, plan, &MhaWeights::of(plan, w), *tape, dy, grads)?
            }
            (&Step::PositionalEmbedding { table }, Saved::Shape(shape)) => {
                let flat = dy
                    .clone()
                    .reshape(&[shape[0], dy.len() / shape[0].max(1)])
                    .map_err(gpu_err)?;
                accumulate(g, &mut grads[table], g.sum_rows(&flat).map_err(gpu_err)?)?;
                vec![Some(dy)]
            }
            (Step::Spatial(sp), Saved::Shape(shape)) => vec![Some(sp.backward(g, &shape, &dy)?)],
            (Step::BatchNorm(p), Saved::BatchNorm(tape)) => vec![p.backward(g, w, tape, dy, needed(0), grads)?],
            (Step::GlobalAvgPool1d, Saved::Shape(shape)) => {
                let dx = spread_over_steps(g, &dy, shape[1])?;
                vec![Some(dx.reshape(&shape).map_err(gpu_err)?)]
            }
            _ => {
                return Err(Error::Invalid(
                    "gpu: internal error: forward and backward plans differ".into(),
                ))
            }
        })
    }
}

/// TensorFlow's padding: none for `valid`; for `same`, enough for `ceil(in / stride)` outputs,
/// the odd pixel at the bottom/right. Returns top, left, bottom, right.
pub(super) fn padding(
    same: bool,
    hw: [usize; 2],
    window: (usize, usize),
    strides: (usize, usize),
    dilation: (usize, usize),
) -> [usize; 4] {
    if !same {
        return [0; 4];
    }
    let pad = |n: usize, k: usize, s: usize, d: usize| {
        let out = n.div_ceil(s.max(1));
        let need = (out.saturating_sub(1)) * s + (k - 1) * d + 1;
        need.saturating_sub(n)
    };
    let ph = pad(hw[0], window.0, strides.0, dilation.0);
    let pw = pad(hw[1], window.1, strides.1, dilation.1);
    [ph / 2, pw / 2, ph - ph / 2, pw - pw / 2]
}
