//! Batch normalization over every axis but the last (shader `batchnorm`): per-channel batch
//! statistics (two-pass column reductions over row chunks), the normalisation, the in-place
//! update of moving statistics, and the backward pass.
//!
//! `x` is seen as `[rows, cols]`: cols = the last axis (channels, NHWC), rows = every other
//! axis. Variances are the biased ones (divided by rows), as Keras normalises with and as
//! cortex-core's CPU layer also feeds into the moving variance.

use super::{expect_len, u32_of};
use crate::context::{grid, Batch};
use crate::{DType, Gpu, GpuError, GpuTensor, Result};

/// Per-channel statistics of [`Gpu::batch_norm_stats`].
#[derive(Debug)]
pub struct BatchNormStats {
    /// Mean of each channel, `[cols]`.
    pub mean: GpuTensor,
    /// Biased variance of each channel, `[cols]`.
    pub var: GpuTensor,
}

/// Gradients of [`Gpu::batch_norm_backward`].
#[derive(Debug)]
pub struct BatchNormGrads {
    /// Gradient wrt x (x's shape), when asked for.
    pub dx: Option<GpuTensor>,
    /// Gradient wrt gamma: `sum dy * xhat` per channel, `[cols]`.
    pub dgamma: GpuTensor,
    /// Gradient wrt beta: `sum dy` per channel, `[cols]`.
    pub dbeta: GpuTensor,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    chunk: u32,
    chunks: u32,
    eps: f32,
    momentum: f32,
    flags: u32,
    pad: u32,
}

const HAS_GAMMA: u32 = 1;
const HAS_BETA: u32 = 2;
const BATCH_STATS: u32 = 4;

/// Rows per chunk of a split column sum: about sqrt(rows), so both passes loop over
/// ~sqrt(rows) values per thread.
fn chunk_rows(rows: usize) -> usize {
    (rows as f64).sqrt().ceil().max(32.0) as usize
}

/// `(rows, cols)` of `x` seen as `[rows, cols]`, cols = its last axis (rank >= 2, as Keras).
fn rows_cols(op: &'static str, x: &GpuTensor) -> Result<(usize, usize)> {
    x.expect_f32(op)?;
    match x.shape() {
        [.., c] if x.shape().len() >= 2 && *c > 0 => {
            u32_of("elements", x.len())?;
            Ok((x.len() / c, *c))
        }
        s => Err(GpuError::Shape {
            op,
            expected: "[batch, ..., channels] (rank >= 2, channels > 0)".into(),
            got: format!("{s:?}"),
        }),
    }
}

fn check_vec(op: &'static str, what: &str, t: &GpuTensor, cols: usize) -> Result<()> {
    t.expect_f32(op)?;
    expect_len(op, what, t, cols)
}

fn check_eps(op: &'static str, eps: f32) -> Result<()> {
    if eps.is_nan() || eps < 0.0 {
        return Err(GpuError::Invalid {
            op,
            message: format!("eps {eps} must be >= 0"),
        });
    }
    Ok(())
}

impl Params {
    fn new(rows: usize, cols: usize) -> Result<Self> {
        let chunk = chunk_rows(rows);
        Ok(Params {
            rows: u32_of("rows", rows)?,
            cols: u32_of("cols", cols)?,
            chunk: u32_of("chunk", chunk)?,
            chunks: u32_of("row chunks", rows.div_ceil(chunk))?,
            eps: 0.0,
            momentum: 0.0,
            flags: 0,
            pad: 0,
        })
    }

    /// Grid of the *_partial entry points: column blocks x row chunks.
    fn partial_grid(&self) -> (u32, u32, u32) {
        (self.cols.div_ceil(256), self.chunks, 1)
    }

    /// Grid of the per-column entry points.
    fn column_grid(&self) -> (u32, u32, u32) {
        let (gx, gy) = grid(self.cols.div_ceil(256));
        (gx, gy, 1)
    }

    /// Grid of the per-element entry points.
    fn element_grid(&self) -> (u32, u32, u32) {
        let (gx, gy) = grid((self.rows * self.cols).div_ceil(256));
        (gx, gy, 1)
    }
}

