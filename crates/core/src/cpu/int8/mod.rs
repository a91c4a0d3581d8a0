//! Dynamic int8 inference: `u8` activations times `i8` weights with `i32` accumulation.
//!
//! The arithmetic, which every kernel computes exactly and the tests check against an f64
//! reference:
//! - weights: one scale per output column, `s_j = max_k |w[k, j]| / 127`, and
//!   `wq[k, j] = clamp(round(w[k, j] / s_j), -127, 127)` ([`PackedInt8::new`]);
//! - activations: one scale and zero point per *group* of inputs (a sample: a row of a Dense
//!   input, an image of a convolution), chosen at each call from the group's range with zero
//!   always representable ([`AffineU8::of`]), `q = clamp(round(x / s) + z, 0, 255)`. Scaling per
//!   sample rather than per batch keeps a sample's result independent of the batch it is served in;
//! - output: `y[i, j] = s_i * s_j * (sum_k q[i, k] * wq[k, j] - z_i * sum_k wq[k, j]) + bias[j]`,
//!   then the layer's activation.
//!
//! Kernels, chosen at run time ([`Int8Kernel::detect`]): AVX-512 VNNI (`vpdpbusd`, four
//! multiply-adds per 32-bit lane), AVX2 (`vpmaddwd` on sign-extended 16-bit values: exact,
//! where `vpmaddubsw` would saturate its 16-bit pair sums), and a portable loop.

mod forward;
#[cfg(target_arch = "x86_64")]
mod x86;

pub(crate) use forward::{block_rows, blocks, conv_max_pooled, pool_rows, with_scratch, Scratch, PARALLEL_MACS};
pub use forward::{conv2d_int8, conv2d_int8_max_pool, linear_int8, matmul_int8_serial};

use std::sync::OnceLock;

use crate::{Error, Result};

/// Columns per packed weight panel (one AVX-512 register of 32-bit accumulators).
pub(crate) const NR: usize = 16;
/// Reduction values per packed group (the four bytes `vpdpbusd` sums into one lane).
pub(crate) const KG: usize = 4;
/// Packed groups per AMX reduction step (16 groups of 4 bytes fill a 64-byte tile row).
#[cfg(target_arch = "x86_64")]
const GROUPS_PER_TILE_STEP: usize = 16;
/// Longest reduction whose `i32` sums cannot overflow: `255 * 127 * k < 2^31`.
pub const MAX_DEPTH: usize = (i32::MAX as usize) / (255 * 127);

/// Which int8 GEMM kernel runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Int8Kernel {
    /// Intel AMX tiles (`tdpbusd`), with VNNI for the last rows of a block.
    Amx,
    /// AVX-512 VNNI.
    Vnni,
    /// AVX2 `vpmaddwd`.
    Avx2,
    /// Plain Rust.
    Portable,
}

impl Int8Kernel {
    /// The fastest kernel this CPU runs; `CORTEX_INT8_KERNEL=amx|vnni|avx2|portable` picks a slower
    /// one (to test or measure it) when the CPU supports it.
    pub fn detect() -> Int8Kernel {
        static CHOSEN: OnceLock<Int8Kernel> = OnceLock::new();
        *CHOSEN.get_or_init(|| {
            let best = [
                Int8Kernel::Amx,
                Int8Kernel::Vnni,
                Int8Kernel::Avx2,
                Int8Kernel::Portable,
            ]
            .into_iter()
            .find(|k| k.supported())
            .unwrap_or(Int8Kernel::Portable);
            match std::env::var("CORTEX_INT8_KERNEL")
                .ok()
                .as_deref()
                .map(Int8Kernel::parse)
            {
                Some(Some(k)) if k.supported() => k,
                _ => best,
            }
        })
    }

    fn parse(s: &str) -> Option<Int8Kernel> {
        match s {
            "amx" => Some(Int8Kernel::Amx),
            "vnni" => Some(Int8Kernel::Vnni),
            "avx2" => Some(Int8Kernel::Avx2),
            "portable" => Some(Int8Kernel::Portable),
            _ => None,
        }
    }

