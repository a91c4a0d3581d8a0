//! Embedding lookup and its gradient (shader `embedding`).

use super::u32_of;
use crate::context::grid;
use crate::{DType, Gpu, GpuError, GpuTensor, Result};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    dim: u32,
    vocab: u32,
    pad: u32,
}

fn table_dims(op: &'static str, table: &GpuTensor) -> Result<(usize, usize)> {
    table.expect_f32(op)?;
    match *table.shape() {
        [v, d] => Ok((v, d)),
        _ => Err(GpuError::Shape {
            op,
            expected: "table [vocab, dim]".into(),
            got: format!("{:?}", table.shape()),
        }),
    }
}

impl Gpu {
    /// Looks up rows of `table` (`[vocab, dim]`) for integer `ids` (f32 holding exact
    /// integers, any shape `S`): returns `[..S, dim]`. An id outside `0..vocab` gives zeros.
    pub fn embedding(&self, table: &GpuTensor, ids: &GpuTensor) -> Result<GpuTensor> {
        let op = "embedding";
        let (vocab, dim) = table_dims(op, table)?;
        ids.expect_f32(op)?;
        let mut shape = ids.shape().to_vec();
        shape.push(dim);
        let out = self.empty(&shape, DType::F32)?;
        self.embedding_dispatch("gather", ids, vocab, dim, &[(1, table.buffer()), (3, out.buffer())])?;
        Ok(out)
    }

    /// Gradient of [`Gpu::embedding`] wrt the table: `d_out` (`[..S, dim]`) scatter-added
    /// into a `[vocab, dim]` tensor by `ids` (out-of-range ids contribute nothing).
    ///
    /// Rows hit by several ids are summed with atomics, so the summation order (and the
    /// last bits of such rows) can vary between runs.
    pub fn embedding_backward(&self, ids: &GpuTensor, d_out: &GpuTensor, vocab: usize) -> Result<GpuTensor> {
        let op = "embedding_backward";
        ids.expect_f32(op)?;
        d_out.expect_f32(op)?;
        let dim = d_out.len().checked_div(ids.len()).unwrap_or(0);
        if d_out.shape().len() != ids.shape().len() + 1 || d_out.shape()[..ids.shape().len()] != *ids.shape() {
            return Err(GpuError::Shape {
                op,
                expected: format!("d_out {:?} + [dim]", ids.shape()),
                got: format!("{:?}", d_out.shape()),
            });
        }
        let d_table = self.zeros(&[vocab, dim])?;
        self.embedding_dispatch(
            "scatter_add",
            ids,
            vocab,
            dim,
            &[(4, d_out.buffer()), (5, d_table.buffer())],
        )?;
        Ok(d_table)
    }

    fn embedding_dispatch(
        &self,
        entry: &str,
        ids: &GpuTensor,
        vocab: usize,
        dim: usize,
        bufs: &[(u32, &wgpu::Buffer)],
    ) -> Result<()> {
        let n = u32_of("embedding elements", ids.len() * dim)?;
        if n == 0 {
            return Ok(());
        }
        let p = Params {
            rows: u32_of("ids", ids.len())?,
            dim: u32_of("dim", dim)?,
            vocab: u32_of("vocab", vocab)?,
            pad: 0,
        };
        let mut all = vec![(2, ids.buffer())];
        all.extend_from_slice(bufs);
        let (gx, gy) = grid(n.div_ceil(256));
        let mut pass = self.batch();
        pass.dispatch("embedding", entry, &p, &all, (gx, gy, 1))?;
        pass.submit()?;
        Ok(())
    }
}
