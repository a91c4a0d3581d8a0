//! GRU recurrence forward and backward through time (shader `gru`), Keras 3 `resetAfter: true`.
//!
//! Keras layout and math: input `[batch, time, in]`, kernel W `[in, 3u]`, recurrent kernel
//! U `[u, 3u]`, bias `[2, 3u]` (input row, recurrent row), gate order z, r, h, recurrent
//! activation sigmoid and activation tanh (the Keras defaults; others are not supported):
//! `z = σ(x·W_z + b_z + h·U_z + c_z)`, `r = σ(…)`, `hh = tanh(x·W_h + b_h + r ⊙ (h·U_h + c_h))`,
//! `h' = z ⊙ h + (1 - z) ⊙ hh`.
//!
//! The work splits like the LSTM's ([`super::rnn`]):
//! - forward: `x_proj = x·W + b_in` for all timesteps (one GEMM + bias, see
//!   [`Gpu::rnn_input_projection`] and [`Gpu::gru_bias_rows`]), then [`Gpu::gru_forward`]
//!   runs every timestep in one dispatch (a workgroup owns whole sequences);
//! - backward: [`Gpu::gru_backward`] walks time backwards in one dispatch and returns the
//!   gradients wrt `x_proj` and wrt the recurrent pre-activation `h·U + b_rec` of every step;
//!   [`Gpu::gru_weight_grads`] turns them into dx, dW, dU and dbias with GEMMs.
//!
//! Masking as the LSTM's ([`RnnMask`]). Not supported: `resetAfter: false`, `goBackwards`
//! (reverse the input and the mask instead).

use super::rnn::{expect_shape, mask_flags, seqs_per_group, shape_err, units_of, RnnActivations, RnnMask};
use super::u32_of;
use crate::context::grid;
use crate::{DType, Gpu, GpuError, GpuTensor, Result};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    batch: u32,
    steps: u32,
    units: u32,
    seqs: u32,
    has_dh_seq: u32,
    has_dh_last: u32,
    has_mask: u32,
    zero_masked: u32,
    act: u32,
    rec_act: u32,
    act_alpha: f32,
    rec_alpha: f32,
}

/// What the GRU backward pass needs from the forward pass.
#[derive(Debug)]
pub struct GruSaved {
    /// `[batch, time, 4u]`: pre-activations of z, r, hh, then the recurrent candidate term
    /// `(h·U + b_rec)_h` that the reset gate scaled.
    pub gates: GpuTensor,
    /// `[batch, time, u]`: the hidden state entering each step (h0 at step 0).
    pub h_prev: GpuTensor,
    /// The mask the forward pass ran with.
    pub mask: Option<RnnMask>,
    /// The activations the forward pass ran with.
    pub activations: RnnActivations,
}

/// Outputs of [`Gpu::gru_forward`].
#[derive(Debug)]
pub struct GruForward {
    /// `[batch, time, u]`: every hidden state (Keras `returnSequences: true`).
    pub h_seq: GpuTensor,
    /// `[batch, u]`: the last hidden state (Keras `returnSequences: false`).
    pub h_last: GpuTensor,
    /// State for [`Gpu::gru_backward`] and [`Gpu::gru_weight_grads`].
    pub saved: GruSaved,
}

/// Outputs of [`Gpu::gru_backward`].
#[derive(Debug)]
pub struct GruBackward {
    /// `[batch, time, 3u]`: gradient wrt `x_proj` (the input projection plus input bias).
    pub d_proj: GpuTensor,
    /// `[batch, time, 3u]`: gradient wrt the recurrent pre-activation `h·U + b_rec`.
    pub d_rec: GpuTensor,
    /// `[batch, u]`: gradient wrt the initial hidden state.
    pub dh0: GpuTensor,
}

/// Parameter and input gradients of [`Gpu::gru_weight_grads`].
#[derive(Debug)]
pub struct GruGrads {
    /// `[batch, time, in]`: gradient wrt the layer input.
    pub dx: GpuTensor,
    /// `[in, 3u]`: gradient wrt the kernel W.
    pub dw: GpuTensor,
    /// `[u, 3u]`: gradient wrt the recurrent kernel U.
    pub du: GpuTensor,
    /// `[2, 3u]`: gradient wrt the bias (input row, recurrent row).
    pub dbias: GpuTensor,
}

