//! Batched GEMM: `C = op(A) · op(B)` with optional transposes (shaders `matmul`, `matmul_vec4`).

use std::sync::OnceLock;

use super::conv::split_k_chunk_for_tile;
use super::u32_of;
use crate::{Gpu, GpuError, GpuTensor, Result};

/// Which GEMM kernel runs; see [`Gpu::matmul_with_kernel`].
///
/// Only shapes with [`MatmulDesc::uses_vec4`] can take the 128-tile kernels; every other
/// shape runs the scalar 64-tile kernel whatever is asked for. All kernels support both
/// transposes, batch strides (including 0) and split-K.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatmulKernel {
    /// Per shape: `CORTEX_MATMUL_KERNEL` if set, else [`MatmulKernel::Tile128Bk8`] when m and
    /// n are both at least 128, else [`MatmulKernel::Tile64`]. (On an NVIDIA H200, Bk8 ran
    /// GEMM 8192^3 at 23.7 TFLOP/s, Bk16 at 15.9, Tile64 at 3.2.)
    Auto,
    /// 64x64 tiles, k-slabs of 16, 16x16 threads with 4x4 outputs each (vec4 or scalar loads).
    Tile64,
    /// 128x128 tiles, k-slabs of 8, 256 threads with 8x8 outputs each, double-buffered
    /// workgroup memory (16 KiB).
    Tile128Bk8,
    /// As [`MatmulKernel::Tile128Bk8`] with k-slabs of 16 (32 KiB of workgroup memory).
    Tile128Bk16,
    /// Mixed precision (device feature `SHADER_F16`): the 128x128 tiling with operands
    /// rounded to f16 in workgroup memory (16 KiB at k-slabs of 16), f16 products summed in
    /// f32 once per slab, f32 output. About 1e-3 relative error, operands must stay below
    /// 65504 in magnitude; never chosen by `Auto`. Runs as `Tile128Bk8` where the device
    /// lacks `SHADER_F16`.
    Tile128F16,
}

impl MatmulKernel {
    /// The concrete f32 kernels, in benchmark order.
    pub const CONCRETE: [MatmulKernel; 3] = [Self::Tile64, Self::Tile128Bk8, Self::Tile128Bk16];

    /// Every variant, `Auto` first.
    pub const ALL: [MatmulKernel; 5] = [
        Self::Auto,
        Self::Tile64,
        Self::Tile128Bk8,
        Self::Tile128Bk16,
        Self::Tile128F16,
    ];

    /// Short name, as accepted by `CORTEX_MATMUL_KERNEL` and printed by the benchmark.
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Tile64 => "tile64",
            Self::Tile128Bk8 => "tile128_bk8",
            Self::Tile128Bk16 => "tile128_bk16",
            Self::Tile128F16 => "tile128_f16",
        }
    }

    /// Parses a [`MatmulKernel::name`].
    pub fn from_name(name: &str) -> Option<MatmulKernel> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == name.trim().to_ascii_lowercase())
    }

    /// The kernel named by `CORTEX_MATMUL_KERNEL` (read once), `Auto` when unset or unknown.
    pub fn from_env() -> MatmulKernel {
        static ENV: OnceLock<MatmulKernel> = OnceLock::new();
        *ENV.get_or_init(|| Self::from_var("CORTEX_MATMUL_KERNEL"))
    }

    /// The kernel named by environment variable `var`, `Auto` when unset or unknown.
    pub(crate) fn from_var(var: &str) -> MatmulKernel {
        std::env::var(var)
            .ok()
            .and_then(|v| Self::from_name(&v))
            .unwrap_or(Self::Auto)
    }

    /// Whether the device has the workgroup memory this kernel needs (BK 16: 32 KiB).
    pub(crate) fn fits(self, gpu: &Gpu) -> bool {
        self != Self::Tile128Bk16 || gpu.device.limits().max_compute_workgroup_storage_size >= 2 * 2 * 16 * 128 * 4
    }

    /// Output tile edge and shader name of a concrete kernel (`vec4` picks Tile64's loads).
    fn shader(self, vec4: bool) -> (usize, &'static str) {
        match self {
            Self::Auto | Self::Tile64 => (64, if vec4 { "matmul_vec4" } else { "matmul" }),
            Self::Tile128Bk8 => (128, "matmul_t128_bk8"),
            Self::Tile128Bk16 => (128, "matmul_t128_bk16"),
            Self::Tile128F16 => (128, "matmul_t128_f16"),
        }
    }
}

