//! LSTM recurrence forward and backward through time (shader `rnn`).
//!
//! Keras layout and math: input `[batch, time, in]`, kernel W `[in, 4u]`, recurrent kernel
//! U `[u, 4u]`, bias `[4u]`, gate order i, f, c (candidate), o, recurrent activation sigmoid
//! and activation tanh by default, others through [`RnnActivations`].
//!
//! The work splits into GEMMs with [`Gpu::matmul`] and one recurrence dispatch per pass:
//! - forward: `x_proj = x·W + b` for all timesteps (one GEMM + bias, done by the caller or
//!   [`Gpu::lstm_input_projection`]), then [`Gpu::lstm_forward`] runs every timestep in one
//!   dispatch (a workgroup owns whole sequences and loops over time);
//! - backward: [`Gpu::lstm_backward`] walks time backwards in one dispatch and returns the
//!   pre-activation gate gradients of every step; [`Gpu::lstm_weight_grads`] turns them into
//!   dx, dW, dU and dbias with three GEMMs and a column sum.
//!
//! Masking follows Keras (see [`RnnMask`], also taken by the GRU and SimpleRNN kernels): a
//! masked step keeps the previous state, outputs the previous hidden state (or zeros), and its
//! gradient flows straight to the previous state.
//!
//! Not supported: `goBackwards` (reverse the input and the mask instead), stateful carry of the
//! final cell state.

use super::{matmul::MatmulDesc, u32_of};
use crate::context::grid;
use crate::{DType, Gpu, GpuError, GpuTensor, Result};

/// Threads per recurrence workgroup (must match `WG` in `rnn.wgsl`).
const WG: usize = 256;
/// Most (sequence, unit) pairs one workgroup holds: the backward pass keeps `4 * pairs` gate
/// gradients in workgroup memory (16 KiB, the WebGPU minimum) and each thread at most 4 pairs.
const MAX_PAIRS: usize = 1024;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    batch: u32,
    steps: u32,
    units: u32,
    seqs: u32,
    has_dh_seq: u32,
    has_dh_last: u32,
    rows: u32,
    cols: u32,
    has_mask: u32,
    zero_masked: u32,
    has_dc_last: u32,
    act: u32,
    rec_act: u32,
    act_alpha: f32,
    rec_alpha: f32,
    pad: u32,
}

use super::elementwise::Activation;

/// The activations of a recurrent cell, shared by the LSTM, GRU and SimpleRNN kernels: Keras
/// `activation` (the LSTM's candidate and cell output, the GRU's candidate, the SimpleRNN
/// state) and `recurrentActivation` (the gates). The kernels save pre-activations and take
/// each derivative from its input, so every Keras activation is accepted (gelu and swish
/// included, whose output would not determine it).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RnnActivations {
    activation: Activation,
    recurrent: Activation,
}

impl Default for RnnActivations {
    /// tanh and sigmoid (the Keras defaults).
    fn default() -> Self {
        RnnActivations {
            activation: Activation::Tanh,
            recurrent: Activation::Sigmoid,
        }
    }
}

impl RnnActivations {
    /// `activation` and `recurrent_activation`, or an Error naming one the kernels lack.
    pub fn new(activation: Activation, recurrent_activation: Activation) -> Result<Self> {
        for a in [activation, recurrent_activation] {
            // Every activation but the losses' clipped log.
            if matches!(a, Activation::LogClipped(_)) {
                return Err(GpuError::Invalid {
                    op: "recurrent activations",
                    message: format!("{a:?} is not a Keras activation"),
                });
            }
        }
        Ok(RnnActivations {
            activation,
            recurrent: recurrent_activation,
        })
    }

    /// Uniform fields `(act, rec_act, act_alpha, rec_alpha)`.
    pub(super) fn fields(self) -> (u32, u32, f32, f32) {
        let (act, act_alpha) = self.activation.code();
        let (rec_act, rec_alpha) = self.recurrent.code();
        (act, rec_act, act_alpha, rec_alpha)
    }
}

