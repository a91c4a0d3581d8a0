//! Embedding and recurrent (LSTM, GRU, SimpleRNN) layers of GPU models: planning from the layer
//! configs, and the forward and backward passes on cortex-wgpu's kernels (one input-projection
//! GEMM for all timesteps, the whole recurrence in one dispatch each way, the weight gradients
//! as GEMMs). goBackwards reverses the input's time axis (and the mask's) around the same
//! kernels. An Embedding with maskZero feeds its mask to the recurrent layers that consume it
//! (see `masking.rs` for which do).

use cortex_wgpu::{Gpu, GpuTensor, GruSaved, LstmSaved, RnnActivations, RnnMask, SimpleRnnSaved};
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
    /// The cell's activations (the planner's layers have the defaults, tanh / sigmoid).
    activations: RnnActivations,
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
            activations: RnnActivations::default(),
        })
    }

    /// A layer's own plan, for its weights `[kernel, recurrent kernel, bias?]` in that order
    /// (the layer path: `nn/layers/recurrent.rs` with GPU weights).
    pub(crate) fn for_layer(
        cell: Cell,
        has_bias: bool,
        return_sequences: bool,
        go_backwards: bool,
        activations: RnnActivations,
    ) -> RnnPlan {
        RnnPlan {
            cell,
            kernel: 0,
            recurrent: 1,
            bias: has_bias.then_some(2),
            return_sequences,
            go_backwards,
            activations,
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
        let out = self.forward_with_states(g, w, x, &[], false, mask, keep, input_order)?;
        Ok((out.y, out.tape))
    }

    /// [`RnnPlan::forward`] from the initial states `initial` (none, or h0 and for the LSTM
    /// c0, each `[batch, u]`), returning the final states too with `return_state` (Keras
    /// `returnState`: h, then the LSTM's c).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn forward_with_states(
        &self,
        g: &Gpu,
        w: &[GpuTensor],
        x: GpuTensor,
        initial: &[GpuTensor],
        return_state: bool,
        mask: Option<&GpuTensor>,
        keep: bool,
        input_order: bool,
    ) -> Result<RnnOutputs> {
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
        let run = RnnRun {
            initial,
            mask,
            return_sequences: self.return_sequences,
            return_state,
            keep,
            activations: self.activations,
        };
        let out = rnn_forward(g, self.cell, x, &self.weights(w), &run)?;
        let y = if flip_output {
            g.reverse_time(&out.y).map_err(gpu_err)?
        } else {
            out.y
        };
        let tape = out.tape.map(|t| RnnTape {
            flip_input,
            flip_output,
            ..t
        });
        Ok(RnnOutputs {
            y,
            states: out.states,
            tape,
        })
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
        Ok(self.backward_with_states(g, w, tape, dy, &[], grads)?.0)
    }

    /// [`RnnPlan::backward`] with the gradients wrt the returned final states (`d_states`: h,
    /// then the LSTM's c; none without `returnState`). Returns the input gradient and the
    /// gradients wrt the initial states (h0, then the LSTM's c0).
    pub(crate) fn backward_with_states(
        &self,
        g: &Gpu,
        w: &[GpuTensor],
        tape: RnnTape,
        dy: GpuTensor,
        d_states: &[GpuTensor],
        grads: &mut [Option<GpuTensor>],
    ) -> Result<(GpuTensor, Vec<GpuTensor>)> {
        let (flip_input, flip_output) = (tape.flip_input, tape.flip_output);
        let dy = if flip_output {
            g.reverse_time(&dy).map_err(gpu_err)?
        } else {
            dy
        };
        let back = rnn_backward(g, dy, d_states, tape, &self.weights(w))?;
        accumulate(g, &mut grads[self.kernel], back.dw)?;
        accumulate(g, &mut grads[self.recurrent], back.du)?;
        if let Some(b) = self.bias {
            accumulate(g, &mut grads[b], back.dbias)?;
        }
        let dx = if flip_input {
            g.reverse_time(&back.dx).map_err(gpu_err)?
        } else {
            back.dx
        };
        Ok((dx, back.d_initial))
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

/// A recurrent layer's outputs on the device.
pub(crate) struct RnnOutputs {
    /// Every hidden state `[batch, time, u]` (returnSequences) or the last one `[batch, u]`.
    pub y: GpuTensor,
    /// With returnState: the final hidden state, then the LSTM's final cell state.
    pub states: Vec<GpuTensor>,
    pub tape: Option<RnnTape>,
}

/// The options of one recurrent pass.
struct RnnRun<'a> {
    /// None, or h0 and (LSTM) c0.
    initial: &'a [GpuTensor],
    mask: Option<RnnMask>,
    return_sequences: bool,
    return_state: bool,
    /// Keep the tape for a backward pass.
    keep: bool,
    activations: RnnActivations,
}

