//! NHWC conv2d forward / backward-input / backward-filter as implicit GEMM (shader `conv`).

use super::matmul::MatmulKernel;
use super::u32_of;
use crate::{DType, Gpu, GpuError, GpuTensor, Result};

/// Geometry of a 2-D convolution (or pooling window placement).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dSpec {
    /// Strides (rows, columns).
    pub strides: (usize, usize),
    /// Dilation rates (rows, columns).
    pub dilation: (usize, usize),
    /// Zero padding: top, left, bottom, right (Keras "same" is the caller's computation).
    pub padding: [usize; 4],
}

impl Default for Conv2dSpec {
    fn default() -> Self {
        Self {
            strides: (1, 1),
            dilation: (1, 1),
            padding: [0; 4],
        }
    }
}

impl Conv2dSpec {
    /// Output (height, width) for an `h x w` input and a `kh x kw` kernel; `None` if the
    /// dilated kernel does not fit in the padded input or a stride/dilation is 0.
    pub fn output_size(&self, h: usize, w: usize, kh: usize, kw: usize) -> Option<(usize, usize)> {
        let (sh, sw) = self.strides;
        let (dh, dw) = self.dilation;
        if sh == 0 || sw == 0 || dh == 0 || dw == 0 || kh == 0 || kw == 0 {
            return None;
        }
        let [pt, pl, pb, pr] = self.padding;
        let eh = dh * (kh - 1) + 1;
        let ew = dw * (kw - 1) + 1;
        let (ph, pw) = (h + pt + pb, w + pl + pr);
        if ph < eh || pw < ew {
            return None;
        }
        Some(((ph - eh) / sh + 1, (pw - ew) / sw + 1))
    }
}

/// Output tiles to aim for when splitting k: enough workgroups to fill a large GPU.
const TARGET_WORKGROUPS: usize = 512;
/// Most kernel weights (gm * gn) [`Gpu::conv2d_backward_filter`] sums per-thread instead of as
/// a GEMM tile, and the shortest k for which it does.
const SMALL_FILTER_OUTPUTS: usize = 1024;
const SMALL_FILTER_MIN_K: usize = 4096;
/// Longest k (kh * kw * cin) and most kernel weights for which [`Gpu::conv2d`] runs the
/// direct `forward_small` kernel (the weights sit in its workgroup memory) instead of the
/// implicit GEMM; only under the `Auto` kernel choice.
const SMALL_FORWARD_MAX_K: usize = 64;
const SMALL_FORWARD_WEIGHTS: usize = 2048;
/// Shortest k range one workgroup sums under split-K.
const MIN_K_CHUNK: usize = 256;

/// The k range per workgroup for a split-K GEMM (m x n output, inner size k): `k` itself
/// when the output already has enough tiles or k is short; always a multiple of 16 otherwise.
pub fn split_k_chunk(m: usize, n: usize, k: usize) -> usize {
    split_k_chunk_for_tile(m, n, k, 64)
}

/// [`split_k_chunk`] for a kernel whose output tiles are `tile x tile`.
pub fn split_k_chunk_for_tile(m: usize, n: usize, k: usize, tile: usize) -> usize {
    let tiles = m.div_ceil(tile) * n.div_ceil(tile);
    let splits = (TARGET_WORKGROUPS / tiles.max(1)).min(k / MIN_K_CHUNK).max(1);
    if splits == 1 {
        return k.max(1);
    }
    k.div_ceil(splits).div_ceil(16) * 16
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    h: u32,
    w: u32,
    cin: u32,
    oh: u32,
    ow: u32,
    cout: u32,
    kh: u32,
    kw: u32,
    sh: u32,
    sw: u32,
    dh: u32,
    dw: u32,
    pad_top: u32,
    pad_left: u32,
    /// `forward_small` only: 1 when binding 4 holds a bias to add.
    has_bias: u32,
    gm: u32,
    gn: u32,
    gk: u32,
    k_chunk: u32,
    /// Workgroup offset of this dispatch within the full grid (see `Batch::dispatch_tiled`).
    off: [u32; 3],
    pad2: u32,
}

