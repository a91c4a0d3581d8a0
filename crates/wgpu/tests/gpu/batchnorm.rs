//! Batch normalization kernels against an f64 CPU reference: batch statistics (two-pass),
//! the moving-statistics update, training and inference forward and backward, rank-2 and
//! rank-4 (NHWC) inputs, batches longer than one row chunk and more than 256 channels.

use crate::common::{assert_close, gpu, rand_vec};

/// Per-channel mean and biased variance of `x` seen as `[rows, cols]`.
fn stats_ref(x: &[f32], cols: usize) -> (Vec<f64>, Vec<f64>) {
    let rows = x.len() / cols;
    let mut mean = vec![0.0; cols];
    for (i, &v) in x.iter().enumerate() {
        mean[i % cols] += v as f64 / rows as f64;
    }
    let mut var = vec![0.0; cols];
    for (i, &v) in x.iter().enumerate() {
        var[i % cols] += (v as f64 - mean[i % cols]).powi(2) / rows as f64;
    }
    (mean, var)
}

struct Reference {
    y: Vec<f64>,
    dx: Vec<f64>,
    dgamma: Vec<f64>,
    dbeta: Vec<f64>,
}

/// Forward and backward with statistics `(mean, var)`; `batch` says they are x's own (their
/// dependence on x enters dx).
#[allow(clippy::too_many_arguments)]
fn reference(
    x: &[f32],
    dy: &[f32],
    mean: &[f64],
    var: &[f64],
    gamma: &[f32],
    beta: &[f32],
    eps: f64,
    batch: bool,
) -> Reference {
    let cols = gamma.len();
    let n = (x.len() / cols) as f64;
    let rstd: Vec<f64> = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
    let xhat: Vec<f64> = x
        .iter()
        .enumerate()
        .map(|(i, &v)| (v as f64 - mean[i % cols]) * rstd[i % cols])
        .collect();
    let y = xhat
        .iter()
        .enumerate()
        .map(|(i, h)| h * gamma[i % cols] as f64 + beta[i % cols] as f64)
        .collect();
    let (mut dgamma, mut dbeta) = (vec![0.0; cols], vec![0.0; cols]);
    for (i, &g) in dy.iter().enumerate() {
        dgamma[i % cols] += g as f64 * xhat[i];
        dbeta[i % cols] += g as f64;
    }
    let dx = dy
        .iter()
        .enumerate()
        .map(|(i, &g)| {
            let c = i % cols;
            let a = gamma[c] as f64 * rstd[c];
            if batch {
                a * (g as f64 - dbeta[c] / n - xhat[i] * dgamma[c] / n)
            } else {
                a * g as f64
            }
        })
        .collect();
    Reference { y, dx, dgamma, dbeta }
}

/// Inputs with a different offset and spread per channel, so centring and scaling both matter.
fn input(shape: &[usize], seed: u64) -> Vec<f32> {
    let cols = *shape.last().unwrap();
    let n: usize = shape.iter().product();
    rand_vec(n, seed)
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let c = i % cols;
            v * (0.5 + (c % 4) as f32 * 0.8) + (c % 5) as f32 - 2.0
        })
        .collect()
}