/// Units of a recurrent kernel `[u, 3u]`.
/// Sequences per recurrence workgroup (the LSTM's rule, see
/// [`super::rnn::lstm_seqs_per_group`]); the backward pass keeps `3 * pairs` gradients in
/// workgroup memory (12 KiB at the 1024-pair limit).
fn gru_seqs(units: usize) -> Result<usize> {
    seqs_per_group("GRU units (one workgroup holds a whole sequence)", units)
}

/// `[rows_out, cols]` copied from rows `first..first + rows_out` of a contiguous `[.., cols]`
/// tensor (a buffer copy, no kernel).
fn copy_rows(gpu: &Gpu, src: &GpuTensor, first: usize, shape: &[usize]) -> Result<GpuTensor> {
    let out = gpu.empty(shape, DType::F32)?;
    let bytes = out.len() as u64 * 4;
    if bytes > 0 {
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(src.buffer(), (first * out.len()) as u64 * 4, out.buffer(), 0, bytes);
        gpu.submit_commands(enc.finish(), Vec::new(), Vec::new());
    }
    Ok(out)
}

impl Gpu {
    /// Splits a Keras GRU bias `[2, 3u]` into its input row (for
    /// [`Gpu::rnn_input_projection`]) and recurrent row (for [`Gpu::gru_forward`]), each `[3u]`.
    pub fn gru_bias_rows(&self, bias: &GpuTensor) -> Result<(GpuTensor, GpuTensor)> {
        bias.expect_f32("gru_bias_rows")?;
        let &[2, g] = bias.shape() else {
            return Err(shape_err("gru_bias_rows", "bias [2, 3u]".into(), bias));
        };
        Ok((copy_rows(self, bias, 0, &[g])?, copy_rows(self, bias, 1, &[g])?))
    }

    /// Runs the GRU recurrence over all timesteps in one dispatch.
    ///
    /// `x_proj` is `[batch, time, 3u]` (the input projection plus input bias, see
    /// [`Gpu::rnn_input_projection`]), `recurrent` is U `[u, 3u]`, `recurrent_bias` the
    /// recurrent bias row `[3u]`, `h0` is `[batch, u]` (zeros when `None`). Needs `u <= 1024`.
    pub fn gru_forward(
        &self,
        x_proj: &GpuTensor,
        recurrent: &GpuTensor,
        recurrent_bias: &GpuTensor,
        h0: Option<&GpuTensor>,
    ) -> Result<GruForward> {
        self.gru_forward_masked(x_proj, recurrent, recurrent_bias, h0, None)
    }

    /// [`Gpu::gru_forward`] with an optional Keras mask `[batch, time]` (see [`RnnMask`]);
    /// [`Gpu::gru_backward`] reads it back from the saved state.
    pub fn gru_forward_masked(
        &self,
        x_proj: &GpuTensor,
        recurrent: &GpuTensor,
        recurrent_bias: &GpuTensor,
        h0: Option<&GpuTensor>,
        mask: Option<&RnnMask>,
    ) -> Result<GruForward> {
        self.gru_forward_with(x_proj, recurrent, recurrent_bias, h0, mask, RnnActivations::default())
    }

