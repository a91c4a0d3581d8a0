//! Keras masks in GPU models: which layers an `Embedding(maskZero)` mask reaches, planned when
//! the model is compiled by the CPU model's rules (the mask itself is `Gpu::nonzero_mask` of
//! the token ids, made once per forward pass).
//!
//! The CPU model (`Model::run`) gives each layer the mask of its first input; a layer either
//! sets its outputs' masks (Embedding with maskZero: `ids != 0`; LSTM, GRU, SimpleRNN and
//! Bidirectional: the input mask with `returnSequences`, none otherwise; GlobalAveragePooling1D:
//! none) or passes the first input's mask on to an output whose leading axes are still
//! `[batch, time]`. Masks change the results of the recurrent layers, Bidirectional,
//! GlobalAveragePooling1D and the attention layers only. The GPU path applies them in the
//! recurrent layers and Bidirectional; a mask that would reach GlobalAveragePooling1D or
//! MultiHeadAttention is refused by name, so the model falls back to the CPU instead of being
//! computed unmasked.
//!
//! An Embedding must read the model input on the GPU (checked in `GpuModel::new`), so every
//! mask is the same `[batch, time]` tensor: `ids != 0` of the model input.

use super::steps::Step;
use super::{unsupported, GpuNode};
use crate::nn::model::{Model, Source};
use crate::{Error, Result};

/// Per node: whether the token mask reaches its first input and the step consumes it (a
/// recurrent layer or Bidirectional). `layers[n]` is node `n`'s (class, name), for messages.
pub(super) fn plan(model: &Model, nodes: &[GpuNode], layers: &[(String, String)]) -> Result<Vec<bool>> {
    // Whether each node's output carries the mask.
    let mut carries = vec![false; nodes.len()];
    let mut consumes = vec![false; nodes.len()];
    let time = model.source_shape(Source::Input(0)).and_then(|s| s.first().copied());
    for (n, node) in nodes.iter().enumerate() {
        let masked = |s: &Source| matches!(*s, Source::Node(k, _) if carries[k]);
        let first = node.inputs.first().is_some_and(masked);
        let (class, name) = &layers[n];
        let refuse = || {
            Err(unsupported(&format!(
                "an Embedding maskZero mask reaching {class} layer '{name}' (the CPU applies it there)"
            )))
        };
        carries[n] = match &node.step {
            Step::Embedding { mask_zero, .. } => *mask_zero,
            Step::Recurrent(p) => {
                consumes[n] = first;
                first && p.return_sequences()
            }
            Step::Bidirectional(p) => {
                consumes[n] = first;
                first && p.return_sequences()
            }
            Step::GlobalAvgPool1d if first => return refuse(),
            Step::GlobalAvgPool1d => false,
            Step::Mha(_) if node.inputs.iter().any(masked) => return refuse(),
            _ if !first => false,
            // Passed on to an output whose leading axes are still [batch, time].
            _ => {
                let shape = model.source_shape(Source::Node(n, 0)).ok_or_else(|| {
                    Error::Invalid(format!(
                        "gpu: the output of {class} layer '{name}' has no known shape to follow its mask"
                    ))
                })?;
                time.is_some() && shape.first().copied() == time
            }
        };
    }
    Ok(consumes)
}
