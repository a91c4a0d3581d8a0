//! The x86 int8 GEMM tiles. Both walk the packed weights panel by panel (a panel of 16
//! columns stays in L1 while the rows stream past it) and keep a tile of `i32` sums in
//! registers across the whole reduction.
//!
//! Safety contract of the `gemm_*` entry points: the CPU has the named features; `a` holds `m`
//! rows of `lda` bytes (for [`gemm_vnni`]: of `groups * KG` reduction values where its [`Lhs`]
//! places them); `w` holds `ldc / NR` panels of `groups` groups (`lda == groups * KG`); `c`
//! holds `m` rows of `ldc` values.

use std::arch::x86_64::*;

use super::{KG, NR};

/// Rows per VNNI tile: 5 rows x 4 panels = 20 accumulators of the 32 registers (4 weight
/// loads and 5 broadcasts feed 20 `vpdpbusd`; 64 columns cover most layers in one pass).
const MR_VNNI: usize = 5;
/// Panels per VNNI tile.
const NP_VNNI: usize = 4;
/// Rows per AVX2 tile: 4 rows x 2 half-panel registers = 8 of the 16 registers.
const MR_AVX2: usize = 4;

/// Where the rows of the activations are. Row `i`'s reduction values are `segs` runs of
/// `groups / segs * KG` contiguous bytes, run `s` at `a + i * lda + s * seg_stride`: a plain
/// matrix is one run (`segs = 1`), and a convolution reads its quantized image directly as one
/// run per kernel row (each `kw * in_c` bytes long, `lda` = the pixel stride), with no patch
/// matrix.
#[derive(Clone, Copy)]
pub(super) struct Lhs {
    pub a: *const u8,
    pub lda: usize,
    pub segs: usize,
    pub seg_stride: usize,
}

impl Lhs {
    /// A plain row-major matrix with rows `lda` bytes apart.
    pub fn matrix(a: *const u8, lda: usize) -> Lhs {
        Lhs {
            a,
            lda,
            segs: 1,
            seg_stride: 0,
        }
    }
}

/// AVX-512 VNNI: `vpdpbusd` multiplies 4 `u8` activations (broadcast) by 4 `i8` weights of
/// each of 16 columns and adds the four products into the column's lane. `groups` must be a
/// multiple of `a.segs`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn gemm_vnni(a: Lhs, m: usize, w: *const i8, groups: usize, c: *mut i32, ldc: usize) {
    // SAFETY: the module contract; every offset below stays inside the operands.
    unsafe {
        let panels = ldc / NR;
        let panel_bytes = groups * NR * KG;
        let mut p = 0;
        while p < panels {
            let np = (panels - p).min(NP_VNNI);
            let wp = w.add(p * panel_bytes);
            let mut i = 0;
            while i < m {
                let mr = (m - i).min(MR_VNNI);
                let (ap, cp) = (
                    Lhs {
                        a: a.a.add(i * a.lda),
                        ..a
                    },
                    c.add(i * ldc + p * NR),
                );
                macro_rules! tile {
                    ($($r:literal),*) => {
                        match (mr, np) {
                            $(($r, 4) => vnni_tile::<$r, 4>(ap, wp, panel_bytes, groups, cp, ldc),
                              ($r, 3) => vnni_tile::<$r, 3>(ap, wp, panel_bytes, groups, cp, ldc),
                              ($r, 2) => vnni_tile::<$r, 2>(ap, wp, panel_bytes, groups, cp, ldc),
                              ($r, _) => vnni_tile::<$r, 1>(ap, wp, panel_bytes, groups, cp, ldc),)*
                            _ => unreachable!("mr <= MR_VNNI"),
                        }
                    };
                }
                tile!(1, 2, 3, 4, 5);
                i += mr;
            }
            p += np;
        }
    }
}

