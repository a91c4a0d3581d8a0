//! The Bidirectional wrapper of GPU models: the wrapped recurrent layer's forward copy and its
//! backward (goBackwards) copy run as two ordinary recurrent passes (see `sequence.rs`), the
//! backward copy's sequence reversed back into input time order as on the CPU, and the two
//! outputs merged (concat, sum, mul or ave).

use cortex_wgpu::{Gpu, GpuTensor};
use serde_json::Value;

use super::gpu_err;
use super::sequence::{Cell, RnnPlan, RnnTape};
use crate::nn::layers::BidirectionalMerge as Merge;
use crate::{Error, Result};

/// A planned Bidirectional layer.
#[derive(Clone, Debug)]
pub(super) struct BiPlan {
    forward: RnnPlan,
    backward: RnnPlan,
    merge: Merge,
}

/// What a Bidirectional layer's backward pass needs.
pub(super) struct BiTape {
    forward: RnnTape,
    backward: RnnTape,
    /// Both directions' outputs (mul only).
    outputs: Option<(GpuTensor, GpuTensor)>,
    /// Width of the forward direction's output (concat: where the backward part starts).
    units: usize,
}

/// Plans Bidirectional layer `name`: `config.layer` is the wrapped `{ className, config }`; its
/// weights start at `first` and number `count`, the forward copy's (kernel, recurrent kernel,
/// bias) then the backward copy's.
pub(super) fn plan(name: &str, config: &Value, first: usize, count: usize) -> Result<BiPlan> {
    let inner = config.get("layer").unwrap_or(&Value::Null);
    let class = inner.get("className").and_then(Value::as_str).unwrap_or_default();
    let cell = Cell::of_class(class).ok_or_else(|| {
        Error::Invalid(format!(
            "gpu: Bidirectional '{name}' wraps '{class}', not an LSTM, GRU or SimpleRNN"
        ))
    })?;
    // The CPU layer has already refused any other mode when it was built.
    let mode = config.get("mergeMode").and_then(Value::as_str).unwrap_or("concat");
    let merge = Merge::parse(mode)
        .ok_or_else(|| Error::Invalid(format!("gpu: Bidirectional '{name}' has mergeMode '{mode}'")))?;
    if !count.is_multiple_of(2) {
        return Err(Error::Invalid(format!(
            "gpu: Bidirectional '{name}' has an odd number of weights ({count})"
        )));
    }
    let half = count / 2;
    let inner_config = inner.get("config").unwrap_or(&Value::Null);
    let forward = RnnPlan::plan(cell, name, inner_config, first, half)?;
    let mut backward = RnnPlan::plan(cell, name, inner_config, first + half, half)?;
    backward.go_backwards = !forward.go_backwards;
    Ok(BiPlan {
        forward,
        backward,
        merge,
    })
}

impl BiPlan {
    /// The wrapped layer's `returnSequences`.
    pub(super) fn return_sequences(&self) -> bool {
        self.forward.return_sequences()
    }

    /// Forward pass from x `[batch, time, in]` (`mask`: the Keras mask `[batch, time]`).
    pub(super) fn forward(
        &self,
        g: &Gpu,
        w: &[GpuTensor],
        x: GpuTensor,
        mask: Option<&GpuTensor>,
        keep: bool,
    ) -> Result<(GpuTensor, Option<BiTape>)> {
        let (a, ta) = self.forward.forward(g, w, x.clone(), mask, keep, true)?;
        let (b, tb) = self.backward.forward(g, w, x, mask, keep, true)?;
        let units = a.shape()[a.shape().len() - 1];
        let y = match self.merge {
            Merge::Concat => g.concat_last(&[&a, &b]),
            Merge::Sum => g.add(&a, &b),
            Merge::Mul => g.mul(&a, &b),
            Merge::Ave => g.add(&a, &b).and_then(|s| g.scale(&s, 0.5, 0.0)),
        }
        .map_err(gpu_err)?;
        let tape = match (ta, tb) {
            (Some(forward), Some(backward)) => Some(BiTape {
                forward,
                backward,
                outputs: (self.merge == Merge::Mul).then_some((a, b)),
                units,
            }),
            _ => None,
        };
        Ok((y, tape))
    }

    /// Backward pass: adds both directions' weight gradients into `grads`; returns the input
    /// gradient (the sum of the two directions').
    pub(super) fn backward(
        &self,
        g: &Gpu,
        w: &[GpuTensor],
        tape: BiTape,
        dy: GpuTensor,
        grads: &mut [Option<GpuTensor>],
    ) -> Result<GpuTensor> {
        let u = tape.units;
        let (da, db) = match (self.merge, &tape.outputs) {
            (Merge::Concat, _) => (g.slice_last(&dy, 0, u), g.slice_last(&dy, u, u)),
            (Merge::Sum, _) => (Ok(dy.clone()), Ok(dy)),
            (Merge::Mul, Some((a, b))) => (g.mul(&dy, b), g.mul(&dy, a)),
            (Merge::Ave, _) => {
                let half = g.scale(&dy, 0.5, 0.0).map_err(gpu_err)?;
                (Ok(half.clone()), Ok(half))
            }
            (Merge::Mul, None) => {
                return Err(Error::Invalid(
                    "gpu: internal error: Bidirectional mul kept no outputs".into(),
                ))
            }
        };
        let (da, db) = (da.map_err(gpu_err)?, db.map_err(gpu_err)?);
        let dx_f = self.forward.backward(g, w, tape.forward, da, grads)?;
        let dx_b = self.backward.backward(g, w, tape.backward, db, grads)?;
        g.add(&dx_f, &dx_b).map_err(gpu_err)
    }
}
