//! Dense matrix multiply on the CPU, through the `gemm` crate (AVX-512/AVX2/FMA kernels,
//! rayon-parallel). Everything here is row-major.

use gemm::Parallelism;

/// Below this many multiply-adds a GEMM runs on one thread: spawning costs more than it saves.
const PARALLEL_THRESHOLD: usize = 1 << 17;

/// `c = op(a) * op(b)` (or `c += ...` when `accumulate`), all row-major.
///
/// `op(a)` is `m x k`: when `a_trans` is false `a` is stored `m x k`, otherwise `k x m`.
/// `op(b)` is `k x n`: when `b_trans` is false `b` is stored `k x n`, otherwise `n x k`.
/// `c` is `m x n`. Runs on the current rayon pool unless the problem is small or `parallel`
/// is false (callers that are already inside a parallel loop pass false).
pub fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    a_trans: bool,
    b: &[f32],
    b_trans: bool,
    c: &mut [f32],
    accumulate: bool,
    parallel: bool,
) {
    assert!(a.len() >= m * k, "sgemm: lhs too short");
    assert!(b.len() >= k * n, "sgemm: rhs too short");
    assert!(c.len() >= m * n, "sgemm: dst too short");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c[..m * n].fill(0.0);
        }
        return;
    }
    if m <= SMALL_M && !a_trans && !b_trans && small_m_gemm(m, n, k, a, b, c, accumulate) {
        return;
    }
    // gemm takes (column stride, row stride) per operand.
    let (a_cs, a_rs) = if a_trans { (m as isize, 1) } else { (1, k as isize) };
    let (b_cs, b_rs) = if b_trans { (k as isize, 1) } else { (1, n as isize) };
    let parallelism = if parallel && m * n * k >= PARALLEL_THRESHOLD && rayon::current_num_threads() > 1 {
        Parallelism::Rayon(rayon::current_num_threads())
    } else {
        Parallelism::None
    };
    // SAFETY: the asserts above guarantee every index gemm touches lies inside the slices,
    // and `c` is borrowed mutably so it cannot alias `a` or `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Up to this many rows, `a · b` runs as independent row-times-matrix products
/// ([`small_m_gemm`]).
const SMALL_M: usize = 4;

/// Column vectors per register tile of [`small_m_gemm`]'s rows.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // the tiled rows are x86-64 only
const ROW_TILE: usize = 8;

/// `c[i, :] (+)= a[i, :] · b` row by row, for a handful of rows (batch-1 inference). The
/// `gemm` crate packs `b` for every call, which for one row costs more than the product:
/// in the profile of a batch-1 MLP predict it was 19% of all samples. Here each row streams
/// `b` once with `ROW_TILE` vectors of accumulators in registers. Returns false (and does
/// nothing) when the CPU has no f32 kernel set.
fn small_m_gemm(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32], accumulate: bool) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use super::simd::{isa, Isa};
        match isa() {
            // SAFETY: `isa()` checked the features; `sgemm` asserted the slice lengths.
            Some(Isa::Avx512) => unsafe { rows_avx512(m, n, k, a, b, c, accumulate) },
            Some(Isa::Avx2) => unsafe { rows_avx2(m, n, k, a, b, c, accumulate) },
            None => return false,
        }
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (m, n, k, a, b, c, accumulate);
        false
    }
}