/// A Keras mask for a recurrent kernel: `[batch, time]` f32, nonzero = keep the step. A
/// masked step carries the state (h, and c for the LSTM) over unchanged; its output is the
/// previous hidden state, or zeros with `zero_outputs` (what Keras' `Bidirectional` asks for).
/// In the backward pass a masked step's gradient goes straight to the previous state and its
/// gate gradients are zero (so the weights get nothing from it).
#[derive(Clone, Debug)]
pub struct RnnMask {
    /// `[batch, time]`, in the order the kernel visits the steps.
    pub mask: GpuTensor,
    /// Masked steps output zeros instead of the previous hidden state.
    pub zero_outputs: bool,
}

/// Checks a mask against `[batch, steps]`; returns the uniform flags `(has_mask, zero_masked)`.
pub(super) fn mask_flags(op: &'static str, mask: Option<&RnnMask>, batch: usize, steps: usize) -> Result<(u32, u32)> {
    match mask {
        None => Ok((0, 0)),
        Some(m) => {
            expect_shape(op, "mask", &m.mask, &[batch, steps])?;
            Ok((1, m.zero_outputs as u32))
        }
    }
}

/// What the LSTM backward pass needs from the forward pass.
#[derive(Debug)]
pub struct LstmSaved {
    /// `[batch, time, 5u]`: gate pre-activations i, f, c, o, then the cell state after the step.
    pub gates_c: GpuTensor,
    /// `[batch, time, u]`: the hidden state entering each step (h0 at step 0).
    pub h_prev: GpuTensor,
    /// `[batch, u]`: the initial cell state.
    pub c0: GpuTensor,
    /// The mask the forward pass ran with.
    pub mask: Option<RnnMask>,
    /// The activations the forward pass ran with.
    pub activations: RnnActivations,
}

/// Outputs of [`Gpu::lstm_forward`].
#[derive(Debug)]
pub struct LstmForward {
    /// `[batch, time, u]`: every hidden state (Keras `returnSequences: true`).
    pub h_seq: GpuTensor,
    /// `[batch, u]`: the last hidden state (Keras `returnSequences: false`).
    pub h_last: GpuTensor,
    /// State for [`Gpu::lstm_backward`] and [`Gpu::lstm_weight_grads`].
    pub saved: LstmSaved,
}

/// Outputs of [`Gpu::lstm_backward`].
#[derive(Debug)]
pub struct LstmBackward {
    /// `[batch, time, 4u]`: gradient wrt the gate pre-activations (= wrt `x_proj`).
    pub d_gates: GpuTensor,
    /// `[batch, u]`: gradient wrt the initial hidden state.
    pub dh0: GpuTensor,
    /// `[batch, u]`: gradient wrt the initial cell state.
    pub dc0: GpuTensor,
}

/// Parameter and input gradients of [`Gpu::lstm_weight_grads`].
#[derive(Debug)]
pub struct LstmGrads {
    /// `[batch, time, in]`: gradient wrt the layer input.
    pub dx: GpuTensor,
    /// `[in, 4u]`: gradient wrt the kernel W.
    pub dw: GpuTensor,
    /// `[u, 4u]`: gradient wrt the recurrent kernel U.
    pub du: GpuTensor,
    /// `[4u]`: gradient wrt the bias.
    pub dbias: GpuTensor,
}

/// Sequences one recurrence workgroup handles for `units` hidden units: enough (sequence,
/// unit) pairs to fill 256 threads, at most 8 sequences, at most 1024 pairs. The GRU and
/// SimpleRNN kernels ([`super::gru`], [`super::simple_rnn`]) split the batch the same way.
pub fn lstm_seqs_per_group(units: usize) -> Result<usize> {
    seqs_per_group("LSTM units (one workgroup holds a whole sequence)", units)
}

