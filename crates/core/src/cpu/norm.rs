//! Layer and batch normalisation over the last axis: fused forward kernels with analytic
//! backward, recorded as [`CustomOp`]s.
//!
//! Both see the input as `rows x c` (`c` = last axis). Layer normalisation standardises each row;
//! batch normalisation standardises each column over all rows (every axis but the last), with the
//! batch statistics in training and given (moving) statistics in inference. Variances are the
//! biased ones, as in Keras. Column reductions run over blocks of rows in parallel and add up
//! partial sums in f64, so long batches keep their precision.

use rayon::prelude::*;

use crate::backprop::CustomOp;
use crate::{ops, Error, Result, Tensor};

/// Rows per parallel block: about 16K values.
fn block_rows(c: usize) -> usize {
    ((1 << 14) / c.max(1)).max(1)
}

/// Sums `f(row index, row, acc)` over all rows into a `width`-long f64 vector, blocks of rows in parallel.
fn reduce_rows(x: &[f32], c: usize, width: usize, f: impl Fn(usize, &[f32], &mut [f64]) + Sync) -> Vec<f64> {
    let br = block_rows(c);
    x.par_chunks(br * c)
        .enumerate()
        .map(|(bi, blk)| {
            let mut acc = vec![0.0f64; width];
            for (r, row) in blk.chunks_exact(c).enumerate() {
                f(bi * br + r, row, &mut acc);
            }
            acc
        })
        .reduce(
            || vec![0.0f64; width],
            |mut a, b| {
                a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                a
            },
        )
}

fn last_axis(op: &str, x: &Tensor) -> Result<usize> {
    match x.shape().last() {
        Some(&c) if c > 0 && x.rank() >= 2 => Ok(c),
        _ => Err(Error::shape(
            op,
            "[batch, ..., features] (rank >= 2, non-empty last axis)",
            x.shape(),
        )),
    }
}

fn check_vec(op: &str, what: &str, t: Option<&Tensor>, c: usize) -> Result<()> {
    match t {
        Some(t) if t.shape() != [c] => Err(Error::shape(&format!("{op} {what}"), [c], t.shape())),
        _ => Ok(()),
    }
}

/// `(dgamma, dbeta)` = `(sum dy * xhat, sum dy)` over rows, with `xhat = (x - mean) * rstd`
/// (per row for layer norm, per column for batch norm, as `stat` picks).
fn affine_grads(
    x: &[f32],
    dy: &[f32],
    c: usize,
    stat: impl Fn(usize, usize) -> (f32, f32) + Sync,
) -> (Vec<f32>, Vec<f32>) {
    let sums = reduce_rows(x, c, 2 * c, |r, row, acc| {
        let g = &dy[r * c..(r + 1) * c];
        for j in 0..c {
            let (mean, rstd) = stat(r, j);
            acc[j] += (g[j] * (row[j] - mean) * rstd) as f64;
            acc[c + j] += g[j] as f64;
        }
    });
    let (dg, db) = sums.split_at(c);
    (
        dg.iter().map(|&v| v as f32).collect(),
        db.iter().map(|&v| v as f32).collect(),
    )
}

fn push_affine(
    grads: &mut Vec<(Tensor, Vec<f32>)>,
    gamma: &Option<Tensor>,
    beta: &Option<Tensor>,
    affine: impl FnOnce() -> (Vec<f32>, Vec<f32>),
) {
    let want = |t: &Option<Tensor>| t.as_ref().is_some_and(Tensor::tracks);
    if !want(gamma) && !want(beta) {
        return;
    }
    let (dg, db) = affine();
    if let Some(g) = gamma.as_ref().filter(|t| t.tracks()) {
        grads.push((g.clone(), dg));
    }
    if let Some(b) = beta.as_ref().filter(|t| t.tracks()) {
        grads.push((b.clone(), db));
    }
}

/// Layer normalisation over the last axis: `(x - mean) / sqrt(var + eps) * gamma + beta` per row.
pub fn layer_norm(x: &Tensor, gamma: Option<&Tensor>, beta: Option<&Tensor>, eps: f32) -> Result<Tensor> {
    const OP: &str = "layerNormalization";
    let c = last_axis(OP, x)?;
    check_vec(OP, "gamma", gamma, c)?;
    check_vec(OP, "beta", beta, c)?;
    let mut inputs = vec![x];
    inputs.extend(gamma);
    inputs.extend(beta);
    if crate::ops::gpu::on_gpu(OP, &inputs)? {
        return crate::ops::gpu_norm::layer_norm(x, gamma, beta, eps);
    }
    let rows = x.len() / c;
    let mut y = vec![0.0; x.len()];
    let mut mean = vec![0.0; rows];
    let mut rstd = vec![0.0; rows];
    let (g, b) = (gamma.map(Tensor::data), beta.map(Tensor::data));
    let br = block_rows(c);
    y.par_chunks_mut(br * c)
        .zip(x.data().par_chunks(br * c))
        .zip(mean.par_chunks_mut(br).zip(rstd.par_chunks_mut(br)))
        .for_each(|((yb, xb), (mb, rb))| {
            for (r, (yr, xr)) in yb.chunks_exact_mut(c).zip(xb.chunks_exact(c)).enumerate() {
                let m = xr.iter().sum::<f32>() / c as f32;
                let var = xr.iter().map(|v| (v - m) * (v - m)).sum::<f32>() / c as f32;
                let s = 1.0 / (var + eps).sqrt();
                for j in 0..c {
                    let v = (xr[j] - m) * s;
                    yr[j] = v * g.map_or(1.0, |g| g[j]) + b.map_or(0.0, |b| b[j]);
                }
                mb[r] = m;
                rb[r] = s;
            }
        });
    let (xc, gc, bc) = (x.clone(), gamma.cloned(), beta.cloned());
    let mut inputs = vec![x];
    inputs.extend(gamma);
    inputs.extend(beta);
    ops::custom(
        y,
        x.shape().to_vec(),
        move || {
            Box::new(LayerNormOp {
                x: xc,
                gamma: gc,
                beta: bc,
                mean,
                rstd,
            })
        },
        &inputs,
    )
}