/// Full description of a batched GEMM over flat buffers.
///
/// Matrix `b_i` of A starts at element `i * stride_a` (likewise B, C); a stride of 0
/// broadcasts one matrix over the batch. C is written packed (`[batch, m, n]`). A is `m x k` (stored `k x m` when `trans_a`),
/// B is `k x n` (stored `n x k` when `trans_b`), C is `m x n`, all row-major.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatmulDesc {
    /// Rows of op(A) and C.
    pub m: usize,
    /// Columns of op(B) and C.
    pub n: usize,
    /// Inner dimension.
    pub k: usize,
    /// Number of matrices.
    pub batch: usize,
    /// Use Aᵀ (A stored `k x m`).
    pub trans_a: bool,
    /// Use Bᵀ (B stored `n x k`).
    pub trans_b: bool,
    /// Elements between consecutive A matrices (0 broadcasts).
    pub stride_a: usize,
    /// Elements between consecutive B matrices (0 broadcasts).
    pub stride_b: usize,
}

impl MatmulDesc {
    /// Whether the vec4 kernel runs: the stored row length of A (`k`, or `m` when transposed)
    /// and of B (`n`, or `k` when transposed), `n` (vec4 stores of C) and both batch strides
    /// are multiples of 4. Otherwise the scalar kernel runs.
    pub fn uses_vec4(&self) -> bool {
        let row_a = if self.trans_a { self.m } else { self.k };
        let row_b = if self.trans_b { self.k } else { self.n };
        [row_a, row_b, self.n, self.stride_a, self.stride_b]
            .iter()
            .all(|v| v.is_multiple_of(4))
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    batch: u32,
    trans_a: u32,
    trans_b: u32,
    stride_a: u32,
    stride_b: u32,
    stride_c: u32,
    k_chunk: u32,
    /// Workgroup offset of this dispatch within the full grid (see `Batch::dispatch_tiled`).
    off: [u32; 3],
    pad: u32,
}

fn split(op: &'static str, t: &GpuTensor) -> Result<(usize, usize, usize)> {
    let s = t.shape();
    if s.len() < 2 {
        return Err(GpuError::Shape {
            op,
            expected: "rank >= 2".into(),
            got: format!("{s:?}"),
        });
    }
    let batch = s[..s.len() - 2].iter().product();
    Ok((batch, s[s.len() - 2], s[s.len() - 1]))
}

impl Gpu {
    /// `op(a) · op(b)` for tensors of shape `[..batch, rows, cols]`.
    ///
    /// The batch dimensions must match, or one side must have batch 1 (broadcast).
    /// The result has the larger side's batch dimensions followed by `[m, n]`.
    pub fn matmul(&self, a: &GpuTensor, b: &GpuTensor, trans_a: bool, trans_b: bool) -> Result<GpuTensor> {
        self.matmul_on(a, b, trans_a, trans_b, MatmulKernel::Auto)
    }

    /// [`Gpu::matmul`] on a chosen kernel (e.g. [`MatmulKernel::Tile128F16`] for mixed
    /// precision); shapes it cannot take fall back as described in [`MatmulKernel`].
    pub fn matmul_on(
        &self,
        a: &GpuTensor,
        b: &GpuTensor,
        trans_a: bool,
        trans_b: bool,
        kernel: MatmulKernel,
    ) -> Result<GpuTensor> {
        let (ba, ra, ca) = split("matmul", a)?;
        let (bb, rb, cb) = split("matmul", b)?;
        let (m, k) = if trans_a { (ca, ra) } else { (ra, ca) };
        let (kb, n) = if trans_b { (cb, rb) } else { (rb, cb) };
        if k != kb {
            return Err(GpuError::Shape {
                op: "matmul",
                expected: format!("op(b) with {k} rows (op(a) is {m}x{k})"),
                got: format!("op(b) {kb}x{n} (b shape {:?}, trans_b {trans_b})", b.shape()),
            });
        }
        let batch = ba.max(bb);
        if ba != bb && ba != 1 && bb != 1 {
            return Err(GpuError::Shape {
                op: "matmul",
                expected: format!("equal batch sizes or one of them 1 (a batch {ba})"),
                got: format!("b batch {bb}"),
            });
        }
        let lead = if ba >= bb { a.shape() } else { b.shape() };
        let mut shape = lead[..lead.len() - 2].to_vec();
        shape.extend([m, n]);
        let desc = MatmulDesc {
            m,
            n,
            k,
            batch,
            trans_a,
            trans_b,
            stride_a: if ba == 1 { 0 } else { m * k },
            stride_b: if bb == 1 { 0 } else { k * n },
        };
        self.matmul_with_kernel(a, b, &desc, kernel)?.reshape(&shape)
    }

    /// GEMM over flat buffers as described by `desc`; returns a `[batch, m, n]` tensor.
    /// Runs [`MatmulKernel::Auto`].
    pub fn matmul_with(&self, a: &GpuTensor, b: &GpuTensor, desc: &MatmulDesc) -> Result<GpuTensor> {
        self.matmul_with_kernel(a, b, desc, MatmulKernel::Auto)
    }

