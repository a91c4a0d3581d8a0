use super::*;
use crate::cpu::conv::{Conv2dGeometry, Padding};
use crate::cpu::elementwise::Activation;
use crate::cpu::int8::tests::values;

/// The kernels this CPU runs: always the portable loop, AMX where granted, AVX512-BF16 where
/// the CPU has it.
fn kernels() -> Vec<Bf16Kernel> {
    let mut k = vec![Bf16Kernel::Portable];
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::amx::bf16_available() {
        k.push(Bf16Kernel::Amx);
    }
    #[cfg(target_arch = "x86_64")]
    if avx512_available() {
        k.push(Bf16Kernel::Avx512);
    }
    k
}

#[test]
fn rounding_is_to_nearest_even() {
    assert_eq!(to_bf16(1.0), 0x3f80);
    // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to the even 1.0.
    assert_eq!(to_bf16(1.0 + 1.0 / 256.0), 0x3f80);
    // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6: ties to the even one.
    assert_eq!(to_bf16(1.0 + 3.0 / 256.0), 0x3f82);
    assert_eq!(to_bf16(-2.5), 0xc020);
    assert_eq!(to_bf16(f32::MIN_POSITIVE / 2.0), 0); // denormals flush
    assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
    assert_eq!(from_bf16(to_bf16(f32::INFINITY)), f32::INFINITY);
    let x = values(1000, 3);
    for &v in &x {
        let r = from_bf16(to_bf16(v));
        assert!((r - v).abs() <= v.abs() / 256.0, "{v} -> {r}");
    }
    // The vector conversion agrees with the scalar one (the length leaves a scalar tail).
    let mut fast = vec![0u16; 1000];
    convert_into(&x, &mut fast);
    let slow: Vec<u16> = x.iter().map(|&v| to_bf16(v)).collect();
    assert_eq!(fast, slow);
}

/// The documented arithmetic in f64 from the packed weights, with the sum of |products| (the
/// scale of any f32 rounding-order difference).
fn reference(a: &[u16], lda: usize, m: usize, w: &PackedBf16) -> Vec<(f64, f64)> {
    let mut c = vec![(0f64, 0f64); m * w.n];
    for i in 0..m {
        for j in 0..w.n {
            let (mut s, mut size) = (0f64, 0f64);
            for kk in 0..w.k {
                let p = from_bf16(a[i * lda + kk]) as f64 * from_bf16(w.weight(kk, j)) as f64;
                s += p;
                size += p.abs();
            }
            c[i * w.n + j] = (s, size);
        }
    }
    c
}

#[test]
fn every_kernel_computes_the_documented_sums() {
    for (m, k, n) in [
        (1, 1, 1),
        (3, 40, 5),
        (16, 32, 16),
        (37, 300, 70),
        (64, 576, 64),
        (20, 33, 130),
    ] {
        let w = values(k * n, 1 + k as u64);
        let packed = PackedBf16::new(&w, k, n).unwrap();
        let (lda, ldc) = (packed.padded_depth(), packed.padded_width());
        let x = values(m * k, 2 + m as u64);
        let mut a = vec![0u16; m * lda];
        for i in 0..m {
            convert_into(&x[i * k..(i + 1) * k], &mut a[i * lda..]);
        }
        let want = reference(&a, lda, m, &packed);
        for kernel in kernels() {
            let mut c = vec![f32::NAN; m * ldc];
            gemm_bf16(kernel, &a, m, &packed, &mut c);
            for i in 0..m {
                for j in 0..n {
                    let (g, (r, size)) = (c[i * ldc + j] as f64, want[i * n + j]);
                    // f32 sums of exact products: only the rounding order may differ (AMX does
                    // not round after every product as Intel's pseudo-code reads).
                    assert!(
                        (g - r).abs() <= size * 1.2e-7 * (k as f64).sqrt().max(2.0),
                        "{kernel:?} ({m},{k},{n}) [{i},{j}]: {g} vs {r}"
                    );
                }
            }
        }
    }
}

#[test]
fn forward_passes_match_f32_within_bf16_precision() {
    let (rows, k, n) = (33, 96, 24);
    let x = values(rows * k, 5);
    let w = values(k * n, 6);
    let bias = values(n, 7);
    let packed = PackedBf16::new(&w, k, n).unwrap();
    for kernel in kernels() {
        let y = linear_bf16(&x, rows, &packed, Some(&bias), Activation::Relu, kernel).unwrap();
        for i in 0..rows {
            for j in 0..n {
                let exact: f64 = (0..k)
                    .map(|kk| x[i * k + kk] as f64 * w[kk * n + j] as f64)
                    .sum::<f64>()
                    + bias[j] as f64;
                let bound: f64 = (0..k)
                    .map(|kk| (x[i * k + kk] * w[kk * n + j]).abs() as f64)
                    .sum::<f64>()
                    / 100.0;
                let got = y[i * n + j] as f64;
                assert!(
                    (got - exact.max(0.0)).abs() <= bound + 1e-6,
                    "[{i},{j}] {got} vs {exact}"
                );
            }
        }
    }
    // A convolution is im2col + the same GEMM: compare with the f32 path's kernel on a 3x3 same conv.
    let g = Conv2dGeometry::new(&[2, 6, 5, 8], &[3, 3, 8, 12], [1, 1], [1, 1], Padding::Same).unwrap();
    let x = values(2 * 6 * 5 * 8, 8);
    let w = values(3 * 3 * 8 * 12, 9);
    let packed = PackedBf16::new(&w, 72, 12).unwrap();
    let want = crate::cpu::conv::conv2d_forward(&x, &w, None, &g);
    for kernel in kernels() {
        let y = conv2d_bf16(&x, &g, &packed, None, Activation::Linear, kernel).unwrap();
        let worst = y.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst < 0.08, "{kernel:?}: worst difference {worst}");
        assert!(worst > 0.0, "the bf16 path ran");
    }
}

#[test]
fn fused_max_pool_equals_conv_then_pool() {
    for kernel in kernels() {
        let pack = |w: &[f32], g: &Conv2dGeometry| PackedBf16::new(w, g.patch_len(), g.out_c).unwrap();
        crate::cpu::int8::tests::check_pooled_equals_conv_then_pool(
            &|x, g, w, b, act| conv2d_bf16(x, g, &pack(w, g), Some(b), act, kernel).unwrap(),
            &|x, g, w, b, act, pool| conv2d_bf16_max_pool(x, g, &pack(w, g), Some(b), act, pool, kernel).unwrap(),
        );
    }
}