fn shape4(op: &'static str, what: &str, t: &GpuTensor) -> Result<[usize; 4]> {
    t.expect_f32(op)?;
    <[usize; 4]>::try_from(t.shape()).map_err(|_| GpuError::Shape {
        op,
        expected: format!("{what} of rank 4"),
        got: format!("{:?}", t.shape()),
    })
}

/// Resolved geometry of one convolution.
struct Geometry {
    x: [usize; 4],
    k: [usize; 4],
    oh: usize,
    ow: usize,
}

fn geometry(op: &'static str, x: [usize; 4], k: [usize; 4], spec: &Conv2dSpec) -> Result<Geometry> {
    if x[3] != k[2] {
        return Err(GpuError::Shape {
            op,
            expected: format!("kernel [kh, kw, {}, cout] for input channels {}", x[3], x[3]),
            got: format!("kernel {k:?}"),
        });
    }
    let (oh, ow) = spec
        .output_size(x[1], x[2], k[0], k[1])
        .ok_or_else(|| GpuError::Invalid {
            op,
            message: format!("kernel {k:?} with {spec:?} does not fit input {x:?}"),
        })?;
    Ok(Geometry { x, k, oh, ow })
}

impl Gpu {
    /// Chooses the tiling of the implicit-GEMM conv kernels (all three passes) for this
    /// device: [`MatmulKernel::Tile64`], `Tile128Bk8`, `Tile128Bk16` or `Auto`. Until set,
    /// `CORTEX_CONV_KERNEL` (same names as `CORTEX_MATMUL_KERNEL`) or `Auto` applies.
    pub fn set_conv_kernel(&self, kernel: MatmulKernel) {
        let idx = MatmulKernel::ALL.iter().position(|k| *k == kernel).unwrap_or(0);
        self.conv_kernel
            .store(idx as u8 + 1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The conv kernel choice in force (see [`Gpu::set_conv_kernel`]).
    pub fn conv_kernel(&self) -> MatmulKernel {
        match self.conv_kernel.load(std::sync::atomic::Ordering::Relaxed) {
            0 => {
                static ENV: std::sync::OnceLock<MatmulKernel> = std::sync::OnceLock::new();
                *ENV.get_or_init(|| MatmulKernel::from_var("CORTEX_CONV_KERNEL"))
            }
            i => MatmulKernel::ALL[i as usize - 1],
        }
    }

    /// The concrete kernel a conv pass whose implicit GEMM is `gm x gn` runs. `Auto` means
    /// `Tile128Bk8` when `gm` and `gn` are both at least 128, else `Tile64`, as for matmul: a
    /// 128 tile over 32 or 64 output columns idles half or more of its threads' work. On an
    /// NVIDIA H200 (after the register-blocking fix) the MNIST convnet's second layer at batch
    /// 1024 ran forward / backward-input (32 columns) / backward-filter (64 columns) in
    /// 0.63 / 1.66 / 0.81 ms on Tile64 and 0.93 / 2.14 / 1.17 ms on Tile128Bk8. There is no
    /// mixed-precision conv: `Tile128F16` runs as `Tile128Bk8`.
    pub fn conv_kernel_for(&self, gm: usize, gn: usize) -> MatmulKernel {
        let k = match self.conv_kernel() {
            MatmulKernel::Auto if gm >= 128 && gn >= 128 => MatmulKernel::Tile128Bk8,
            MatmulKernel::Auto => MatmulKernel::Tile64,
            MatmulKernel::Tile128F16 => MatmulKernel::Tile128Bk8,
            k => k,
        };
        if k.fits(self) {
            k
        } else {
            MatmulKernel::Tile128Bk8
        }
    }

    /// The uniform of a conv dispatch for implicit GEMM `gm x gn x gk` split in `k_chunk`s.
    fn conv_params(
        &self,
        g: &Geometry,
        spec: &Conv2dSpec,
        (gm, gn, gk): (usize, usize, usize),
        k_chunk: usize,
    ) -> Result<Params> {
        Ok(Params {
            n: u32_of("batch", g.x[0])?,
            h: u32_of("height", g.x[1])?,
            w: u32_of("width", g.x[2])?,
            cin: u32_of("in channels", g.x[3])?,
            oh: u32_of("out height", g.oh)?,
            ow: u32_of("out width", g.ow)?,
            cout: u32_of("out channels", g.k[3])?,
            kh: u32_of("kernel height", g.k[0])?,
            kw: u32_of("kernel width", g.k[1])?,
            sh: u32_of("stride", spec.strides.0)?,
            sw: u32_of("stride", spec.strides.1)?,
            dh: u32_of("dilation", spec.dilation.0)?,
            dw: u32_of("dilation", spec.dilation.1)?,
            pad_top: u32_of("padding", spec.padding[0])?,
            pad_left: u32_of("padding", spec.padding[1])?,
            has_bias: 0,
            gm: u32_of("gemm m", gm)?,
            gn: u32_of("gemm n", gn)?,
            gk: u32_of("gemm k", gk)?,
            k_chunk: u32_of("k chunk", k_chunk)?,
            off: [0; 3],
            pad2: 0,
        })
    }

    fn conv_dispatch(
        &self,
        entry: &str,
        g: &Geometry,
        spec: &Conv2dSpec,
        gemm: (usize, usize, usize),
        split_k: bool,
        a: &GpuTensor,
        b: &GpuTensor,
        out_shape: &[usize],
    ) -> Result<GpuTensor> {
        let (gm, gn, gk) = gemm;
        if gk == 0 || gm == 0 || gn == 0 {
            return self.zeros(out_shape);
        }
        let (tile, shader) = match self.conv_kernel_for(gm, gn) {
            MatmulKernel::Tile128Bk8 => (128, "conv_t128_bk8"),
            MatmulKernel::Tile128Bk16 => (128, "conv_t128_bk16"),
            _ => (64, "conv"),
        };
        // Split-K (backward_filter's long k) sizes its chunks for the tile in use.
        let k_chunk = if split_k {
            split_k_chunk_for_tile(gm, gn, gk, tile)
        } else {
            gk
        };
        let out = self.empty(out_shape, DType::F32)?;
        let p = self.conv_params(g, spec, (gm, gn, gk), k_chunk)?;
        let with_off = |off: [u32; 3]| Params { off, ..p };
        let splits = gk.div_ceil(k_chunk);
        let groups = (
            u32_of("n tiles", gn.div_ceil(tile))?,
            u32_of("m tiles", gm.div_ceil(tile))?,
            u32_of("k splits", splits)?,
        );
        let mut batch = self.batch();
        if splits == 1 {
            batch.dispatch_tiled(
                shader,
                entry,
                with_off,
                &[(1, a.buffer()), (2, b.buffer()), (3, out.buffer())],
                groups,
            )?;
            batch.submit()?;
            return Ok(out);
        }
        // Split-K: per-split partial products, then a column sum over the splits.
        let partial = self.empty(&[splits, gm * gn], DType::F32)?;
        batch.dispatch_tiled(
            shader,
            entry,
            with_off,
            &[(1, a.buffer()), (2, b.buffer()), (3, partial.buffer())],
            groups,
        )?;
        self.record_sum_rows(&mut batch, partial.buffer(), splits, gm * gn, out.buffer())?;
        batch.hold(partial);
        batch.submit()?;
        Ok(out)
    }

    /// 2-D convolution of `x` `[n, h, w, cin]` with `kernel` `[kh, kw, cin, cout]`:
    /// `[n, oh, ow, cout]` (no bias; see [`Gpu::conv2d_bias`]).
    pub fn conv2d(&self, x: &GpuTensor, kernel: &GpuTensor, spec: &Conv2dSpec) -> Result<GpuTensor> {
        self.conv2d_bias(x, kernel, None, spec)
    }

    /// [`Gpu::conv2d`] plus an optional `bias` `[cout]` added to every output position. A
    /// short k (at most 64 = kh * kw * cin, at most 2048 kernel weights: first layers) runs
    /// as a direct convolution that adds the bias before its one store; otherwise the
    /// implicit GEMM runs and is followed by [`Gpu::bias_add`]. On an H200 the MNIST first
    /// layer ([3, 3, 1, 32], batch 8192) took 3.52 ms as GEMM + bias + relu.
    pub fn conv2d_bias(
        &self,
        x: &GpuTensor,
        kernel: &GpuTensor,
        bias: Option<&GpuTensor>,
        spec: &Conv2dSpec,
    ) -> Result<GpuTensor> {
        let xs = shape4("conv2d", "input [n, h, w, cin]", x)?;
        let ks = shape4("conv2d", "kernel [kh, kw, cin, cout]", kernel)?;
        let g = geometry("conv2d", xs, ks, spec)?;
        if let Some(b) = bias {
            b.expect_f32("conv2d")?;
            if b.shape() != [ks[3]] {
                return Err(GpuError::Shape {
                    op: "conv2d",
                    expected: format!("bias [{}] (the kernel's output channels)", ks[3]),
                    got: format!("bias {:?}", b.shape()),
                });
            }
        }
        let gemm = (xs[0] * g.oh * g.ow, ks[3], ks[0] * ks[1] * ks[2]);
        let out_shape = [xs[0], g.oh, g.ow, ks[3]];
        let small = gemm.2 <= SMALL_FORWARD_MAX_K && gemm.1 * gemm.2 <= SMALL_FORWARD_WEIGHTS;
        if small && gemm.0 > 0 && gemm.1 > 0 && self.conv_kernel() == MatmulKernel::Auto {
            return self.forward_small(&g, spec, gemm, x, kernel, bias, &out_shape);
        }
        let y = self.conv_dispatch("forward", &g, spec, gemm, false, x, kernel, &out_shape)?;
        match bias {
            Some(b) => self.bias_add(&y, b),
            None => Ok(y),
        }
    }

    /// The direct `forward_small` kernel (see [`Gpu::conv2d_bias`]): one thread per pixel
    /// and 4 output channels.
    #[allow(clippy::too_many_arguments)]
    fn forward_small(
        &self,
        g: &Geometry,
        spec: &Conv2dSpec,
        gemm: (usize, usize, usize),
        x: &GpuTensor,
        kernel: &GpuTensor,
        bias: Option<&GpuTensor>,
        out_shape: &[usize],
    ) -> Result<GpuTensor> {
        let (gm, gn, _) = gemm;
        let threads = u32_of("conv2d pixels x channel groups", gm * gn.div_ceil(4))?;
        let out = self.empty(out_shape, DType::F32)?;
        let p = Params {
            has_bias: bias.is_some() as u32,
            ..self.conv_params(g, spec, gemm, gemm.2)?
        };
        // Without a bias the kernel buffer stands in for binding 4 (never read).
        let bias_buffer = bias.unwrap_or(kernel).buffer();
        let mut batch = self.batch();
        batch.dispatch_tiled(
            "conv",
            "forward_small",
            |off: [u32; 3]| Params { off, ..p },
            &[
                (1, x.buffer()),
                (2, kernel.buffer()),
                (3, out.buffer()),
                (4, bias_buffer),
            ],
            (threads.div_ceil(256), 1, 1),
        )?;
        batch.submit()?;
        Ok(out)
    }

    /// Gradient wrt the input of [`Gpu::conv2d`]: `dy` `[n, oh, ow, cout]` -> `[n, h, w, cin]`
    /// for an input of shape `input_shape`.
    pub fn conv2d_backward_input(
        &self,
        dy: &GpuTensor,
        kernel: &GpuTensor,
        input_shape: [usize; 4],
        spec: &Conv2dSpec,
    ) -> Result<GpuTensor> {
        let ks = shape4("conv2d_backward_input", "kernel [kh, kw, cin, cout]", kernel)?;
        let ds = shape4("conv2d_backward_input", "dy [n, oh, ow, cout]", dy)?;
        let g = geometry("conv2d_backward_input", input_shape, ks, spec)?;
        let want = [input_shape[0], g.oh, g.ow, ks[3]];
        if ds != want {
            return Err(GpuError::Shape {
                op: "conv2d_backward_input",
                expected: format!("dy {want:?}"),
                got: format!("{ds:?}"),
            });
        }
        let [n, h, w, cin] = input_shape;
        let gemm = (n * h * w, cin, ks[0] * ks[1] * ks[3]);
        self.conv_dispatch("backward_input", &g, spec, gemm, false, dy, kernel, &input_shape)
    }

    /// Gradient wrt the kernel of [`Gpu::conv2d`]: `[kh, kw, cin, cout]` from the input `x`
    /// and `dy` `[n, oh, ow, cout]`, for a kernel of spatial size `kernel_hw`.
    pub fn conv2d_backward_filter(
        &self,
        x: &GpuTensor,
        dy: &GpuTensor,
        kernel_hw: (usize, usize),
        spec: &Conv2dSpec,
    ) -> Result<GpuTensor> {
        let xs = shape4("conv2d_backward_filter", "input [n, h, w, cin]", x)?;
        let ds = shape4("conv2d_backward_filter", "dy [n, oh, ow, cout]", dy)?;
        let ks = [kernel_hw.0, kernel_hw.1, xs[3], ds[3]];
        let g = geometry("conv2d_backward_filter", xs, ks, spec)?;
        let want = [xs[0], g.oh, g.ow, ks[3]];
        if ds != want {
            return Err(GpuError::Shape {
                op: "conv2d_backward_filter",
                expected: format!("dy {want:?}"),
                got: format!("{ds:?}"),
            });
        }
        let gemm = (ks[0] * ks[1] * ks[2], ks[3], xs[0] * g.oh * g.ow);
        if gemm.0 * gemm.1 <= SMALL_FILTER_OUTPUTS && gemm.2 >= SMALL_FILTER_MIN_K {
            return self.backward_filter_small(&g, spec, gemm, x, dy, &ks);
        }
        self.conv_dispatch("backward_filter", &g, spec, gemm, true, x, dy, &ks)
    }

    /// [`Gpu::conv2d_backward_filter`] for kernels of at most [`SMALL_FILTER_OUTPUTS`] weights
    /// and a long k: every thread owns up to 4 weights and sums its workgroup's k chunk (an
    /// H200 took 16.9 ms for the MNIST first layer's [3, 3, 1, 32] at batch 1024 as a padded
    /// 64x64 split-K GEMM).
    fn backward_filter_small(
        &self,
        g: &Geometry,
        spec: &Conv2dSpec,
        (gm, gn, gk): (usize, usize, usize),
        x: &GpuTensor,
        dy: &GpuTensor,
        ks: &[usize; 4],
    ) -> Result<GpuTensor> {
        let chunks = gk.div_ceil(SMALL_FILTER_MIN_K / 8).clamp(1, 2048);
        let k_chunk = gk.div_ceil(chunks);
        let chunks = gk.div_ceil(k_chunk);
        let out = self.empty(ks, DType::F32)?;
        let partial = self.empty(&[chunks, gm * gn], DType::F32)?;
        let p = self.conv_params(g, spec, (gm, gn, gk), k_chunk)?;
        let mut batch = self.batch();
        batch.dispatch_tiled(
            "conv",
            "backward_filter_small",
            |off: [u32; 3]| Params { off, ..p },
            &[(1, x.buffer()), (2, dy.buffer()), (3, partial.buffer())],
            (1, 1, u32_of("k chunks", chunks)?),
        )?;
        self.record_sum_rows(&mut batch, partial.buffer(), chunks, gm * gn, out.buffer())?;
        batch.hold(partial);
        batch.submit()?;
        Ok(out)
    }
}
