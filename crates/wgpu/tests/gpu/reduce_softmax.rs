//! Reductions, softmax and sparse categorical cross-entropy against f64 references.

use super::common::{assert_close, gpu, rand_vec, reduction_paths};
use cortex_wgpu::CrossEntropyInput;

#[test]
fn sum_rows_is_the_bias_gradient() {
    let Some(g) = gpu() else { return };
    // The last two shapes take the two-pass path for tall inputs.
    for (r, c) in [(37, 53), (1024, 10), (3, 300), (5000, 7), (70_000, 33)] {
        let x = rand_vec(r * c, (r + c) as u64);
        let out = g
            .download(&g.sum_rows(&g.upload(&x, &[r, c]).unwrap()).unwrap())
            .unwrap();
        let want: Vec<f64> = (0..c).map(|j| (0..r).map(|i| x[i * c + j] as f64).sum()).collect();
        // Sums of +-1 values cancel; the metric's floor (1% of the largest sum) covers that.
        assert_close(&format!("sum_rows {r}x{c}"), &out, &want, 1e-4);
    }
}

#[test]
fn full_sum_and_mean() {
    for (path, g) in reduction_paths() {
        for n in [1, 255, 1000, 16384, 16385, 100_003, 1_000_000] {
            let x: Vec<f32> = rand_vec(n, n as u64).iter().map(|v| v + 0.5).collect();
            let gx = g.upload(&x, &[n]).unwrap();
            let want: f64 = x.iter().map(|&v| v as f64).sum();
            let s = g.download(&g.sum(&gx).unwrap()).unwrap();
            // Up to 1e6 terms: tree/strided f32 sums carry ~sqrt(n) eps errors; 1e-4 still holds
            // because the positive-mean data makes the sum large relative to the cancellation.
            assert_close(&format!("{path}: sum n={n}"), &s, &[want], 1e-4);
            let m = g.download(&g.mean(&gx).unwrap()).unwrap();
            assert_close(&format!("{path}: mean n={n}"), &m, &[want / n as f64], 1e-4);
        }
    }
}

fn softmax_ref(x: &[f32], cols: usize) -> Vec<f64> {
    x.chunks(cols)
        .flat_map(|row| {
            let m = row.iter().fold(f64::MIN, |m, &v| m.max(v as f64));
            let s: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
            row.iter().map(move |&v| (v as f64 - m).exp() / s)
        })
        .collect()
}

#[test]
fn softmax_rows() {
    for (path, g) in reduction_paths() {
        for (r, c) in [(37, 53), (5, 1000), (1, 1), (300, 10)] {
            let x: Vec<f32> = rand_vec(r * c, c as u64).iter().map(|v| v * 10.0).collect();
            let out = g
                .download(&g.softmax(&g.upload(&x, &[r, c]).unwrap()).unwrap())
                .unwrap();
            assert_close(&format!("{path}: softmax {r}x{c}"), &out, &softmax_ref(&x, c), 1e-4);
        }
    }
}

fn labels_for(rows: usize, cols: usize) -> Vec<f32> {
    (0..rows).map(|i| ((i * 7 + 3) % cols) as f32).collect()
}

#[test]
fn crossentropy_from_logits() {
    for (path, g) in reduction_paths() {
        for (r, c) in [(37, 10), (64, 53), (3, 700)] {
            let x: Vec<f32> = rand_vec(r * c, 9 + c as u64).iter().map(|v| v * 5.0).collect();
            let y = labels_for(r, c);
            let out = g
                .sparse_categorical_crossentropy(
                    &g.upload(&x, &[r, c]).unwrap(),
                    &g.upload(&y, &[r]).unwrap(),
                    CrossEntropyInput::Logits,
                )
                .unwrap();
            let p = softmax_ref(&x, c);
            let loss: f64 = (0..r).map(|i| -p[i * c + y[i] as usize].ln()).sum::<f64>() / r as f64;
            assert_close(
                &format!("{path}: sce logits loss"),
                &g.download(&out.loss).unwrap(),
                &[loss],
                1e-4,
            );
            let grad: Vec<f64> = (0..r * c)
                .map(|k| (p[k] - ((k % c) == y[k / c] as usize) as u8 as f64) / r as f64)
                .collect();
            assert_close(
                &format!("{path}: sce logits grad"),
                &g.download(&out.grad).unwrap(),
                &grad,
                1e-4,
            );
        }
    }
}

#[test]
fn crossentropy_from_probabilities() {
    for (path, g) in reduction_paths() {
        let (r, c) = (37, 13);
        let x: Vec<f32> = rand_vec(r * c, 77).iter().map(|v| v * 3.0).collect();
        let probs: Vec<f32> = softmax_ref(&x, c).iter().map(|&v| v as f32).collect();
        let y = labels_for(r, c);
        let out = g
            .sparse_categorical_crossentropy(
                &g.upload(&probs, &[r, c]).unwrap(),
                &g.upload(&y, &[r]).unwrap(),
                CrossEntropyInput::Probabilities,
            )
            .unwrap();
        let py = |i: usize| probs[i * c + y[i] as usize] as f64;
        let loss: f64 = (0..r).map(|i| -py(i).ln()).sum::<f64>() / r as f64;
        assert_close(
            &format!("{path}: sce probs loss"),
            &g.download(&out.loss).unwrap(),
            &[loss],
            1e-4,
        );
        let grad: Vec<f64> = (0..r * c)
            .map(|k| {
                if k % c == y[k / c] as usize {
                    -1.0 / (r as f64 * py(k / c))
                } else {
                    0.0
                }
            })
            .collect();
        assert_close(
            &format!("{path}: sce probs grad"),
            &g.download(&out.grad).unwrap(),
            &grad,
            1e-4,
        );
    }
}

#[test]
fn crossentropy_bad_label_is_nan_and_bad_shapes_error() {
    let Some(g) = gpu() else { return };
    let x = g.upload(&[0.0; 6], &[2, 3]).unwrap();
    let out = g
        .sparse_categorical_crossentropy(&x, &g.upload(&[0.0, 3.0], &[2]).unwrap(), CrossEntropyInput::Logits)
        .unwrap();
    assert!(g.download(&out.loss).unwrap()[0].is_nan());
    assert!(g
        .sparse_categorical_crossentropy(&x, &g.upload(&[0.0; 3], &[3]).unwrap(), CrossEntropyInput::Logits)
        .is_err());
}

#[test]
fn subgroups_are_used_where_the_adapter_has_them() {
    let Some(g) = gpu() else { return };
    let has = g.features().contains(wgpu::Features::SUBGROUP);
    assert_eq!(
        g.subgroups(),
        has && std::env::var("CORTEX_WGPU_SUBGROUPS").map_or(true, |v| v != "0")
    );
    if !has {
        let err = g.set_subgroups(true).unwrap_err().to_string();
        assert!(err.contains("no subgroup operations"), "{err}");
    }
}