    /// Whether this CPU can run the kernel.
    pub fn supported(self) -> bool {
        match self {
            Int8Kernel::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Int8Kernel::Amx => crate::cpu::amx::int8_available(),
            #[cfg(target_arch = "x86_64")]
            Int8Kernel::Vnni => {
                is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(target_arch = "x86_64")]
            Int8Kernel::Avx2 => is_x86_feature_detected!("avx2"),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// Lower-case name, as `CORTEX_INT8_KERNEL` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Int8Kernel::Amx => "amx",
            Int8Kernel::Vnni => "vnni",
            Int8Kernel::Avx2 => "avx2",
            Int8Kernel::Portable => "portable",
        }
    }
}

/// Quantization of one group of activations: `q = clamp(round(x / scale) + zero_point, 0, 255)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AffineU8 {
    pub scale: f32,
    pub zero_point: u8,
    inverse: f32,
}

impl AffineU8 {
    /// The parameters for values `x`: their range widened to include 0 (so zero padding and
    /// ReLU zeros are exact), split into 255 steps. Errors on a non-finite value, which int8
    /// cannot represent.
    pub fn of(x: &[f32]) -> Result<AffineU8> {
        let (lo, hi, finite) = range(x);
        if !finite {
            return Err(Error::Invalid(
                "int8 inference needs finite inputs; got NaN or infinity".into(),
            ));
        }
        let scale = (hi - lo) / 255.0;
        if scale == 0.0 || !scale.is_normal() {
            return Ok(AffineU8 {
                scale: 1.0,
                zero_point: 0,
                inverse: 1.0,
            });
        }
        let zero_point = (-lo / scale).round().clamp(0.0, 255.0) as u8;
        Ok(AffineU8 {
            scale,
            zero_point,
            inverse: 1.0 / scale,
        })
    }

    /// One quantized value: `floor(x / s + z + 0.5)` clamped to `0..=255` (round half up,
    /// written so that the loop below vectorises; `roundf` does not).
    #[inline(always)]
    pub fn quantize(&self, x: f32) -> u8 {
        (x * self.inverse + (self.zero_point as f32 + 0.5)).clamp(0.0, 255.0) as i32 as u8
    }

    /// Quantizes `x` into the first `x.len()` bytes of `out`.
    pub fn quantize_into(&self, x: &[f32], out: &mut [u8]) {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked just above).
            return unsafe { x86::quantize_avx512(x, self.inverse, self.zero_point as f32 + 0.5, out) };
        }
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            return unsafe { self.quantize_into_avx2(x, out) };
        }
        self.quantize_into_plain(x, out);
    }

    #[cfg(target_arch = "x86_64")]
    unsafe fn quantize_into_avx2(&self, x: &[f32], out: &mut [u8]) {
        // SAFETY: the caller checked AVX2 (FMA comes with every AVX2 CPU we dispatch to).
        unsafe { x86::quantize_avx2(x, self.inverse, self.zero_point as f32 + 0.5, out) }
    }

    #[inline(always)]
    fn quantize_into_plain(&self, x: &[f32], out: &mut [u8]) {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = self.quantize(v);
        }
    }
}

/// `(min(x, 0), max(x, 0), all finite)`, in lanes so that it vectorises (`f32::min` chains
/// do not: they must skip NaN one value at a time).
fn range(x: &[f32]) -> (f32, f32, bool) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F (checked just above).
        return unsafe { range_avx512(x) };
    }
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { range_avx2(x) };
    }
    range_plain(x)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn range_avx2(x: &[f32]) -> (f32, f32, bool) {
    range_plain(x)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn range_avx512(x: &[f32]) -> (f32, f32, bool) {
    range_plain(x)
}

#[inline(always)]
fn range_plain(x: &[f32]) -> (f32, f32, bool) {
    // Four AVX-512 vectors (eight AVX2 ones) per accumulator: independent min/max/add chains
    // hide their latency (one vector each was latency-bound).
    const L: usize = 64;
    let (mut lo, mut hi, mut bad) = ([0f32; L], [0f32; L], [0f32; L]);
    let chunks = x.chunks_exact(L);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..L {
            lo[i] = if c[i] < lo[i] { c[i] } else { lo[i] };
            hi[i] = if c[i] > hi[i] { c[i] } else { hi[i] };
            // x * 0 is 0 for finite x and NaN for NaN or infinity.
            bad[i] += c[i] * 0.0;
        }
    }
    for (i, &v) in rest.iter().enumerate() {
        lo[i] = if v < lo[i] { v } else { lo[i] };
        hi[i] = if v > hi[i] { v } else { hi[i] };
        bad[i] += v * 0.0;
    }
    let lo = lo.iter().fold(0f32, |a, &b| a.min(b));
    let hi = hi.iter().fold(0f32, |a, &b| a.max(b));
    (lo, hi, bad.iter().all(|b| *b == 0.0))
}

