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
        let (m, n, k) = (37, 29, 53);
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
