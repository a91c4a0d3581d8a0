//! The Rényi-DP accountant of the sampled Gaussian mechanism (Mironov, Talwar and Zhang 2019),
//! a line-for-line port of `src/privacy.ts` (itself written to match Opacus' `RDPAccountant`):
//! the same default orders, the same log A_α sums and the same RDP-to-(ε, δ) conversion (Balle
//! et al. 2020, Theorem 21), so `fit`'s logged ε equals `privacy.computeEpsilon` for the same run.

/// Opacus' default RDP orders: 1.1, 1.2, ..., 10.9, then 12, 13, ..., 63.
pub fn default_orders() -> Vec<f64> {
    (0..99)
        .map(|k| 1.0 + (k + 1) as f64 / 10.0)
        .chain((0..52).map(|k| 12.0 + k as f64))
        .collect()
}

/// The RDP of one step at each order (RDP adds up over steps).
pub fn rdp_of_step_at_orders(q: f64, sigma: f64, orders: &[f64]) -> Vec<f64> {
    orders.iter().map(|&a| rdp_of_step(q, sigma, a)).collect()
}

/// The RDP of one step of the sampled Gaussian mechanism at order `alpha`.
pub fn rdp_of_step(q: f64, sigma: f64, alpha: f64) -> f64 {
    if q == 0.0 {
        return 0.0;
    }
    if sigma == 0.0 {
        return f64::INFINITY;
    }
    if q == 1.0 {
        return alpha / (2.0 * sigma * sigma);
    }
    if !alpha.is_finite() {
        return f64::INFINITY;
    }
    let log_a = if alpha.fract() == 0.0 {
        log_a_int(q, sigma, alpha)
    } else {
        log_a_frac(q, sigma, alpha)
    };
    log_a / (alpha - 1.0)
}

/// ε of `steps` steps with per-step RDP `rdp` at `orders`, at `delta`.
pub fn epsilon_from_rdp(rdp: &[f64], orders: &[f64], steps: f64, delta: f64) -> f64 {
    let mut epsilon = f64::INFINITY;
    let mut found = false;
    let log_delta = delta.ln();
    for (&a, &r) in orders.iter().zip(rdp) {
        let e = r * steps - (log_delta + a.ln()) / (a - 1.0) + ((a - 1.0) / a).ln();
        if e.is_nan() {
            continue;
        }
        if !found || e < epsilon {
            epsilon = e;
            found = true;
        }
    }
    epsilon
}

/// ε spent by `steps` steps at sampling rate `q` and noise multiplier `sigma`, at `delta`.
pub fn compute_epsilon(q: f64, sigma: f64, steps: usize, delta: f64) -> f64 {
    let orders = default_orders();
    epsilon_from_rdp(&rdp_of_step_at_orders(q, sigma, &orders), &orders, steps as f64, delta)
}

fn log_add(x: f64, y: f64) -> f64 {
    let (a, b) = (x.min(y), x.max(y));
    if a == f64::NEG_INFINITY {
        return b;
    }
    (a - b).exp().ln_1p() + b
}

fn log_sub(x: f64, y: f64) -> f64 {
    if x < y {
        // Cannot happen for the series below; keep the larger term, as a saturated value.
        return x;
    }
    if y == f64::NEG_INFINITY {
        return x;
    }
    if x == y {
        return f64::NEG_INFINITY;
    }
    let d = (x - y).exp_m1();
    if d.is_finite() {
        d.ln() + y
    } else {
        x
    }
}

fn log_a_int(q: f64, sigma: f64, alpha: f64) -> f64 {
    let (log_q, log_1mq) = (q.ln(), (-q).ln_1p());
    let mut log_a = f64::NEG_INFINITY;
    let mut log_coef = 0.0;
    let n = alpha as i64;
    for i in 0..=n {
        let fi = i as f64;
        if i > 0 {
            log_coef += (alpha - fi + 1.0).ln() - fi.ln();
        }
        let s = log_coef + fi * log_q + (alpha - fi) * log_1mq + (fi * fi - fi) / (2.0 * sigma * sigma);
        log_a = log_add(log_a, s);
    }
    log_a
}

fn log_a_frac(q: f64, sigma: f64, alpha: f64) -> f64 {
    let (mut log_a0, mut log_a1) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    let (log_q, log_1mq) = (q.ln(), (-q).ln_1p());
    let z0 = sigma * sigma * (1.0 / q - 1.0).ln() + 0.5;
    let two_sigma2 = 2.0 * sigma * sigma;
    let sqrt2_sigma = std::f64::consts::SQRT_2 * sigma;
    let mut log_coef = 0.0;
    let mut positive = true;
    let mut i = 0usize;
    loop {
        let fi = i as f64;
        if i > 0 {
            let f = alpha - fi + 1.0;
            log_coef += f.abs().ln() - fi.ln();
            if f < 0.0 {
                positive = !positive;
            }
        }
        let j = alpha - fi;
        let log_t0 = log_coef + fi * log_q + j * log_1mq;
        let log_t1 = log_coef + j * log_q + fi * log_1mq;
        let log_e0 = 0.5f64.ln() + log_erfc((fi - z0) / sqrt2_sigma);
        let log_e1 = 0.5f64.ln() + log_erfc((z0 - j) / sqrt2_sigma);
        let log_s0 = log_t0 + (fi * fi - fi) / two_sigma2 + log_e0;
        let log_s1 = log_t1 + (j * j - j) / two_sigma2 + log_e1;
        if positive {
            log_a0 = log_add(log_a0, log_s0);
            log_a1 = log_add(log_a1, log_s1);
        } else {
            log_a0 = log_sub(log_a0, log_s0);
            log_a1 = log_sub(log_a1, log_s1);
        }
        if log_s0.max(log_s1) < -30.0 || i > 100_000 {
            break;
        }
        i += 1;
    }
    log_add(log_a0, log_a1)
}

/// log(erfc(x)) (see `logErfc` in src/privacy.ts).
fn log_erfc(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x >= 3.0 {
        if x == f64::INFINITY {
            return f64::NEG_INFINITY;
        }
        let mut f = x;
        for k in (1..=200).rev() {
            f = x + k as f64 / 2.0 / f;
        }
        return -x * x - 0.5 * std::f64::consts::PI.ln() - f.ln();
    }
    if x <= -3.0 {
        return (2.0 - log_erfc(-x).exp()).ln();
    }
    (1.0 - erf(x)).ln()
}

fn erf(x: f64) -> f64 {
    let two_x2 = 2.0 * x * x;
    let mut term = x;
    let mut sum = x;
    for n in 1..200 {
        term *= two_x2 / (2 * n + 1) as f64;
        sum += term;
        if term.abs() < 1e-17 * sum.abs() {
            break;
        }
    }
    2.0 / std::f64::consts::PI.sqrt() * (-x * x).exp() * sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epsilon_grows_with_steps_and_falls_with_noise() {
        let e1 = compute_epsilon(0.01, 1.1, 1000, 1e-5);
        let e2 = compute_epsilon(0.01, 1.1, 2000, 1e-5);
        let e3 = compute_epsilon(0.01, 2.0, 1000, 1e-5);
        assert!(e1.is_finite() && e1 > 0.0);
        assert!(e2 > e1 && e3 < e1, "{e1} {e2} {e3}");
    }

    #[test]
    fn full_batch_is_the_gaussian_mechanism() {
        // q = 1: RDP(α) = α / (2σ²) exactly.
        assert!((rdp_of_step(1.0, 2.0, 3.0) - 3.0 / 8.0).abs() < 1e-15);
    }
}