/// [`lstm_seqs_per_group`] with the error naming the caller's layer.
pub(super) fn seqs_per_group(what: &'static str, units: usize) -> Result<usize> {
    if units == 0 || units > MAX_PAIRS {
        return Err(GpuError::Limit {
            what,
            got: units as u64,
            limit: MAX_PAIRS as u64,
        });
    }
    Ok((WG / units).clamp(1, 8))
}

pub(super) fn shape_err(op: &'static str, expected: String, t: &GpuTensor) -> GpuError {
    GpuError::Shape {
        op,
        expected,
        got: format!("{:?}", t.shape()),
    }
}

/// Units of a recurrent kernel `[u, 4u]`.
pub(super) fn units_of(op: &'static str, recurrent: &GpuTensor, gates: usize) -> Result<usize> {
    recurrent.expect_f32(op)?;
    match *recurrent.shape() {
        [u, g] if g == gates * u && u > 0 => Ok(u),
        _ => {
            let cols = if gates == 1 {
                "u".to_string()
            } else {
                format!("{gates}u")
            };
            Err(shape_err(op, format!("recurrent kernel [u, {cols}]"), recurrent))
        }
    }
}

pub(super) fn expect_shape(op: &'static str, what: &str, t: &GpuTensor, shape: &[usize]) -> Result<()> {
    t.expect_f32(op)?;
    if t.shape() != shape {
        return Err(shape_err(op, format!("{what} {shape:?}"), t));
    }
    Ok(())
}

impl Gpu {
    /// `x·W + b` for every timestep at once: x `[batch, time, in]`, W `[in, 4u]`, b `[4u]`
    /// → `[batch, time, 4u]` (one GEMM and a bias add).
    pub fn lstm_input_projection(&self, x: &GpuTensor, w: &GpuTensor, bias: &GpuTensor) -> Result<GpuTensor> {
        if !w.shape().last().is_some_and(|g| g.is_multiple_of(4)) {
            return Err(shape_err("lstm_input_projection", "kernel [in, 4u]".into(), w));
        }
        self.rnn_input_projection(x, w, bias)
    }

    /// `x·W + b` for every timestep at once, for any recurrent layer: x `[batch, time, in]`,
    /// W `[in, g]`, b `[g]` → `[batch, time, g]` (one GEMM and a bias add). The GRU passes
    /// its input bias row here and the recurrent row to [`Gpu::gru_forward`].
    pub fn rnn_input_projection(&self, x: &GpuTensor, w: &GpuTensor, bias: &GpuTensor) -> Result<GpuTensor> {
        let op = "rnn_input_projection";
        let &[b, t, i] = x.shape() else {
            return Err(shape_err(op, "x [batch, time, in]".into(), x));
        };
        let &[wi, g] = w.shape() else {
            return Err(shape_err(op, format!("kernel [{i}, units]"), w));
        };
        if wi != i || g == 0 {
            return Err(shape_err(op, format!("kernel [{i}, units]"), w));
        }
        let desc = MatmulDesc {
            m: b * t,
            n: g,
            k: i,
            batch: 1,
            trans_a: false,
            trans_b: false,
            stride_a: 0,
            stride_b: 0,
        };
        let xw = self.matmul_with(x, w, &desc)?.reshape(&[b, t, g])?;
        self.bias_add(&xw, bias)
    }

    /// Runs the LSTM recurrence over all timesteps in one dispatch.
    ///
    /// `x_proj` is `[batch, time, 4u]` (the input projection plus bias, see
    /// [`Gpu::lstm_input_projection`]), `recurrent` is U `[u, 4u]`, `h0`/`c0` are `[batch, u]`
    /// (zeros when `None`). Needs `u <= 1024`.
    pub fn lstm_forward(
        &self,
        x_proj: &GpuTensor,
        recurrent: &GpuTensor,
        h0: Option<&GpuTensor>,
        c0: Option<&GpuTensor>,
    ) -> Result<LstmForward> {
        self.lstm_forward_masked(x_proj, recurrent, h0, c0, None)
    }