    /// [`Gpu::gru_forward_masked`] with the cell's activations (tanh / sigmoid by default);
    /// [`Gpu::gru_backward`] reads them back from the saved state.
    pub fn gru_forward_with(
        &self,
        x_proj: &GpuTensor,
        recurrent: &GpuTensor,
        recurrent_bias: &GpuTensor,
        h0: Option<&GpuTensor>,
        mask: Option<&RnnMask>,
        activations: RnnActivations,
    ) -> Result<GruForward> {
        let op = "gru_forward";
        let u = units_of(op, recurrent, 3)?;
        x_proj.expect_f32(op)?;
        let &[batch, steps, g] = x_proj.shape() else {
            return Err(shape_err(op, format!("x_proj [batch, time, {}]", 3 * u), x_proj));
        };
        if g != 3 * u {
            return Err(shape_err(op, format!("x_proj [batch, time, {}]", 3 * u), x_proj));
        }
        if batch == 0 || steps == 0 {
            return Err(GpuError::Invalid {
                op,
                message: format!("empty input {:?}", x_proj.shape()),
            });
        }
        expect_shape(op, "recurrent bias", recurrent_bias, &[3 * u])?;
        let seqs = gru_seqs(u)?;
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
        let h_seq = self.empty(&[batch, steps, u], DType::F32)?;
        let h_prev = self.empty(&[batch, steps, u], DType::F32)?;
        let h_last = self.empty(&[batch, u], DType::F32)?;
        let gates = self.empty(&[batch, steps, 4 * u], DType::F32)?;
        // Element offsets inside the shader are u32.
        u32_of("GRU saved elements", batch * steps * 4 * u)?;
        let (act, rec_act, act_alpha, rec_alpha) = activations.fields();
        let p = Params {
            batch: u32_of("batch", batch)?,
            steps: u32_of("time steps", steps)?,
            units: u32_of("units", u)?,
            seqs: seqs as u32,
            has_dh_seq: 0,
            has_dh_last: 0,
            has_mask,
            zero_masked,
            act,
            rec_act,
            act_alpha,
            rec_alpha,
        };
        let (gx, gy) = grid(u32_of("workgroups", batch.div_ceil(seqs))?);
        let mut pass = self.batch();
        let bufs = [
            (1, x_proj.buffer()),
            (2, recurrent.buffer()),
            (3, recurrent_bias.buffer()),
            (4, h0.buffer()),
            (5, gates.buffer()),
            (6, h_seq.buffer()),
            (7, h_prev.buffer()),
            (8, h_last.buffer()),
            // Without a mask (never read then) the recurrent kernel stands in for the binding.
            (14, mask.map_or(recurrent, |m| &m.mask).buffer()),
        ];
        pass.dispatch("gru", "gru_forward", &p, &bufs, (gx, gy, 1))?;
        pass.submit()?;
        Ok(GruForward {
            h_seq,
            h_last,
            saved: GruSaved {
                gates,
                h_prev,
                mask: mask.cloned(),
                activations,
            },
        })
    }

    /// Backpropagation through time of [`Gpu::gru_forward`] in one dispatch.
    ///
    /// `dh_seq` (`[batch, time, u]`, the gradient wrt `h_seq`) and `dh_last` (`[batch, u]`,
    /// wrt `h_last`) are both optional and add up; at least one must be given.
    pub fn gru_backward(
        &self,
        saved: &GruSaved,
        recurrent: &GpuTensor,
        dh_seq: Option<&GpuTensor>,
        dh_last: Option<&GpuTensor>,
    ) -> Result<GruBackward> {
        let op = "gru_backward";
        let u = units_of(op, recurrent, 3)?;
        saved.gates.expect_f32(op)?;
        let &[batch, steps, g4] = saved.gates.shape() else {
            return Err(shape_err(op, "saved gates [batch, time, 4u]".into(), &saved.gates));
        };
        if g4 != 4 * u || batch == 0 || steps == 0 {
            return Err(shape_err(
                op,
                format!("saved gates [batch, time, {}]", 4 * u),
                &saved.gates,
            ));
        }
        expect_shape(op, "saved h_prev", &saved.h_prev, &[batch, steps, u])?;
        if let Some(d) = dh_seq {
            expect_shape(op, "dh_seq", d, &[batch, steps, u])?;
        }
        if let Some(d) = dh_last {
            expect_shape(op, "dh_last", d, &[batch, u])?;
        }
        if dh_seq.is_none() && dh_last.is_none() {
            return Err(GpuError::Invalid {
                op,
                message: "neither dh_seq nor dh_last given".into(),
            });
        }
        let seqs = gru_seqs(u)?;
        let (has_mask, zero_masked) = mask_flags(op, saved.mask.as_ref(), batch, steps)?;
        let ut = self.transpose2d(recurrent)?;
        // Unused bindings still need a buffer.
        let dummy = self.empty(&[1], DType::F32)?;
        let d_proj = self.empty(&[batch, steps, 3 * u], DType::F32)?;
        let d_rec = self.empty(&[batch, steps, 3 * u], DType::F32)?;
        let dh0 = self.empty(&[batch, u], DType::F32)?;
        let (act, rec_act, act_alpha, rec_alpha) = saved.activations.fields();
        let p = Params {
            batch: u32_of("batch", batch)?,
            steps: u32_of("time steps", steps)?,
            units: u32_of("units", u)?,
            seqs: seqs as u32,
            has_dh_seq: dh_seq.is_some() as u32,
            has_dh_last: dh_last.is_some() as u32,
            has_mask,
            zero_masked,
            act,
            rec_act,
            act_alpha,
            rec_alpha,
        };
        let (gx, gy) = grid(u32_of("workgroups", batch.div_ceil(seqs))?);
        let mut pass = self.batch();
        let bufs = [
            (2, ut.buffer()),
            (5, saved.gates.buffer()),
            (7, saved.h_prev.buffer()),
            (9, dh_seq.unwrap_or(&dummy).buffer()),
            (10, dh_last.unwrap_or(&dummy).buffer()),
            (11, d_proj.buffer()),
            (12, d_rec.buffer()),
            (13, dh0.buffer()),
            (14, saved.mask.as_ref().map_or(&dummy, |m| &m.mask).buffer()),
        ];
        pass.dispatch("gru", "gru_backward", &p, &bufs, (gx, gy, 1))?;
        pass.submit()?;
        Ok(GruBackward { d_proj, d_rec, dh0 })
    }

