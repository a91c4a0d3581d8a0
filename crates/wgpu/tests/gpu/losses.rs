//! Binary / categorical cross-entropy and mean absolute error against f64 references written
//! from the Keras definitions (the CPU losses of crates/core/src/nn/loss.rs): mean reduction,
//! probabilities clipped to [1e-7, 1 - 1e-7] with no gradient where clipped, stable logits.

use super::common::{assert_close, gpu, rand_vec};
use cortex_wgpu::{CrossEntropyInput, Gpu, LossOutput};

const EPS: f64 = 1e-7;

fn sigmoid(v: f64) -> f64 {
    1.0 / (1.0 + (-v).exp())
}

/// Values in (0, 1) with a few exactly at or past the clip bounds.
fn probabilities(n: usize, seed: u64) -> Vec<f32> {
    let mut p: Vec<f32> = rand_vec(n, seed)
        .iter()
        .map(|&v| sigmoid(v as f64 * 4.0) as f32)
        .collect();
    for (k, edge) in [0.0f32, 1.0, 1e-9, 1.0 - 1e-8, 1.0 - f32::EPSILON, 2e-7]
        .into_iter()
        .enumerate()
    {
        p[(k * 7 + 3) % n] = edge;
    }
    p
}

/// Soft targets in [0, 1], some exactly 0 and 1.
fn soft_targets(n: usize, seed: u64) -> Vec<f32> {
    rand_vec(n, seed)
        .iter()
        .enumerate()
        .map(|(i, &v)| match i % 5 {
            0 => 0.0,
            1 => 1.0,
            _ => (v + 1.0) / 2.0,
        })
        .collect()
}

fn check(g: &Gpu, what: &str, out: &LossOutput, loss: f64, grad: &[f64]) {
    assert_eq!(out.loss.shape(), &[1]);
    assert_close(&format!("{what} loss"), &g.download(&out.loss).unwrap(), &[loss], 1e-5);
    assert_close(&format!("{what} grad"), &g.download(&out.grad).unwrap(), grad, 1e-4);
}

/// The CPU loss's binary cross-entropy: mean over every element.
fn bce_ref(x: &[f32], t: &[f32], logits: bool) -> (f64, Vec<f64>) {
    let n = x.len() as f64;
    let mut total = 0.0;
    let grad = x
        .iter()
        .zip(t)
        .map(|(&x, &y)| {
            let (x, y) = (x as f64, y as f64);
            if logits {
                total += x.max(0.0) - x * y + (-x.abs()).exp().ln_1p();
                (sigmoid(x) - y) / n
            } else {
                let c = x.clamp(EPS, 1.0 - EPS);
                total -= y * c.ln() + (1.0 - y) * (1.0 - c).ln();
                if x == c {
                    (c - y) / (c * (1.0 - c)) / n
                } else {
                    0.0
                }
            }
        })
        .collect();
    (total / n, grad)
}

/// The CPU loss's categorical cross-entropy: summed over classes, mean over rows.
fn cce_ref(x: &[f32], t: &[f32], cols: usize, logits: bool) -> (f64, Vec<f64>) {
    let rows = x.len() / cols;
    let mut total = 0.0;
    let mut grad = vec![0.0; x.len()];
    for r in 0..rows {
        let (xr, tr) = (&x[r * cols..(r + 1) * cols], &t[r * cols..(r + 1) * cols]);
        let gr = &mut grad[r * cols..(r + 1) * cols];
        if logits {
            let max = xr.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
            let lse = max + xr.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln();
            let tsum: f64 = tr.iter().map(|&v| v as f64).sum();
            for c in 0..cols {
                let shifted = xr[c] as f64 - lse;
                total -= tr[c] as f64 * shifted;
                gr[c] = (shifted.exp() * tsum - tr[c] as f64) / rows as f64;
            }
        } else {
            for c in 0..cols {
                let (v, y) = (xr[c] as f64, tr[c] as f64);
                if y == 0.0 {
                    continue;
                }
                let clipped = v.clamp(EPS, 1.0 - EPS);
                total -= y * clipped.ln();
                if v == clipped {
                    gr[c] = -y / clipped / rows as f64;
                }
            }
        }
    }
    (total / rows as f64, grad)
}

#[test]
fn binary_crossentropy_from_probabilities_clips_like_keras() {
    let Some(g) = gpu() else { return };
    // 129 x 200 takes the two-pass sum.
    for (r, c) in [(9, 7), (129, 200)] {
        let x = probabilities(r * c, 3);
        let t = soft_targets(r * c, 4);
        let out = g
            .binary_crossentropy(
                &g.upload(&x, &[r, c]).unwrap(),
                &g.upload(&t, &[r, c]).unwrap(),
                CrossEntropyInput::Probabilities,
            )
            .unwrap();
        let (loss, grad) = bce_ref(&x, &t, false);
        assert!(grad.contains(&0.0), "some values are clipped");
        check(g, &format!("bce probs {r}x{c}"), &out, loss, &grad);
    }
}