/// A `k x n` weight matrix quantized per column and packed for the GEMM kernels: panels of
/// [`NR`] columns, each a run of groups of [`KG`] reduction values per column (the layout one
/// `vpdpbusd` consumes), zero-padded to whole panels and groups.
pub struct PackedInt8 {
    /// Reduction length.
    pub k: usize,
    /// Columns (output features).
    pub n: usize,
    /// Per-column scales.
    pub scales: Vec<f32>,
    /// Per-column sums of the quantized weights (for the zero-point correction).
    pub col_sums: Vec<i32>,
    data: Vec<i8>,
}

impl PackedInt8 {
    /// Quantizes and packs `w` (`k x n`, row-major: the Keras kernel layout).
    pub fn new(w: &[f32], k: usize, n: usize) -> Result<PackedInt8> {
        if w.len() != k * n {
            return Err(Error::shape("int8 weights", [k, n], w.len()));
        }
        if k > MAX_DEPTH {
            return Err(Error::Invalid(format!(
                "int8 quantization supports reductions up to {MAX_DEPTH} values; this layer has {k}"
            )));
        }
        if w.iter().any(|v| !v.is_finite()) {
            return Err(Error::Invalid("int8 quantization needs finite weights".into()));
        }
        let mut scales = vec![0f32; n];
        for row in w.chunks_exact(n.max(1)) {
            for (s, &v) in scales.iter_mut().zip(row) {
                *s = s.max(v.abs());
            }
        }
        for s in &mut scales {
            *s = if *s > 0.0 { *s / 127.0 } else { 1.0 };
        }
        let panels = n.div_ceil(NR);
        let groups = padded_groups(k);
        let mut data = crate::alloc::try_with_capacity::<i8>("int8 weights", panels * groups * NR * KG)?;
        data.resize(panels * groups * NR * KG, 0);
        let mut col_sums = vec![0i32; n];
        for kk in 0..k {
            let (g, t) = (kk / KG, kk % KG);
            for j in 0..n {
                let q = (w[kk * n + j] / scales[j]).round().clamp(-127.0, 127.0) as i8;
                col_sums[j] += q as i32;
                let (p, c) = (j / NR, j % NR);
                data[((p * groups + g) * NR + c) * KG + t] = q;
            }
        }
        Ok(PackedInt8 {
            k,
            n,
            scales,
            col_sums,
            data,
        })
    }

    /// Quantized weight `(kk, j)` (for references and tests).
    pub fn weight(&self, kk: usize, j: usize) -> i8 {
        let groups = padded_groups(self.k);
        let (g, t, p, c) = (kk / KG, kk % KG, j / NR, j % NR);
        self.data[((p * groups + g) * NR + c) * KG + t]
    }

    /// Reduction length padded to whole groups: the row stride of the activations.
    pub fn padded_depth(&self) -> usize {
        padded_groups(self.k) * KG
    }

    /// Columns padded to whole panels: the row stride of the `i32` results.
    pub fn padded_width(&self) -> usize {
        self.n.div_ceil(NR) * NR
    }
}

