//! Embedding and recurrent (LSTM, GRU, SimpleRNN) layers of GPU models: planning from the layer
//! configs, and the forward and backward passes on cortex-wgpu's kernels (one input-projection
//! GEMM for all timesteps, the whole recurrence in one dispatch each way, the weight gradients
//! as GEMMs).

use cortex_wgpu::{Gpu, GpuTensor, GruSaved, LstmSaved, SimpleRnnSaved};
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

/// A recurrent cell with a GPU sequence kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Cell {
    Lstm,
    Gru,
    SimpleRnn,
}

impl Cell {
    /// The cell of a Keras class name.
    pub(super) fn of_class(class: &str) -> Option<Cell> {
        Some(match class {
            "LSTM" => Cell::Lstm,
            "GRU" => Cell::Gru,
            "SimpleRNN" => Cell::SimpleRnn,
            _ => return None,
        })
    }

    /// Layer kind, for profiles and messages.
    pub(super) fn name(self) -> &'static str {
        match self {
            Cell::Lstm => "LSTM",
            Cell::Gru => "GRU",
            Cell::SimpleRnn => "SimpleRNN",
        }
    }
}

/// Checks a recurrent layer's config against what the GPU kernels implement; returns
/// `returnSequences`.
pub(super) fn check_recurrent(cell: Cell, name: &str, config: &Value) -> Result<bool> {
    let text = |k: &str, default: &str| config.get(k).and_then(Value::as_str).unwrap_or(default).to_string();
    let flag = |k: &str| config.get(k).and_then(Value::as_bool).unwrap_or(false);
    let what = cell.name();
    let gates_ok = cell == Cell::SimpleRnn || text("recurrentActivation", "sigmoid") == "sigmoid";
    if text("activation", "tanh") != "tanh" || !gates_ok {
        return Err(unsupported(&format!(
            "{what} activations other than tanh / sigmoid (layer '{name}')"
        )));
    }
    for key in ["returnState", "goBackwards", "stateful"] {
        if flag(key) {
            return Err(unsupported(&format!("{what} {key} (layer '{name}')")));
        }
    }
    Ok(flag("returnSequences"))
}

/// A recurrent layer's weights on the device: kernel W `[in, gates * u]`, recurrent kernel U
/// `[u, gates * u]`, bias (`[2, 3u]` for the GRU: input and recurrent rows).
pub(super) struct RnnWeights<'a> {
    pub kernel: &'a GpuTensor,
    pub recurrent: &'a GpuTensor,
    pub bias: Option<&'a GpuTensor>,
}

enum CellState {
    Lstm(LstmSaved),
    Gru(GruSaved),
    SimpleRnn(SimpleRnnSaved),
}

/// What a recurrent layer's backward pass needs.
pub(super) struct RnnTape {
    x: GpuTensor,
    state: CellState,
    return_sequences: bool,
}

/// Forward pass from x `[batch, time, in]`: every hidden state or the last one.
pub(super) fn rnn_forward(
    g: &Gpu,
    cell: Cell,
    x: GpuTensor,
    w: &RnnWeights,
    return_sequences: bool,
    keep: bool,
) -> Result<(GpuTensor, Option<RnnTape>)> {
    if x.shape().len() != 3 {
        return Err(Error::Invalid(format!(
            "gpu: {} expects input [batch, time, features], got {:?}",
            cell.name(),
            x.shape()
        )));
    }
    let gate_cols = w.kernel.shape()[1];
    let zeros = |n: usize| g.zeros(&[n]).map_err(gpu_err);
    let (h_seq, h_last, state) = match cell {
        Cell::Lstm | Cell::SimpleRnn => {
            let bias = match w.bias {
                Some(b) => b.clone(),
                None => zeros(gate_cols)?,
            };
            let projected = g.rnn_input_projection(&x, w.kernel, &bias).map_err(gpu_err)?;
            if cell == Cell::Lstm {
                let out = g.lstm_forward(&projected, w.recurrent, None, None).map_err(gpu_err)?;
                (out.h_seq, out.h_last, CellState::Lstm(out.saved))
            } else {
                let out = g.simple_rnn_forward(&projected, w.recurrent, None).map_err(gpu_err)?;
                (out.h_seq, out.h_last, CellState::SimpleRnn(out.saved))
            }
        }
        Cell::Gru => {
            let (input_bias, recurrent_bias) = match w.bias {
                Some(b) => g.gru_bias_rows(b).map_err(gpu_err)?,
                None => (zeros(gate_cols)?, zeros(gate_cols)?),
            };
            let projected = g.rnn_input_projection(&x, w.kernel, &input_bias).map_err(gpu_err)?;
            let out = g
                .gru_forward(&projected, w.recurrent, &recurrent_bias, None)
                .map_err(gpu_err)?;
            (out.h_seq, out.h_last, CellState::Gru(out.saved))
        }
    };
    let y = if return_sequences { h_seq } else { h_last };
    let tape = keep.then_some(RnnTape {
        x,
        state,
        return_sequences,
    });
    Ok((y, tape))
}

/// Gradients of a recurrent step: (dx, dW, dU, dbias).
pub(super) fn rnn_backward(
    g: &Gpu,
    dy: GpuTensor,
    tape: RnnTape,
    w: &RnnWeights,
) -> Result<(GpuTensor, GpuTensor, GpuTensor, GpuTensor)> {
    let (dh_seq, dh_last) = if tape.return_sequences {
        (Some(&dy), None)
    } else {
        (None, Some(&dy))
    };
    let (u, x) = (w.recurrent, &tape.x);
    Ok(match &tape.state {
        CellState::Lstm(state) => {
            let back = g.lstm_backward(state, u, dh_seq, dh_last).map_err(gpu_err)?;
            let d = g
                .lstm_weight_grads(x, w.kernel, state, &back.d_gates)
                .map_err(gpu_err)?;
            (d.dx, d.dw, d.du, d.dbias)
        }
        CellState::Gru(state) => {
            let back = g.gru_backward(state, u, dh_seq, dh_last).map_err(gpu_err)?;
            let d = g
                .gru_weight_grads(x, w.kernel, state, &back.d_proj, &back.d_rec)
                .map_err(gpu_err)?;
            (d.dx, d.dw, d.du, d.dbias)
        }
        CellState::SimpleRnn(state) => {
            let back = g.simple_rnn_backward(state, u, dh_seq, dh_last).map_err(gpu_err)?;
            let d = g
                .simple_rnn_weight_grads(x, w.kernel, state, &back.d_pre)
                .map_err(gpu_err)?;
            (d.dx, d.dw, d.du, d.dbias)
        }
    })
}
