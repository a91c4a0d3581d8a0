//! Optimizers with the Keras update rules: SGD (momentum, Nesterov), Adam, AdamW, RMSprop,
//! Lion and LAMB, with Keras' gradient clipping options. The update kernels are in `rules.rs`,
//! clipping in `clip.rs`.

mod clip;
mod gpu;
mod rules;
#[cfg(test)]
mod tests;

use serde_json::{json, Value};

pub use clip::Clip;
pub(crate) use gpu::update_buffers as update_gpu_buffers;

use super::options::Options;
use super::schedule::LrSchedule;
use crate::{Error, Result};

/// The update rule and its hyper-parameters.
#[derive(Clone, Debug, PartialEq)]
pub enum Rule {
    /// `v = m*v - lr*g; p += v` (Nesterov: `p += m*v - lr*g`).
    Sgd { momentum: f32, nesterov: bool },
    /// Adam in the Keras form `lr_t = lr*sqrt(1-b2^t)/(1-b1^t); p -= lr_t*m/(sqrt(v)+eps)`;
    /// with `weight_decay > 0` it is AdamW (decoupled `p -= lr*wd*p` first).
    Adam {
        beta1: f32,
        beta2: f32,
        epsilon: f32,
        weight_decay: f32,
    },
    /// `v = rho*v + (1-rho)*g^2; p -= lr*g/(sqrt(v)+eps)`.
    RmsProp { rho: f32, epsilon: f32 },
    /// Lion (Chen et al. 2023): `p -= lr*sign(b1*m + (1-b1)*g); m = b2*m + (1-b2)*g`.
    Lion { beta1: f32, beta2: f32 },
    /// LAMB (You et al. 2020): Adam's bias-corrected direction `r`, scaled per tensor by the
    /// trust ratio `||p|| / ||r||` (1 when either is zero): `p -= ratio*lr*r`. The betas stay
    /// f64 so that `1 - beta` is computed from the value as written, as Keras does (see
    /// `rules.rs`), and survives a to_json round trip unchanged.
    Lamb { beta1: f64, beta2: f64, epsilon: f32 },
}

/// Everything an optimizer has accumulated, for resumable checkpoints: restoring it into an
/// optimizer of the same config continues training exactly where it stopped.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OptimizerState {
    /// Steps taken (Adam's bias correction and per-step schedules depend on it).
    pub iterations: u64,
    /// The current learning rate (a callback such as reduceLROnPlateau may have changed it).
    pub learning_rate: f32,
    /// Per parameter (in `visit_params` order): the rule's slots; empty before its first update.
    pub slots: Vec<Vec<Vec<f32>>>,
    /// Per parameter: the `useEma` moving average; empty when unused.
    pub ema: Vec<Vec<f32>>,
}

/// An optimizer: a rule, a learning rate and per-parameter state.
#[derive(Clone, Debug)]
pub struct Optimizer {
    /// The rule.
    pub rule: Rule,
    /// Current learning rate (a per-step schedule or a per-epoch callback changes it).
    pub learning_rate: f32,
    /// Per-step schedule (Keras `LearningRateSchedule`); `None` for a constant rate.
    pub schedule: Option<LrSchedule>,
    iterations: u64,
    /// Per parameter: the rule's slots (velocity / first and second moments).
    slots: Vec<Vec<Vec<f32>>>,
    /// Keras `useEma`: momentum of an exponential moving average of the weights, which
    /// replaces them when `fit` ends.
    pub ema_momentum: Option<f32>,
    /// Per parameter: the moving average (empty until its first update).
    ema: Vec<Vec<f32>>,
    /// Gradient clipping (Keras `clipnorm`, `clipvalue` or `global_clipnorm`). Private so that
    /// only a validated (positive, finite) limit reaches [`Self::clip_gradients`].
    clip: Option<Clip>,
    /// Per parameter: the rule's slots on the GPU, for weights that live there.
    device_slots: Vec<Vec<cortex_wgpu::GpuTensor>>,
    /// Per parameter: the `useEma` average on the GPU, for weights that live there.
    device_ema: Vec<Option<cortex_wgpu::GpuTensor>>,
}

