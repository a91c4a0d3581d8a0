//! Layer normalization over the last axis, forward and backward (shader `layernorm`), and a
//! two-pass column sum for long batches.

use super::{expect_len, u32_of};
use crate::context::{grid, Batch};
use crate::{DType, Gpu, GpuError, GpuTensor, Result};

/// Output of [`Gpu::layer_norm`].
#[derive(Debug)]
pub struct LayerNormOutput {
    /// `(x - mean) * rstd * gamma + beta`, x's shape.
    pub y: GpuTensor,
    /// Mean of each row, `[rows]` (rows = product of all axes but the last).
    pub mean: GpuTensor,
    /// `1 / sqrt(var + eps)` of each row (biased variance), `[rows]`.
    pub rstd: GpuTensor,
}

/// Gradients of [`Gpu::layer_norm_backward`].
#[derive(Debug)]
pub struct LayerNormGrads {
    /// Gradient wrt x, x's shape.
    pub dx: GpuTensor,
    /// Gradient wrt gamma, `[cols]`.
    pub dgamma: GpuTensor,
    /// Gradient wrt beta, `[cols]`.
    pub dbeta: GpuTensor,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    chunk: u32,
    pad: u32,
    eps: f32,
    pad1: [f32; 3],
}

fn rows_cols(op: &'static str, x: &GpuTensor) -> Result<(usize, usize)> {
    x.expect_f32(op)?;
    let cols = *x.shape().last().ok_or_else(|| GpuError::Shape {
        op,
        expected: "rank >= 1".into(),
        got: "a scalar".into(),
    })?;
    Ok((x.len().checked_div(cols).unwrap_or(0), cols))
}

/// Rows per chunk of a split column sum: about sqrt(rows), so that both passes (the chunk
/// sums, then [`Gpu::sum_rows`] over the chunks) loop over ~sqrt(rows) rows per thread.
fn chunk_rows(rows: usize) -> usize {
    (rows as f64).sqrt().ceil().max(32.0) as usize
}

impl Gpu {
    /// Layer normalization of `x` (`[..rows, cols]`) over its last axis with per-column
    /// `gamma` and `beta` (`[cols]`): `y = (x - mean) / sqrt(var + eps) * gamma + beta`,
    /// biased variance as in PyTorch's `nn.LayerNorm` and Keras. Also returns the row mean
    /// and `rstd` for [`Gpu::layer_norm_backward`].
    pub fn layer_norm(&self, x: &GpuTensor, gamma: &GpuTensor, beta: &GpuTensor, eps: f32) -> Result<LayerNormOutput> {
        let op = "layer_norm";
        let (rows, cols) = rows_cols(op, x)?;
        gamma.expect_f32(op)?;
        beta.expect_f32(op)?;
        expect_len(op, "gamma (last axis of x)", gamma, cols)?;
        expect_len(op, "beta (last axis of x)", beta, cols)?;
        if eps.is_nan() || eps < 0.0 {
            return Err(GpuError::Invalid {
                op,
                message: format!("eps {eps} must be >= 0"),
            });
        }
        let y = self.empty(x.shape(), DType::F32)?;
        let mean = self.empty(&[rows], DType::F32)?;
        let rstd = self.empty(&[rows], DType::F32)?;
        if rows > 0 && cols > 0 {
            let p = Params {
                rows: u32_of("rows", rows)?,
                cols: u32_of("cols", cols)?,
                chunk: 0,
                pad: 0,
                eps,
                pad1: [0.0; 3],
            };
            let (gx, gy) = grid(p.rows);
            let mut batch = self.batch();
            batch.dispatch(
                "layernorm",
                "forward",
                &p,
                &[
                    (1, x.buffer()),
                    (2, gamma.buffer()),
                    (3, beta.buffer()),
                    (4, y.buffer()),
                    (5, mean.buffer()),
                    (6, rstd.buffer()),
                ],
                (gx, gy, 1),
            )?;
            batch.submit()?;
        }
        Ok(LayerNormOutput { y, mean, rstd })
    }

