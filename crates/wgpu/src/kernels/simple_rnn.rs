//! SimpleRNN recurrence forward and backward through time (shader `simple_rnn`).
//!
//! Keras layout and math: input `[batch, time, in]`, kernel W `[in, u]`, recurrent kernel
//! U `[u, u]`, bias `[u]`, activation tanh (the Keras default; others are not supported):
//! `h' = tanh(x·W + b + h·U)`.
//!
//! The work splits like the LSTM's ([`super::rnn`]): `x_proj = x·W + b` for all timesteps
//! ([`Gpu::rnn_input_projection`]), [`Gpu::simple_rnn_forward`] and
//! [`Gpu::simple_rnn_backward`] run the recurrence in one dispatch each, and
//! [`Gpu::simple_rnn_weight_grads`] turns the pre-activation gradients into dx, dW, dU and
//! dbias with GEMMs.
//!
//! Masking as the LSTM's ([`RnnMask`]). Not supported: `goBackwards` (reverse the input and
//! the mask instead).

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

/// What the SimpleRNN backward pass needs from the forward pass.
#[derive(Debug)]
pub struct SimpleRnnSaved {
    /// `[batch, time, u]`: each step's pre-activation `x_proj + h_prev·U` (the activation's
    /// derivative is taken from it; zeros at masked steps).
    pub pre: GpuTensor,
    /// `[batch, time, u]`: the hidden state entering each step (h0 at step 0).
    pub h_prev: GpuTensor,
    /// The mask the forward pass ran with.
    pub mask: Option<RnnMask>,
    /// The activations the forward pass ran with.
    pub activations: RnnActivations,
}

/// Outputs of [`Gpu::simple_rnn_forward`].
#[derive(Debug)]
pub struct SimpleRnnForward {
    /// `[batch, time, u]`: every hidden state (Keras `returnSequences: true`).
    pub h_seq: GpuTensor,
    /// `[batch, u]`: the last hidden state (Keras `returnSequences: false`).
    pub h_last: GpuTensor,
    /// State for [`Gpu::simple_rnn_backward`] and [`Gpu::simple_rnn_weight_grads`].
    pub saved: SimpleRnnSaved,
}

/// Outputs of [`Gpu::simple_rnn_backward`].
#[derive(Debug)]
pub struct SimpleRnnBackward {
    /// `[batch, time, u]`: gradient wrt the pre-activation `x_proj + h·U` (= wrt `x_proj`).
    pub d_pre: GpuTensor,
    /// `[batch, u]`: gradient wrt the initial hidden state.
    pub dh0: GpuTensor,
}

/// Parameter and input gradients of [`Gpu::simple_rnn_weight_grads`].
#[derive(Debug)]
pub struct SimpleRnnGrads {
    /// `[batch, time, in]`: gradient wrt the layer input.
    pub dx: GpuTensor,
    /// `[in, u]`: gradient wrt the kernel W.
    pub dw: GpuTensor,
    /// `[u, u]`: gradient wrt the recurrent kernel U.
    pub du: GpuTensor,
    /// `[u]`: gradient wrt the bias.
    pub dbias: GpuTensor,
}

/// Units of a recurrent kernel `[u, u]`.
/// Sequences per recurrence workgroup (the LSTM's rule, see
/// [`super::rnn::lstm_seqs_per_group`]).
fn simple_seqs(units: usize) -> Result<usize> {
    seqs_per_group("SimpleRNN units (one workgroup holds a whole sequence)", units)
}

impl Gpu {
    /// Runs the SimpleRNN recurrence over all timesteps in one dispatch.
    ///
    /// `x_proj` is `[batch, time, u]` (the input projection plus bias, see
    /// [`Gpu::rnn_input_projection`]), `recurrent` is U `[u, u]`, `h0` is `[batch, u]` (zeros
    /// when `None`). Needs `u <= 1024`.
    pub fn simple_rnn_forward(
        &self,
        x_proj: &GpuTensor,
        recurrent: &GpuTensor,
        h0: Option<&GpuTensor>,
    ) -> Result<SimpleRnnForward> {
        self.simple_rnn_forward_masked(x_proj, recurrent, h0, None)
    }

    /// [`Gpu::simple_rnn_forward`] with an optional Keras mask `[batch, time]` (see
    /// [`RnnMask`]); [`Gpu::simple_rnn_backward`] reads it back from the saved state.
    pub fn simple_rnn_forward_masked(
        &self,
        x_proj: &GpuTensor,
        recurrent: &GpuTensor,
        h0: Option<&GpuTensor>,
        mask: Option<&RnnMask>,
    ) -> Result<SimpleRnnForward> {
        self.simple_rnn_forward_with(x_proj, recurrent, h0, mask, RnnActivations::default())
    }