impl Optimizer {
    /// Parses `"adam"` or `{ "name": "sgd", "learningRate": 0.1, "momentum": 0.9 }`.
    pub fn parse(v: &Value) -> Result<Optimizer> {
        let (name, opts) = match v {
            Value::String(s) => (s.clone(), Value::Null),
            Value::Object(m) => {
                let mut rest = m.clone();
                match rest.remove("name") {
                    Some(Value::String(n)) => (n, Value::Object(rest)),
                    _ => return Err(Error::Invalid(format!("optimizer object needs a 'name', got {v}"))),
                }
            }
            _ => {
                return Err(Error::Invalid(format!(
                    "optimizer must be a name or an object, got {v}"
                )))
            }
        };
        let mut o = Options::new(&format!("optimizer '{name}'"), &opts)?;
        let (lr, schedule) = match o.value("learningRate") {
            Some(spec @ Value::Object(_)) => {
                let schedule = LrSchedule::parse(&format!("optimizer '{name}'"), &spec)?;
                (Some(schedule.at(0)), Some(schedule))
            }
            Some(Value::Number(n)) => (n.as_f64().map(|v| v as f32), None),
            Some(other) => {
                return Err(Error::Invalid(format!(
                    "optimizer '{name}': learningRate must be a number or a schedule object, got {other}"
                )))
            }
            None => (None, None),
        };
        let (rule, default_lr) = match name.to_ascii_lowercase().as_str() {
            "sgd" => (
                Rule::Sgd {
                    momentum: o.f32("momentum")?.unwrap_or(0.0),
                    nesterov: o.bool("nesterov")?.unwrap_or(false),
                },
                0.01,
            ),
            "adam" | "adamw" => {
                let adamw = name.eq_ignore_ascii_case("adamw");
                let rule = Rule::Adam {
                    beta1: o.f32("beta1")?.unwrap_or(0.9),
                    beta2: o.f32("beta2")?.unwrap_or(0.999),
                    epsilon: o.f32("epsilon")?.unwrap_or(1e-7),
                    weight_decay: if adamw {
                        o.f32("weightDecay")?.unwrap_or(0.004)
                    } else {
                        0.0
                    },
                };
                (rule, 0.001)
            }
            "rmsprop" => (
                Rule::RmsProp {
                    rho: o.f32("rho")?.unwrap_or(0.9),
                    epsilon: o.f32("epsilon")?.unwrap_or(1e-7),
                },
                0.001,
            ),
            "lion" => {
                let rule = Rule::Lion {
                    beta1: o.f32("beta1")?.unwrap_or(0.9),
                    beta2: o.f32("beta2")?.unwrap_or(0.99),
                };
                (rule, 0.001)
            }
            "lamb" => {
                let rule = Rule::Lamb {
                    beta1: o.f64("beta1")?.unwrap_or(0.9),
                    beta2: o.f64("beta2")?.unwrap_or(0.999),
                    epsilon: o.f32("epsilon")?.unwrap_or(1e-7),
                };
                (rule, 0.001)
            }
            other => {
                return Err(Error::Invalid(format!(
                    "unknown optimizer '{other}'; expected one of: sgd, adam, adamw, rmsprop, lion, lamb"
                )))
            }
        };
        // Keras refuses beta_1 outside (0, 1] for Lion: at 0 it degenerates to signSGD.
        if let Rule::Lion { beta1, .. } = rule {
            if beta1 <= 0.0 || beta1 > 1.0 {
                return Err(Error::Invalid(format!(
                    "optimizer '{name}': beta1 must be in (0, 1], got {beta1}"
                )));
            }
        }
        let clip = Clip::parse(&name, &mut o)?;
        let ema_momentum = match (o.bool("useEma")?, o.f32("emaMomentum")?) {
            (Some(true), m) => Some(m.unwrap_or(0.99)),
            (_, Some(_)) => {
                return Err(Error::Invalid(format!(
                    "optimizer '{name}': emaMomentum needs useEma: true"
                )))
            }
            _ => None,
        };
        if let Some(m) = ema_momentum {
            if !(0.0..1.0).contains(&m) {
                return Err(Error::Invalid(format!(
                    "optimizer '{name}': emaMomentum must be in [0, 1), got {m}"
                )));
            }
        }
        o.finish()?;
        let learning_rate = lr.unwrap_or(default_lr);
        if learning_rate <= 0.0 {
            return Err(Error::Invalid(format!(
                "optimizer '{name}': learningRate must be positive, got {learning_rate}"
            )));
        }
        Ok(Optimizer {
            rule,
            learning_rate,
            schedule,
            iterations: 0,
            slots: Vec::new(),
            ema_momentum,
            ema: Vec::new(),
            clip,
            device_slots: Vec::new(),
            device_ema: Vec::new(),
        })
    }