/// Backward of [`layer_norm`]: keeps each row's mean and reciprocal standard deviation.
struct LayerNormOp {
    x: Tensor,
    gamma: Option<Tensor>,
    beta: Option<Tensor>,
    mean: Vec<f32>,
    rstd: Vec<f32>,
}

impl CustomOp for LayerNormOp {
    fn name(&self) -> &'static str {
        "layerNormalization"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        let mut v = vec![&self.x];
        v.extend(self.gamma.as_ref());
        v.extend(self.beta.as_ref());
        v
    }
    fn vjp(&self, _out: &Tensor, dy: &[f32]) -> Result<Vec<(Tensor, Vec<f32>)>> {
        let c = *self.x.shape().last().unwrap_or(&1);
        let x = self.x.data();
        let g = self.gamma.as_ref().map(Tensor::data);
        let mut grads = Vec::with_capacity(3);
        if self.x.tracks() {
            // dx = rstd * (gy - mean(gy) - xhat * mean(gy * xhat)), gy = dy * gamma.
            let mut dx = vec![0.0; x.len()];
            let br = block_rows(c);
            dx.par_chunks_mut(br * c).enumerate().for_each(|(bi, dxb)| {
                let mut gy = vec![0.0; c];
                for (r, dxr) in dxb.chunks_exact_mut(c).enumerate() {
                    let row = bi * br + r;
                    let (xr, dyr) = (&x[row * c..(row + 1) * c], &dy[row * c..(row + 1) * c]);
                    let (m, s) = (self.mean[row], self.rstd[row]);
                    let (mut sum_g, mut sum_gx) = (0.0, 0.0);
                    for j in 0..c {
                        gy[j] = dyr[j] * g.map_or(1.0, |g| g[j]);
                        sum_g += gy[j];
                        sum_gx += gy[j] * (xr[j] - m) * s;
                    }
                    let (mg, mgx) = (sum_g / c as f32, sum_gx / c as f32);
                    for j in 0..c {
                        dxr[j] = s * (gy[j] - mg - (xr[j] - m) * s * mgx);
                    }
                }
            });
            grads.push((self.x.clone(), dx));
        }
        push_affine(&mut grads, &self.gamma, &self.beta, || {
            affine_grads(x, dy, c, |r, _| (self.mean[r], self.rstd[r]))
        });
        Ok(grads)
    }
}

/// Per-feature statistics of one batch (biased variance).
#[derive(Clone, Debug)]
pub struct BatchStats {
    /// Mean over every axis but the last.
    pub mean: Vec<f32>,
    /// Biased variance over every axis but the last.
    pub var: Vec<f32>,
}

