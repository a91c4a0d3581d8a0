//! Training state in model files, so a saved run resumes exactly: the optimizer's step count,
//! learning rate, slots (momentum, Adam moments, ...) and `useEma` averages, and the model's
//! random state (shuffling, dropout). The slots are tensors in the weights file next to the
//! weights (`optimizer/<param>/<slot>`, `optimizer/ema/<param>`); the scalars go into the
//! topology under `trainingState`.

use safetensors::tensor::{Dtype, Metadata};
use serde_json::{json, Value};

use super::model::{Model, NamedWeight};
use super::optim::OptimizerState;
use crate::alloc;
use crate::rng::Rng;
use crate::{Error, Result};

fn slot_name(param: usize, slot: usize) -> String {
    format!("optimizer/{param}/{slot}")
}

fn ema_name(param: usize) -> String {
    format!("optimizer/ema/{param}")
}

/// The training state of a compiled model as extra tensors and the `trainingState` JSON, or
/// `None` when there is nothing to resume (not compiled, or trained on a GPU, whose optimizer
/// slots live on the device).
pub fn capture(model: &Model) -> Option<(Vec<NamedWeight>, Value)> {
    let state = model.optimizer_state()?;
    let mut shapes = Vec::new();
    model.visit_params(&mut |_, p, _| shapes.push(p.shape()));
    let mut tensors = Vec::new();
    for (i, slots) in state.slots.iter().enumerate() {
        for (k, slot) in slots.iter().enumerate() {
            tensors.push((slot_name(i, k), shapes.get(i)?.clone(), slot.clone()));
        }
    }
    for (i, average) in state.ema.iter().enumerate().filter(|(_, a)| !a.is_empty()) {
        tensors.push((ema_name(i), shapes.get(i)?.clone(), average.clone()));
    }
    let rng = model.rng_state().map(|s| format!("{s:016x}"));
    let json = json!({
        "iterations": state.iterations,
        "learningRate": state.learning_rate,
        "rng": rng,
    });
    Some((tensors, json))
}

/// Reads tensor `name` as f32 values of `len` elements, or `None` when the file lacks it.
fn read_values(header: &Metadata, data: &[u8], name: &str, len: usize) -> Result<Option<Vec<f32>>> {
    let Some(info) = header.info(name) else { return Ok(None) };
    let count: usize = info.shape.iter().product();
    if info.dtype != Dtype::F32 || count != len {
        return Err(Error::Invalid(format!(
            "optimizer state '{name}' should be f32 with {len} values, found {:?} {:?}",
            info.dtype, info.shape
        )));
    }
    let bytes = &data[info.data_offsets.0..info.data_offsets.1];
    let mut values = alloc::try_with_capacity(&format!("optimizer state '{name}'"), len)?;
    values.extend(
        bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
    );
    if values.iter().any(|v| !v.is_finite()) {
        return Err(Error::Invalid(format!(
            "optimizer state '{name}' has non-finite values"
        )));
    }
    Ok(Some(values))
}

/// Puts the training state saved by [`capture`] back into a compiled `model` whose weights are
/// loaded. A file without `trainingState` leaves the fresh state.
pub fn restore(model: &mut Model, state: Option<&Value>, header: &Metadata, data: &[u8]) -> Result<()> {
    let Some(state) = state else { return Ok(()) };
    if !model.is_compiled() {
        return Ok(());
    }
    let bad = |what: &str| Error::Invalid(format!("trainingState: {what}, got {state}"));
    let iterations = state
        .get("iterations")
        .and_then(Value::as_u64)
        .ok_or_else(|| bad("'iterations' must be a non-negative integer"))?;
    let learning_rate = state
        .get("learningRate")
        .and_then(Value::as_f64)
        .ok_or_else(|| bad("'learningRate' must be a number"))? as f32;
    let mut sizes = Vec::new();
    model.visit_params(&mut |_, p, _| sizes.push(p.get().len()));
    let mut restored = OptimizerState {
        iterations,
        learning_rate,
        ..OptimizerState::default()
    };
    for (i, &len) in sizes.iter().enumerate() {
        let mut slots = Vec::new();
        // Every rule has at most a handful of slots; the bound keeps a hostile file finite.
        for k in 0..8 {
            match read_values(header, data, &slot_name(i, k), len)? {
                Some(v) => slots.push(v),
                None => break,
            }
        }
        restored.slots.push(slots);
        restored
            .ema
            .push(read_values(header, data, &ema_name(i), len)?.unwrap_or_default());
    }
    model.set_optimizer_state(restored)?;
    if let Some(words) = state.get("rng").and_then(Value::as_array) {
        let parsed: Option<Vec<u64>> = words
            .iter()
            .map(|w| w.as_str().and_then(|s| u64::from_str_radix(s, 16).ok()))
            .collect();
        let s: [u64; 4] = parsed
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| bad("'rng' must be four 64-bit hex words"))?;
        if s == [0; 4] {
            return Err(bad("'rng' cannot be all zeros"));
        }
        model.set_rng(Rng::from_state(s));
    }
    Ok(())
}