#[test]
fn batch_norm_training_forward_backward_and_moving_update() {
    let Some(g) = gpu() else { return };
    // Rank 2, rank 4 (NHWC), rows over many chunks (chunk = max(32, sqrt(rows))), and more
    // channels than one 256-thread column block.
    for shape in [
        vec![37, 5],
        vec![4, 6, 5, 3],
        vec![8, 16, 16, 6],
        vec![2000, 7],
        vec![40, 300],
        vec![3, 1],
    ] {
        let cols = *shape.last().unwrap();
        let seed = shape.iter().product::<usize>() as u64 + cols as u64;
        let x = input(&shape, seed);
        let dy = rand_vec(x.len(), seed + 1);
        let gamma: Vec<f32> = rand_vec(cols, seed + 2).iter().map(|v| v + 1.5).collect();
        let beta = rand_vec(cols, seed + 3);
        let (moving_mean, moving_var): (Vec<f32>, Vec<f32>) = (
            rand_vec(cols, seed + 4),
            rand_vec(cols, seed + 5).iter().map(|v| v + 1.5).collect(),
        );
        let (eps, momentum) = (1e-3, 0.9f32);
        let (mean, var) = stats_ref(&x, cols);
        let want = reference(&x, &dy, &mean, &var, &gamma, &beta, eps, true);
        let what = format!("{shape:?}");

        let gx = g.upload(&x, &shape).unwrap();
        let (gg, gb) = (g.upload(&gamma, &[cols]).unwrap(), g.upload(&beta, &[cols]).unwrap());
        let stats = g.batch_norm_stats(&gx).unwrap();
        assert_close(&format!("mean {what}"), &g.download(&stats.mean).unwrap(), &mean, 1e-4);
        assert_close(&format!("var {what}"), &g.download(&stats.var).unwrap(), &var, 1e-4);

        let (mm, mv) = (
            g.upload(&moving_mean, &[cols]).unwrap(),
            g.upload(&moving_var, &[cols]).unwrap(),
        );
        g.batch_norm_update_moving(&mm, &mv, &stats, momentum).unwrap();
        let m = momentum as f64;
        let blend = |old: &[f32], now: &[f64]| -> Vec<f64> {
            old.iter()
                .zip(now)
                .map(|(&o, &v)| o as f64 * m + v * (1.0 - m))
                .collect()
        };
        assert_close(
            &format!("moving mean {what}"),
            &g.download(&mm).unwrap(),
            &blend(&moving_mean, &mean),
            1e-4,
        );
        assert_close(
            &format!("moving variance {what}"),
            &g.download(&mv).unwrap(),
            &blend(&moving_var, &var),
            1e-4,
        );

        let y = g
            .batch_norm(&gx, &stats.mean, &stats.var, Some(&gg), Some(&gb), eps as f32)
            .unwrap();
        assert_eq!(y.shape(), &shape[..]);
        assert_close(&format!("y {what}"), &g.download(&y).unwrap(), &want.y, 1e-4);

        let gdy = g.upload(&dy, &shape).unwrap();
        let grads = g
            .batch_norm_backward(&gx, &gdy, &stats.mean, &stats.var, Some(&gg), eps as f32, true, true)
            .unwrap();
        let dx = grads.dx.unwrap();
        assert_eq!(dx.shape(), &shape[..]);
        assert_close(&format!("dx {what}"), &g.download(&dx).unwrap(), &want.dx, 1e-4);
        assert_close(
            &format!("dgamma {what}"),
            &g.download(&grads.dgamma).unwrap(),
            &want.dgamma,
            1e-4,
        );
        assert_close(
            &format!("dbeta {what}"),
            &g.download(&grads.dbeta).unwrap(),
            &want.dbeta,
            1e-4,
        );
        // Without dx, the parameter gradients alone.
        let grads = g
            .batch_norm_backward(&gx, &gdy, &stats.mean, &stats.var, Some(&gg), eps as f32, true, false)
            .unwrap();
        assert!(grads.dx.is_none());
        assert_close(
            &format!("dgamma (no dx) {what}"),
            &g.download(&grads.dgamma).unwrap(),
            &want.dgamma,
            1e-4,
        );
    }
}

