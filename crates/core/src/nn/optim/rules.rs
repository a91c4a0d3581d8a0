//! The per-parameter update of each rule, on plain slices: the parameter, its gradient and the
//! rule's slots (already allocated, all of the parameter's length).

use rayon::prelude::*;

use super::Rule;

/// Below this many values an update runs on one thread.
const PAR_MIN: usize = 1 << 15;

/// How many slots (per-parameter state vectors) `rule` keeps.
pub(super) fn slot_count(rule: &Rule) -> usize {
    match rule {
        Rule::Sgd { momentum, .. } => usize::from(*momentum != 0.0),
        Rule::Adam { .. } | Rule::Lamb { .. } => 2,
        Rule::RmsProp { .. } | Rule::Lion { .. } => 1,
    }
}

/// Applies one step of `rule` with learning rate `lr` at step `t` (1-based) to `p`.
pub(super) fn apply(rule: &Rule, lr: f32, t: i32, p: &mut [f32], g: &[f32], slots: &mut [Vec<f32>]) {
    match *rule {
        Rule::Sgd { momentum, nesterov } => {
            if momentum == 0.0 {
                for_each2(p, g, |p, g| *p -= lr * g);
            } else {
                for_each3(p, g, &mut slots[0], |p, g, v| {
                    *v = momentum * *v - lr * g;
                    *p += if nesterov { momentum * *v - lr * g } else { *v };
                });
            }
        }
        Rule::Adam {
            beta1,
            beta2,
            epsilon,
            weight_decay,
        } => {
            let alpha = lr * (1.0 - beta2.powi(t)).sqrt() / (1.0 - beta1.powi(t));
            let decay = lr * weight_decay;
            let (m, rest) = slots.split_first_mut().expect("two slots");
            let v = &mut rest[0];
            let update = |p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]| {
                for i in 0..p.len() {
                    p[i] -= decay * p[i];
                    m[i] += (g[i] - m[i]) * (1.0 - beta1);
                    v[i] += (g[i] * g[i] - v[i]) * (1.0 - beta2);
                    p[i] -= alpha * m[i] / (v[i].sqrt() + epsilon);
                }
            };
            if p.len() >= PAR_MIN {
                p.par_chunks_mut(4096)
                    .zip(g.par_chunks(4096))
                    .zip(m.par_chunks_mut(4096).zip(v.par_chunks_mut(4096)))
                    .for_each(|((p, g), (m, v))| update(p, g, m, v));
            } else {
                update(p, g, m, v);
            }
        }
        Rule::RmsProp { rho, epsilon } => {
            for_each3(p, g, &mut slots[0], |p, g, v| {
                *v = rho * *v + (1.0 - rho) * g * g;
                *p -= lr * g / (v.sqrt() + epsilon);
            });
        }
        Rule::Lion { beta1, beta2 } => {
            for_each3(p, g, &mut slots[0], |p, g, m| {
                *p -= lr * sign(*m * beta1 + g * (1.0 - beta1));
                *m = *m * beta2 + g * (1.0 - beta2);
            });
        }
        Rule::Lamb { beta1, beta2, epsilon } => lamb(beta1, beta2, epsilon, lr, t, p, g, slots),
    }
}

/// `ops.sign` as Keras has it: 0 stays 0 (Rust's `f32::signum` would give 1 and move a weight
/// whose Lion direction is exactly zero).
fn sign(x: f32) -> f32 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        x
    }
}

/// LAMB in Keras' form: Adam's bias-corrected direction `r = m_hat / (sqrt(v_hat) + eps)`,
/// scaled per tensor by the trust ratio `||p|| / ||r||` (1 when either norm is zero).
///
/// The arithmetic is Keras' own: the moment decays `1 - beta` come from the configured value in
/// f64 (Keras' Python floats) and the bias corrections `1 - beta^t` from the f32 power (Keras'
/// f32 tensors). Doing both in f32 instead changes `v_hat` by about 1e-5 relative (1 - 0.999 is
/// 1.3e-5 off in f32), which shows in the first step of every zero-initialised bias, where the
/// trust ratio is 1 and nothing cancels it.
#[allow(clippy::too_many_arguments)]
fn lamb(beta1: f64, beta2: f64, epsilon: f32, lr: f32, t: i32, p: &mut [f32], g: &[f32], slots: &mut [Vec<f32>]) {
    let (m, rest) = slots.split_first_mut().expect("two slots");
    let v = &mut rest[0];
    let (d1, d2) = ((1.0 - beta1) as f32, (1.0 - beta2) as f32);
    let c1 = 1.0 - (beta1 as f32).powi(t);
    let c2 = 1.0 - (beta2 as f32).powi(t);
    let direction = |m: f32, v: f32| (m / c1) / ((v / c2).sqrt() + epsilon);
    // First pass: the moments, and both norms (summed in f64: a large tensor's sum of squares
    // loses digits in f32, and the ratio multiplies the whole step).
    let mut p_sq = 0.0f64;
    let mut r_sq = 0.0f64;
    for i in 0..p.len() {
        m[i] += (g[i] - m[i]) * d1;
        v[i] += (g[i] * g[i] - v[i]) * d2;
        let r = direction(m[i], v[i]);
        p_sq += f64::from(p[i]) * f64::from(p[i]);
        r_sq += f64::from(r) * f64::from(r);
    }
    let (p_norm, r_norm) = (p_sq.sqrt(), r_sq.sqrt());
    let ratio = if p_norm > 0.0 && r_norm > 0.0 {
        (p_norm / r_norm) as f32
    } else {
        1.0
    };
    // Second pass: the step, recomputing `r` from the moments rather than storing it.
    let step = ratio * lr;
    for i in 0..p.len() {
        p[i] -= step * direction(m[i], v[i]);
    }
}

pub(super) fn for_each2(p: &mut [f32], g: &[f32], f: impl Fn(&mut f32, f32) + Sync) {
    p.iter_mut().zip(g).for_each(|(p, &g)| f(p, g));
}

fn for_each3(p: &mut [f32], g: &[f32], s: &mut [f32], f: impl Fn(&mut f32, f32, &mut f32) + Sync) {
    p.iter_mut()
        .zip(g)
        .zip(s.iter_mut())
        .for_each(|((p, &g), s)| f(p, g, s));
}
