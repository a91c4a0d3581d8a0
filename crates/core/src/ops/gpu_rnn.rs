//! Recurrent layers (LSTM, GRU, SimpleRNN) on GPU tensors: the planner's sequence kernels
//! (`nn/gpu_model/sequence.rs`: one input-projection GEMM, the whole recurrence in one
//! dispatch each way) behind the layer code, recorded with a device backward pass.

use std::sync::Mutex;

use cortex_wgpu::GpuTensor;

use super::gpu::{buf, grad};
use crate::backprop::{GpuCustomOp, Op};
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
}

/// Runs the layer on `x` `[batch, time, in]` (and its `[batch, time]` mask) on the GPU.
pub(crate) fn run(call: &RnnCall, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    let cell = match call.cell {
        Cell::Lstm => GpuCell::Lstm,
        Cell::Gru => GpuCell::Gru,
        Cell::SimpleRnn => GpuCell::SimpleRnn,
    };
    let plan = RnnPlan::for_layer(cell, call.bias.is_some(), call.return_sequences, call.go_backwards);
    let mut weights = vec![buf(call.kernel)?, buf(call.recurrent)?];
    weights.extend(call.bias.map(buf).transpose()?);
    let mask = match mask {
        Some(m) => Some(buf(&m.to(crate::Device::Gpu)?)?),
        None => None,
    };
    let gpu = shared_gpu()?;
    let mut inputs = vec![x, call.kernel, call.recurrent];
    inputs.extend(call.bias);
    let keep = Tensor::records(&inputs);
    let (y, tape) = plan.forward(&gpu, &weights, buf(x)?, mask.as_ref(), keep, call.input_order)?;
    let shape = y.shape().to_vec();
    Ok(Tensor::from_gpu_op(
        y,
        shape,
        |_| {
            Op::GpuCustom(Box::new(RnnBackward {
                plan,
                weights,
                tape: Mutex::new(tape),
                x: x.clone(),
                kernel: call.kernel.clone(),
                recurrent: call.recurrent.clone(),
                bias: call.bias.cloned(),
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
    x: Tensor,
    kernel: Tensor,
    recurrent: Tensor,
    bias: Option<Tensor>,
}

impl GpuCustomOp for RnnBackward {
    fn name(&self) -> &'static str {
        "recurrent layer"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        let mut v = vec![&self.x, &self.kernel, &self.recurrent];
        v.extend(self.bias.iter());
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
        let mut grads = vec![None; self.weights.len()];
        let dx = self.plan.backward(&gpu, &self.weights, tape, dy.clone(), &mut grads)?;
        let mut v = vec![(self.x.clone(), grad(dx))];
        let params = [Some(&self.kernel), Some(&self.recurrent), self.bias.as_ref()];
        for (t, g) in params.into_iter().flatten().zip(grads) {
            let g = g.ok_or_else(|| Error::Invalid("a recurrent weight got no gradient".into()))?;
            v.push((t.clone(), grad(g.reshape(t.shape()).map_err(gpu_err)?)));
        }
        Ok(v)
    }
}
