//! In-place optimizer updates on the GPU (shader `optim`): SGD with momentum, Adam, RMSprop,
//! Lion and LAMB.

use super::{expect_len, u32_of};
use crate::context::grid;
use crate::{Gpu, GpuTensor, Result};

/// SGD hyper-parameters (Keras `SGD`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdParams {
    /// Learning rate.
    pub lr: f32,
    /// Momentum (0 disables the velocity buffer).
    pub momentum: f32,
    /// Nesterov momentum.
    pub nesterov: bool,
}

/// Adam hyper-parameters and step (Keras `Adam`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamParams {
    /// Learning rate.
    pub lr: f32,
    /// First-moment decay.
    pub beta1: f32,
    /// Second-moment decay.
    pub beta2: f32,
    /// Denominator epsilon (Keras default 1e-7).
    pub epsilon: f32,
    /// 1-based step number `t` of this update (for the bias correction).
    pub step: u32,
}

/// Lion hyper-parameters (Keras `Lion`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LionParams {
    /// Learning rate.
    pub lr: f32,
    /// Interpolation of the update direction (Keras default 0.9).
    pub beta1: f32,
    /// Decay of the momentum (Keras default 0.99).
    pub beta2: f32,
}

/// LAMB hyper-parameters and step (Keras `Lamb`). The decays are f64 as in Keras, whose
/// `1 - beta` is a Python float: in f32, `1 - 0.999` is 1.3e-5 off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LambParams {
    /// Learning rate.
    pub lr: f32,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator epsilon.
    pub epsilon: f32,
    /// 1-based step number `t` of this update (for the bias corrections).
    pub step: u32,
}

/// RMSprop hyper-parameters (Keras `RMSprop` without momentum or centering).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RmsPropParams {
    /// Learning rate.
    pub lr: f32,
    /// Decay of the mean square (Keras default 0.9).
    pub rho: f32,
    /// Denominator epsilon (Keras default 1e-7).
    pub epsilon: f32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    nesterov: u32,
    pad: [u32; 2],
    lr: f32,
    momentum: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    corr2: f32,
    pad1: [f32; 2],
}

impl Gpu {
    /// One SGD step in place: `w` (and the `velocity` buffer, required when momentum != 0).
    pub fn sgd_update(
        &self,
        w: &mut GpuTensor,
        grad: &GpuTensor,
        velocity: Option<&mut GpuTensor>,
        hp: &SgdParams,
    ) -> Result<()> {
        w.expect_f32("sgd_update")?;
        expect_len("sgd_update", "grad (same size as w)", grad, w.len())?;
        let n = u32_of("parameters", w.len())?;
        let p = Params {
            n,
            nesterov: hp.nesterov as u32,
            pad: [0; 2],
            lr: hp.lr,
            momentum: hp.momentum,
            beta1: 0.0,
            beta2: 0.0,
            eps: 0.0,
            corr2: 0.0,
            pad1: [0.0; 2],
        };
        let (gx, gy) = grid(n.div_ceil(256));
        let mut batch = self.batch();
        match velocity {
            Some(v) if hp.momentum != 0.0 => {
                expect_len("sgd_update", "velocity (same size as w)", v, w.len())?;
                let bufs = [(1, grad.buffer()), (2, w.buffer()), (3, v.buffer())];
                batch.dispatch("optim", "sgd_momentum", &p, &bufs, (gx, gy, 1))?;
            }
            None if hp.momentum != 0.0 => {
                return Err(crate::GpuError::Invalid {
                    op: "sgd_update",
                    message: format!("momentum {} needs a velocity buffer", hp.momentum),
                });
            }
            _ => batch.dispatch("optim", "sgd", &p, &[(1, grad.buffer()), (2, w.buffer())], (gx, gy, 1))?,
        }
        if n > 0 {
            batch.submit()?;
        }
        Ok(())
    }

    /// One Adam step in place on `w`, `m` (first moment) and `v` (second moment).
    pub fn adam_update(
        &self,
        w: &mut GpuTensor,
        grad: &GpuTensor,
        m: &mut GpuTensor,
        v: &mut GpuTensor,
        hp: &AdamParams,
    ) -> Result<()> {
        w.expect_f32("adam_update")?;
        for (what, t) in [
            ("grad (same size as w)", grad),
            ("m (same size as w)", &*m),
            ("v (same size as w)", &*v),
        ] {
            expect_len("adam_update", what, t, w.len())?;
        }
        if hp.step == 0 {
            return Err(crate::GpuError::Invalid {
                op: "adam_update",
                message: "step is 1-based, got 0".into(),
            });
        }
        let t = hp.step as f64;
        let lr_t = hp.lr as f64 * (1.0 - (hp.beta2 as f64).powf(t)).sqrt() / (1.0 - (hp.beta1 as f64).powf(t));
        let n = u32_of("parameters", w.len())?;
        let p = Params {
            n,
            nesterov: 0,
            pad: [0; 2],
            lr: lr_t as f32,
            momentum: 0.0,
            beta1: hp.beta1,
            beta2: hp.beta2,
            eps: hp.epsilon,
            corr2: 0.0,
            pad1: [0.0; 2],
        };
        if n > 0 {
            let (gx, gy) = grid(n.div_ceil(256));
            let mut batch = self.batch();
            let bufs = [(1, grad.buffer()), (2, w.buffer()), (3, m.buffer()), (4, v.buffer())];
            batch.dispatch("optim", "adam", &p, &bufs, (gx, gy, 1))?;
            batch.submit()?;
        }
        Ok(())
    }