    /// [`Gpu::simple_rnn_forward_masked`] with the cell's activations (tanh / sigmoid by default);
    /// [`Gpu::simple_rnn_backward`] reads them back from the saved state.
    pub fn simple_rnn_forward_with(
        &self,
        x_proj: &GpuTensor,
        recurrent: &GpuTensor,
        h0: Option<&GpuTensor>,
        mask: Option<&RnnMask>,
        activations: RnnActivations,
    ) -> Result<SimpleRnnForward> {
        let op = "simple_rnn_forward";
        let u = units_of(op, recurrent, 1)?;
        x_proj.expect_f32(op)?;
        let &[batch, steps, g] = x_proj.shape() else {
            return Err(shape_err(op, format!("x_proj [batch, time, {u}]"), x_proj));
        };
        if g != u {
            return Err(shape_err(op, format!("x_proj [batch, time, {u}]"), x_proj));
        }
        if batch == 0 || steps == 0 {
            return Err(GpuError::Invalid {
                op,
                message: format!("empty input {:?}", x_proj.shape()),
            });
        }
        let seqs = simple_seqs(u)?;
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
        let pre = self.empty(&[batch, steps, u], DType::F32)?;
        let h_prev = self.empty(&[batch, steps, u], DType::F32)?;
        let h_last = self.empty(&[batch, u], DType::F32)?;
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
        // Element offsets inside the shader are u32.
        u32_of("SimpleRNN state elements", batch * steps * u)?;
        let (gx, gy) = grid(u32_of("workgroups", batch.div_ceil(seqs))?);
        let mut pass = self.batch();
        let bufs = [
            (1, x_proj.buffer()),
            (2, recurrent.buffer()),
            (4, h0.buffer()),
            (5, pre.buffer()),
            (6, h_seq.buffer()),
            (7, h_prev.buffer()),
            (8, h_last.buffer()),
            // Without a mask (never read then) the recurrent kernel stands in for the binding.
            (14, mask.map_or(recurrent, |m| &m.mask).buffer()),
        ];
        pass.dispatch("simple_rnn", "simple_rnn_forward", &p, &bufs, (gx, gy, 1))?;
        pass.submit()?;
        Ok(SimpleRnnForward {
            saved: SimpleRnnSaved {
                pre,
                h_prev,
                mask: mask.cloned(),
                activations,
            },
            h_seq,
            h_last,
        })
    }

    /// Backpropagation through time of [`Gpu::simple_rnn_forward`] in one dispatch.
    ///
    /// `dh_seq` (`[batch, time, u]`, the gradient wrt `h_seq`) and `dh_last` (`[batch, u]`,
    /// wrt `h_last`) are both optional and add up; at least one must be given.
    pub fn simple_rnn_backward(
        &self,
        saved: &SimpleRnnSaved,
        recurrent: &GpuTensor,
        dh_seq: Option<&GpuTensor>,
        dh_last: Option<&GpuTensor>,
    ) -> Result<SimpleRnnBackward> {
        let op = "simple_rnn_backward";
        let u = units_of(op, recurrent, 1)?;
        saved.pre.expect_f32(op)?;
        let &[batch, steps, g] = saved.pre.shape() else {
            return Err(shape_err(
                op,
                "saved pre-activations [batch, time, u]".into(),
                &saved.pre,
            ));
        };
        if g != u || batch == 0 || steps == 0 {
            return Err(shape_err(
                op,
                format!("saved pre-activations [batch, time, {u}]"),
                &saved.pre,
            ));
        }
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
        let seqs = simple_seqs(u)?;
        let (has_mask, zero_masked) = mask_flags(op, saved.mask.as_ref(), batch, steps)?;
        let ut = self.transpose2d(recurrent)?;
        // Unused bindings still need a buffer.
        let dummy = self.empty(&[1], DType::F32)?;
        let d_pre = self.empty(&[batch, steps, u], DType::F32)?;
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
            (5, saved.pre.buffer()),
            (9, dh_seq.unwrap_or(&dummy).buffer()),
            (10, dh_last.unwrap_or(&dummy).buffer()),
            (11, d_pre.buffer()),
            (13, dh0.buffer()),
            (14, saved.mask.as_ref().map_or(&dummy, |m| &m.mask).buffer()),
        ];
        pass.dispatch("simple_rnn", "simple_rnn_backward", &p, &bufs, (gx, gy, 1))?;
        pass.submit()?;
        Ok(SimpleRnnBackward { d_pre, dh0 })
    }

    /// Gradients wrt the layer input and parameters from the pre-activation gradients of
    /// [`Gpu::simple_rnn_backward`]: `dx = dA·Wᵀ`, `dW = xᵀ·dA`, `dU = h_prevᵀ·dA` and
    /// `dbias = 1ᵀ·dA` (GEMMs over batch·time). `x` is `[batch, time, in]`, `w` is `[in, u]`.
    pub fn simple_rnn_weight_grads(
        &self,
        x: &GpuTensor,
        w: &GpuTensor,
        saved: &SimpleRnnSaved,
        d_pre: &GpuTensor,
    ) -> Result<SimpleRnnGrads> {
        let op = "simple_rnn_weight_grads";
        let &[batch, steps, u] = d_pre.shape() else {
            return Err(shape_err(op, "d_pre [batch, time, u]".into(), d_pre));
        };
        let &[_, _, i] = x.shape() else {
            return Err(shape_err(op, format!("x [{batch}, {steps}, in]"), x));
        };
        expect_shape(op, "x", x, &[batch, steps, i])?;
        expect_shape(op, "kernel", w, &[i, u])?;
        expect_shape(op, "d_pre", d_pre, &[batch, steps, u])?;
        expect_shape(op, "saved h_prev", &saved.h_prev, &[batch, steps, u])?;
        let (dx, dw) = self.rnn_input_grads(x, w, d_pre)?;
        let du = self.rnn_gemm(&saved.h_prev, d_pre, [u, u, batch * steps], true)?;
        let dbias = self.rnn_column_sums(d_pre)?;
        Ok(SimpleRnnGrads { dx, dw, du, dbias })
    }
}