#[test]
fn binary_crossentropy_from_logits_is_stable() {
    let Some(g) = gpu() else { return };
    for (r, c, scale) in [(9, 7, 3.0f32), (129, 200, 40.0)] {
        let x: Vec<f32> = rand_vec(r * c, 5).iter().map(|v| v * scale).collect();
        let t = soft_targets(r * c, 6);
        let out = g
            .binary_crossentropy(
                &g.upload(&x, &[r, c]).unwrap(),
                &g.upload(&t, &[r, c]).unwrap(),
                CrossEntropyInput::Logits,
            )
            .unwrap();
        let (loss, grad) = bce_ref(&x, &t, true);
        check(g, &format!("bce logits {r}x{c} scale {scale}"), &out, loss, &grad);
    }
}

#[test]
fn mean_absolute_error_and_its_sign_gradient() {
    let Some(g) = gpu() else { return };
    for (r, c) in [(9, 7), (129, 200)] {
        let x = rand_vec(r * c, 7);
        let mut t = rand_vec(r * c, 8);
        for i in (0..t.len()).step_by(5) {
            t[i] = x[i]; // no gradient where the prediction is exact
        }
        let out = g
            .mean_absolute_error(&g.upload(&x, &[r, c]).unwrap(), &g.upload(&t, &[r, c]).unwrap())
            .unwrap();
        let n = (r * c) as f64;
        let d: Vec<f64> = x.iter().zip(&t).map(|(&a, &b)| a as f64 - b as f64).collect();
        let loss = d.iter().map(|v| v.abs()).sum::<f64>() / n;
        let grad: Vec<f64> = d.iter().map(|&v| if v == 0.0 { 0.0 } else { v.signum() / n }).collect();
        check(g, &format!("mae {r}x{c}"), &out, loss, &grad);
    }
}

#[test]
fn categorical_crossentropy_from_probabilities_with_soft_targets() {
    let Some(g) = gpu() else { return };
    for (r, c) in [(9, 7), (40, 600)] {
        let x = probabilities(r * c, 9);
        let t = soft_targets(r * c, 10);
        let out = g
            .categorical_crossentropy(
                &g.upload(&x, &[r, c]).unwrap(),
                &g.upload(&t, &[r, c]).unwrap(),
                CrossEntropyInput::Probabilities,
            )
            .unwrap();
        let (loss, grad) = cce_ref(&x, &t, c, false);
        check(g, &format!("cce probs {r}x{c}"), &out, loss, &grad);
    }
}

#[test]
fn categorical_crossentropy_from_logits_one_hot_and_soft() {
    // The row reductions run on both paths (subgroups and workgroup memory).
    for (path, g) in super::common::reduction_paths() {
        // Rows of fewer and more columns than a workgroup's 256 threads; a [batch, steps, classes]
        // input is rows over its leading axes.
        for (shape, scale) in [(vec![37, 10], 5.0f32), (vec![3, 700], 5.0), (vec![4, 3, 5], 30.0)] {
            let n: usize = shape.iter().product();
            let cols = *shape.last().unwrap();
            let x: Vec<f32> = rand_vec(n, 11 + cols as u64).iter().map(|v| v * scale).collect();
            let one_hot: Vec<f32> = (0..n)
                .map(|k| ((k / cols * 7 + 3) % cols == k % cols) as u8 as f32)
                .collect();
            // Soft targets whose rows do not sum to 1: the gradient scales softmax by the sum.
            let soft = soft_targets(n, 12);
            for (kind, t) in [("one-hot", one_hot), ("soft", soft)] {
                let out = g
                    .categorical_crossentropy(
                        &g.upload(&x, &shape).unwrap(),
                        &g.upload(&t, &shape).unwrap(),
                        CrossEntropyInput::Logits,
                    )
                    .unwrap();
                assert_eq!(out.grad.shape(), &shape[..]);
                let (loss, grad) = cce_ref(&x, &t, cols, true);
                check(g, &format!("{path}: cce logits {kind} {shape:?}"), &out, loss, &grad);
            }
        }
    }
}

#[test]
fn dense_losses_reject_mismatched_targets_and_empty_inputs() {
    let Some(g) = gpu() else { return };
    let x = g.upload(&[0.5; 6], &[2, 3]).unwrap();
    let t = g.upload(&[0.5; 4], &[2, 2]).unwrap();
    for err in [
        g.binary_crossentropy(&x, &t, CrossEntropyInput::Logits).unwrap_err(),
        g.categorical_crossentropy(&x, &t, CrossEntropyInput::Logits)
            .unwrap_err(),
        g.categorical_crossentropy(&x, &t, CrossEntropyInput::Probabilities)
            .unwrap_err(),
        g.mean_absolute_error(&x, &t).unwrap_err(),
    ] {
        assert!(err.to_string().contains("targets (one per element of x)"), "{err}");
    }
    let empty = g.zeros(&[0, 3]).unwrap();
    let err = g.mean_absolute_error(&empty, &empty).unwrap_err().to_string();
    assert!(err.contains("empty input"), "{err}");
}