    /// [`Gpu::lstm_forward`] with an optional Keras mask `[batch, time]` (see [`RnnMask`]);
    /// [`Gpu::lstm_backward`] reads it back from the saved state.
    pub fn lstm_forward_masked(
        &self,
        x_proj: &GpuTensor,
        recurrent: &GpuTensor,
        h0: Option<&GpuTensor>,
        c0: Option<&GpuTensor>,
        mask: Option<&RnnMask>,
    ) -> Result<LstmForward> {
        self.lstm_forward_with(x_proj, recurrent, h0, c0, mask, RnnActivations::default())
    }

    /// [`Gpu::lstm_forward_masked`] with the cell's activations (tanh / sigmoid by default);
    /// [`Gpu::lstm_backward`] reads them back from the saved state.
    pub fn lstm_forward_with(
        &self,
        x_proj: &GpuTensor,
        recurrent: &GpuTensor,
        h0: Option<&GpuTensor>,
        c0: Option<&GpuTensor>,
        mask: Option<&RnnMask>,
        activations: RnnActivations,
    ) -> Result<LstmForward> {
        let op = "lstm_forward";
        let u = units_of(op, recurrent, 4)?;
        x_proj.expect_f32(op)?;
        let &[batch, steps, g] = x_proj.shape() else {
            return Err(shape_err(op, format!("x_proj [batch, time, {}]", 4 * u), x_proj));
        };
        if g != 4 * u {
            return Err(shape_err(op, format!("x_proj [batch, time, {}]", 4 * u), x_proj));
        }
        if batch == 0 || steps == 0 {
            return Err(GpuError::Invalid {
                op,
                message: format!("empty input {:?}", x_proj.shape()),
            });
        }
        let seqs = lstm_seqs_per_group(u)?;
        let (has_mask, zero_masked) = mask_flags(op, mask, batch, steps)?;
        let h0_zeros;
        let h0 = match h0 {
            Some(h) => {
                expect_shape(op, "h0", h, &[batch, u])?;
                h
            }
            None => {
                h0_zeros = self.zeros(&[batch, u])?;
                &h0_zeros
            }
        };
        let c0 = match c0 {
            Some(c) => {
                expect_shape(op, "c0", c, &[batch, u])?;
                copy_tensor(self, c)?
            }
            None => self.zeros(&[batch, u])?,
        };
        let h_seq = self.empty(&[batch, steps, u], DType::F32)?;
        let h_prev = self.empty(&[batch, steps, u], DType::F32)?;
        let h_last = self.empty(&[batch, u], DType::F32)?;
        let gates_c = self.empty(&[batch, steps, 5 * u], DType::F32)?;
        let (act, rec_act, act_alpha, rec_alpha) = activations.fields();
        let p = Params {
            batch: u32_of("batch", batch)?,
            steps: u32_of("time steps", steps)?,
            units: u32_of("units", u)?,
            seqs: seqs as u32,
            has_dh_seq: 0,
            has_dh_last: 0,
            rows: 0,
            cols: 0,
            has_mask,
            zero_masked,
            has_dc_last: 0,
            act,
            rec_act,
            act_alpha,
            rec_alpha,
            pad: 0,
        };
        // Element offsets inside the shader are u32.
        u32_of("x_proj elements", batch * steps * 5 * u)?;
        let (gx, gy) = grid(u32_of("workgroups", batch.div_ceil(seqs))?);
        let mut pass = self.batch();
        let bufs = [
            (1, x_proj.buffer()),
            (2, recurrent.buffer()),
            (3, h0.buffer()),
            (4, c0.buffer()),
            (5, gates_c.buffer()),
            (6, h_seq.buffer()),
            (7, h_prev.buffer()),
            (8, h_last.buffer()),
            // Without a mask (never read then) the recurrent kernel stands in for the binding.
            (16, mask.map_or(recurrent, |m| &m.mask).buffer()),
        ];
        pass.dispatch("rnn", "lstm_forward", &p, &bufs, (gx, gy, 1))?;
        pass.submit()?;
        Ok(LstmForward {
            h_seq,
            h_last,
            saved: LstmSaved {
                gates_c,
                h_prev,
                c0,
                mask: mask.cloned(),
                activations,
            },
        })
    }

