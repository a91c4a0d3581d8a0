//! Concatenation and slicing along the last axis, time reversal of sequences and the swap of
//! two middle axes (shader `layout`): the data movement of Concatenate, Bidirectional,
//! goBackwards and attention's head split.

use super::u32_of;
use crate::context::grid;
use crate::{DType, Gpu, GpuError, GpuTensor, Result};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    src_cols: u32,
    dst_cols: u32,
    width: u32,
    src_off: u32,
    dst_off: u32,
    time: u32,
    total: u32,
}

/// `(rows, last)`: the shape as a matrix of its last axis.
fn rows_cols(op: &'static str, x: &GpuTensor) -> Result<(usize, usize)> {
    match x.shape().split_last() {
        Some((&last, lead)) => Ok((lead.iter().product(), last)),
        None => Err(GpuError::Shape {
            op,
            expected: "a tensor of rank >= 1".into(),
            got: "a scalar".into(),
        }),
    }
}

impl Gpu {
    /// Records `dst[r, dst_off .. dst_off + width] = src[r, src_off .. src_off + width]`.
    fn copy_columns(
        &self,
        src: (&GpuTensor, usize),
        dst: (&GpuTensor, usize),
        (rows, width): (usize, usize),
        (src_off, dst_off): (usize, usize),
    ) -> Result<()> {
        let total = rows * width;
        if total == 0 {
            return Ok(());
        }
        let p = Params {
            src_cols: u32_of("columns", src.1)?,
            dst_cols: u32_of("columns", dst.1)?,
            width: u32_of("columns", width)?,
            src_off: u32_of("column offset", src_off)?,
            dst_off: u32_of("column offset", dst_off)?,
            time: 0,
            total: u32_of("elements", total)?,
        };
        let (gx, gy) = grid(p.total.div_ceil(256));
        let mut batch = self.batch();
        let bufs = [(1, src.0.buffer()), (2, dst.0.buffer())];
        batch.dispatch("layout", "copy_columns", &p, &bufs, (gx, gy, 1))?;
        batch.submit()?;
        Ok(())
    }

    /// Concatenates `parts` along their last axis; every other axis must match.
    pub fn concat_last(&self, parts: &[&GpuTensor]) -> Result<GpuTensor> {
        let op = "concat_last";
        let first = parts.first().ok_or_else(|| GpuError::Shape {
            op,
            expected: "at least one tensor".into(),
            got: "none".into(),
        })?;
        let lead = &first.shape()[..first.shape().len().saturating_sub(1)];
        let mut total_cols = 0;
        for t in parts {
            let (_, cols) = rows_cols(op, t)?;
            if &t.shape()[..t.shape().len() - 1] != lead {
                return Err(GpuError::Shape {
                    op,
                    expected: format!("leading axes {lead:?} (as the first tensor)"),
                    got: format!("{:?}", t.shape()),
                });
            }
            total_cols += cols;
        }
        let rows: usize = lead.iter().product();
        let mut shape = lead.to_vec();
        shape.push(total_cols);
        let out = self.empty(&shape, DType::F32)?;
        let mut off = 0;
        for t in parts {
            let cols = t.shape()[t.shape().len() - 1];
            self.copy_columns((t, cols), (&out, total_cols), (rows, cols), (0, off))?;
            off += cols;
        }
        Ok(out)
    }

    /// Columns `start .. start + len` of `x`'s last axis (the gradient of one concatenated part).
    pub fn slice_last(&self, x: &GpuTensor, start: usize, len: usize) -> Result<GpuTensor> {
        let (rows, cols) = rows_cols("slice_last", x)?;
        if start + len > cols {
            return Err(GpuError::Shape {
                op: "slice_last",
                expected: format!("columns {start}..{} within the last axis", start + len),
                got: format!("{:?}", x.shape()),
            });
        }
        let mut shape = x.shape().to_vec();
        *shape.last_mut().expect("rank >= 1") = len;
        let out = self.empty(&shape, DType::F32)?;
        self.copy_columns((x, cols), (&out, len), (rows, len), (start, 0))?;
        Ok(out)
    }

    /// `x` `[rows, len]` placed at columns `start .. start + len` of a `[rows, cols]` tensor of
    /// zeros (the gradient of [`Gpu::slice_last`]).
    pub fn place_last(&self, x: &GpuTensor, cols: usize, start: usize) -> Result<GpuTensor> {
        let (rows, len) = rows_cols("place_last", x)?;
        if start + len > cols {
            return Err(GpuError::Shape {
                op: "place_last",
                expected: format!("columns {start}..{} within {cols}", start + len),
                got: format!("{:?}", x.shape()),
            });
        }
        let mut shape = x.shape().to_vec();
        *shape.last_mut().expect("rank >= 1") = cols;
        let out = self.zeros(&shape)?;
        self.copy_columns((x, len), (&out, cols), (rows, len), (0, start))?;
        Ok(out)
    }

    /// `x` `[batch, time, features]` with its time axis reversed (its own gradient too).
    pub fn reverse_time(&self, x: &GpuTensor) -> Result<GpuTensor> {
        let [n, time, features] = <[usize; 3]>::try_from(x.shape()).map_err(|_| GpuError::Shape {
            op: "reverse_time",
            expected: "[batch, time, features]".into(),
            got: format!("{:?}", x.shape()),
        })?;
        let out = self.empty(x.shape(), DType::F32)?;
        let total = n * time * features;
        if total == 0 {
            return Ok(out);
        }
        let p = Params {
            src_cols: u32_of("features", features)?,
            dst_cols: u32_of("features", features)?,
            width: u32_of("features", features)?,
            src_off: 0,
            dst_off: 0,
            time: u32_of("time steps", time)?,
            total: u32_of("elements", total)?,
        };
        let (gx, gy) = grid(p.total.div_ceil(256));
        let mut batch_rec = self.batch();
        batch_rec.dispatch(
            "layout",
            "reverse_time",
            &p,
            &[(1, x.buffer()), (2, out.buffer())],
            (gx, gy, 1),
        )?;
        batch_rec.submit()?;
        Ok(out)
    }

    /// `x` `[outer, m, n, inner]` as `[outer, n, m, inner]` (its own inverse with m and n
    /// exchanged): `[batch, steps, heads, size]` to head-major and back.
    pub fn swap_axes12(&self, x: &GpuTensor) -> Result<GpuTensor> {
        let [outer, m, n, inner] = <[usize; 4]>::try_from(x.shape()).map_err(|_| GpuError::Shape {
            op: "swap_axes12",
            expected: "a rank-4 tensor".into(),
            got: format!("{:?}", x.shape()),
        })?;
        let out = self.empty(&[outer, n, m, inner], DType::F32)?;
        let total = x.len();
        if total == 0 {
            return Ok(out);
        }
        // Output `[outer, n, m, inner]`: its axis 2 (`m`) runs fastest after `inner`.
        let p = Params {
            src_cols: u32_of("inner size", inner)?,
            dst_cols: 0,
            width: u32_of("axis 2", n)?,
            src_off: 0,
            dst_off: 0,
            time: u32_of("axis 1", m)?,
            total: u32_of("elements", total)?,
        };
        let (gx, gy) = grid(p.total.div_ceil(256));
        let mut batch = self.batch();
        batch.dispatch(
            "layout",
            "swap_axes12",
            &p,
            &[(1, x.buffer()), (2, out.buffer())],
            (gx, gy, 1),
        )?;
        batch.submit()?;
        Ok(out)
    }
}