impl Gpu {
    /// Per-channel batch statistics of `x` (`[..rows, cols]`, rank >= 2, a non-empty batch):
    /// the mean and the biased variance over every axis but the last, each `[cols]`, in two
    /// passes (the variance around the finished mean).
    pub fn batch_norm_stats(&self, x: &GpuTensor) -> Result<BatchNormStats> {
        let op = "batch_norm_stats";
        let (rows, cols) = rows_cols(op, x)?;
        if rows == 0 {
            return Err(GpuError::Invalid {
                op,
                message: "an empty batch has no statistics".into(),
            });
        }
        let mean = self.empty(&[cols], DType::F32)?;
        let var = self.empty(&[cols], DType::F32)?;
        let p = Params::new(rows, cols)?;
        let part = self.empty(&[p.chunks as usize, cols], DType::F32)?;
        let mut batch = self.batch();
        let b = &mut batch;
        b.dispatch(
            "batchnorm",
            "sum_partial",
            &p,
            &[(1, x.buffer()), (7, part.buffer())],
            p.partial_grid(),
        )?;
        b.dispatch(
            "batchnorm",
            "mean_final",
            &p,
            &[(7, part.buffer()), (9, mean.buffer())],
            p.column_grid(),
        )?;
        b.dispatch(
            "batchnorm",
            "sq_partial",
            &p,
            &[(1, x.buffer()), (4, mean.buffer()), (7, part.buffer())],
            p.partial_grid(),
        )?;
        b.dispatch(
            "batchnorm",
            "mean_final",
            &p,
            &[(7, part.buffer()), (9, var.buffer())],
            p.column_grid(),
        )?;
        batch.hold(part);
        batch.submit()?;
        Ok(BatchNormStats { mean, var })
    }

    /// Updates moving statistics in place from batch ones:
    /// `moving = moving * momentum + batch * (1 - momentum)` for the mean and the variance.
    pub fn batch_norm_update_moving(
        &self,
        moving_mean: &GpuTensor,
        moving_var: &GpuTensor,
        stats: &BatchNormStats,
        momentum: f32,
    ) -> Result<()> {
        let op = "batch_norm_update_moving";
        let cols = moving_mean.len();
        for (what, t) in [
            ("moving variance", moving_var),
            ("batch mean", &stats.mean),
            ("batch variance", &stats.var),
        ] {
            check_vec(op, what, t, cols)?;
        }
        moving_mean.expect_f32(op)?;
        if cols == 0 {
            return Ok(());
        }
        let p = Params {
            momentum,
            ..Params::new(0, cols)?
        };
        let mut batch = self.batch();
        batch.dispatch(
            "batchnorm",
            "update_moving",
            &p,
            &[
                (4, stats.mean.buffer()),
                (5, stats.var.buffer()),
                (9, moving_mean.buffer()),
                (10, moving_var.buffer()),
            ],
            p.column_grid(),
        )?;
        batch.submit()?;
        Ok(())
    }

    /// Normalises `x` (`[..rows, cols]`) per channel with the given statistics (`[cols]`
    /// each: the batch's, or moving ones): `y = (x - mean) / sqrt(var + eps) * gamma + beta`,
    /// computed as `x * a + (beta - mean * a)` with `a = gamma / sqrt(var + eps)`; a missing
    /// `gamma` is 1 and a missing `beta` 0.
    pub fn batch_norm(
        &self,
        x: &GpuTensor,
        mean: &GpuTensor,
        var: &GpuTensor,
        gamma: Option<&GpuTensor>,
        beta: Option<&GpuTensor>,
        eps: f32,
    ) -> Result<GpuTensor> {
        let op = "batch_norm";
        let (rows, cols) = rows_cols(op, x)?;
        check_eps(op, eps)?;
        check_vec(op, "mean (last axis of x)", mean, cols)?;
        check_vec(op, "variance (last axis of x)", var, cols)?;
        for (what, t) in [("gamma (last axis of x)", gamma), ("beta (last axis of x)", beta)] {
            if let Some(t) = t {
                check_vec(op, what, t, cols)?;
            }
        }
        let y = self.empty(x.shape(), DType::F32)?;
        if rows == 0 {
            return Ok(y);
        }
        let p = Params {
            eps,
            flags: flags(gamma, beta, false),
            ..Params::new(rows, cols)?
        };
        let mut batch = self.batch();
        batch.dispatch(
            "batchnorm",
            "apply",
            &p,
            &[
                (1, x.buffer()),
                (2, gamma.unwrap_or(x).buffer()),
                (3, beta.unwrap_or(x).buffer()),
                (4, mean.buffer()),
                (5, var.buffer()),
                (9, y.buffer()),
            ],
            p.element_grid(),
        )?;
        batch.submit()?;
        Ok(y)
    }