    /// The concrete kernel [`Gpu::matmul_with_kernel`] runs for `desc` when asked for `kernel`.
    pub fn matmul_kernel_for(&self, desc: &MatmulDesc, kernel: MatmulKernel) -> MatmulKernel {
        if !desc.uses_vec4() {
            return MatmulKernel::Tile64;
        }
        let wanted = match kernel {
            MatmulKernel::Auto => match MatmulKernel::from_env() {
                // Below 128 rows or columns most of a 128x128 tile would be wasted work.
                MatmulKernel::Auto if desc.m < 128 || desc.n < 128 => MatmulKernel::Tile64,
                MatmulKernel::Auto => MatmulKernel::Tile128Bk8,
                k => k,
            },
            k => k,
        };
        let bk16_bytes = 2 * 2 * 16 * 128 * 4;
        if wanted == MatmulKernel::Tile128Bk16 && self.device.limits().max_compute_workgroup_storage_size < bk16_bytes {
            return MatmulKernel::Tile128Bk8;
        }
        if wanted == MatmulKernel::Tile128F16 && !self.features().contains(wgpu::Features::SHADER_F16) {
            return MatmulKernel::Tile128Bk8;
        }
        wanted
    }

    /// [`Gpu::matmul_with`] on a chosen kernel (shapes it cannot take fall back as described
    /// in [`MatmulKernel`]); for benchmarks and tests.
    pub fn matmul_with_kernel(
        &self,
        a: &GpuTensor,
        b: &GpuTensor,
        desc: &MatmulDesc,
        kernel: MatmulKernel,
    ) -> Result<GpuTensor> {
        a.expect_f32("matmul")?;
        b.expect_f32("matmul")?;
        let d = desc;
        let need = |stride: usize, size: usize| if d.batch == 0 { 0 } else { (d.batch - 1) * stride + size };
        for (name, t, n) in [
            ("a", a, need(d.stride_a, d.m * d.k)),
            ("b", b, need(d.stride_b, d.k * d.n)),
        ] {
            if t.len() < n {
                return Err(GpuError::Shape {
                    op: "matmul",
                    expected: format!("{name} with at least {n} elements for {d:?}"),
                    got: format!("{} elements", t.len()),
                });
            }
        }
        if d.k == 0 {
            // Empty inner dimension: C is all zeros.
            return self.zeros(&[d.batch, d.m, d.n]);
        }
        let out = self.empty(&[d.batch, d.m, d.n], crate::DType::F32)?;
        let p = Params {
            m: u32_of("m", d.m)?,
            n: u32_of("n", d.n)?,
            k: u32_of("k", d.k)?,
            batch: u32_of("batch", d.batch)?,
            trans_a: d.trans_a as u32,
            trans_b: d.trans_b as u32,
            stride_a: u32_of("stride_a", d.stride_a)?,
            stride_b: u32_of("stride_b", d.stride_b)?,
            stride_c: u32_of("stride_c", d.m * d.n)?,
            k_chunk: 0,
            off: [0; 3],
            pad: 0,
        };
        let (tile, shader) = self.matmul_kernel_for(d, kernel).shader(d.uses_vec4());
        let groups = (
            u32_of("n tiles", d.n.div_ceil(tile))?,
            u32_of("m tiles", d.m.div_ceil(tile))?,
            p.batch,
        );
        let mut batch = self.batch();
        // A single GEMM with few output tiles and a long k (e.g. a dense layer's weight
        // gradient, k = batch size) splits k over workgroups and sums the partials.
        let chunk = if d.batch == 1 {
            split_k_chunk_for_tile(d.m, d.n, d.k, tile)
        } else {
            d.k
        };
        if chunk < d.k {
            let splits = d.k.div_ceil(chunk);
            let partial = self.empty(&[splits, d.m * d.n], crate::DType::F32)?;
            let ps = Params {
                k_chunk: u32_of("k chunk", chunk)?,
                ..p
            };
            let bufs = [(1, a.buffer()), (2, b.buffer()), (3, partial.buffer())];
            let splits = u32_of("k splits", splits)?;
            batch.dispatch_tiled(
                shader,
                "main",
                |off| Params { off, ..ps },
                &bufs,
                (groups.0, groups.1, splits),
            )?;
            self.record_sum_rows(&mut batch, partial.buffer(), splits as usize, d.m * d.n, out.buffer())?;
            batch.hold(partial);
        } else {
            let bufs = [(1, a.buffer()), (2, b.buffer()), (3, out.buffer())];
            batch.dispatch_tiled(shader, "main", |off| Params { off, ..p }, &bufs, groups)?;
        }
        batch.submit()?;
        Ok(out)
    }
}
