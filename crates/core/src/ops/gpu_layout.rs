//! Concatenation and embedding lookups on the GPU (cortex-wgpu's layout and embedding
//! kernels), with their backward passes on the device.

use cortex_wgpu::GpuTensor;

use super::gpu::{buf, grad, run};
use crate::backprop::{GpuCustomOp, Op};
use crate::device::gpu_err;
use crate::{Result, Tensor};

/// Joins `inputs` as blocks of `widths[i]` values in each of `outer` rows (a concatenation
/// along any axis, seen as one along the last axis of `[outer, width]` views).
pub(crate) fn concatenate(inputs: &[Tensor], outer: usize, widths: &[usize], shape: Vec<usize>) -> Result<Tensor> {
    let views = inputs
        .iter()
        .zip(widths)
        .map(|(t, &w)| buf(t)?.reshape(&[outer, w]).map_err(gpu_err))
        .collect::<Result<Vec<_>>>()?;
    let refs: Vec<&GpuTensor> = views.iter().collect();
    let out = run(|gpu| gpu.concat_last(&refs)?.reshape(&shape))?;
    let tracked: Vec<&Tensor> = inputs.iter().collect();
    Ok(Tensor::from_gpu_op(
        out,
        shape.clone(),
        |_| {
            Op::GpuCustom(Box::new(ConcatBackward {
                inputs: inputs.to_vec(),
                outer,
                widths: widths.to_vec(),
            }))
        },
        &tracked,
    ))
}

struct ConcatBackward {
    inputs: Vec<Tensor>,
    outer: usize,
    widths: Vec<usize>,
}

impl GpuCustomOp for ConcatBackward {
    fn name(&self) -> &'static str {
        "concatenate"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        self.inputs.iter().collect()
    }
    fn vjp(&self, dy: &GpuTensor) -> Result<Vec<(Tensor, Tensor)>> {
        let total: usize = self.widths.iter().sum();
        let rows = dy.clone().reshape(&[self.outer, total]).map_err(gpu_err)?;
        let mut start = 0;
        let mut v = Vec::with_capacity(self.inputs.len());
        for (t, &w) in self.inputs.iter().zip(&self.widths) {
            if t.tracks() {
                let part = run(|gpu| gpu.slice_last(&rows, start, w)?.reshape(t.shape()))?;
                v.push((t.clone(), grad(part)));
            }
            start += w;
        }
        Ok(v)
    }
}

/// Consecutive flat pieces of `packed` (on the GPU) with the given shapes, as
/// [`super::split`]: how a layer with several outputs hands out one packed result.
pub(crate) fn split(packed: &Tensor, shapes: &[Vec<usize>]) -> Result<Vec<Tensor>> {
    let row = buf(packed)?.reshape(&[1, packed.len()]).map_err(gpu_err)?;
    let mut start = 0;
    let mut out = Vec::with_capacity(shapes.len());
    for shape in shapes {
        let n = crate::tensor::numel(shape);
        let piece = run(|gpu| gpu.slice_last(&row, start, n)?.reshape(shape))?;
        let backward = SliceBackward {
            packed: packed.clone(),
            start,
        };
        out.push(Tensor::from_gpu_op(
            piece,
            shape.clone(),
            |_| Op::GpuCustom(Box::new(backward)),
            &[packed],
        ));
        start += n;
    }
    Ok(out)
}

/// The gradient of one piece of [`split`]: its values in place, zeros elsewhere.
struct SliceBackward {
    packed: Tensor,
    start: usize,
}

impl GpuCustomOp for SliceBackward {
    fn name(&self) -> &'static str {
        "split"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.packed]
    }
    fn vjp(&self, dy: &GpuTensor) -> Result<Vec<(Tensor, Tensor)>> {
        let row = dy.clone().reshape(&[1, dy.len()]).map_err(gpu_err)?;
        let total = self.packed.len();
        let full = run(|gpu| gpu.place_last(&row, total, self.start)?.reshape(self.packed.shape()))?;
        Ok(vec![(self.packed.clone(), grad(full))])
    }
}

/// Rows of `table` (`[vocab, dim]`, on the GPU) for `ids` (validated integers, `ids_shape`):
/// `[..ids_shape, dim]`.
pub(crate) fn embedding(table: &Tensor, ids: &[u32], ids_shape: &[usize]) -> Result<Tensor> {
    let gt = buf(table)?;
    let as_f32: Vec<f32> = ids.iter().map(|&i| i as f32).collect();
    let ids = run(|gpu| gpu.upload(&as_f32, ids_shape))?;
    let out = run(|gpu| gpu.embedding(&gt, &ids))?;
    let shape = out.shape().to_vec();
    Ok(Tensor::from_gpu_op(
        out,
        shape,
        |_| {
            Op::GpuCustom(Box::new(EmbeddingBackward {
                table: table.clone(),
                ids,
            }))
        },
        &[table],
    ))
}

struct EmbeddingBackward {
    table: Tensor,
    ids: GpuTensor,
}

impl GpuCustomOp for EmbeddingBackward {
    fn name(&self) -> &'static str {
        "embedding"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.table]
    }
    fn vjp(&self, dy: &GpuTensor) -> Result<Vec<(Tensor, Tensor)>> {
        let vocab = self.table.shape()[0];
        let d = run(|gpu| gpu.embedding_backward(&self.ids, dy, vocab))?;
        Ok(vec![(self.table.clone(), grad(d))])
    }
}