    /// The config written to model files.
    pub fn to_json(&self) -> Value {
        let mut v = self.rule_json();
        if let Some(m) = self.ema_momentum {
            v["useEma"] = json!(true);
            v["emaMomentum"] = json!(m);
        }
        if let Some(clip) = self.clip {
            clip.write(&mut v);
        }
        v
    }

    fn rule_json(&self) -> Value {
        let lr = match &self.schedule {
            Some(s) => s.to_json(),
            None => json!(self.learning_rate),
        };
        match self.rule {
            Rule::Sgd { momentum, nesterov } => {
                json!({"name": "sgd", "learningRate": lr, "momentum": momentum, "nesterov": nesterov})
            }
            Rule::Adam {
                beta1,
                beta2,
                epsilon,
                weight_decay,
            } if weight_decay > 0.0 => json!({
                "name": "adamw", "learningRate": lr, "beta1": beta1, "beta2": beta2, "epsilon": epsilon,
                "weightDecay": weight_decay
            }),
            Rule::Adam {
                beta1, beta2, epsilon, ..
            } => {
                json!({"name": "adam", "learningRate": lr, "beta1": beta1, "beta2": beta2, "epsilon": epsilon})
            }
            Rule::RmsProp { rho, epsilon } => {
                json!({"name": "rmsprop", "learningRate": lr, "rho": rho, "epsilon": epsilon})
            }
            Rule::Lion { beta1, beta2 } => {
                json!({"name": "lion", "learningRate": lr, "beta1": beta1, "beta2": beta2})
            }
            Rule::Lamb { beta1, beta2, epsilon } => {
                json!({"name": "lamb", "learningRate": lr, "beta1": beta1, "beta2": beta2, "epsilon": epsilon})
            }
        }
    }

    /// A copy of the accumulated state (see [`OptimizerState`]).
    /// Slots of weights updated on the GPU are read back.
    pub fn state(&self) -> Result<OptimizerState> {
        let mut slots = self.slots.clone();
        for (i, device) in self.device_slots.iter().enumerate().filter(|(_, d)| !d.is_empty()) {
            if slots.len() <= i {
                slots.resize(i + 1, Vec::new());
            }
            slots[i] = device
                .iter()
                .map(|s| crate::device::shared_gpu()?.download(s).map_err(crate::device::gpu_err))
                .collect::<Result<_>>()?;
        }
        let mut ema = self.ema.clone();
        for i in 0..self.device_ema.len() {
            if let Some(average) = self.ema_values(i)? {
                if ema.len() <= i {
                    ema.resize(i + 1, Vec::new());
                }
                ema[i] = average;
            }
        }
        Ok(OptimizerState {
            iterations: self.iterations,
            learning_rate: self.learning_rate,
            slots,
            ema,
        })
    }

