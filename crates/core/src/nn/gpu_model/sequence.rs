//! Embedding and recurrent (LSTM, GRU, SimpleRNN) layers of GPU models: planning from the layer
//! configs, and the forward and backward passes on cortex-wgpu's kernels (one input-projection
//! GEMM for all timesteps, the whole recurrence in one dispatch each way, the weight gradients
//! as GEMMs). goBackwards reverses the input's time axis (and the mask's) around the same
//! kernels. An Embedding with maskZero feeds its mask to the recurrent layers that consume it
//! (see `masking.rs` for which do).

use cortex_wgpu::{Gpu, GpuTensor, GruSaved, LstmSaved, RnnMask, SimpleRnnSaved};
use serde_json::Value;

use super::steps::accumulate;
use super::{gpu_err, unsupported};
use crate::{Error, Result};

/// Reads an Embedding layer's config: `(inputDim, maskZero)`.
pub(super) fn check_embedding(name: &str, config: &Value) -> Result<(usize, bool)> {
    let vocab = config
        .get("inputDim")
        .and_then(Value::as_u64)
        .map(|v| v as usize)
        .ok_or_else(|| Error::Invalid(format!("gpu: embedding layer '{name}' has no inputDim")))?;
    Ok((vocab, config.get("maskZero").and_then(Value::as_bool) == Some(true)))
}

/// A recurrent cell with a GPU sequence kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cell {
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
/// `(returnSequences, goBackwards)`.
fn check_recurrent(cell: Cell, name: &str, config: &Value) -> Result<(bool, bool)> {
    let text = |k: &str, default: &str| config.get(k).and_then(Value::as_str).unwrap_or(default).to_string();
    let flag = |k: &str| config.get(k).and_then(Value::as_bool).unwrap_or(false);
    let what = cell.name();
    let gates_ok = cell == Cell::SimpleRnn || text("recurrentActivation", "sigmoid") == "sigmoid";
    if text("activation", "tanh") != "tanh" || !gates_ok {
        return Err(unsupported(&format!(
            "{what} activations other than tanh / sigmoid (layer '{name}')"
        )));
    }
    for key in ["returnState", "stateful"] {
        if flag(key) {
            return Err(unsupported(&format!("{what} {key} (layer '{name}')")));
        }
    }
    Ok((flag("returnSequences"), flag("goBackwards")))
}

/// A planned recurrent layer: its cell, options and device weight indices.
#[derive(Clone, Debug)]
pub(crate) struct RnnPlan {
    pub cell: Cell,
    kernel: usize,
    recurrent: usize,
    bias: Option<usize>,
    return_sequences: bool,
    /// Keras `goBackwards`: the time steps are visited last to first.
    pub go_backwards: bool,
}

/// `mask` `[batch, time]` with its time axis reversed.
fn reverse_mask(g: &Gpu, mask: &GpuTensor) -> Result<GpuTensor> {
    let &[b, t] = mask.shape() else {
        return Err(Error::Invalid(format!(
            "gpu: a recurrent mask must be [batch, time], got {:?}",
            mask.shape()
        )));
    };
    let m = mask.clone().reshape(&[b, t, 1]).map_err(gpu_err)?;
    g.reverse_time(&m).and_then(|r| r.reshape(&[b, t])).map_err(gpu_err)
}

impl RnnPlan {
    /// Plans recurrent layer `name` from its config; its weights (kernel, recurrent kernel,
    /// then the bias if it has one) start at index `first` and number `count`.
    pub(super) fn plan(cell: Cell, name: &str, config: &Value, first: usize, count: usize) -> Result<RnnPlan> {
        let (return_sequences, go_backwards) = check_recurrent(cell, name, config)?;
        if !(2..=3).contains(&count) {
            return Err(Error::Invalid(format!(
                "gpu: {} layer '{name}' has {count} weights, expected 2 or 3",
                cell.name()
            )));
        }
        Ok(RnnPlan {
            cell,
            kernel: first,
            recurrent: first + 1,
            bias: (count == 3).then_some(first + 2),
            return_sequences,
            go_backwards,
        })
    }

    /// A layer's own plan, for its weights `[kernel, recurrent kernel, bias?]` in that order
    /// (the layer path: `nn/layers/recurrent.rs` with GPU weights).
    pub(crate) fn for_layer(cell: Cell, has_bias: bool, return_sequences: bool, go_backwards: bool) -> RnnPlan {
        RnnPlan {
            cell,
            kernel: 0,
            recurrent: 1,
            bias: has_bias.then_some(2),
            return_sequences,
            go_backwards,
        }
    }

    /// Keras `returnSequences`.
    pub(super) fn return_sequences(&self) -> bool {
        self.return_sequences
    }