#[inline(always)]
unsafe fn vnni_tile<const MR: usize, const NP: usize>(
    a: Lhs,
    w: *const i8,
    panel_bytes: usize,
    groups: usize,
    c: *mut i32,
    ldc: usize,
) {
    // SAFETY: the module contract; every offset below stays inside the operands.
    unsafe {
        let mut acc = [[_mm512_setzero_si512(); NP]; MR];
        let run = groups / a.segs.max(1);
        for s in 0..a.segs {
            let (a_run, w_run) = (a.a.add(s * a.seg_stride), w.add(s * run * NR * KG));
            for g in 0..run {
                let mut wv = [_mm512_setzero_si512(); NP];
                for (p, v) in wv.iter_mut().enumerate() {
                    *v = _mm512_loadu_si512(w_run.add(p * panel_bytes + g * NR * KG) as *const __m512i);
                }
                for (r, row) in acc.iter_mut().enumerate() {
                    let av = _mm512_set1_epi32((a_run.add(r * a.lda + g * KG) as *const i32).read_unaligned());
                    for (s, v) in row.iter_mut().zip(&wv) {
                        *s = _mm512_dpbusd_epi32(*s, av, *v);
                    }
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            for (p, s) in row.iter().enumerate() {
                _mm512_storeu_si512(c.add(r * ldc + p * NR) as *mut __m512i, *s);
            }
        }
    }
}

/// AVX2: the activations are widened to `i16` once per tile of rows; each group's weights of
/// 8 columns are sign-extended to two registers of 4 columns x 4 values, and `vpmaddwd`
/// leaves two partial sums per column, added pairwise at the end.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn gemm_avx2(
    a: *const u8,
    m: usize,
    lda: usize,
    w: *const i8,
    groups: usize,
    c: *mut i32,
    ldc: usize,
) {
    // SAFETY: the module contract; every offset below stays inside the operands.
    unsafe {
        let panels = ldc / NR;
        let panel_bytes = groups * NR * KG;
        let mut wide = vec![0i16; MR_AVX2 * lda];
        let mut i = 0;
        while i < m {
            let mr = (m - i).min(MR_AVX2);
            for (d, s) in wide
                .iter_mut()
                .zip(std::slice::from_raw_parts(a.add(i * lda), mr * lda))
            {
                *d = *s as i16;
            }
            for p in 0..panels {
                for half in 0..2 {
                    let wp = w.add(p * panel_bytes + half * (NR / 2) * KG);
                    let cp = c.add(i * ldc + p * NR + half * NR / 2);
                    match mr {
                        4 => avx2_tile::<4>(wide.as_ptr(), lda, wp, groups, cp, ldc),
                        3 => avx2_tile::<3>(wide.as_ptr(), lda, wp, groups, cp, ldc),
                        2 => avx2_tile::<2>(wide.as_ptr(), lda, wp, groups, cp, ldc),
                        _ => avx2_tile::<1>(wide.as_ptr(), lda, wp, groups, cp, ldc),
                    }
                }
            }
            i += mr;
        }
    }
}

#[inline(always)]
unsafe fn avx2_tile<const MR: usize>(a: *const i16, lda: usize, w: *const i8, groups: usize, c: *mut i32, ldc: usize) {
    // SAFETY: the module contract; every offset below stays inside the operands.
    unsafe {
        let mut acc = [[_mm256_setzero_si256(); 2]; MR];
        for g in 0..groups {
            let wg = w.add(g * NR * KG);
            let w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(wg as *const __m128i));
            let w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(wg.add(16) as *const __m128i));
            for (r, row) in acc.iter_mut().enumerate() {
                let av = _mm256_set1_epi64x((a.add(r * lda + g * KG) as *const i64).read_unaligned());
                row[0] = _mm256_add_epi32(row[0], _mm256_madd_epi16(av, w0));
                row[1] = _mm256_add_epi32(row[1], _mm256_madd_epi16(av, w1));
            }
        }
        for (r, row) in acc.iter().enumerate() {
            // Lanes hold (column, half) pairs; hadd gives columns [0, 1, 4, 5 | 2, 3, 6, 7].
            let sums = _mm256_permute4x64_epi64(_mm256_hadd_epi32(row[0], row[1]), 0b11_01_10_00);
            _mm256_storeu_si256(c.add(r * ldc) as *mut __m256i, sums);
        }
    }
}

/// [`quantize_avx2`] on AVX-512: 64 values a step, each vector of `i32` narrowed to bytes by one
/// `vpmovdb` (the values are already in 0..=255), with no pack and permute.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn quantize_avx512(x: &[f32], inverse: f32, offset: f32, out: &mut [u8]) {
    let n = x.len().min(out.len());
    let (inv, off) = (_mm512_set1_ps(inverse), _mm512_set1_ps(offset));
    let (lo, hi) = (_mm512_setzero_ps(), _mm512_set1_ps(255.0));
    let mut i = 0;
    // SAFETY: every load reads x[i..i + 16 * (j + 1)] and every store writes the same range of
    // `out`, within the first n values.
    unsafe {
        let q = |p: *const f32, o: *mut u8| {
            // Multiply then add, rounded twice as the scalar form is.
            let v = _mm512_add_ps(_mm512_mul_ps(_mm512_loadu_ps(p), inv), off);
            let ints = _mm512_cvttps_epi32(_mm512_min_ps(_mm512_max_ps(v, lo), hi));
            _mm_storeu_si128(o as *mut __m128i, _mm512_cvtepi32_epi8(ints));
        };
        while i + 64 <= n {
            for j in 0..4 {
                q(x.as_ptr().add(i + 16 * j), out.as_mut_ptr().add(i + 16 * j));
            }
            i += 64;
        }
        while i + 16 <= n {
            q(x.as_ptr().add(i), out.as_mut_ptr().add(i));
            i += 16;
        }
    }
    for j in i..n {
        out[j] = (x[j] * inverse + offset).clamp(0.0, 255.0) as u8;
    }
}

/// `out[i] = clamp(floor(x[i] * inverse + offset), 0, 255)` for `x.len() <= out.len()` values,
/// 32 at a time: four vectors of `i32` packed to bytes (`packs` works within 128-bit lanes, so
/// a final permute restores the order).
#[target_feature(enable = "avx2")]
pub(super) unsafe fn quantize_avx2(x: &[f32], inverse: f32, offset: f32, out: &mut [u8]) {
    let n = x.len().min(out.len());
    let (inv, off) = (_mm256_set1_ps(inverse), _mm256_set1_ps(offset));
    let (lo, hi) = (_mm256_setzero_ps(), _mm256_set1_ps(255.0));
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    let mut i = 0;
    // SAFETY: every load reads x[i..i + 32] and every store writes out[i..i + 32], i + 32 <= n.
    unsafe {
        let q = |p: *const f32| {
            // Multiply then add, rounded twice as the scalar form is (an FMA could move a value
            // sitting on a .5 boundary to the other side).
            let v = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(p), inv), off);
            _mm256_cvttps_epi32(_mm256_min_ps(_mm256_max_ps(v, lo), hi))
        };
        while i + 32 <= n {
            let p = x.as_ptr().add(i);
            let ab = _mm256_packs_epi32(q(p), q(p.add(8)));
            let cd = _mm256_packs_epi32(q(p.add(16)), q(p.add(24)));
            let bytes = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(ab, cd), order);
            _mm256_storeu_si256(out.as_mut_ptr().add(i) as *mut __m256i, bytes);
            i += 32;
        }
    }
    for j in i..n {
        out[j] = (x[j] * inverse + offset).clamp(0.0, 255.0) as u8;
    }
}