    /// Gradients of [`Gpu::layer_norm`] given its input `x`, `gamma`, the saved `mean` and
    /// `rstd`, and the upstream gradient `dy` (x's shape).
    pub fn layer_norm_backward(
        &self,
        x: &GpuTensor,
        gamma: &GpuTensor,
        mean: &GpuTensor,
        rstd: &GpuTensor,
        dy: &GpuTensor,
    ) -> Result<LayerNormGrads> {
        let op = "layer_norm_backward";
        let (rows, cols) = rows_cols(op, x)?;
        for t in [gamma, mean, rstd, dy] {
            t.expect_f32(op)?;
        }
        expect_len(op, "gamma (last axis of x)", gamma, cols)?;
        expect_len(op, "mean (one per row)", mean, rows)?;
        expect_len(op, "rstd (one per row)", rstd, rows)?;
        if dy.shape() != x.shape() {
            return Err(GpuError::Shape {
                op,
                expected: format!("dy {:?} (x's shape)", x.shape()),
                got: format!("{:?}", dy.shape()),
            });
        }
        let dx = self.empty(x.shape(), DType::F32)?;
        if rows == 0 || cols == 0 {
            return Ok(LayerNormGrads {
                dx,
                dgamma: self.zeros(&[cols])?,
                dbeta: self.zeros(&[cols])?,
            });
        }
        let dgamma = self.empty(&[cols], DType::F32)?;
        let dbeta = self.empty(&[cols], DType::F32)?;
        let chunk = chunk_rows(rows);
        let chunks = rows.div_ceil(chunk);
        let part_g = self.empty(&[chunks, cols], DType::F32)?;
        let part_b = self.empty(&[chunks, cols], DType::F32)?;
        let p = Params {
            rows: u32_of("rows", rows)?,
            cols: u32_of("cols", cols)?,
            chunk: u32_of("chunk", chunk)?,
            pad: 0,
            eps: 0.0,
            pad1: [0.0; 3],
        };
        let (gx, gy) = grid(p.rows);
        let mut batch = self.batch();
        batch.dispatch(
            "layernorm",
            "backward",
            &p,
            &[
                (1, x.buffer()),
                (2, gamma.buffer()),
                (7, dy.buffer()),
                (8, mean.buffer()),
                (9, rstd.buffer()),
                (10, dx.buffer()),
            ],
            (gx, gy, 1),
        )?;
        batch.dispatch(
            "layernorm",
            "param_partial",
            &p,
            &[
                (1, x.buffer()),
                (7, dy.buffer()),
                (8, mean.buffer()),
                (9, rstd.buffer()),
                (11, part_g.buffer()),
                (12, part_b.buffer()),
            ],
            (
                u32_of("column blocks", cols.div_ceil(256))?,
                u32_of("row chunks", chunks)?,
                1,
            ),
        )?;
        self.record_sum_rows(&mut batch, part_g.buffer(), chunks, cols, dgamma.buffer())?;
        self.record_sum_rows(&mut batch, part_b.buffer(), chunks, cols, dbeta.buffer())?;
        batch.hold(part_g);
        batch.hold(part_b);
        batch.submit()?;
        Ok(LayerNormGrads { dx, dgamma, dbeta })
    }

    /// Sums `x` (`[..rows, cols]`) over every axis but the last, like [`Gpu::sum_rows`], in
    /// two passes: row chunks summed by separate workgroups, then the chunk sums. Much faster
    /// than `sum_rows` on a GPU when rows ≫ cols (e.g. a bias gradient over batch * seq rows).
    pub fn sum_rows_split(&self, x: &GpuTensor) -> Result<GpuTensor> {
        let (rows, cols) = rows_cols("sum_rows_split", x)?;
        if rows == 0 || cols == 0 {
            return self.zeros(&[cols]);
        }
        let out = self.empty(&[cols], DType::F32)?;
        let mut batch = self.batch();
        self.record_sum_rows_split(&mut batch, x.buffer(), rows, cols, out.buffer())?;
        batch.submit()?;
        Ok(out)
    }

    /// Records the two passes of [`Gpu::sum_rows_split`] (its scratch held by the batch).
    fn record_sum_rows_split(
        &self,
        batch: &mut Batch<'_>,
        src: &wgpu::Buffer,
        rows: usize,
        cols: usize,
        out: &wgpu::Buffer,
    ) -> Result<()> {
        let chunk = chunk_rows(rows);
        let chunks = rows.div_ceil(chunk);
        let part = self.empty(&[chunks, cols], DType::F32)?;
        let p = Params {
            rows: u32_of("rows", rows)?,
            cols: u32_of("cols", cols)?,
            chunk: u32_of("chunk", chunk)?,
            pad: 0,
            eps: 0.0,
            pad1: [0.0; 3],
        };
        batch.dispatch(
            "layernorm",
            "col_partial",
            &p,
            &[(1, src), (12, part.buffer())],
            (
                u32_of("column blocks", cols.div_ceil(256))?,
                u32_of("row chunks", chunks)?,
                1,
            ),
        )?;
        self.record_sum_rows(batch, part.buffer(), chunks, cols, out)?;
        batch.hold(part);
        Ok(())
    }
}
