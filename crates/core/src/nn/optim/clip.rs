//! Gradient clipping as Keras 3's `Optimizer._clip_gradients` does it, applied to the
//! gradients of a whole step before any parameter is updated.

use serde_json::{json, Value};

use super::super::options::Options;
use crate::{Error, Result};

/// One of Keras' three clipping options (Keras refuses more than one).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Clip {
    /// `clipnorm`: each gradient tensor is scaled down to at most this L2 norm.
    Norm(f32),
    /// `clipvalue`: each gradient value is clamped to `[-v, v]`.
    Value(f32),
    /// `globalClipnorm`: all gradients are scaled by one factor so that their joint L2 norm is
    /// at most this.
    GlobalNorm(f32),
}

impl Clip {
    /// Reads `clipnorm`, `clipvalue` and `globalClipnorm` (at most one, positive and finite).
    pub(super) fn parse(name: &str, o: &mut Options) -> Result<Option<Clip>> {
        let given: Vec<Clip> = [
            o.f32("clipnorm")?.map(Clip::Norm),
            o.f32("clipvalue")?.map(Clip::Value),
            o.f32("globalClipnorm")?.map(Clip::GlobalNorm),
        ]
        .into_iter()
        .flatten()
        .collect();
        if given.len() > 1 {
            let keys: Vec<String> = given.iter().map(|c| format!("{}: {}", c.key(), c.limit())).collect();
            return Err(Error::Invalid(format!(
                "optimizer '{name}': only one of clipnorm, clipvalue and globalClipnorm can be set, got {}",
                keys.join(", ")
            )));
        }
        match given.first() {
            Some(c) if c.limit() <= 0.0 => Err(Error::Invalid(format!(
                "optimizer '{name}': {} must be a positive number, got {}",
                c.key(),
                c.limit()
            ))),
            other => Ok(other.copied()),
        }
    }

    /// The option's camelCase name.
    pub fn key(self) -> &'static str {
        match self {
            Clip::Norm(_) => "clipnorm",
            Clip::Value(_) => "clipvalue",
            Clip::GlobalNorm(_) => "globalClipnorm",
        }
    }

    /// The option's value.
    pub fn limit(self) -> f32 {
        match self {
            Clip::Norm(v) | Clip::Value(v) | Clip::GlobalNorm(v) => v,
        }
    }

    /// Writes the option into an optimizer config.
    pub(super) fn write(self, config: &mut Value) {
        config[self.key()] = json!(self.limit());
    }

    /// Clips one step's gradients in place (`None`: a parameter without a gradient).
    pub(super) fn apply(self, grads: &mut [Option<Vec<f32>>]) {
        match self {
            Clip::Value(v) => {
                for g in grads.iter_mut().flatten() {
                    // A NaN fails the test and stays NaN, as with Keras' `ops.clip`.
                    for x in g.iter_mut().filter(|x| x.abs() > v) {
                        *x = v.copysign(*x);
                    }
                }
            }
            Clip::Norm(c) => {
                for g in grads.iter_mut().flatten() {
                    let norm = sum_of_squares(g).sqrt();
                    // Keras computes `g * c / max(norm, c)`: below the limit that is `g` (up to
                    // rounding), so only a longer gradient is touched.
                    if norm > f64::from(c) {
                        let norm = norm as f32;
                        g.iter_mut().for_each(|x| *x = *x * c / norm);
                    } else if norm.is_nan() {
                        g.iter_mut().for_each(|x| *x = f32::NAN);
                    }
                }
            }
            Clip::GlobalNorm(c) => {
                let norm = grads.iter().flatten().map(|g| sum_of_squares(g)).sum::<f64>().sqrt();
                // Keras: scale = c * min(1/norm, 1/c), plus (norm - norm) so that an infinite
                // or NaN norm makes every gradient NaN rather than silently zero.
                let scale = if !norm.is_finite() {
                    f32::NAN
                } else if norm > f64::from(c) {
                    (f64::from(c) / norm) as f32
                } else {
                    return;
                };
                for g in grads.iter_mut().flatten() {
                    g.iter_mut().for_each(|x| *x *= scale);
                }
            }
        }
    }
}

impl Clip {
    /// [`Clip::apply`] on GPU gradients, on the device (cortex-wgpu's clipping kernels: the
    /// norms are reduced there and never read back). Sums of squares are f32 there.
    pub(super) fn apply_device(
        self,
        gpu: &cortex_wgpu::Gpu,
        grads: &mut [Option<cortex_wgpu::GpuTensor>],
    ) -> cortex_wgpu::Result<()> {
        match self {
            Clip::Value(v) => {
                for g in grads.iter_mut().flatten() {
                    *g = gpu.clip_value(g, v)?;
                }
            }
            Clip::Norm(c) => {
                for g in grads.iter_mut().flatten() {
                    let sum_sq = gpu.sum_of_squares(g)?;
                    *g = gpu.clip_by_norm(g, &sum_sq, c, false)?;
                }
            }
            Clip::GlobalNorm(c) => {
                let mut total: Option<cortex_wgpu::GpuTensor> = None;
                for g in grads.iter().flatten() {
                    let s = gpu.sum_of_squares(g)?;
                    total = Some(match total {
                        None => s,
                        Some(t) => gpu.add(&t, &s)?,
                    });
                }
                if let Some(total) = total {
                    for g in grads.iter_mut().flatten() {
                        *g = gpu.clip_by_norm(g, &total, c, true)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Sum of squares in f64, so a large tensor's norm keeps its digits.
fn sum_of_squares(g: &[f32]) -> f64 {
    g.iter().map(|&x| f64::from(x) * f64::from(x)).sum()
}
