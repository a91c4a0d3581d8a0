//! Reductions (shader `reduce`): column sums, full sum and mean.

use super::u32_of;
use crate::context::{grid, Batch};
use crate::{DType, Gpu, GpuError, GpuTensor, Result};

/// Workgroups of the first pass of a full reduction (each sums a grid-strided share).
const PARTIALS: usize = 256;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct Params {
    rows: u32,
    cols: u32,
    n: u32,
    pad: u32,
    scale: f32,
    pad1: [f32; 3],
}

/// Rows from which [`Gpu::sum_rows`] takes the two-pass path of [`Gpu::sum_rows_split`].
const SPLIT_SUM_ROWS: usize = 256;

impl Gpu {
    /// Sums a `[..rows, cols]` tensor over every axis but the last: `[cols]` (the bias gradient).
    pub fn sum_rows(&self, x: &GpuTensor) -> Result<GpuTensor> {
        x.expect_f32("sum_rows")?;
        let cols = *x.shape().last().ok_or_else(|| GpuError::Shape {
            op: "sum_rows",
            expected: "rank >= 1".into(),
            got: "a scalar".into(),
        })?;
        let rows = x.len().checked_div(cols).unwrap_or(0);
        // One thread per column walking every row starves a GPU when rows >> cols (a bias
        // gradient over batch * pixels rows: 9.6 ms for [25600, 512] on an H200); from a few
        // hundred rows the two-pass split sum (about sqrt(rows) rows per thread) is faster.
        if rows >= SPLIT_SUM_ROWS && cols > 0 {
            return self.sum_rows_split(x);
        }
        let out = self.empty(&[cols], DType::F32)?;
        if cols > 0 {
            let mut batch = self.batch();
            self.record_sum_rows(&mut batch, x.buffer(), rows, cols, out.buffer())?;
            batch.submit()?;
        }
        Ok(out)
    }

    /// Sum of all elements, as a `[1]` tensor.
    pub fn sum(&self, x: &GpuTensor) -> Result<GpuTensor> {
        self.scaled_sum(x, 1.0)
    }

    /// Mean of all elements, as a `[1]` tensor (NaN for an empty tensor).
    pub fn mean(&self, x: &GpuTensor) -> Result<GpuTensor> {
        self.scaled_sum(x, 1.0 / x.len() as f32)
    }

    fn scaled_sum(&self, x: &GpuTensor, scale: f32) -> Result<GpuTensor> {
        x.expect_f32("sum")?;
        let out = self.empty(&[1], DType::F32)?;
        let mut batch = self.batch();
        self.record_sum(&mut batch, x.buffer(), x.len(), scale, out.buffer())?;
        batch.submit()?;
        Ok(out)
    }

    /// Records `out[c] = sum_r src[r * cols + c]` into `batch`.
    pub(crate) fn record_sum_rows(
        &self,
        batch: &mut Batch<'_>,
        src: &wgpu::Buffer,
        rows: usize,
        cols: usize,
        out: &wgpu::Buffer,
    ) -> Result<()> {
        let p = Params {
            rows: u32_of("rows", rows)?,
            cols: u32_of("cols", cols)?,
            n: 0,
            pad: 0,
            scale: 1.0,
            pad1: [0.0; 3],
        };
        let (gx, gy) = grid(p.cols.div_ceil(256));
        batch.dispatch("reduce", "sum_rows", &p, &[(1, src), (2, out)], (gx, gy, 1))
    }

    /// Records `out[0] = scale * sum(src[0..n])` into `batch` (its scratch held by the batch).
    pub(crate) fn record_sum(
        &self,
        batch: &mut Batch<'_>,
        src: &wgpu::Buffer,
        n: usize,
        scale: f32,
        out: &wgpu::Buffer,
    ) -> Result<()> {
        let n32 = u32_of("elements", n)?;
        let mk = |n: u32| Params {
            rows: 0,
            cols: 0,
            n,
            pad: 0,
            scale,
            pad1: [0.0; 3],
        };
        if n <= 256 * 64 {
            return batch.dispatch("reduce", "sum_final", &mk(n32), &[(1, src), (2, out)], (1, 1, 1));
        }
        let groups = n.div_ceil(256).min(PARTIALS);
        let partial = self.empty(&[groups], DType::F32)?;
        let p1 = Params { scale: 1.0, ..mk(n32) };
        batch.dispatch(
            "reduce",
            "sum_partial",
            &p1,
            &[(1, src), (2, partial.buffer())],
            (groups as u32, 1, 1),
        )?;
        batch.dispatch(
            "reduce",
            "sum_final",
            &mk(groups as u32),
            &[(1, partial.buffer()), (2, out)],
            (1, 1, 1),
        )?;
        batch.hold(partial);
        Ok(())
    }
}