    /// Backpropagation through time of [`Gpu::lstm_forward`] in one dispatch.
    ///
    /// `dh_seq` (`[batch, time, u]`, the gradient wrt `h_seq`) and `dh_last` (`[batch, u]`,
    /// wrt `h_last`) are both optional and add up; at least one must be given.
    pub fn lstm_backward(
        &self,
        saved: &LstmSaved,
        recurrent: &GpuTensor,
        dh_seq: Option<&GpuTensor>,
        dh_last: Option<&GpuTensor>,
    ) -> Result<LstmBackward> {
        self.lstm_backward_with_cell_grad(saved, recurrent, dh_seq, dh_last, None)
    }

    /// [`Gpu::lstm_backward`] with a gradient wrt the final cell state as well (`dc_last`,
    /// `[batch, u]`: a returned state, see [`Gpu::lstm_final_cell`]). At least one of the
    /// three gradients must be given.
    pub fn lstm_backward_with_cell_grad(
        &self,
        saved: &LstmSaved,
        recurrent: &GpuTensor,
        dh_seq: Option<&GpuTensor>,
        dh_last: Option<&GpuTensor>,
        dc_last: Option<&GpuTensor>,
    ) -> Result<LstmBackward> {
        let op = "lstm_backward";
        let u = units_of(op, recurrent, 4)?;
        let &[batch, steps, g5] = saved.gates_c.shape() else {
            return Err(shape_err(op, "saved gates [batch, time, 5u]".into(), &saved.gates_c));
        };
        if g5 != 5 * u || batch == 0 || steps == 0 {
            return Err(shape_err(
                op,
                format!("saved gates [batch, time, {}]", 5 * u),
                &saved.gates_c,
            ));
        }
        expect_shape(op, "saved c0", &saved.c0, &[batch, u])?;
        if let Some(d) = dh_seq {
            expect_shape(op, "dh_seq", d, &[batch, steps, u])?;
        }
        if let Some(d) = dh_last {
            expect_shape(op, "dh_last", d, &[batch, u])?;
        }
        if let Some(d) = dc_last {
            expect_shape(op, "dc_last", d, &[batch, u])?;
        }
        if dh_seq.is_none() && dh_last.is_none() && dc_last.is_none() {
            return Err(GpuError::Invalid {
                op,
                message: "none of dh_seq, dh_last and dc_last given".into(),
            });
        }
        let seqs = lstm_seqs_per_group(u)?;
        let (has_mask, zero_masked) = mask_flags(op, saved.mask.as_ref(), batch, steps)?;
        let ut = self.transpose2d(recurrent)?;
        // Unused bindings still need a buffer.
        let dummy = self.empty(&[1], DType::F32)?;
        let d_gates = self.empty(&[batch, steps, 4 * u], DType::F32)?;
        let dh0 = self.empty(&[batch, u], DType::F32)?;
        let dc0 = self.empty(&[batch, u], DType::F32)?;
        let (act, rec_act, act_alpha, rec_alpha) = saved.activations.fields();
        let p = Params {
            batch: u32_of("batch", batch)?,
            steps: u32_of("time steps", steps)?,
            units: u32_of("units", u)?,
            seqs: seqs as u32,
            has_dh_seq: dh_seq.is_some() as u32,
            has_dh_last: dh_last.is_some() as u32,
            rows: 0,
            cols: 0,
            has_mask,
            zero_masked,
            has_dc_last: dc_last.is_some() as u32,
            act,
            rec_act,
            act_alpha,
            rec_alpha,
            pad: 0,
        };
        let (gx, gy) = grid(u32_of("workgroups", batch.div_ceil(seqs))?);
        let mut pass = self.batch();
        let bufs = [
            (2, ut.buffer()),
            (4, saved.c0.buffer()),
            (5, saved.gates_c.buffer()),
            (9, dh_seq.unwrap_or(&dummy).buffer()),
            (10, dh_last.unwrap_or(&dummy).buffer()),
            (11, d_gates.buffer()),
            (12, dh0.buffer()),
            (13, dc0.buffer()),
            (16, saved.mask.as_ref().map_or(&dummy, |m| &m.mask).buffer()),
            (17, dc_last.unwrap_or(&dummy).buffer()),
        ];
        pass.dispatch("rnn", "lstm_backward", &p, &bufs, (gx, gy, 1))?;
        pass.submit()?;
        Ok(LstmBackward { d_gates, dh0, dc0 })
    }