/// Batch normalisation over every axis but the last. `stats = None` (training) normalises with
/// the batch's own statistics, which it returns for the moving averages, and differentiates
/// through them; `Some` (inference) uses the given (moving) statistics as constants.
pub fn batch_norm(
    x: &Tensor,
    gamma: Option<&Tensor>,
    beta: Option<&Tensor>,
    stats: Option<&BatchStats>,
    eps: f32,
) -> Result<(Tensor, BatchStats)> {
    const OP: &str = "batchNormalization";
    let c = last_axis(OP, x)?;
    check_vec(OP, "gamma", gamma, c)?;
    check_vec(OP, "beta", beta, c)?;
    if let Some(s) = stats.filter(|s| s.mean.len() != c || s.var.len() != c) {
        return Err(Error::shape(
            &format!("{OP} moving statistics"),
            [c],
            [s.mean.len(), s.var.len()],
        ));
    }
    let mut inputs = vec![x];
    inputs.extend(gamma);
    inputs.extend(beta);
    if crate::ops::gpu::on_gpu(OP, &inputs)? {
        return crate::ops::gpu_norm::batch_norm(x, gamma, beta, stats, eps);
    }
    let rows = x.len() / c;
    let training = stats.is_none();
    let stats = match stats {
        Some(s) if s.mean.len() != c || s.var.len() != c => {
            return Err(Error::shape(
                &format!("{OP} moving statistics"),
                [c],
                [s.mean.len(), s.var.len()],
            ))
        }
        Some(s) => s.clone(),
        None => {
            let xd = x.data();
            let sums = reduce_rows(xd, c, c, |_, row, acc| {
                acc.iter_mut().zip(row).for_each(|(a, &v)| *a += v as f64)
            });
            let mean: Vec<f64> = sums.iter().map(|s| s / rows as f64).collect();
            // Second pass around the mean: no cancellation from E[x^2] - E[x]^2.
            let sq = reduce_rows(xd, c, c, |_, row, acc| {
                for j in 0..c {
                    let d = row[j] as f64 - mean[j];
                    acc[j] += d * d;
                }
            });
            BatchStats {
                mean: mean.iter().map(|&m| m as f32).collect(),
                var: sq.iter().map(|&s| (s / rows as f64) as f32).collect(),
            }
        }
    };
    let rstd: Vec<f32> = stats.var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
    // y = x * a + shift per column.
    let a: Vec<f32> = (0..c).map(|j| rstd[j] * gamma.map_or(1.0, |g| g.data()[j])).collect();
    let shift: Vec<f32> = (0..c)
        .map(|j| beta.map_or(0.0, |b| b.data()[j]) - stats.mean[j] * a[j])
        .collect();
    let mut y = vec![0.0; x.len()];
    y.par_chunks_mut(block_rows(c) * c)
        .zip(x.data().par_chunks(block_rows(c) * c))
        .for_each(|(yb, xb)| {
            for (yr, xr) in yb.chunks_exact_mut(c).zip(xb.chunks_exact(c)) {
                for j in 0..c {
                    yr[j] = xr[j] * a[j] + shift[j];
                }
            }
        });
    let op = {
        let (x, gamma, beta, mean) = (x.clone(), gamma.cloned(), beta.cloned(), stats.mean.clone());
        move || -> Box<dyn CustomOp> {
            Box::new(BatchNormOp {
                x,
                gamma,
                beta,
                mean,
                rstd,
                training,
            })
        }
    };
    let mut inputs = vec![x];
    inputs.extend(gamma);
    inputs.extend(beta);
    Ok((ops::custom(y, x.shape().to_vec(), op, &inputs)?, stats))
}

/// Backward of [`batch_norm`].
struct BatchNormOp {
    x: Tensor,
    gamma: Option<Tensor>,
    beta: Option<Tensor>,
    mean: Vec<f32>,
    rstd: Vec<f32>,
    /// Whether the statistics came from this batch (and so depend on `x`).
    training: bool,
}

impl CustomOp for BatchNormOp {
    fn name(&self) -> &'static str {
        "batchNormalization"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        let mut v = vec![&self.x];
        v.extend(self.gamma.as_ref());
        v.extend(self.beta.as_ref());
        v
    }
    fn vjp(&self, _out: &Tensor, dy: &[f32]) -> Result<Vec<(Tensor, Vec<f32>)>> {
        let c = self.mean.len();
        let x = self.x.data();
        let n = (x.len() / c.max(1)) as f32;
        let stat = |_: usize, j: usize| (self.mean[j], self.rstd[j]);
        // The column sums are needed for dx in training as well as for gamma and beta.
        let needs_sums = self.training && self.x.tracks();
        let sums = needs_sums.then(|| affine_grads(x, dy, c, stat));
        let mut grads = Vec::with_capacity(3);
        if self.x.tracks() {
            let g = |j: usize| self.gamma.as_ref().map_or(1.0, |g| g.data()[j]);
            let a: Vec<f32> = (0..c).map(|j| g(j) * self.rstd[j]).collect();
            let mut dx = vec![0.0; x.len()];
            let br = block_rows(c);
            dx.par_chunks_mut(br * c)
                .zip(x.par_chunks(br * c))
                .zip(dy.par_chunks(br * c))
                .for_each(|((dxb, xb), dyb)| {
                    for ((dxr, xr), dyr) in dxb.chunks_exact_mut(c).zip(xb.chunks_exact(c)).zip(dyb.chunks_exact(c)) {
                        match &sums {
                            // dx = gamma * rstd * (dy - mean(dy) - xhat * mean(dy * xhat)).
                            Some((dg, db)) => {
                                for j in 0..c {
                                    let xhat = (xr[j] - self.mean[j]) * self.rstd[j];
                                    dxr[j] = a[j] * (dyr[j] - db[j] / n - xhat * dg[j] / n);
                                }
                            }
                            None => dxr.iter_mut().zip(dyr).zip(&a).for_each(|((d, &g), &a)| *d = g * a),
                        }
                    }
                });
            grads.push((self.x.clone(), dx));
        }
        push_affine(&mut grads, &self.gamma, &self.beta, || {
            sums.clone().unwrap_or_else(|| affine_grads(x, dy, c, stat))
        });
        Ok(grads)
    }
}
