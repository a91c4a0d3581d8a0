//! Batched GEMM against an f64 reference.

use super::common::{assert_close, gpu, rand_vec, skip as cortex_wgpu_skip};
use cortex_wgpu::MatmulDesc;

/// C[b] = op(A[b]) op(B[b]) in f64; A stored (m x k or k x m), B (k x n or n x k).
pub fn reference(a: &[f32], b: &[f32], d: &MatmulDesc) -> Vec<f64> {
    let mut c = vec![0.0f64; d.batch * d.m * d.n];
    for bi in 0..d.batch {
        let (ao, bo) = (bi * d.stride_a, bi * d.stride_b);
        for i in 0..d.m {
            for j in 0..d.n {
                let mut s = 0.0f64;
                for l in 0..d.k {
                    let av = if d.trans_a {
                        a[ao + l * d.m + i]
                    } else {
                        a[ao + i * d.k + l]
                    };
                    let bv = if d.trans_b {
                        b[bo + j * d.k + l]
                    } else {
                        b[bo + l * d.n + j]
                    };
                    s += av as f64 * bv as f64;
                }
                c[(bi * d.m + i) * d.n + j] = s;
            }
        }
    }
    c
}

/// Runs one case; returns whether the vec4 kernel ran.
fn check(m: usize, n: usize, k: usize, batch: usize, ta: bool, tb: bool) -> bool {
    let Some(g) = gpu() else { return false };
    let a = rand_vec(batch * m * k, (m * 31 + k) as u64);
    let b = rand_vec(batch * k * n, (n * 17 + k) as u64);
    let a_shape = if ta { [batch, k, m] } else { [batch, m, k] };
    let b_shape = if tb { [batch, n, k] } else { [batch, k, n] };
    let ga = g.upload(&a, &a_shape).unwrap();
    let gb = g.upload(&b, &b_shape).unwrap();
    let c = g.matmul(&ga, &gb, ta, tb).unwrap();
    assert_eq!(c.shape(), &[batch, m, n]);
    let d = MatmulDesc {
        m,
        n,
        k,
        batch,
        trans_a: ta,
        trans_b: tb,
        stride_a: m * k,
        stride_b: k * n,
    };
    let what = format!(
        "matmul {m}x{n}x{k} batch {batch} ta {ta} tb {tb} vec4 {}",
        d.uses_vec4()
    );
    assert_close(&what, &g.download(&c).unwrap(), &reference(&a, &b, &d), 1e-4);
    d.uses_vec4()
}

#[test]
fn odd_sizes_all_transposes() {
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        assert!(!check(37, 53, 29, 1, ta, tb) || cortex_wgpu_skip());
    }
}

#[test]
fn tile_multiples_vec4_path() {
    assert!(check(128, 128, 64, 1, false, false) || cortex_wgpu_skip());
    assert!(check(64, 192, 128, 1, false, false) || cortex_wgpu_skip());
}

#[test]
fn vec4_path_with_ragged_m_and_tiles() {
    // K and N multiples of 4 (vec4 loads), M and N not multiples of the 64 tile.
    assert!(check(37, 52, 28, 1, false, false) || cortex_wgpu_skip());
    assert!(check(1, 4, 4, 1, false, false) || cortex_wgpu_skip());
}

#[test]
fn vec4_path_all_transposes() {
    // m, n, k multiples of 4: every transpose combination takes the vec4 kernel.
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        for (m, n, k, batch) in [(36, 52, 28, 2), (128, 64, 96, 1), (4, 68, 132, 1)] {
            assert!(check(m, n, k, batch, ta, tb) || cortex_wgpu_skip());
        }
    }
}

#[test]
fn batched_and_transposed() {
    check(19, 23, 41, 3, false, false);
    check(16, 20, 12, 4, false, false);
    check(19, 23, 41, 3, true, true);
    check(33, 8, 70, 2, false, true);
}

#[test]
fn broadcast_b_over_batch() {
    let Some(g) = gpu() else { return };
    let (batch, m, n, k) = (3, 10, 12, 9);
    let a = rand_vec(batch * m * k, 5);
    let b = rand_vec(k * n, 6);
    let ga = g.upload(&a, &[batch, m, k]).unwrap();
    let gb = g.upload(&b, &[k, n]).unwrap();
    let c = g.matmul(&ga, &gb, false, false).unwrap();
    assert_eq!(c.shape(), &[batch, m, n]);
    let d = MatmulDesc {
        m,
        n,
        k,
        batch,
        trans_a: false,
        trans_b: false,
        stride_a: m * k,
        stride_b: 0,
    };
    assert_close(
        "broadcast matmul",
        &g.download(&c).unwrap(),
        &reference(&a, &b, &d),
        1e-4,
    );
}

#[test]
fn long_inner_dimension_split_k() {
    // One output tile and K >= 512: k is split over workgroups (split_k_chunk) and the
    // partials summed by a second pass, on both kernels and with transposes.
    for (m, n, k, ta, tb) in [
        (9, 7, 1500, false, false),
        (8, 12, 2048, false, false),
        (20, 16, 1024, true, false),
    ] {
        assert!(cortex_wgpu::kernels::conv::split_k_chunk(m, n, k) < k);
        check(m, n, k, 1, ta, tb);
    }
    // Batched GEMMs never split.
    check(9, 7, 1500, 2, false, true);
}

#[test]
fn shape_errors_say_expected_and_got() {
    let Some(g) = gpu() else { return };
    let a = g.upload(&[0.0; 6], &[2, 3]).unwrap();
    let b = g.upload(&[0.0; 8], &[4, 2]).unwrap();
    let err = g.matmul(&a, &b, false, false).unwrap_err().to_string();
    assert!(err.contains("expected") && err.contains("got"), "{err}");
}

#[test]
fn explicit_strides_with_gaps() {
    // Matrices 5 elements apart beyond their size: exercises matmul_with's batch strides.
    let Some(g) = gpu() else { return };
    let (batch, m, n, k) = (3, 6, 5, 7);
    let d = MatmulDesc {
        m,
        n,
        k,
        batch,
        trans_a: false,
        trans_b: true,
        stride_a: m * k + 5,
        stride_b: n * k + 3,
    };
    let a = rand_vec((batch - 1) * d.stride_a + m * k, 41);
    let b = rand_vec((batch - 1) * d.stride_b + n * k, 42);
    let ga = g.upload(&a, &[a.len()]).unwrap();
    let gb = g.upload(&b, &[b.len()]).unwrap();
    let c = g.matmul_with(&ga, &gb, &d).unwrap();
    assert_eq!(c.shape(), &[batch, m, n]);
    assert_close("strided matmul", &g.download(&c).unwrap(), &reference(&a, &b, &d), 1e-4);
    let short = g.upload(&a[..10], &[10]).unwrap();
    assert!(g.matmul_with(&short, &gb, &d).is_err());
}