    /// The cell state after the last step, `[batch, u]` (Keras' returned `c`; a masked last
    /// step carried it over), copied out of the saved state.
    pub fn lstm_final_cell(&self, saved: &LstmSaved) -> Result<GpuTensor> {
        let &[batch, steps, g5] = saved.gates_c.shape() else {
            return Err(shape_err(
                "lstm_final_cell",
                "saved gates [batch, time, 5u]".into(),
                &saved.gates_c,
            ));
        };
        if steps == 0 {
            return Err(shape_err(
                "lstm_final_cell",
                "at least one time step".into(),
                &saved.gates_c,
            ));
        }
        let u = g5 / 5;
        let rows = saved.gates_c.clone().reshape(&[batch, steps * g5])?;
        self.slice_last(&rows, (steps - 1) * g5 + 4 * u, u)
    }

    /// Gradients wrt the layer input and parameters from the gate gradients of
    /// [`Gpu::lstm_backward`]: `dx = dG·Wᵀ`, `dW = xᵀ·dG`, `dU = h_prevᵀ·dG` and
    /// `dbias = 1ᵀ·dG` (GEMMs over batch·time). `x` is `[batch, time, in]`, `w` is `[in, 4u]`.
    pub fn lstm_weight_grads(
        &self,
        x: &GpuTensor,
        w: &GpuTensor,
        saved: &LstmSaved,
        d_gates: &GpuTensor,
    ) -> Result<LstmGrads> {
        let op = "lstm_weight_grads";
        let &[batch, steps, g] = d_gates.shape() else {
            return Err(shape_err(op, "d_gates [batch, time, 4u]".into(), d_gates));
        };
        let u = g / 4;
        let &[_, _, i] = x.shape() else {
            return Err(shape_err(op, format!("x [{batch}, {steps}, in]"), x));
        };
        expect_shape(op, "x", x, &[batch, steps, i])?;
        expect_shape(op, "kernel", w, &[i, g])?;
        expect_shape(op, "saved h_prev", &saved.h_prev, &[batch, steps, u])?;
        let (dx, dw) = self.rnn_input_grads(x, w, d_gates)?;
        let du = self.rnn_gemm(&saved.h_prev, d_gates, [u, g, batch * steps], true)?;
        let dbias = self.rnn_column_sums(d_gates)?;
        Ok(LstmGrads { dx, dw, du, dbias })
    }

