//! 2-D pooling, NHWC (shader `pool2d`): max pooling forward with argmax and backward, average
//! pooling (the mean over each window's in-bounds elements, as Keras) and global average
//! pooling forward and backward.

use super::{expect_len, u32_of};
use crate::context::grid;
use crate::{DType, Gpu, GpuError, GpuTensor, Result};

/// Geometry of a pooling window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool2dSpec {
    /// Window (rows, columns).
    pub pool: (usize, usize),
    /// Strides (rows, columns); Keras defaults them to the window.
    pub strides: (usize, usize),
    /// Padding top, left, bottom, right (padded positions never win the max).
    pub padding: [usize; 4],
}

impl Pool2dSpec {
    /// Output (height, width) for an `h x w` input; `None` if the window does not fit.
    pub fn output_size(&self, h: usize, w: usize) -> Option<(usize, usize)> {
        let spec = crate::Conv2dSpec {
            strides: self.strides,
            dilation: (1, 1),
            padding: self.padding,
        };
        spec.output_size(h, w, self.pool.0, self.pool.1)
    }
}

/// Result of [`Gpu::max_pool2d`].
#[derive(Debug)]
pub struct MaxPool2dOutput {
    /// Pooled values `[n, oh, ow, c]`.
    pub output: GpuTensor,
    /// Flat input index of each output's maximum (u32, `u32::MAX` for an empty window).
    pub argmax: GpuTensor,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    h: u32,
    w: u32,
    c: u32,
    oh: u32,
    ow: u32,
    ph: u32,
    pw: u32,
    sh: u32,
    sw: u32,
    pad_top: u32,
    pad_left: u32,
    total: u32,
    pad: [u32; 3],
}

fn params(op: &'static str, x: [usize; 4], spec: &Pool2dSpec, total: usize) -> Result<(Params, usize, usize)> {
    let (oh, ow) = spec.output_size(x[1], x[2]).ok_or_else(|| GpuError::Invalid {
        op,
        message: format!("{spec:?} does not fit input {x:?}"),
    })?;
    let p = Params {
        n: u32_of("batch", x[0])?,
        h: u32_of("height", x[1])?,
        w: u32_of("width", x[2])?,
        c: u32_of("channels", x[3])?,
        oh: u32_of("out height", oh)?,
        ow: u32_of("out width", ow)?,
        ph: u32_of("pool", spec.pool.0)?,
        pw: u32_of("pool", spec.pool.1)?,
        sh: u32_of("stride", spec.strides.0)?,
        sw: u32_of("stride", spec.strides.1)?,
        pad_top: u32_of("padding", spec.padding[0])?,
        pad_left: u32_of("padding", spec.padding[1])?,
        total: u32_of("elements", total)?,
        pad: [0; 3],
    };
    Ok((p, oh, ow))
}

impl Gpu {
    /// Max pooling of `x` `[n, h, w, c]`: the pooled values and the argmax indices.
    pub fn max_pool2d(&self, x: &GpuTensor, spec: &Pool2dSpec) -> Result<MaxPool2dOutput> {
        x.expect_f32("max_pool2d")?;
        let xs = nhwc("max_pool2d", x)?;
        let (_, oh, ow) = params("max_pool2d", xs, spec, 0)?;
        let out_shape = [xs[0], oh, ow, xs[3]];
        let total: usize = out_shape.iter().product();
        let (p, _, _) = params("max_pool2d", xs, spec, total)?;
        let output = self.empty(&out_shape, DType::F32)?;
        let argmax = self.empty(&out_shape, DType::U32)?;
        if total > 0 {
            let (gx, gy) = grid(p.total.div_ceil(256));
            let mut batch = self.batch();
            let bufs = [(1, x.buffer()), (2, output.buffer()), (3, argmax.buffer())];
            batch.dispatch("pool2d", "max_forward", &p, &bufs, (gx, gy, 1))?;
            batch.submit()?;
        }
        Ok(MaxPool2dOutput { output, argmax })
    }