    /// Gradients wrt the layer input and parameters from [`Gpu::gru_backward`]'s outputs:
    /// `dx = dP·Wᵀ`, `dW = xᵀ·dP`, `dU = h_prevᵀ·dR`, and `dbias = [1ᵀ·dP; 1ᵀ·dR]` (GEMMs over
    /// batch·time; `dP` = `d_proj`, `dR` = `d_rec`). `x` is `[batch, time, in]`, `w` `[in, 3u]`.
    pub fn gru_weight_grads(
        &self,
        x: &GpuTensor,
        w: &GpuTensor,
        saved: &GruSaved,
        d_proj: &GpuTensor,
        d_rec: &GpuTensor,
    ) -> Result<GruGrads> {
        let op = "gru_weight_grads";
        let &[batch, steps, g] = d_proj.shape() else {
            return Err(shape_err(op, "d_proj [batch, time, 3u]".into(), d_proj));
        };
        if g == 0 || !g.is_multiple_of(3) {
            return Err(shape_err(op, "d_proj [batch, time, 3u]".into(), d_proj));
        }
        let u = g / 3;
        let &[_, _, i] = x.shape() else {
            return Err(shape_err(op, format!("x [{batch}, {steps}, in]"), x));
        };
        expect_shape(op, "x", x, &[batch, steps, i])?;
        expect_shape(op, "kernel", w, &[i, g])?;
        expect_shape(op, "d_rec", d_rec, &[batch, steps, g])?;
        expect_shape(op, "saved h_prev", &saved.h_prev, &[batch, steps, u])?;
        let (dx, dw) = self.rnn_input_grads(x, w, d_proj)?;
        let du = self.rnn_gemm(&saved.h_prev, d_rec, [u, g, batch * steps], true)?;
        let d_in = self.rnn_column_sums(d_proj)?;
        let d_rb = self.rnn_column_sums(d_rec)?;
        // Stack the two [3u] rows into Keras' [2, 3u] bias layout with buffer copies.
        let dbias = self.empty(&[2, g], DType::F32)?;
        let bytes = g as u64 * 4;
        let mut enc = self.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(d_in.buffer(), 0, dbias.buffer(), 0, bytes);
        enc.copy_buffer_to_buffer(d_rb.buffer(), 0, dbias.buffer(), bytes, bytes);
        self.submit_commands(enc.finish(), Vec::new(), Vec::new());
        Ok(GruGrads { dx, dw, du, dbias })
    }
}