    /// Gradients of [`Gpu::batch_norm`] for the upstream gradient `dy` (x's shape), given its
    /// input `x`, the statistics it normalised with, `gamma` (None: 1) and `eps`. With
    /// `batch_stats` the statistics were `x`'s own (training: dx includes their dependence on
    /// x); otherwise they were constants (inference, or a frozen layer). `want_dx` false
    /// skips dx.
    #[allow(clippy::too_many_arguments)]
    pub fn batch_norm_backward(
        &self,
        x: &GpuTensor,
        dy: &GpuTensor,
        mean: &GpuTensor,
        var: &GpuTensor,
        gamma: Option<&GpuTensor>,
        eps: f32,
        batch_stats: bool,
        want_dx: bool,
    ) -> Result<BatchNormGrads> {
        let op = "batch_norm_backward";
        let (rows, cols) = rows_cols(op, x)?;
        check_eps(op, eps)?;
        dy.expect_f32(op)?;
        if dy.shape() != x.shape() {
            return Err(GpuError::Shape {
                op,
                expected: format!("dy {:?} (x's shape)", x.shape()),
                got: format!("{:?}", dy.shape()),
            });
        }
        check_vec(op, "mean (last axis of x)", mean, cols)?;
        check_vec(op, "variance (last axis of x)", var, cols)?;
        if let Some(g) = gamma {
            check_vec(op, "gamma (last axis of x)", g, cols)?;
        }
        if rows == 0 {
            return Ok(BatchNormGrads {
                dx: want_dx.then(|| self.empty(x.shape(), DType::F32)).transpose()?,
                dgamma: self.zeros(&[cols])?,
                dbeta: self.zeros(&[cols])?,
            });
        }
        let p = Params {
            eps,
            flags: flags(gamma, None, batch_stats),
            ..Params::new(rows, cols)?
        };
        let dgamma = self.empty(&[cols], DType::F32)?;
        let dbeta = self.empty(&[cols], DType::F32)?;
        let part_g = self.empty(&[p.chunks as usize, cols], DType::F32)?;
        let part_b = self.empty(&[p.chunks as usize, cols], DType::F32)?;
        let mut batch = self.batch();
        let b = &mut batch;
        b.dispatch(
            "batchnorm",
            "grad_partial",
            &p,
            &[
                (1, x.buffer()),
                (4, mean.buffer()),
                (5, var.buffer()),
                (6, dy.buffer()),
                (7, part_g.buffer()),
                (8, part_b.buffer()),
            ],
            p.partial_grid(),
        )?;
        b.dispatch(
            "batchnorm",
            "grad_final",
            &p,
            &[
                (7, part_g.buffer()),
                (8, part_b.buffer()),
                (9, dgamma.buffer()),
                (10, dbeta.buffer()),
            ],
            p.column_grid(),
        )?;
        let dx = if want_dx {
            let dx = self.empty(x.shape(), DType::F32)?;
            self.record_batch_norm_dx(b, &p, x, dy, mean, var, gamma, (&dgamma, &dbeta), &dx)?;
            Some(dx)
        } else {
            None
        };
        batch.hold(part_g);
        batch.hold(part_b);
        batch.submit()?;
        Ok(BatchNormGrads { dx, dgamma, dbeta })
    }

    #[allow(clippy::too_many_arguments)]
    fn record_batch_norm_dx(
        &self,
        batch: &mut Batch<'_>,
        p: &Params,
        x: &GpuTensor,
        dy: &GpuTensor,
        mean: &GpuTensor,
        var: &GpuTensor,
        gamma: Option<&GpuTensor>,
        (dgamma, dbeta): (&GpuTensor, &GpuTensor),
        dx: &GpuTensor,
    ) -> Result<()> {
        batch.dispatch(
            "batchnorm",
            "backward_dx",
            p,
            &[
                (1, x.buffer()),
                (2, gamma.unwrap_or(x).buffer()),
                (4, mean.buffer()),
                (5, var.buffer()),
                (6, dy.buffer()),
                (9, dx.buffer()),
                (11, dgamma.buffer()),
                (12, dbeta.buffer()),
            ],
            p.element_grid(),
        )
    }
}

fn flags(gamma: Option<&GpuTensor>, beta: Option<&GpuTensor>, batch_stats: bool) -> u32 {
    let mut f = 0;
    if gamma.is_some() {
        f |= HAS_GAMMA;
    }
    if beta.is_some() {
        f |= HAS_BETA;
    }
    if batch_stats {
        f |= BATCH_STATS;
    }
    f
}