    /// Gradient wrt the input of [`Gpu::max_pool2d`]: routes each `dy` element to its argmax.
    pub fn max_pool2d_backward(
        &self,
        dy: &GpuTensor,
        argmax: &GpuTensor,
        input_shape: [usize; 4],
        spec: &Pool2dSpec,
    ) -> Result<GpuTensor> {
        dy.expect_f32("max_pool2d_backward")?;
        if argmax.dtype() != DType::U32 {
            return Err(GpuError::DType {
                op: "max_pool2d_backward",
                expected: DType::U32,
                got: argmax.dtype(),
            });
        }
        let total: usize = input_shape.iter().product();
        let (p, oh, ow) = params("max_pool2d_backward", input_shape, spec, total)?;
        let n_out = input_shape[0] * oh * ow * input_shape[3];
        expect_len("max_pool2d_backward", "dy [n, oh, ow, c]", dy, n_out)?;
        expect_len("max_pool2d_backward", "argmax [n, oh, ow, c]", argmax, n_out)?;
        let dx = self.empty(&input_shape, DType::F32)?;
        if total > 0 {
            let (gx, gy) = grid(p.total.div_ceil(256));
            let mut batch = self.batch();
            let bufs = [(4, dy.buffer()), (5, argmax.buffer()), (6, dx.buffer())];
            batch.dispatch("pool2d", "max_backward", &p, &bufs, (gx, gy, 1))?;
            batch.submit()?;
        }
        Ok(dx)
    }

    /// Average pooling of `x` `[n, h, w, c]`: each window's mean over its in-bounds elements
    /// (padding is not counted, as in Keras/TensorFlow).
    pub fn avg_pool2d(&self, x: &GpuTensor, spec: &Pool2dSpec) -> Result<GpuTensor> {
        x.expect_f32("avg_pool2d")?;
        let xs = nhwc("avg_pool2d", x)?;
        let (_, oh, ow) = params("avg_pool2d", xs, spec, 0)?;
        let out_shape = [xs[0], oh, ow, xs[3]];
        let total: usize = out_shape.iter().product();
        let (p, _, _) = params("avg_pool2d", xs, spec, total)?;
        let output = self.empty(&out_shape, DType::F32)?;
        if total > 0 {
            let (gx, gy) = grid(p.total.div_ceil(256));
            let mut batch = self.batch();
            let bufs = [(1, x.buffer()), (2, output.buffer())];
            batch.dispatch("pool2d", "avg_forward", &p, &bufs, (gx, gy, 1))?;
            batch.submit()?;
        }
        Ok(output)
    }

    /// Gradient wrt the input of [`Gpu::avg_pool2d`]: each `dy` element spread evenly over its
    /// window's in-bounds elements.
    pub fn avg_pool2d_backward(&self, dy: &GpuTensor, input_shape: [usize; 4], spec: &Pool2dSpec) -> Result<GpuTensor> {
        dy.expect_f32("avg_pool2d_backward")?;
        let total: usize = input_shape.iter().product();
        let (p, oh, ow) = params("avg_pool2d_backward", input_shape, spec, total)?;
        let n_out = input_shape[0] * oh * ow * input_shape[3];
        expect_len("avg_pool2d_backward", "dy [n, oh, ow, c]", dy, n_out)?;
        let dx = self.empty(&input_shape, DType::F32)?;
        if total > 0 {
            let (gx, gy) = grid(p.total.div_ceil(256));
            let mut batch = self.batch();
            let bufs = [(4, dy.buffer()), (6, dx.buffer())];
            batch.dispatch("pool2d", "avg_backward", &p, &bufs, (gx, gy, 1))?;
            batch.submit()?;
        }
        Ok(dx)
    }

    /// Global average pooling of `x` `[n, h, w, c]` to `[n, c]` (the mean over `h` and `w`):
    /// average pooling with one window covering the image.
    pub fn global_avg_pool2d(&self, x: &GpuTensor) -> Result<GpuTensor> {
        let xs = nhwc("global_avg_pool2d", x)?;
        let y = self.avg_pool2d(x, &global_spec(xs))?;
        y.reshape(&[xs[0], xs[3]])
    }

    /// Gradient wrt the input `[n, h, w, c]` of [`Gpu::global_avg_pool2d`] from `dy` `[n, c]`.
    pub fn global_avg_pool2d_backward(&self, dy: &GpuTensor, input_shape: [usize; 4]) -> Result<GpuTensor> {
        self.avg_pool2d_backward(dy, input_shape, &global_spec(input_shape))
    }
}

/// The one window of global pooling over an `[n, h, w, c]` input.
fn global_spec(x: [usize; 4]) -> Pool2dSpec {
    Pool2dSpec {
        pool: (x[1], x[2]),
        strides: (x[1].max(1), x[2].max(1)),
        padding: [0; 4],
    }
}

/// `x`'s shape as `[n, h, w, c]`.
fn nhwc(op: &'static str, x: &GpuTensor) -> Result<[usize; 4]> {
    <[usize; 4]>::try_from(x.shape()).map_err(|_| GpuError::Shape {
        op,
        expected: "input [n, h, w, c]".into(),
        got: format!("{:?}", x.shape()),
    })
}