    fn weights<'a>(&self, w: &'a [GpuTensor]) -> RnnWeights<'a> {
        RnnWeights {
            kernel: &w[self.kernel],
            recurrent: &w[self.recurrent],
            bias: self.bias.map(|b| &w[b]),
        }
    }

    /// Forward pass from x `[batch, time, in]`. With goBackwards the input's time axis is
    /// reversed and the unchanged recurrence runs on it, so a returned sequence is in
    /// processing order (Keras), or, with `input_order` (as inside Bidirectional), reversed
    /// back into input time order. `mask` is the Keras mask `[batch, time]` (in input order);
    /// with `input_order` (Bidirectional, as on the CPU) masked steps output zeros.
    pub(crate) fn forward(
        &self,
        g: &Gpu,
        w: &[GpuTensor],
        x: GpuTensor,
        mask: Option<&GpuTensor>,
        keep: bool,
        input_order: bool,
    ) -> Result<(GpuTensor, Option<RnnTape>)> {
        check_sequence(self.cell, &x)?;
        let flip_input = self.go_backwards;
        let flip_output = flip_input && input_order && self.return_sequences;
        let x = if flip_input {
            g.reverse_time(&x).map_err(gpu_err)?
        } else {
            x
        };
        let mask = match mask {
            Some(m) => Some(RnnMask {
                mask: if flip_input { reverse_mask(g, m)? } else { m.clone() },
                zero_outputs: input_order && self.return_sequences,
            }),
            None => None,
        };
        let (y, tape) = rnn_forward(g, self.cell, x, mask, &self.weights(w), self.return_sequences, keep)?;
        let y = if flip_output {
            g.reverse_time(&y).map_err(gpu_err)?
        } else {
            y
        };
        let tape = tape.map(|t| RnnTape {
            flip_input,
            flip_output,
            ..t
        });
        Ok((y, tape))
    }

    /// Backward pass: adds the weight gradients into `grads`; returns the input gradient.
    /// (A time reversal is its own gradient.)
    pub(crate) fn backward(
        &self,
        g: &Gpu,
        w: &[GpuTensor],
        tape: RnnTape,
        dy: GpuTensor,
        grads: &mut [Option<GpuTensor>],
    ) -> Result<GpuTensor> {
        let (flip_input, flip_output) = (tape.flip_input, tape.flip_output);
        let dy = if flip_output {
            g.reverse_time(&dy).map_err(gpu_err)?
        } else {
            dy
        };
        let (dx, dw, du, db) = rnn_backward(g, dy, tape, &self.weights(w))?;
        accumulate(g, &mut grads[self.kernel], dw)?;
        accumulate(g, &mut grads[self.recurrent], du)?;
        if let Some(b) = self.bias {
            accumulate(g, &mut grads[b], db)?;
        }
        if flip_input {
            g.reverse_time(&dx).map_err(gpu_err)
        } else {
            Ok(dx)
        }
    }
}

/// Checks that `x` is a `[batch, time, features]` sequence.
fn check_sequence(cell: Cell, x: &GpuTensor) -> Result<()> {
    if x.shape().len() != 3 {
        return Err(Error::Invalid(format!(
            "gpu: {} expects input [batch, time, features], got {:?}",
            cell.name(),
            x.shape()
        )));
    }
    Ok(())
}

/// A recurrent layer's weights on the device: kernel W `[in, gates * u]`, recurrent kernel U
/// `[u, gates * u]`, bias (`[2, 3u]` for the GRU: input and recurrent rows).
struct RnnWeights<'a> {
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
pub(crate) struct RnnTape {
    x: GpuTensor,
    state: CellState,
    return_sequences: bool,
    /// The input was reversed in time (goBackwards): so is its gradient.
    flip_input: bool,
    /// The output sequence was reversed back into input order: so is its gradient.
    flip_output: bool,
}

/// Forward pass from x `[batch, time, in]`: every hidden state or the last one.
fn rnn_forward(
    g: &Gpu,
    cell: Cell,
    x: GpuTensor,
    mask: Option<RnnMask>,
    w: &RnnWeights,
    return_sequences: bool,
    keep: bool,
) -> Result<(GpuTensor, Option<RnnTape>)> {
    let gate_cols = w.kernel.shape()[1];
    let zeros = |n: usize| g.zeros(&[n]).map_err(gpu_err);
    let mask = mask.as_ref();
    let (h_seq, h_last, state) = match cell {
        Cell::Lstm | Cell::SimpleRnn => {
            let bias = match w.bias {
                Some(b) => b.clone(),
                None => zeros(gate_cols)?,
            };
            let projected = g.rnn_input_projection(&x, w.kernel, &bias).map_err(gpu_err)?;
            if cell == Cell::Lstm {
                let out = g
                    .lstm_forward_masked(&projected, w.recurrent, None, None, mask)
                    .map_err(gpu_err)?;
                (out.h_seq, out.h_last, CellState::Lstm(out.saved))
            } else {
                let out = g
                    .simple_rnn_forward_masked(&projected, w.recurrent, None, mask)
                    .map_err(gpu_err)?;
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
                .gru_forward_masked(&projected, w.recurrent, &recurrent_bias, None, mask)
                .map_err(gpu_err)?;
            (out.h_seq, out.h_last, CellState::Gru(out.saved))
        }
    };
    let y = if return_sequences { h_seq } else { h_last };
    let tape = keep.then_some(RnnTape {
        x,
        state,
        return_sequences,
        flip_input: false,
        flip_output: false,
    });
    Ok((y, tape))
}

/// Gradients of a recurrent step: (dx, dW, dU, dbias).
fn rnn_backward(
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
