//! The bf16 GEMM on AVX512-BF16 (`vdpbf16ps`), for CPUs without AMX (AMD Zen 4 and later,
//! Intel Cooper Lake): each instruction adds 16 lanes of two bf16 products to f32 sums, twice
//! the multiply-adds of an f32 FMA. The packed weights are the AMX B-tile layout, whose rows
//! (16 columns x 2 reduction values, 64 bytes) are exactly one `vdpbf16ps` operand; each row
//! of `a` broadcasts its pairs of reduction values.
//!
//! The sums: `vdpbf16ps` adds a pair of exact products per step and flushes denormal inputs
//! and outputs to zero, so results differ from the portable loop only in f32 rounding order
//! (and for denormals).

use std::arch::x86_64::*;

use super::{PackedBf16, NR};

/// Rows of `a` per register tile.
const MR: usize = 6;
/// Weight panels (16 columns each) per register tile: `MR x NV` accumulators, `NV` weight
/// vectors and one broadcast fit AVX-512's 32 registers.
const NV: usize = 4;

/// `c = a · w` as [`super::gemm_bf16`] documents; single-threaded.
///
/// # Safety
/// The CPU must have AVX-512F and AVX512-BF16; `a` must hold `m` rows of
/// [`PackedBf16::padded_depth`] values and `c` `m` rows of [`PackedBf16::padded_width`].
#[target_feature(enable = "avx512f,avx512bf16")]
pub(super) unsafe fn gemm(a: &[u16], m: usize, w: &PackedBf16, c: &mut [f32]) {
    let (lda, ldc) = (w.padded_depth(), w.padded_width());
    assert!(a.len() >= m * lda && c.len() >= m * ldc, "bf16 avx512 gemm: lengths");
    let panels = ldc / NR;
    let panel_len = lda * NR;
    assert!(w.data.len() >= panels * panel_len, "bf16 avx512 gemm: weights");
    let tiles = Tiles {
        lda,
        ldc,
        panel_len,
        pairs: lda / 2,
    };
    let mut p0 = 0;
    while p0 < panels {
        let nv = (panels - p0).min(NV);
        // SAFETY: panels p0..p0 + nv lie in the packed data (assert above).
        let wp = unsafe { w.data.as_ptr().add(p0 * panel_len) };
        let mut i0 = 0;
        while i0 < m {
            let mr = (m - i0).min(MR);
            // SAFETY: rows i0..i0 + mr of `a` and `c` exist (assert above), and columns
            // p0 * 16 .. (p0 + nv) * 16 are inside `ldc`.
            unsafe {
                let ap = a.as_ptr().add(i0 * lda);
                let cp = c.as_mut_ptr().add(i0 * ldc + p0 * NR);
                dispatch(mr, nv, &tiles, ap, wp, cp);
            }
            i0 += mr;
        }
        p0 += nv;
    }
}

/// Strides of a tile's operands, in elements.
struct Tiles {
    lda: usize,
    ldc: usize,
    /// bf16 values per weight panel.
    panel_len: usize,
    /// Pairs of reduction values per row of `a`.
    pairs: usize,
}

/// Runs `tile::<R, V>` for a run-time `mr` in 1..=MR and `nv` in 1..=NV.
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn dispatch(mr: usize, nv: usize, t: &Tiles, a: *const u16, w: *const u16, c: *mut f32) {
    // SAFETY: forwarded from `gemm`.
    unsafe {
        match mr {
            1 => panels::<1>(nv, t, a, w, c),
            2 => panels::<2>(nv, t, a, w, c),
            3 => panels::<3>(nv, t, a, w, c),
            4 => panels::<4>(nv, t, a, w, c),
            5 => panels::<5>(nv, t, a, w, c),
            _ => panels::<MR>(nv, t, a, w, c),
        }
    }
}

#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn panels<const R: usize>(nv: usize, t: &Tiles, a: *const u16, w: *const u16, c: *mut f32) {
    // SAFETY: forwarded from `gemm`.
    unsafe {
        match nv {
            1 => tile::<R, 1>(t, a, w, c),
            2 => tile::<R, 2>(t, a, w, c),
            3 => tile::<R, 3>(t, a, w, c),
            _ => tile::<R, NV>(t, a, w, c),
        }
    }
}

/// `R` rows x `V` panels of `c`: accumulators in registers across the whole reduction.
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn tile<const R: usize, const V: usize>(t: &Tiles, a: *const u16, w: *const u16, c: *mut f32) {
    // SAFETY: the caller guarantees `R` rows of `a` (`lda` values each) and of `c`, and `V`
    // panels of `w`; every load and store below stays inside them.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); V]; R];
        for kk in 0..t.pairs {
            let mut b = [_mm512_setzero_si512(); V];
            for v in 0..V {
                b[v] = _mm512_loadu_si512(w.add(v * t.panel_len + kk * 2 * NR) as *const __m512i);
            }
            for r in 0..R {
                let pair = (a.add(r * t.lda + 2 * kk) as *const i32).read_unaligned();
                let av: __m512bh = std::mem::transmute(_mm512_set1_epi32(pair));
                for v in 0..V {
                    acc[r][v] = _mm512_dpbf16_ps(acc[r][v], av, std::mem::transmute::<__m512i, __m512bh>(b[v]));
                }
            }
        }
        for r in 0..R {
            for v in 0..V {
                _mm512_storeu_ps(c.add(r * t.ldc + v * NR), acc[r][v]);
            }
        }
    }
}