/// `c[i, j] = sum_k a[i, k] * w[k, j]` for `m` rows of `a` (row stride
/// [`PackedInt8::padded_depth`], bytes past `k` ignored) into `c` (row stride
/// [`PackedInt8::padded_width`]). Single-threaded: callers split rows across threads.
pub fn gemm_u8i8(kernel: Int8Kernel, a: &[u8], m: usize, w: &PackedInt8, c: &mut [i32]) {
    let (lda, ldc) = (w.padded_depth(), w.padded_width());
    assert!(a.len() >= m * lda, "gemm_u8i8: lhs too short");
    assert!(c.len() >= m * ldc, "gemm_u8i8: dst too short");
    let groups = lda / KG;
    match kernel {
        #[cfg(target_arch = "x86_64")]
        Int8Kernel::Amx if kernel.supported() && groups.is_multiple_of(GROUPS_PER_TILE_STEP) => {
            // SAFETY: AMX was granted (checked); the asserts bound every tile; the rows AMX
            // leaves (under 16) run on VNNI, which int8_available also checked.
            unsafe {
                let (wp, steps) = (w.data.as_ptr() as *const u8, groups / GROUPS_PER_TILE_STEP);
                let cp = c.as_mut_ptr() as *mut u8;
                let done =
                    crate::cpu::amx::gemm_tiles(crate::cpu::amx::TileOp::U8I8, a.as_ptr(), m, lda, wp, steps, cp, ldc);
                let (a, c) = (a.as_ptr().add(done * lda), c.as_mut_ptr().add(done * ldc));
                x86::gemm_vnni(x86::Lhs::matrix(a, lda), m - done, w.data.as_ptr(), groups, c, ldc);
            }
        }
        #[cfg(target_arch = "x86_64")]
        Int8Kernel::Vnni | Int8Kernel::Amx if Int8Kernel::Vnni.supported() => {
            // SAFETY: the CPU has the features (checked); the asserts bound every access.
            unsafe {
                let lhs = x86::Lhs::matrix(a.as_ptr(), lda);
                x86::gemm_vnni(lhs, m, w.data.as_ptr(), groups, c.as_mut_ptr(), ldc)
            }
        }
        #[cfg(target_arch = "x86_64")]
        Int8Kernel::Avx2 if kernel.supported() => {
            // SAFETY: as above.
            unsafe { x86::gemm_avx2(a.as_ptr(), m, lda, w.data.as_ptr(), groups, c.as_mut_ptr(), ldc) }
        }
        _ => gemm_portable(a, m, lda, &w.data, groups, c, ldc),
    }
}

/// Rows of a convolution's patch matrix read straight from a quantized NHWC image, for
/// [`gemm_u8i8_image`]: row `i` (output pixel `i` of a run along an output row) holds the
/// kernel's `kh` rows of `kw * in_c` bytes, the first at `start + i * pixel_stride`, the
/// others `row_stride` apart.
pub struct ImageRows {
    pub start: usize,
    pub pixel_stride: usize,
    pub row_stride: usize,
    pub kh: usize,
}

/// [`gemm_u8i8`] over `m` rows of `rows` (no patch matrix), or `false` without touching `c` where
/// the kernel has no such path (only VNNI reads images: AMX tiles load whole rows) or the
/// kernel rows are not whole groups of [`KG`] bytes.
pub fn gemm_u8i8_image(
    kernel: Int8Kernel,
    image: &[u8],
    rows: &ImageRows,
    m: usize,
    w: &PackedInt8,
    c: &mut [i32],
) -> bool {
    let (groups, ldc) = (w.padded_depth() / KG, w.padded_width());
    if kernel != Int8Kernel::Vnni || !kernel.supported() || m == 0 || rows.kh == 0 {
        return false;
    }
    let run = w.k / rows.kh;
    if w.padded_depth() != w.k || !w.k.is_multiple_of(rows.kh) || !run.is_multiple_of(KG) {
        return false;
    }
    let last = rows.start + (m - 1) * rows.pixel_stride + (rows.kh - 1) * rows.row_stride + run;
    assert!(last <= image.len(), "gemm_u8i8_image: rows outside the image");
    assert!(c.len() >= m * ldc, "gemm_u8i8_image: dst too short");
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the CPU has VNNI (checked); the asserts bound every byte read and every row
    // written, and `groups` (= kh * run / KG) is a multiple of `kh`.
    unsafe {
        let lhs = x86::Lhs {
            a: image.as_ptr().add(rows.start),
            lda: rows.pixel_stride,
            segs: rows.kh,
            seg_stride: rows.row_stride,
        };
        x86::gemm_vnni(lhs, m, w.data.as_ptr(), groups, c.as_mut_ptr(), ldc);
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (groups, image, c);
        false
    }
}