/// Forward pass from x `[batch, time, in]`: every hidden state or the last one.
fn rnn_forward(g: &Gpu, cell: Cell, x: GpuTensor, w: &RnnWeights, run: &RnnRun) -> Result<RnnOutputs> {
    let gate_cols = w.kernel.shape()[1];
    let zeros = |n: usize| g.zeros(&[n]).map_err(gpu_err);
    let mask = run.mask.as_ref();
    let (h0, c0) = (run.initial.first(), run.initial.get(1));
    let mut final_cell = None;
    let (h_seq, h_last, state) = match cell {
        Cell::Lstm | Cell::SimpleRnn => {
            let bias = match w.bias {
                Some(b) => b.clone(),
                None => zeros(gate_cols)?,
            };
            let projected = g.rnn_input_projection(&x, w.kernel, &bias).map_err(gpu_err)?;
            if cell == Cell::Lstm {
                let out = g
                    .lstm_forward_with(&projected, w.recurrent, h0, c0, mask, run.activations)
                    .map_err(gpu_err)?;
                if run.return_state {
                    final_cell = Some(g.lstm_final_cell(&out.saved).map_err(gpu_err)?);
                }
                (out.h_seq, out.h_last, CellState::Lstm(out.saved))
            } else {
                let out = g
                    .simple_rnn_forward_with(&projected, w.recurrent, h0, mask, run.activations)
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
                .gru_forward_with(&projected, w.recurrent, &recurrent_bias, h0, mask, run.activations)
                .map_err(gpu_err)?;
            (out.h_seq, out.h_last, CellState::Gru(out.saved))
        }
    };
    let mut states = Vec::new();
    if run.return_state {
        states.push(h_last.clone());
        states.extend(final_cell);
    }
    let y = if run.return_sequences { h_seq } else { h_last };
    let tape = run.keep.then_some(RnnTape {
        x,
        state,
        return_sequences: run.return_sequences,
        flip_input: false,
        flip_output: false,
    });
    Ok(RnnOutputs { y, states, tape })
}

/// The gradients of a recurrent layer.
struct RnnGrads {
    dx: GpuTensor,
    dw: GpuTensor,
    du: GpuTensor,
    dbias: GpuTensor,
    /// Wrt the initial states: h0, then the LSTM's c0.
    d_initial: Vec<GpuTensor>,
}

/// Gradients of a recurrent layer from those of its output (`dy`) and of its returned final
/// states (`d_states`: h, then the LSTM's c; may be empty).
fn rnn_backward(g: &Gpu, dy: GpuTensor, d_states: &[GpuTensor], tape: RnnTape, w: &RnnWeights) -> Result<RnnGrads> {
    // Without returnSequences the output is the final h, so both gradients reach it.
    let (dh_seq, dh_last) = match (tape.return_sequences, d_states.first()) {
        (true, dh) => (Some(dy), dh.cloned()),
        (false, Some(dh)) => (None, Some(g.add(&dy, dh).map_err(gpu_err)?)),
        (false, None) => (None, Some(dy)),
    };
    let (dh_seq, dh_last, dc_last) = (dh_seq.as_ref(), dh_last.as_ref(), d_states.get(1));
    let (u, x) = (w.recurrent, &tape.x);
    let (d, d_initial) = match &tape.state {
        CellState::Lstm(state) => {
            let back = g
                .lstm_backward_with_cell_grad(state, u, dh_seq, dh_last, dc_last)
                .map_err(gpu_err)?;
            let d = g.lstm_weight_grads(x, w.kernel, state, &back.d_gates);
            (d.map(|d| (d.dx, d.dw, d.du, d.dbias)), vec![back.dh0, back.dc0])
        }
        CellState::Gru(state) => {
            let back = g.gru_backward(state, u, dh_seq, dh_last).map_err(gpu_err)?;
            let d = g.gru_weight_grads(x, w.kernel, state, &back.d_proj, &back.d_rec);
            (d.map(|d| (d.dx, d.dw, d.du, d.dbias)), vec![back.dh0])
        }
        CellState::SimpleRnn(state) => {
            let back = g.simple_rnn_backward(state, u, dh_seq, dh_last).map_err(gpu_err)?;
            let d = g.simple_rnn_weight_grads(x, w.kernel, state, &back.d_pre);
            (d.map(|d| (d.dx, d.dw, d.du, d.dbias)), vec![back.dh0])
        }
    };
    let (dx, dw, du, dbias) = d.map_err(gpu_err)?;
    Ok(RnnGrads {
        dx,
        dw,
        du,
        dbias,
        d_initial,
    })
}