    /// One RMSprop step in place on `w` and `v` (the running mean square of the gradient):
    /// `v = rho v + (1 - rho) g^2; w -= lr g / (sqrt(v) + eps)`.
    pub fn rmsprop_update(
        &self,
        w: &mut GpuTensor,
        grad: &GpuTensor,
        v: &mut GpuTensor,
        hp: &RmsPropParams,
    ) -> Result<()> {
        w.expect_f32("rmsprop_update")?;
        expect_len("rmsprop_update", "grad (same size as w)", grad, w.len())?;
        expect_len("rmsprop_update", "v (same size as w)", v, w.len())?;
        let n = u32_of("parameters", w.len())?;
        let p = Params {
            n,
            nesterov: 0,
            pad: [0; 2],
            lr: hp.lr,
            momentum: 0.0,
            beta1: 0.0,
            beta2: hp.rho,
            eps: hp.epsilon,
            corr2: 0.0,
            pad1: [0.0; 2],
        };
        if n > 0 {
            let (gx, gy) = grid(n.div_ceil(256));
            let mut batch = self.batch();
            let bufs = [(1, grad.buffer()), (2, w.buffer()), (4, v.buffer())];
            batch.dispatch("optim", "rmsprop", &p, &bufs, (gx, gy, 1))?;
            batch.submit()?;
        }
        Ok(())
    }

    /// One Lion step in place on `w` and `m` (the momentum):
    /// `w -= lr sign(b1 m + (1 - b1) g); m = b2 m + (1 - b2) g`.
    pub fn lion_update(&self, w: &mut GpuTensor, grad: &GpuTensor, m: &mut GpuTensor, hp: &LionParams) -> Result<()> {
        w.expect_f32("lion_update")?;
        expect_len("lion_update", "grad (same size as w)", grad, w.len())?;
        expect_len("lion_update", "m (same size as w)", m, w.len())?;
        let n = u32_of("parameters", w.len())?;
        let p = Params {
            n,
            lr: hp.lr,
            beta1: hp.beta1,
            beta2: hp.beta2,
            ..bytemuck::Zeroable::zeroed()
        };
        if n > 0 {
            let (gx, gy) = grid(n.div_ceil(256));
            let mut batch = self.batch();
            let bufs = [(1, grad.buffer()), (2, w.buffer()), (3, m.buffer())];
            batch.dispatch("optim", "lion", &p, &bufs, (gx, gy, 1))?;
            batch.submit()?;
        }
        Ok(())
    }

    /// One LAMB step in place on `w`, `m` and `v`, in Keras' arithmetic: Adam's bias-corrected
    /// direction `r`, scaled by the trust ratio `||w|| / ||r||` (1 when either is zero). The
    /// norms are reduced on the device, so nothing waits for the host.
    pub fn lamb_update(
        &self,
        w: &mut GpuTensor,
        grad: &GpuTensor,
        m: &mut GpuTensor,
        v: &mut GpuTensor,
        hp: &LambParams,
    ) -> Result<()> {
        w.expect_f32("lamb_update")?;
        for (what, t) in [
            ("grad (same size as w)", grad),
            ("m (same size as w)", &*m),
            ("v (same size as w)", &*v),
        ] {
            expect_len("lamb_update", what, t, w.len())?;
        }
        if hp.step == 0 {
            return Err(crate::GpuError::Invalid {
                op: "lamb_update",
                message: "step is 1-based, got 0".into(),
            });
        }
        let n = u32_of("parameters", w.len())?;
        if n == 0 {
            return Ok(());
        }
        let t = hp.step.min(i32::MAX as u32) as i32;
        let moments = Params {
            n,
            lr: (1.0 - hp.beta2) as f32,
            momentum: (1.0 - hp.beta1) as f32,
            beta1: 1.0 - (hp.beta1 as f32).powi(t),
            eps: hp.epsilon,
            corr2: 1.0 - (hp.beta2 as f32).powi(t),
            ..bytemuck::Zeroable::zeroed()
        };
        let r = self.empty(w.shape(), crate::DType::F32)?;
        let (gx, gy) = grid(n.div_ceil(256));
        let mut batch = self.batch();
        let bufs = [(1, grad.buffer()), (3, m.buffer()), (4, v.buffer()), (5, r.buffer())];
        batch.dispatch("optim", "lamb_moments", &moments, &bufs, (gx, gy, 1))?;
        batch.submit()?;
        let sums = self.concat_last(&[&self.sum_of_squares(w)?, &self.sum_of_squares(&r)?])?;
        let apply = Params { lr: hp.lr, ..moments };
        let mut batch = self.batch();
        let bufs = [(2, w.buffer()), (5, r.buffer()), (6, sums.buffer())];
        batch.dispatch("optim", "lamb_apply", &apply, &bufs, (gx, gy, 1))?;
        batch.submit()?;
        Ok(())
    }
}
