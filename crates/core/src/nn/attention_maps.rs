//! Attention maps for explanations: the attention probabilities `[batch, heads, query, key]` of
//! a named `MultiHeadAttention` layer during an inference pass of its model, whether or not the
//! layer was built with `returnAttentionScores` (Keras' `return_attention_scores`).
//!
//! The model runs as for `predict`; the layer asks [`capturing`] whether its scores are
//! wanted and hands them to [`record`]. The request is thread-local: a model's forward pass
//! runs its layers on the calling thread (the kernels fan out below that), so concurrent
//! predictions on other threads neither pay for the scores nor see them.

use std::cell::RefCell;

use crate::nn::model::Model;
use crate::nn::param::with_frozen_params;
use crate::nn::SharedLayer;
use crate::rng::Rng;
use crate::{Error, Result, Tensor};

/// The layer whose scores this thread's forward passes record, and what they recorded.
struct Capture {
    layer: String,
    scores: Vec<Tensor>,
}

thread_local! {
    static CAPTURE: RefCell<Option<Capture>> = const { RefCell::new(None) };
}

/// Whether the attention layer named `layer` should compute and [`record`] its scores.
pub(crate) fn capturing(layer: &str) -> bool {
    CAPTURE.with(|c| c.borrow().as_ref().is_some_and(|c| c.layer == layer))
}

/// Keeps the scores of one call of the layer named `layer`, if they are being captured.
pub(crate) fn record(layer: &str, scores: &Tensor) {
    CAPTURE.with(|c| {
        if let Some(c) = c.borrow_mut().as_mut().filter(|c| c.layer == layer) {
            c.scores.push(scores.clone().with_requires_grad(false));
        }
    });
}

/// Finds `name` among `layers` and the layers of nested models.
fn find(layers: &[SharedLayer], name: &str, found: &mut Option<&'static str>) {
    for cell in layers {
        let layer = cell.read();
        if layer.name() == name {
            *found = Some(layer.class_name());
        } else if let Some(m) = layer.as_model() {
            find(m.layers(), name, found);
        }
    }
}

/// All layer names, nested ones included, for the error message.
fn names(layers: &[SharedLayer], out: &mut Vec<String>) {
    for cell in layers {
        let layer = cell.read();
        out.push(layer.name().to_string());
        if let Some(m) = layer.as_model() {
            names(m.layers(), out);
        }
    }
}

impl Model {
    /// The attention probabilities `[batch, heads, query, key]` of the `MultiHeadAttention`
    /// layer named `layer` (at any depth of nested models) for inputs `xs`, from an inference
    /// pass (no dropout). A layer called more than once per pass gives its first call's.
    pub fn attention_maps(&self, xs: &[Tensor], layer: &str) -> Result<Tensor> {
        self.check_inputs(xs)?;
        let mut class = None;
        find(self.layers(), layer, &mut class);
        match class {
            Some("MultiHeadAttention") => {}
            Some(other) => {
                return Err(Error::Invalid(format!(
                    "attentionMaps: layer '{layer}' is a {other}, not a MultiHeadAttention"
                )))
            }
            None => {
                let mut all = Vec::new();
                names(self.layers(), &mut all);
                return Err(Error::Invalid(format!(
                    "attentionMaps: no layer '{layer}' in this model; its layers: {}",
                    all.join(", ")
                )));
            }
        }
        /// Ends the capture even when the pass fails or unwinds.
        struct Stop;
        impl Drop for Stop {
            fn drop(&mut self) {
                CAPTURE.with(|c| c.borrow_mut().take());
            }
        }
        CAPTURE.with(|c| {
            *c.borrow_mut() = Some(Capture {
                layer: layer.to_string(),
                scores: Vec::new(),
            })
        });
        let stop = Stop;
        with_frozen_params(|| self.run_tapped(xs, &[], false, &mut Rng::new(0), None))?;
        let scores = CAPTURE.with(|c| c.borrow_mut().take().map(|c| c.scores).unwrap_or_default());
        drop(stop);
        scores
            .into_iter()
            .next()
            .ok_or_else(|| Error::Invalid(format!("attentionMaps: layer '{layer}' was not run")))
    }
}
