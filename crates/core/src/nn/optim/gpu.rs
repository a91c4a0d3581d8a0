//! Optimizer updates of GPU weights on the device (cortex-wgpu's in-place update kernels),
//! shared by the GPU model planner (`nn/gpu_model`) and weights moved with `Model::to_device`.

use cortex_wgpu::{AdamParams, Gpu, GpuTensor, LambParams, LionParams, RmsPropParams, SgdParams};

use super::{Optimizer, Rule};
use crate::device::{gpu_err, shared_gpu};
use crate::{Error, Result};

/// One update of the weight buffer `w` from `grad`, in place; `slots` (the rule's state, made
/// on first use) live on the device too. `step` is the 1-based step (Adam's bias correction).
pub(crate) fn update_buffers(
    gpu: &Gpu,
    rule: &Rule,
    lr: f32,
    step: u32,
    w: &mut GpuTensor,
    grad: &GpuTensor,
    slots: &mut Vec<GpuTensor>,
) -> Result<()> {
    match *rule {
        Rule::Sgd { momentum, nesterov } => {
            if momentum != 0.0 && slots.is_empty() {
                slots.push(gpu.zeros(w.shape()).map_err(gpu_err)?);
            }
            let hp = SgdParams { lr, momentum, nesterov };
            gpu.sgd_update(w, grad, slots.first_mut(), &hp).map_err(gpu_err)
        }
        Rule::Adam {
            beta1,
            beta2,
            epsilon,
            weight_decay,
        } => {
            // AdamW: the decoupled decay p -= lr * wd * p comes before the Adam step.
            if weight_decay > 0.0 {
                *w = gpu.scale(w, 1.0 - lr * weight_decay, 0.0).map_err(gpu_err)?;
            }
            if slots.is_empty() {
                slots.push(gpu.zeros(w.shape()).map_err(gpu_err)?);
                slots.push(gpu.zeros(w.shape()).map_err(gpu_err)?);
            }
            let (m, v) = slots.split_at_mut(1);
            let hp = AdamParams {
                lr,
                beta1,
                beta2,
                epsilon,
                step,
            };
            gpu.adam_update(w, grad, &mut m[0], &mut v[0], &hp).map_err(gpu_err)
        }
        Rule::RmsProp { rho, epsilon } => {
            if slots.is_empty() {
                slots.push(gpu.zeros(w.shape()).map_err(gpu_err)?);
            }
            let hp = RmsPropParams { lr, rho, epsilon };
            gpu.rmsprop_update(w, grad, &mut slots[0], &hp).map_err(gpu_err)
        }
        Rule::Lion { beta1, beta2 } => {
            if slots.is_empty() {
                slots.push(gpu.zeros(w.shape()).map_err(gpu_err)?);
            }
            let hp = LionParams { lr, beta1, beta2 };
            gpu.lion_update(w, grad, &mut slots[0], &hp).map_err(gpu_err)
        }
        Rule::Lamb { beta1, beta2, epsilon } => {
            if slots.is_empty() {
                slots.push(gpu.zeros(w.shape()).map_err(gpu_err)?);
                slots.push(gpu.zeros(w.shape()).map_err(gpu_err)?);
            }
            let (m, v) = slots.split_at_mut(1);
            let hp = LambParams {
                lr,
                beta1,
                beta2,
                epsilon,
                step,
            };
            gpu.lamb_update(w, grad, &mut m[0], &mut v[0], &hp).map_err(gpu_err)
        }
    }
}

impl Optimizer {
    /// Updates parameter number `index`, a GPU buffer, in place from its GPU gradient; call
    /// after [`Self::begin_step`]. The rule's state for it lives on the device.
    pub fn update_on_device(&mut self, index: usize, w: &mut GpuTensor, grad: &GpuTensor) -> Result<()> {
        if w.len() != grad.len() {
            return Err(Error::shape("optimizer update", w.len(), grad.len()));
        }
        if self.device_slots.len() <= index {
            self.device_slots.resize(index + 1, Vec::new());
        }
        // Host slots (restored from a checkpoint, or from host updates) move to the device once.
        if let Some(host) = self.slots.get_mut(index).filter(|s| !s.is_empty()) {
            if self.device_slots[index].is_empty() {
                let gpu = shared_gpu()?;
                self.device_slots[index] = host
                    .iter()
                    .map(|s| gpu.upload(s, w.shape()).map_err(gpu_err))
                    .collect::<Result<_>>()?;
            }
            host.clear();
        }
        let step = self.iterations.clamp(1, u32::MAX as u64) as u32;
        let gpu = shared_gpu()?;
        update_buffers(
            &gpu,
            &self.rule,
            self.learning_rate,
            step,
            w,
            grad,
            &mut self.device_slots[index],
        )?;
        if let Some(momentum) = self.ema_momentum {
            self.update_device_ema(&gpu, index, w, momentum)?;
        }
        Ok(())
    }

    /// The `useEma` average of a GPU weight, on the device: `a = m a + (1 - m) w` after each
    /// update, starting at the weights after the first (as Keras and the host update do).
    fn update_device_ema(&mut self, gpu: &Gpu, index: usize, w: &GpuTensor, momentum: f32) -> Result<()> {
        if self.device_ema.len() <= index {
            self.device_ema.resize(index + 1, None);
        }
        // A host average (restored, or from host updates) moves to the device once.
        if let Some(host) = self.ema.get_mut(index).filter(|a| !a.is_empty()) {
            if self.device_ema[index].is_none() {
                self.device_ema[index] = Some(gpu.upload(host, w.shape()).map_err(gpu_err)?);
            }
            host.clear();
        }
        let next = match &self.device_ema[index] {
            None => gpu.scale(w, 1.0, 0.0),
            Some(average) => gpu
                .scale(average, momentum, 0.0)
                .and_then(|a| gpu.scale(w, 1.0 - momentum, 0.0).and_then(|w| gpu.add(&a, &w))),
        };
        self.device_ema[index] = Some(next.map_err(gpu_err)?);
        Ok(())
    }
}