#[test]
fn batch_norm_inference_uses_the_given_statistics_as_constants() {
    let Some(g) = gpu() else { return };
    for shape in [vec![9, 4], vec![2, 5, 3, 6], vec![1500, 3]] {
        let cols = *shape.last().unwrap();
        let seed = 7 * shape.iter().product::<usize>() as u64;
        let x = input(&shape, seed);
        let dy = rand_vec(x.len(), seed + 1);
        let gamma: Vec<f32> = rand_vec(cols, seed + 2).iter().map(|v| v - 1.5).collect();
        let beta = rand_vec(cols, seed + 3);
        let mean: Vec<f32> = rand_vec(cols, seed + 4);
        let var: Vec<f32> = rand_vec(cols, seed + 5).iter().map(|v| v + 1.2).collect();
        let (m64, v64): (Vec<f64>, Vec<f64>) = (
            mean.iter().map(|&v| v as f64).collect(),
            var.iter().map(|&v| v as f64).collect(),
        );
        let eps = 1e-2;
        let what = format!("{shape:?}");
        let (gx, gdy) = (g.upload(&x, &shape).unwrap(), g.upload(&dy, &shape).unwrap());
        let (gm, gv) = (g.upload(&mean, &[cols]).unwrap(), g.upload(&var, &[cols]).unwrap());
        let (gg, gb) = (g.upload(&gamma, &[cols]).unwrap(), g.upload(&beta, &[cols]).unwrap());

        let want = reference(&x, &dy, &m64, &v64, &gamma, &beta, eps, false);
        let y = g.batch_norm(&gx, &gm, &gv, Some(&gg), Some(&gb), eps as f32).unwrap();
        assert_close(&format!("inference y {what}"), &g.download(&y).unwrap(), &want.y, 1e-4);
        let grads = g
            .batch_norm_backward(&gx, &gdy, &gm, &gv, Some(&gg), eps as f32, false, true)
            .unwrap();
        let dx = g.download(&grads.dx.unwrap()).unwrap();
        assert_close(&format!("inference dx {what}"), &dx, &want.dx, 1e-4);
        assert_close(
            &format!("inference dgamma {what}"),
            &g.download(&grads.dgamma).unwrap(),
            &want.dgamma,
            1e-4,
        );
        assert_close(
            &format!("inference dbeta {what}"),
            &g.download(&grads.dbeta).unwrap(),
            &want.dbeta,
            1e-4,
        );

        // Without gamma (scale: false) and beta (center: false): gamma 1 and beta 0.
        let (ones, zeros) = (vec![1.0; cols], vec![0.0; cols]);
        let want = reference(&x, &dy, &m64, &v64, &ones, &zeros, eps, false);
        let y = g.batch_norm(&gx, &gm, &gv, None, None, eps as f32).unwrap();
        assert_close(&format!("plain y {what}"), &g.download(&y).unwrap(), &want.y, 1e-4);
        let grads = g
            .batch_norm_backward(&gx, &gdy, &gm, &gv, None, eps as f32, false, true)
            .unwrap();
        let dx = g.download(&grads.dx.unwrap()).unwrap();
        assert_close(&format!("plain dx {what}"), &dx, &want.dx, 1e-4);
        // Only beta: gamma 1.
        let want = reference(&x, &dy, &m64, &v64, &ones, &beta, eps, false);
        let y = g.batch_norm(&gx, &gm, &gv, None, Some(&gb), eps as f32).unwrap();
        assert_close(&format!("beta-only y {what}"), &g.download(&y).unwrap(), &want.y, 1e-4);
    }
}

/// A large common offset: a one-pass E[x^2] - E[x]^2 in f32 loses the variance to
/// cancellation (about 1e-2 relative here); the two-pass kernels keep it.
#[test]
fn batch_norm_variance_survives_a_large_offset() {
    let Some(g) = gpu() else { return };
    let (rows, cols) = (4096, 3);
    let x: Vec<f32> = rand_vec(rows * cols, 99).iter().map(|v| v + 300.0).collect();
    let (mean, var) = stats_ref(&x, cols);
    let stats = g.batch_norm_stats(&g.upload(&x, &[rows, cols]).unwrap()).unwrap();
    assert_close("offset mean", &g.download(&stats.mean).unwrap(), &mean, 1e-6);
    assert_close("offset variance", &g.download(&stats.var).unwrap(), &var, 1e-4);
}

#[test]
fn batch_norm_rejects_bad_shapes() {
    let Some(g) = gpu() else { return };
    let x = g.zeros(&[4, 6]).unwrap();
    let (c6, c5) = (g.zeros(&[6]).unwrap(), g.zeros(&[5]).unwrap());
    assert!(g.batch_norm_stats(&g.zeros(&[6]).unwrap()).is_err(), "rank 1");
    assert!(g.batch_norm_stats(&g.zeros(&[0, 6]).unwrap()).is_err(), "empty batch");
    assert!(g.batch_norm(&x, &c5, &c6, None, None, 1e-3).is_err());
    assert!(g.batch_norm(&x, &c6, &c6, Some(&c5), None, 1e-3).is_err());
    assert!(g.batch_norm(&x, &c6, &c6, None, None, -1.0).is_err());
    let stats = g.batch_norm_stats(&x).unwrap();
    assert!(g.batch_norm_update_moving(&c6, &c5, &stats, 0.9).is_err());
    assert!(g
        .batch_norm_backward(&x, &g.zeros(&[4, 5]).unwrap(), &c6, &c6, None, 1e-3, true, true)
        .is_err());
}
