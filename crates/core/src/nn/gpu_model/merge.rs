//! The merge layers Concatenate and Multiply of a GPU model (Add lives in `steps.rs`), as the
//! CPU layers ([`crate::nn::layers`] `merge`) compute them:
//!
//! * Concatenate joins its inputs along the last axis (`axis: -1`, the Keras default, or the
//!   positive axis that is the last one), on cortex-wgpu's `concat_last`; each input's gradient
//!   is its columns of the output gradient (`slice_last`). Other axes are refused by name when
//!   the model is compiled (see [`check_node`]), so the model falls back to the CPU.
//! * Multiply is the elementwise product of inputs of one shape (the CPU layer does not
//!   broadcast either); the gradient of input `i` is `dy` times the product of the others.

use cortex_wgpu::{Gpu, GpuTensor};
use serde_json::Value;

use super::steps::Step;
use super::{gpu_err, unsupported};
use crate::nn::model::{Model, Source};
use crate::{Error, Result};

/// A planned merge layer.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum MergePlan {
    /// Concatenate along `axis` (counted with the batch axis, negative from the end), which
    /// [`check_node`] makes sure is the last axis of the inputs.
    Concat {
        axis: i64,
        name: String,
    },
    Multiply,
}

/// What backward needs.
pub(super) enum MergeTape {
    /// Concatenate: each input's width along the last axis.
    Widths(Vec<usize>),
    /// Multiply: the inputs.
    Factors(Vec<GpuTensor>),
}

/// Plans layer `name` of `class` (Concatenate or Multiply) from its config.
pub(super) fn plan(class: &str, name: &str, config: &Value) -> Result<MergePlan> {
    Ok(match class {
        "Concatenate" => MergePlan::Concat {
            axis: match config.get("axis") {
                None | Some(Value::Null) => -1,
                Some(v) => v
                    .as_i64()
                    .ok_or_else(|| Error::Invalid(format!("gpu: Concatenate '{name}' has an axis of {v}")))?,
            },
            name: name.to_string(),
        },
        "Multiply" => MergePlan::Multiply,
        other => return Err(Error::Invalid(format!("gpu: {other} is not a merge layer"))),
    })
}

/// Whether `axis` (Keras: with the batch axis, negative from the end) is the last axis of
/// inputs of `rank` (batch included).
fn is_last(axis: i64, rank: usize) -> bool {
    let r = rank as i64;
    let a = if axis < 0 { r + axis } else { axis };
    r >= 2 && a == r - 1
}

/// Refuses, when the model is compiled, a Concatenate node that does not join its inputs'
/// last axis (the node's input shapes are only known per node: a layer may be shared).
pub(super) fn check_node(step: &Step, inputs: &[Source], model: &Model) -> Result<()> {
    let Step::Merge(MergePlan::Concat { axis, name }) = step else {
        return Ok(());
    };
    let rank = inputs
        .first()
        .and_then(|s| model.source_shape(*s))
        .map(|s| s.len() + 1)
        .ok_or_else(|| Error::Invalid(format!("gpu: the inputs of Concatenate '{name}' have no known shape")))?;
    if !is_last(*axis, rank) {
        return Err(unsupported(&format!(
            "Concatenate along axis {axis}, not the last axis of its rank-{rank} inputs (layer '{name}')"
        )));
    }
    Ok(())
}

impl MergePlan {
    /// The Keras class, for messages.
    pub(super) fn class(&self) -> &'static str {
        match self {
            MergePlan::Concat { .. } => "Concatenate",
            MergePlan::Multiply => "Multiply",
        }
    }

    /// The layer kind, for profiles.
    pub(super) fn kind(&self) -> &'static str {
        match self {
            MergePlan::Concat { .. } => "concatenate",
            MergePlan::Multiply => "multiply",
        }
    }

    /// The merged output of `xs` and what backward needs.
    pub(super) fn forward(&self, g: &Gpu, xs: Vec<GpuTensor>) -> Result<(GpuTensor, MergeTape)> {
        let op = format!("gpu: {}", self.class());
        let first = xs
            .first()
            .ok_or_else(|| Error::Invalid(format!("{op} needs inputs")))?
            .shape()
            .to_vec();
        match self {
            // `check_node` has made sure, at compile time, that the axis is the last one.
            MergePlan::Concat { .. } => {
                let parts: Vec<&GpuTensor> = xs.iter().collect();
                let y = g.concat_last(&parts).map_err(gpu_err)?;
                let widths = xs.iter().map(|x| x.shape()[x.shape().len() - 1]).collect();
                Ok((y, MergeTape::Widths(widths)))
            }
            MergePlan::Multiply => {
                if let Some(bad) = xs.iter().find(|x| x.shape() != first.as_slice()) {
                    return Err(Error::shape(&op, &first, bad.shape()));
                }
                let mut y = xs[0].clone();
                for x in &xs[1..] {
                    y = g.mul(&y, x).map_err(gpu_err)?;
                }
                Ok((y, MergeTape::Factors(xs)))
            }
        }
    }

    /// The gradient wrt each input (`needed(i)` false: not computed) from the output
    /// gradient `dy`.
    pub(super) fn backward(
        &self,
        g: &Gpu,
        tape: MergeTape,
        dy: GpuTensor,
        needed: impl Fn(usize) -> bool,
    ) -> Result<Vec<Option<GpuTensor>>> {
        match tape {
            MergeTape::Widths(widths) => {
                let mut start = 0;
                let mut dxs = Vec::with_capacity(widths.len());
                for (i, &w) in widths.iter().enumerate() {
                    dxs.push(if needed(i) {
                        Some(g.slice_last(&dy, start, w).map_err(gpu_err)?)
                    } else {
                        None
                    });
                    start += w;
                }
                Ok(dxs)
            }
            MergeTape::Factors(xs) => (0..xs.len())
                .map(|i| {
                    if !needed(i) {
                        return Ok(None);
                    }
                    let mut dx = dy.clone();
                    for (j, x) in xs.iter().enumerate() {
                        if j != i {
                            dx = g.mul(&dx, x).map_err(gpu_err)?;
                        }
                    }
                    Ok(Some(dx))
                })
                .collect(),
        }
    }
}