fn gemm_portable(a: &[u8], m: usize, lda: usize, w: &[i8], groups: usize, c: &mut [i32], ldc: usize) {
    for (i, crow) in c.chunks_exact_mut(ldc).take(m).enumerate() {
        let arow = &a[i * lda..(i + 1) * lda];
        for (p, cpanel) in crow.chunks_exact_mut(NR).enumerate() {
            let mut acc = [0i32; NR];
            for (g, ag) in arow.chunks_exact(KG).enumerate() {
                let wg = &w[(p * groups + g) * NR * KG..][..NR * KG];
                for (col, wc) in acc.iter_mut().zip(wg.chunks_exact(KG)) {
                    *col += ag.iter().zip(wc).map(|(&x, &y)| x as i32 * y as i32).sum::<i32>();
                }
            }
            cpanel.copy_from_slice(&acc);
        }
    }
}

/// Reduction groups of a packed matrix: `k / KG` rounded up, and to whole AMX tile steps on a
/// CPU that runs AMX (the zero groups cost the other kernels little, and every kernel then
/// reads the same packing).
fn padded_groups(k: usize) -> usize {
    let groups = k.div_ceil(KG);
    #[cfg(target_arch = "x86_64")]
    if Int8Kernel::Amx.supported() {
        return groups.div_ceil(GROUPS_PER_TILE_STEP) * GROUPS_PER_TILE_STEP;
    }
    groups
}

/// Turns the `i32` sums of `rows` rows into outputs: `y = s_i * s_j * (c - z_i * colsum_j) +
/// bias_j`, then `act`. `quant[i]` is row `i`'s activation quantization; `y` is `rows x n`.
pub fn dequantize(
    c: &[i32],
    w: &PackedInt8,
    quant: impl Fn(usize) -> AffineU8,
    bias: Option<&[f32]>,
    act: crate::cpu::elementwise::Activation,
    y: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F (checked just above).
        return unsafe { dequantize_avx512(c, w, quant, bias, act, y) };
    }
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA (checked just above).
        return unsafe { dequantize_avx2(c, w, quant, bias, act, y) };
    }
    dequantize_plain(c, w, quant, bias, act, y);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dequantize_avx512(
    c: &[i32],
    w: &PackedInt8,
    quant: impl Fn(usize) -> AffineU8,
    bias: Option<&[f32]>,
    act: crate::cpu::elementwise::Activation,
    y: &mut [f32],
) {
    dequantize_plain(c, w, quant, bias, act, y);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dequantize_avx2(
    c: &[i32],
    w: &PackedInt8,
    quant: impl Fn(usize) -> AffineU8,
    bias: Option<&[f32]>,
    act: crate::cpu::elementwise::Activation,
    y: &mut [f32],
) {
    dequantize_plain(c, w, quant, bias, act, y);
}

#[inline(always)]
fn dequantize_plain(
    c: &[i32],
    w: &PackedInt8,
    quant: impl Fn(usize) -> AffineU8,
    bias: Option<&[f32]>,
    act: crate::cpu::elementwise::Activation,
    y: &mut [f32],
) {
    let (n, ldc) = (w.n, w.padded_width());
    let zeros;
    let bias = match bias {
        Some(b) => &b[..n],
        None => {
            zeros = vec![0f32; n];
            &zeros[..]
        }
    };
    let (scales, col_sums) = (&w.scales[..n], &w.col_sums[..n]);
    for (i, yrow) in y.chunks_exact_mut(n).enumerate() {
        let q = quant(i);
        let (zp, s) = (q.zero_point as i32, q.scale);
        let crow = &c[i * ldc..i * ldc + n];
        let terms = yrow.iter_mut().zip(crow).zip(col_sums).zip(scales).zip(bias);
        let value = |c: i32, sum: i32, scale: f32, b: f32| ((c - zp * sum) as f32) * (s * scale) + b;
        // ReLU (the common case) in the same pass; other activations on the finished row.
        if act == crate::cpu::elementwise::Activation::Relu {
            for ((((y, &c), &sum), &scale), &b) in terms {
                *y = value(c, sum, scale, b).max(0.0);
            }
        } else {
            for ((((y, &c), &sum), &scale), &b) in terms {
                *y = value(c, sum, scale, b);
            }
            crate::cpu::elementwise::activation_in_place(act, yrow);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
