//! Zero padding and nearest-neighbour upsampling of NHWC images, forward and backward
//! (shader `spatial`).

use super::{expect_len, u32_of};
use crate::context::grid;
use crate::{DType, Gpu, GpuError, GpuTensor, Result};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    h: u32,
    w: u32,
    c: u32,
    oh: u32,
    ow: u32,
    a: u32,
    b: u32,
    total: u32,
}

/// `x`'s shape as `[n, h, w, c]`.
fn nhwc(op: &'static str, x: &GpuTensor) -> Result<[usize; 4]> {
    <[usize; 4]>::try_from(x.shape()).map_err(|_| GpuError::Shape {
        op,
        expected: "[n, h, w, c]".into(),
        got: format!("{:?}", x.shape()),
    })
}

impl Gpu {
    /// Runs `entry` writing `out_shape` from `src`; `small` is the `[n, h, w, c]` of the small
    /// image, `large` the `(oh, ow)` of the large one.
    fn spatial(
        &self,
        entry: &'static str,
        src: &GpuTensor,
        out_shape: [usize; 4],
        small: [usize; 4],
        large: (usize, usize),
        ab: (usize, usize),
    ) -> Result<GpuTensor> {
        let total: usize = out_shape.iter().product();
        let p = Params {
            h: u32_of("height", small[1])?,
            w: u32_of("width", small[2])?,
            c: u32_of("channels", small[3])?,
            oh: u32_of("out height", large.0)?,
            ow: u32_of("out width", large.1)?,
            a: u32_of("padding or size", ab.0)?,
            b: u32_of("padding or size", ab.1)?,
            total: u32_of("elements", total)?,
        };
        let out = self.empty(&out_shape, DType::F32)?;
        if total > 0 {
            let (gx, gy) = grid(p.total.div_ceil(256));
            let mut batch = self.batch();
            let bufs = [(1, src.buffer()), (2, out.buffer())];
            batch.dispatch("spatial", entry, &p, &bufs, (gx, gy, 1))?;
            batch.submit()?;
        }
        Ok(out)
    }

    /// Zero padding of `x` `[n, h, w, c]` by `pads` = `[top, bottom, left, right]`.
    pub fn zero_pad2d(&self, x: &GpuTensor, pads: [usize; 4]) -> Result<GpuTensor> {
        x.expect_f32("zero_pad2d")?;
        let s = nhwc("zero_pad2d", x)?;
        let [t, b, l, r] = pads;
        let (oh, ow) = (s[1] + t + b, s[2] + l + r);
        self.spatial("pad_forward", x, [s[0], oh, ow, s[3]], s, (oh, ow), (t, l))
    }

    /// Gradient wrt the input `[n, h, w, c]` of [`Gpu::zero_pad2d`]: the interior of `dy`.
    pub fn zero_pad2d_backward(&self, dy: &GpuTensor, input_shape: [usize; 4], pads: [usize; 4]) -> Result<GpuTensor> {
        dy.expect_f32("zero_pad2d_backward")?;
        let s = input_shape;
        let [t, b, l, r] = pads;
        let (oh, ow) = (s[1] + t + b, s[2] + l + r);
        expect_len("zero_pad2d_backward", "dy [n, oh, ow, c]", dy, s[0] * oh * ow * s[3])?;
        self.spatial("pad_backward", dy, s, s, (oh, ow), (t, l))
    }

    /// Nearest-neighbour upsampling of `x` `[n, h, w, c]` by `size` (rows, columns), to
    /// `[n, h * size.0, w * size.1, c]`.
    pub fn upsample_nearest2d(&self, x: &GpuTensor, size: (usize, usize)) -> Result<GpuTensor> {
        x.expect_f32("upsample_nearest2d")?;
        let s = nhwc("upsample_nearest2d", x)?;
        check_size("upsample_nearest2d", size)?;
        let (oh, ow) = (s[1] * size.0, s[2] * size.1);
        self.spatial("upsample_forward", x, [s[0], oh, ow, s[3]], s, (oh, ow), size)
    }

    /// Gradient wrt the input `[n, h, w, c]` of [`Gpu::upsample_nearest2d`]: each input pixel
    /// gets the sum of the gradients of the pixels copied from it.
    pub fn upsample_nearest2d_backward(
        &self,
        dy: &GpuTensor,
        input_shape: [usize; 4],
        size: (usize, usize),
    ) -> Result<GpuTensor> {
        dy.expect_f32("upsample_nearest2d_backward")?;
        check_size("upsample_nearest2d_backward", size)?;
        let s = input_shape;
        let (oh, ow) = (s[1] * size.0, s[2] * size.1);
        expect_len(
            "upsample_nearest2d_backward",
            "dy [n, oh, ow, c]",
            dy,
            s[0] * oh * ow * s[3],
        )?;
        self.spatial("upsample_backward", dy, s, s, (oh, ow), size)
    }
}

fn check_size(op: &'static str, size: (usize, usize)) -> Result<()> {
    if size.0 == 0 || size.1 == 0 {
        return Err(GpuError::Invalid {
            op,
            message: format!("size must be positive, got {size:?}"),
        });
    }
    Ok(())
}