    /// Replaces the accumulated state by `state` (from [`Self::state`] of an optimizer with the
    /// same config, for a model with the same weights).
    pub fn set_state(&mut self, state: OptimizerState) -> Result<()> {
        if !state.learning_rate.is_finite() || state.learning_rate <= 0.0 {
            return Err(Error::Invalid(format!(
                "optimizer state: learning rate must be positive, got {}",
                state.learning_rate
            )));
        }
        self.iterations = state.iterations;
        self.learning_rate = state.learning_rate;
        self.slots = state.slots;
        self.ema = state.ema;
        // The restored host state replaces any device copy (moved up again on the next
        // device update).
        self.device_slots.clear();
        self.device_ema.clear();
        Ok(())
    }

    /// [`Self::clip_gradients`] for gradients that live on the GPU, clipped there.
    pub fn clip_device_gradients(&self, grads: &mut [Option<cortex_wgpu::GpuTensor>]) -> Result<()> {
        match self.clip {
            Some(clip) => clip
                .apply_device(crate::device::shared_gpu()?.as_ref(), grads)
                .map_err(crate::device::gpu_err),
            None => Ok(()),
        }
    }

    /// Clips the gradients of one step in place (per parameter, in `visit_params` order; `None`
    /// for parameters without a gradient) as the optimizer's clipping options say. Call before
    /// [`Self::begin_step`].
    pub fn clip_gradients(&self, grads: &mut [Option<Vec<f32>>]) {
        if let Some(clip) = self.clip {
            clip.apply(grads);
        }
    }

    /// The gradient clipping option, if any.
    pub fn clip(&self) -> Option<Clip> {
        self.clip
    }

    /// Number of steps taken.
    pub fn iterations(&self) -> u64 {
        self.iterations
    }

    /// Starts an optimization step (advances the step counter used by Adam's bias correction).
    pub fn begin_step(&mut self) {
        if let Some(schedule) = &self.schedule {
            self.learning_rate = schedule.at(self.iterations);
        }
        self.iterations += 1;
    }

    /// Updates parameter number `index` in place from its gradient; call after [`Self::begin_step`].
    pub fn update(&mut self, index: usize, p: &mut [f32], g: &[f32]) -> Result<()> {
        let slot_count = rules::slot_count(&self.rule);
        if self.slots.len() <= index {
            self.slots.resize(index + 1, Vec::new());
        }
        if self.slots[index].is_empty() && slot_count > 0 {
            self.slots[index] = vec![vec![0.0; p.len()]; slot_count];
        }
        let slots = &mut self.slots[index];
        // A restored state (set_state) may hold another rule's slots: check the count too.
        if p.len() != g.len() || slots.len() != slot_count || slots.iter().any(|s| s.len() != p.len()) {
            return Err(Error::shape("optimizer update", p.len(), g.len()));
        }
        let t = self.iterations.clamp(1, i32::MAX as u64) as i32;
        rules::apply(&self.rule, self.learning_rate, t, p, g, slots);
        if let Some(momentum) = self.ema_momentum {
            if self.ema.len() <= index {
                self.ema.resize(index + 1, Vec::new());
            }
            let average = &mut self.ema[index];
            if average.is_empty() {
                // Keras starts the average at the weights after the first update.
                average.extend_from_slice(p);
            } else {
                rules::for_each2(average, p, |a, p| *a = momentum * *a + (1.0 - momentum) * p);
            }
        }
        Ok(())
    }

    /// The host moving average of parameter `index` (with `useEma`, once it has been updated
    /// on the host; see [`Self::ema_values`] for either device).
    pub fn ema_of(&self, index: usize) -> Option<&[f32]> {
        self.ema.get(index).filter(|a| !a.is_empty()).map(Vec::as_slice)
    }

    /// The moving average of parameter `index`, read back from the GPU when it lives there.
    pub fn ema_values(&self, index: usize) -> Result<Option<Vec<f32>>> {
        if let Some(Some(average)) = self.device_ema.get(index) {
            let gpu = crate::device::shared_gpu()?;
            return gpu.download(average).map(Some).map_err(crate::device::gpu_err);
        }
        Ok(self.ema_of(index).map(<[f32]>::to_vec))
    }
}
