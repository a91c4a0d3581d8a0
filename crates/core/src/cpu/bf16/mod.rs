//! bf16 inference: activations and weights rounded to bfloat16 (8 significant bits, the f32
//! exponent range), products summed in f32.
//!
//! The arithmetic: `y[i, j] = bias[j] + sum_k bf16(x[i, k]) * bf16(w[k, j])`, the sum taken in
//! f32 in increasing `k` (a product of two bf16 values is exact in f32, so kernels differ only
//! in where the f32 sum rounds: the tests bound it). Rounding to bf16 is to nearest even, with
//! f32 denormals flushed to zero as the hardware conversion does.
//!
//! The fast kernel is Intel AMX (`tdpbf16ps`, [`crate::cpu::amx`]): 8,192 multiply-adds per
//! instruction. Without AMX, CPUs with AVX512-BF16 (AMD Zen 4 and later) run `vdpbf16ps`
//! ([`avx512`]); on the Sapphire Rapids measured it ran at a quarter of the f32 FMA rate in
//! instructions, but AMX always wins there. With neither, bf16 inference is refused unless
//! `CORTEX_BF16_KERNEL=portable` asks for the plain loop (to test the arithmetic on any CPU; it
//! is slow).

#[cfg(target_arch = "x86_64")]
mod avx512;
mod forward;
#[cfg(test)]
mod tests;

pub use forward::{conv2d_bf16, conv2d_bf16_max_pool, linear_bf16};

use std::sync::OnceLock;

use crate::{Error, Result};

/// Columns per packed weight panel (one AMX C tile: 16 f32 sums).
const NR: usize = 16;
/// bf16 values per reduction step: one 64-byte A-tile row.
const K_STEP: usize = 32;

/// Which bf16 GEMM kernel runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bf16Kernel {
    /// Intel AMX-BF16 tiles.
    Amx,
    /// AVX512-BF16 `vdpbf16ps` (CPUs without AMX: AMD Zen 4 and later, Intel Cooper Lake).
    Avx512,
    /// Plain Rust (only when `CORTEX_BF16_KERNEL=portable` asks for it).
    Portable,
}

impl Bf16Kernel {
    /// The kernel bf16 inference runs on this CPU, `None` when it has no fast one.
    pub fn detect() -> Option<Bf16Kernel> {
        static CHOSEN: OnceLock<Option<Bf16Kernel>> = OnceLock::new();
        *CHOSEN.get_or_init(|| {
            if std::env::var("CORTEX_BF16_KERNEL").as_deref() == Ok("portable") {
                return Some(Bf16Kernel::Portable);
            }
            #[cfg(target_arch = "x86_64")]
            if crate::cpu::amx::bf16_available() {
                return Some(Bf16Kernel::Amx);
            }
            #[cfg(target_arch = "x86_64")]
            if avx512_available() {
                return Some(Bf16Kernel::Avx512);
            }
            None
        })
    }

    /// The kernel, or the Error that explains why this CPU has none.
    pub fn require() -> Result<Bf16Kernel> {
        Bf16Kernel::detect().ok_or_else(|| {
            Error::Invalid(
                "quantize: bf16 inference needs a CPU with AMX-BF16 (Intel Sapphire Rapids or later) \
                 or AVX512-BF16 (AMD Zen 4 or later), and this one has neither (or the OS refused the \
                 AMX tile state); 'int8' runs on every CPU"
                    .into(),
            )
        })
    }

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Bf16Kernel::Amx => "amx",
            Bf16Kernel::Avx512 => "avx512bf16",
            Bf16Kernel::Portable => "portable",
        }
    }
}

/// Whether this CPU has the AVX512-BF16 kernel's features.
#[cfg(target_arch = "x86_64")]
fn avx512_available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512bf16")
}

/// `x` rounded to the nearest bf16 (ties to even); denormals become a signed zero, NaN stays NaN.
pub fn to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x40) as u16;
    }
    if bits & 0x7f80_0000 == 0 {
        return ((bits >> 16) & 0x8000) as u16;
    }
    let round = 0x7fff + ((bits >> 16) & 1);
    (bits.wrapping_add(round) >> 16) as u16
}

