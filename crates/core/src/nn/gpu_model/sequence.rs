//! Embedding and LSTM layers of GPU models: planning from the layer configs, and the forward
//! and backward passes on cortex-wgpu's kernels (one input-projection GEMM for all timesteps,
//! the whole recurrence in one dispatch each way, the weight gradients as GEMMs).

use cortex_wgpu::{Gpu, GpuTensor, LstmSaved};
use serde_json::Value;

use super::{gpu_err, unsupported};
use crate::{Error, Result};

/// Checks an Embedding layer's config: masking is not on the GPU yet.
pub(super) fn check_embedding(name: &str, config: &Value) -> Result<usize> {
    if config.get("maskZero").and_then(Value::as_bool) == Some(true) {
        return Err(unsupported(&format!("Embedding maskZero (layer '{name}')")));
    }
    config
        .get("inputDim")
        .and_then(Value::as_u64)
        .map(|v| v as usize)
        .ok_or_else(|| Error::Invalid(format!("gpu: embedding layer '{name}' has no inputDim")))
}

/// Checks an LSTM layer's config against what the GPU kernels implement; returns
/// `returnSequences`.
pub(super) fn check_lstm(name: &str, config: &Value) -> Result<bool> {
    let text = |k: &str, default: &str| config.get(k).and_then(Value::as_str).unwrap_or(default).to_string();
    let flag = |k: &str| config.get(k).and_then(Value::as_bool).unwrap_or(false);
    if text("activation", "tanh") != "tanh" || text("recurrentActivation", "sigmoid") != "sigmoid" {
        return Err(unsupported(&format!(
            "LSTM activations other than tanh / sigmoid (layer '{name}')"
        )));
    }
    for (key, what) in [
        ("returnState", "returnState"),
        ("goBackwards", "goBackwards"),
        ("stateful", "stateful"),
    ] {
        if flag(key) {
            return Err(unsupported(&format!("LSTM {what} (layer '{name}')")));
        }
    }
    Ok(flag("returnSequences"))
}

/// What the LSTM backward pass needs.
pub(super) struct LstmTape {
    x: GpuTensor,
    state: LstmSaved,
    return_sequences: bool,
}

/// The LSTM's weights on the device: kernel W `[in, 4u]`, recurrent kernel U `[u, 4u]`, bias.
pub(super) struct LstmWeights<'a> {
    pub kernel: &'a GpuTensor,
    pub recurrent: &'a GpuTensor,
    pub bias: Option<&'a GpuTensor>,
}

/// Forward pass from x `[batch, time, in]`: every hidden state or the last one.
pub(super) fn lstm_forward(
    g: &Gpu,
    x: GpuTensor,
    w: &LstmWeights,
    return_sequences: bool,
    keep: bool,
) -> Result<(GpuTensor, Option<LstmTape>)> {
    if x.shape().len() != 3 {
        return Err(Error::Invalid(format!(
            "gpu: LSTM expects input [batch, time, features], got {:?}",
            x.shape()
        )));
    }
    let zeros;
    let bias = match w.bias {
        Some(b) => b,
        None => {
            zeros = g.zeros(&[w.kernel.shape()[1]]).map_err(gpu_err)?;
            &zeros
        }
    };
    let projected = g.lstm_input_projection(&x, w.kernel, bias).map_err(gpu_err)?;
    let out = g.lstm_forward(&projected, w.recurrent, None, None).map_err(gpu_err)?;
    let y = if return_sequences { out.h_seq } else { out.h_last };
    let tape = keep.then_some(LstmTape {
        x,
        state: out.saved,
        return_sequences,
    });
    Ok((y, tape))
}

/// Gradients of an LSTM step: (dx, dW, dU, dbias).
pub(super) fn lstm_backward(
    g: &Gpu,
    dy: GpuTensor,
    tape: LstmTape,
    w: &LstmWeights,
) -> Result<(GpuTensor, GpuTensor, GpuTensor, GpuTensor)> {
    let (dh_seq, dh_last) = if tape.return_sequences {
        (Some(&dy), None)
    } else {
        (None, Some(&dy))
    };
    let back = g
        .lstm_backward(&tape.state, w.recurrent, dh_seq, dh_last)
        .map_err(gpu_err)?;
    let grads = g
        .lstm_weight_grads(&tape.x, w.kernel, &tape.state, &back.d_gates)
        .map_err(gpu_err)?;
    Ok((grads.dx, grads.dw, grads.du, grads.dbias))
}
