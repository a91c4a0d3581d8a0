//! Recurrent layers (LSTM, GRU, SimpleRNN) on GPU tensors: the planner's sequence kernels
//! (`nn/gpu_model/sequence.rs`: one input-projection GEMM, the whole recurrence in one
//! dispatch each way) behind the layer code, recorded with a device backward pass.

use std::sync::Mutex;

use cortex_wgpu::{GpuTensor, RnnActivations};

use super::gpu::{buf, gpu_activation, grad};
use crate::backprop::{GpuCustomOp, Op};
use crate::cpu::elementwise::Activation;
use crate::cpu::rnn::Cell;
use crate::device::{gpu_err, shared_gpu};
use crate::nn::gpu_model::sequence::{Cell as GpuCell, RnnPlan, RnnTape};
use crate::{Error, Result, Tensor};

/// The weights and options of one recurrent layer call.
pub(crate) struct RnnCall<'a> {
    pub cell: Cell,
    pub kernel: &'a Tensor,
    pub recurrent: &'a Tensor,
    pub bias: Option<&'a Tensor>,
    pub return_sequences: bool,
    pub go_backwards: bool,
    /// Inside Bidirectional: the sequence comes back in input order, masked steps as zeros.
    pub input_order: bool,
    /// None, or the initial h and (LSTM) c, each `[batch, u]`.
    pub states: &'a [Tensor],
    /// Keras `returnState`: the final h and (LSTM) c follow the output.
    pub return_state: bool,
    /// Keras `activation` and `recurrentActivation`.
    pub activation: Activation,
    pub recurrent_activation: Activation,
}

/// Runs the layer on `x` `[batch, time, in]` (and its `[batch, time]` mask) on the GPU: the
/// output, then with `return_state` the final states, packed flat into one tensor as on the
/// CPU (the layer splits it with [`super::split`]); without, the output alone.
pub(crate) fn run(call: &RnnCall, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    let cell = match call.cell {
        Cell::Lstm => GpuCell::Lstm,
        Cell::Gru => GpuCell::Gru,
        Cell::SimpleRnn => GpuCell::SimpleRnn,
    };
    let activations = RnnActivations::new(
        gpu_activation(call.activation),
        gpu_activation(call.recurrent_activation),
    )
    .map_err(gpu_err)?;
    let plan = RnnPlan::for_layer(
        cell,
        call.bias.is_some(),
        call.return_sequences,
        call.go_backwards,
        activations,
    );
    let mut weights = vec![buf(call.kernel)?, buf(call.recurrent)?];
    weights.extend(call.bias.map(buf).transpose()?);
    let initial = call.states.iter().map(buf).collect::<Result<Vec<_>>>()?;
    let mask = match mask {
        Some(m) => Some(buf(&m.to(crate::Device::Gpu)?)?),
        None => None,
    };
    let gpu = shared_gpu()?;
    let mut inputs = vec![x, call.kernel, call.recurrent];
    inputs.extend(call.bias);
    inputs.extend(call.states);
    let keep = Tensor::records(&inputs);
    let out = plan.forward_with_states(
        &gpu,
        &weights,
        buf(x)?,
        &initial,
        call.return_state,
        mask.as_ref(),
        keep,
        call.input_order,
    )?;
    let pieces: Vec<Vec<usize>> = std::iter::once(&out.y)
        .chain(&out.states)
        .map(|t| t.shape().to_vec())
        .collect();
    let (y, shape) = if out.states.is_empty() {
        let shape = out.y.shape().to_vec();
        (out.y, shape)
    } else {
        let flat = std::iter::once(&out.y)
            .chain(&out.states)
            .map(|t| t.clone().reshape(&[1, t.len()]))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(gpu_err)?;
        let refs: Vec<&GpuTensor> = flat.iter().collect();
        let packed = gpu.concat_last(&refs).map_err(gpu_err)?;
        let total = packed.len();
        (packed.reshape(&[total]).map_err(gpu_err)?, vec![total])
    };
    Ok(Tensor::from_gpu_op(
        y,
        shape,
        |_| {
            Op::GpuCustom(Box::new(RnnBackward {
                plan,
                weights,
                tape: Mutex::new(out.tape),
                pieces,
                x: x.clone(),
                kernel: call.kernel.clone(),
                recurrent: call.recurrent.clone(),
                bias: call.bias.cloned(),
                states: call.states.to_vec(),
            }))
        },
        &inputs,
    ))
}

struct RnnBackward {
    plan: RnnPlan,
    weights: Vec<GpuTensor>,
    /// Taken by the one backward pass the sequence kernels' saved state allows.
    tape: Mutex<Option<RnnTape>>,
    /// Shapes of the output and the returned states, packed flat in that order when more
    /// than one.
    pieces: Vec<Vec<usize>>,
    x: Tensor,
    kernel: Tensor,
    recurrent: Tensor,
    bias: Option<Tensor>,
    /// The initial states, when given.
    states: Vec<Tensor>,
}

impl GpuCustomOp for RnnBackward {
    fn name(&self) -> &'static str {
        "recurrent layer"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        let mut v = vec![&self.x, &self.kernel, &self.recurrent];
        v.extend(self.bias.iter().chain(&self.states));
        v
    }
    fn vjp(&self, dy: &GpuTensor) -> Result<Vec<(Tensor, Tensor)>> {
        let tape = self
            .tape
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or_else(|| {
                Error::Invalid(
                    "backward: a recurrent layer on the GPU keeps its saved state for one backward pass; \
                     run the forward computation again"
                        .into(),
                )
            })?;
        let gpu = shared_gpu()?;
        // The packed gradient, cut back into the output's and each returned state's.
        let mut parts = Vec::with_capacity(self.pieces.len());
        if self.pieces.len() == 1 {
            parts.push(dy.clone());
        } else {
            let row = dy.clone().reshape(&[1, dy.len()]).map_err(gpu_err)?;
            let mut start = 0;
            for shape in &self.pieces {
                let n: usize = shape.iter().product();
                let part = gpu.slice_last(&row, start, n).and_then(|p| p.reshape(shape));
                parts.push(part.map_err(gpu_err)?);
                start += n;
            }
        }
        let dy = parts.remove(0);
        let mut grads = vec![None; self.weights.len()];
        let (dx, d_initial) = self
            .plan
            .backward_with_states(&gpu, &self.weights, tape, dy, &parts, &mut grads)?;
        let mut v = vec![(self.x.clone(), grad(dx))];
        let params = [Some(&self.kernel), Some(&self.recurrent), self.bias.as_ref()];
        for (t, g) in params.into_iter().flatten().zip(grads) {
            let g = g.ok_or_else(|| Error::Invalid("a recurrent weight got no gradient".into()))?;
            v.push((t.clone(), grad(g.reshape(t.shape()).map_err(gpu_err)?)));
        }
        for (t, g) in self.states.iter().zip(d_initial) {
            if t.tracks() {
                v.push((t.clone(), grad(g)));
            }
        }
        Ok(v)
    }
}