/// The f32 value of a bf16.
pub fn from_bf16(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// Rounds `x` to bf16 into `out[..x.len()]`.
pub fn convert_into(x: &[f32], out: &mut [u16]) {
    let out = &mut out[..x.len()];
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512bf16") && std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has the features (checked just above); lengths are equal.
        return unsafe { convert_avx512(x, out) };
    }
    for (o, &v) in out.iter_mut().zip(x) {
        *o = to_bf16(v);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn convert_avx512(x: &[f32], out: &mut [u16]) {
    use std::arch::x86_64::*;
    let n = x.len().min(out.len());
    let mut i = 0;
    // SAFETY: every load reads x[i..i + 32] and every store writes out[i..i + 32], i + 32 <= n.
    unsafe {
        while i + 32 <= n {
            let lo = _mm512_loadu_ps(x.as_ptr().add(i));
            let hi = _mm512_loadu_ps(x.as_ptr().add(i + 16));
            let packed: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
            _mm512_storeu_si512(out.as_mut_ptr().add(i) as *mut __m512i, packed);
            i += 32;
        }
    }
    for j in i..n {
        out[j] = to_bf16(x[j]);
    }
}

/// A `k x n` f32 matrix rounded to bf16 and packed as AMX B tiles: `n / 16` panels (rounded up)
/// of `k / 32` steps (rounded up), each step 16 rows of (16 columns x 2 reduction values).
pub struct PackedBf16 {
    /// Reduction length.
    pub k: usize,
    /// Columns.
    pub n: usize,
    data: Vec<u16>,
}

impl PackedBf16 {
    /// Packs the row-major `k x n` matrix `w`.
    pub fn new(w: &[f32], k: usize, n: usize) -> Result<PackedBf16> {
        if w.len() != k * n {
            return Err(Error::shape("bf16 weights", [k, n], w.len()));
        }
        let (kp, np) = (k.div_ceil(K_STEP) * K_STEP, n.div_ceil(NR) * NR);
        let mut data = crate::alloc::try_with_capacity::<u16>("bf16 weights", kp * np)?;
        data.resize(kp * np, 0);
        for kk in 0..k {
            for j in 0..n {
                data[Self::index(kp, kk, j)] = to_bf16(w[kk * n + j]);
            }
        }
        Ok(PackedBf16 { k, n, data })
    }

    /// Where weight `(kk, j)` sits: panel, then pair of reduction values, column, member.
    fn index(kp: usize, kk: usize, j: usize) -> usize {
        ((j / NR) * kp / 2 + kk / 2) * NR * 2 + (j % NR) * 2 + kk % 2
    }

    /// Weight `(kk, j)` as bf16 (for references and tests).
    pub fn weight(&self, kk: usize, j: usize) -> u16 {
        self.data[Self::index(self.padded_depth(), kk, j)]
    }

    /// Reduction length padded to whole steps: the row stride of the activations.
    pub fn padded_depth(&self) -> usize {
        self.k.div_ceil(K_STEP) * K_STEP
    }

    /// Columns padded to whole panels: the row stride of the sums.
    pub fn padded_width(&self) -> usize {
        self.n.div_ceil(NR) * NR
    }
}

/// `c[i, j] = sum_k a[i, k] * w[k, j]` for `m` rows of `a` (bf16, row stride
/// [`PackedBf16::padded_depth`], zero past `k`) into `c` (row stride
/// [`PackedBf16::padded_width`]). Single-threaded: callers split rows across threads.
pub fn gemm_bf16(kernel: Bf16Kernel, a: &[u16], m: usize, w: &PackedBf16, c: &mut [f32]) {
    let (lda, ldc) = (w.padded_depth(), w.padded_width());
    assert!(a.len() >= m * lda, "gemm_bf16: lhs too short");
    assert!(c.len() >= m * ldc, "gemm_bf16: dst too short");
    match kernel {
        #[cfg(target_arch = "x86_64")]
        Bf16Kernel::Amx if crate::cpu::amx::bf16_available() => gemm_amx(a, m, w, c),
        // SAFETY: the features are checked; the asserts above bound `a` and `c`.
        #[cfg(target_arch = "x86_64")]
        Bf16Kernel::Avx512 if avx512_available() => unsafe { avx512::gemm(a, m, w, c) },
        _ => gemm_portable(a, m, w, c),
    }
}

#[cfg(target_arch = "x86_64")]
fn gemm_amx(a: &[u16], m: usize, w: &PackedBf16, c: &mut [f32]) {
    use crate::cpu::amx::{gemm_tiles, TileOp, TILE_ROWS};
    let (lda, ldc) = (w.padded_depth(), w.padded_width());
    let steps = lda / K_STEP;
    let wp = w.data.as_ptr() as *const u8;
    // SAFETY: AMX-BF16 was granted (the caller checked); the asserts of gemm_bf16 bound `a` and
    // `c`, and PackedBf16 holds ldc / 16 panels of `steps` tiles.
    let done = unsafe {
        gemm_tiles(
            TileOp::Bf16,
            a.as_ptr() as *const u8,
            m,
            lda * 2,
            wp,
            steps,
            c.as_mut_ptr() as *mut u8,
            ldc,
        )
    };
    if done < m {
        // The last rows (under 16) go through one zero-padded block.
        let rest = m - done;
        let mut a_tail = vec![0u16; TILE_ROWS * lda];
        a_tail[..rest * lda].copy_from_slice(&a[done * lda..m * lda]);
        let mut c_tail = vec![0f32; TILE_ROWS * ldc];
        // SAFETY: as above, on buffers of exactly 16 rows.
        unsafe {
            gemm_tiles(
                TileOp::Bf16,
                a_tail.as_ptr() as *const u8,
                TILE_ROWS,
                lda * 2,
                wp,
                steps,
                c_tail.as_mut_ptr() as *mut u8,
                ldc,
            );
        }
        c[done * ldc..m * ldc].copy_from_slice(&c_tail[..rest * ldc]);
    }
}

fn gemm_portable(a: &[u16], m: usize, w: &PackedBf16, c: &mut [f32]) {
    let (lda, ldc, kp) = (w.padded_depth(), w.padded_width(), w.padded_depth());
    for i in 0..m {
        let arow = &a[i * lda..i * lda + w.k];
        for j in 0..w.n {
            let mut sum = 0f32;
            for (kk, &av) in arow.iter().enumerate() {
                sum += from_bf16(av) * from_bf16(w.data[PackedBf16::index(kp, kk, j)]);
            }
            c[i * ldc + j] = sum;
        }
    }
}

/// `y = c + bias`, then `act`, for the rows of `y` (`n` wide) from `c` (row stride `ldc`).
fn finish(
    c: &[f32],
    ldc: usize,
    n: usize,
    bias: Option<&[f32]>,
    act: crate::cpu::elementwise::Activation,
    y: &mut [f32],
) {
    for (i, yrow) in y.chunks_exact_mut(n).enumerate() {
        let crow = &c[i * ldc..i * ldc + n];
        match bias {
            Some(b) => yrow
                .iter_mut()
                .zip(crow.iter().zip(b))
                .for_each(|(o, (v, b))| *o = v + b),
            None => yrow.copy_from_slice(crow),
        }
        crate::cpu::elementwise::activation_in_place(act, yrow);
    }
}