    /// `dx = dP·Wᵀ` (`[batch, time, in]`) and `dW = xᵀ·dP` (`[in, g]`) from the gradient
    /// `dP` `[batch, time, g]` wrt an input projection `x·W + b` (shapes checked by callers).
    pub(super) fn rnn_input_grads(
        &self,
        x: &GpuTensor,
        w: &GpuTensor,
        d_proj: &GpuTensor,
    ) -> Result<(GpuTensor, GpuTensor)> {
        let (&[batch, steps, i], &[_, g]) = (x.shape(), w.shape()) else {
            return Err(shape_err(
                "rnn_input_grads",
                "x [batch, time, in], kernel [in, g]".into(),
                x,
            ));
        };
        let desc = MatmulDesc {
            m: batch * steps,
            n: i,
            k: g,
            batch: 1,
            trans_a: false,
            trans_b: true,
            stride_a: 0,
            stride_b: 0,
        };
        let dx = self.matmul_with(d_proj, w, &desc)?.reshape(&[batch, steps, i])?;
        let dw = self.rnn_gemm(x, d_proj, [i, g, batch * steps], true)?;
        Ok((dx, dw))
    }

    /// `aᵀ·b` (`trans_a`) or `a·b` as an `[m, n]` tensor over `k` shared rows/columns, `[m, n, k]`.
    pub(super) fn rnn_gemm(
        &self,
        a: &GpuTensor,
        b: &GpuTensor,
        [m, n, k]: [usize; 3],
        trans_a: bool,
    ) -> Result<GpuTensor> {
        let desc = MatmulDesc {
            m,
            n,
            k,
            batch: 1,
            trans_a,
            trans_b: false,
            stride_a: 0,
            stride_b: 0,
        };
        self.matmul_with(a, b, &desc)?.reshape(&[m, n])
    }

    /// Column sums of `d` `[.., g]` as a `[g]` tensor (a bias gradient).
    pub(super) fn rnn_column_sums(&self, d: &GpuTensor) -> Result<GpuTensor> {
        let g = *d.shape().last().unwrap_or(&0);
        let rows = d.len() / g.max(1);
        // A ones-vector GEMM (split over k) instead of sum_rows: the column-sum kernel walks
        // the batch*time rows serially per column (about 10 ms for 25600 x 512 on an H200).
        let ones = self.upload(&vec![1.0; rows], &[1, rows])?;
        self.rnn_gemm(&ones, d, [1, g, rows], false)?.reshape(&[g])
    }

    /// The transpose of a 2-D tensor.
    pub fn transpose2d(&self, x: &GpuTensor) -> Result<GpuTensor> {
        x.expect_f32("transpose2d")?;
        let &[rows, cols] = x.shape() else {
            return Err(shape_err("transpose2d", "a 2-D tensor".into(), x));
        };
        let out = self.empty(&[cols, rows], DType::F32)?;
        let n = u32_of("elements", rows * cols)?;
        if n > 0 {
            let p = Params {
                batch: 0,
                steps: 0,
                units: 0,
                seqs: 0,
                has_dh_seq: 0,
                has_dh_last: 0,
                rows: rows as u32,
                cols: cols as u32,
                has_mask: 0,
                zero_masked: 0,
                has_dc_last: 0,
                act: 0,
                rec_act: 0,
                act_alpha: 0.0,
                rec_alpha: 0.0,
                pad: 0,
            };
            let (gx, gy) = grid(n.div_ceil(WG as u32));
            let mut pass = self.batch();
            pass.dispatch(
                "rnn",
                "transpose",
                &p,
                &[(14, x.buffer()), (15, out.buffer())],
                (gx, gy, 1),
            )?;
            pass.submit()?;
        }
        Ok(out)
    }
}

/// A copy of `x` in a new buffer (the saved state owns its c0).
fn copy_tensor(gpu: &Gpu, x: &GpuTensor) -> Result<GpuTensor> {
    let out = gpu.empty(x.shape(), x.dtype())?;
    let bytes = x.len() as u64 * 4;
    if bytes > 0 {
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(x.buffer(), 0, out.buffer(), 0, bytes);
        gpu.submit_commands(enc.finish(), Vec::new(), Vec::new());
    }
    Ok(out)
}