/// Columns `j0..j0 + width` of row `i` (`width <= NV * L`; only the last vector may be
/// partial): accumulate over `k` in registers, then store.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn row_tile<V: super::simd::Lanes, const NV: usize>(
    i: usize,
    j0: usize,
    width: usize,
    n: usize,
    k: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    accumulate: bool,
) {
    // SAFETY: the caller checked the CPU features; `j0 + width <= n`, `a` holds `m x k` and
    // `b` `k x n` floats (asserted in `sgemm`), and the masked loads and stores touch only
    // the first `width` columns.
    unsafe {
        let last = width - (NV - 1) * V::L;
        let cp = c.as_mut_ptr().add(i * n + j0);
        let mut acc = [V::zero(); NV];
        if accumulate {
            for (v, x) in acc.iter_mut().enumerate() {
                let len = if v == NV - 1 { last } else { V::L };
                *x = V::load_first(cp.add(v * V::L), len);
            }
        }
        let ap = a.as_ptr().add(i * k);
        let bp = b.as_ptr().add(j0);
        for kk in 0..k {
            let x = V::splat(ap.add(kk));
            let row = bp.add(kk * n);
            for (v, y) in acc.iter_mut().enumerate() {
                let w = if v == NV - 1 && last < V::L {
                    V::load_first(row.add(v * V::L), last)
                } else {
                    V::load(row.add(v * V::L))
                };
                *y = V::mul_add(x, w, *y);
            }
        }
        for (v, y) in acc.iter().enumerate() {
            let len = if v == NV - 1 { last } else { V::L };
            y.store_first(cp.add(v * V::L), len);
        }
    }
}

macro_rules! small_rows {
    ($name:ident, $feat:literal, $v:ty) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $feat)]
        unsafe fn $name(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32], accumulate: bool) {
            use super::simd::Lanes;
            let lanes = <$v as Lanes>::L;
            for i in 0..m {
                let mut j0 = 0;
                while j0 < n {
                    let width = (n - j0).min(ROW_TILE * lanes);
                    // SAFETY: as for `row_tile`; this function's feature is the caller's check.
                    unsafe {
                        match width.div_ceil(lanes) {
                            1 => row_tile::<$v, 1>(i, j0, width, n, k, a, b, c, accumulate),
                            2 => row_tile::<$v, 2>(i, j0, width, n, k, a, b, c, accumulate),
                            3 => row_tile::<$v, 3>(i, j0, width, n, k, a, b, c, accumulate),
                            4 => row_tile::<$v, 4>(i, j0, width, n, k, a, b, c, accumulate),
                            5 => row_tile::<$v, 5>(i, j0, width, n, k, a, b, c, accumulate),
                            6 => row_tile::<$v, 6>(i, j0, width, n, k, a, b, c, accumulate),
                            7 => row_tile::<$v, 7>(i, j0, width, n, k, a, b, c, accumulate),
                            _ => row_tile::<$v, 8>(i, j0, width, n, k, a, b, c, accumulate),
                        }
                    }
                    j0 += width;
                }
            }
        }
    };
}

small_rows!(rows_avx512, "avx512f", std::arch::x86_64::__m512);
small_rows!(rows_avx2, "avx2,fma", std::arch::x86_64::__m256);

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(m: usize, n: usize, k: usize, a: &[f32], at: bool, b: &[f32], bt: bool) -> Vec<f32> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0;
                for l in 0..k {
                    let av = if at { a[l * m + i] } else { a[i * k + l] };
                    let bv = if bt { b[j * k + l] } else { b[l * n + j] };
                    s += av * bv;
                }
                c[i * n + j] = s;
            }
        }
        c
    }

    #[test]
    fn all_transpose_combinations_match_naive() {
        for (m, n, k) in [(37, 29, 53), (1, 29, 53), (3, 300, 17), (4, 7, 1), (2, 129, 64)] {
            check_shape(m, n, k);
        }
    }

    /// Every transpose combination, overwrite and accumulate; shapes with `m <= SMALL_M`
    /// go through `small_m_gemm` (columns in full tiles, partial tiles and masked tails).
    fn check_shape(m: usize, n: usize, k: usize) {
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7 % 13) as f32 - 6.0) / 5.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 5 % 11) as f32 - 5.0) / 4.0).collect();
        for at in [false, true] {
            for bt in [false, true] {
                let want = naive(m, n, k, &a, at, &b, bt);
                let mut c = vec![1.0; m * n];
                sgemm(m, n, k, &a, at, &b, bt, &mut c, false, true);
                for (x, y) in c.iter().zip(&want) {
                    assert!((x - y).abs() < 1e-3, "{x} vs {y}");
                }
                let mut acc = want.clone();
                sgemm(m, n, k, &a, at, &b, bt, &mut acc, true, false);
                for (x, y) in acc.iter().zip(&want) {
                    assert!((x - 2.0 * y).abs() < 1e-3);
                }
            }
        }
    }
}
