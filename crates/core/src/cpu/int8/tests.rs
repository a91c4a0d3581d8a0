use super::*;
use crate::cpu::conv::{Conv2dGeometry, Padding};
use crate::cpu::elementwise::Activation;

/// Deterministic values in [-1, 1) (a small LCG: no dependency on the crate's RNG streams).
pub(crate) fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn kernels() -> Vec<Int8Kernel> {
    [
        Int8Kernel::Amx,
        Int8Kernel::Vnni,
        Int8Kernel::Avx2,
        Int8Kernel::Portable,
    ]
    .into_iter()
    .filter(|k| k.supported())
    .collect()
}

fn assert_close(got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len());
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g as f64 - w).abs() <= tol * (1.0 + w.abs()),
            "element {i}: {g} vs reference {w}"
        );
    }
}

#[test]
fn weights_quantize_per_column() {
    let w = [0.5, -1.0, 0.25, 2.0, -0.125, 0.0];
    let p = PackedInt8::new(&w, 3, 2).unwrap();
    assert_eq!(p.scales, [0.5 / 127.0, 2.0 / 127.0]);
    assert_eq!([p.weight(0, 0), p.weight(1, 0), p.weight(2, 0)], [127, 64, -32]);
    assert_eq!([p.weight(0, 1), p.weight(1, 1), p.weight(2, 1)], [-64, 127, 0]);
    assert_eq!(p.col_sums, [127 + 64 - 32, -64 + 127]);
    assert!(PackedInt8::new(&[f32::NAN, 1.0], 1, 2).is_err());
    assert!(PackedInt8::new(&[1.0; 3], 2, 2).is_err());
}

#[test]
fn activations_keep_zero_exact() {
    let q = AffineU8::of(&[0.0, 0.5, 2.0]).unwrap();
    assert_eq!(q.zero_point, 0);
    assert_eq!(q.quantize(0.0), 0);
    assert_eq!(q.quantize(2.0), 255);
    let q = AffineU8::of(&[-1.0, 3.0]).unwrap();
    assert_eq!(q.quantize(0.0), q.zero_point);
    assert_eq!(q.quantize(-1.0), 0);
    assert_eq!(q.quantize(3.0), 255);
    assert_eq!(AffineU8::of(&[0.0; 4]).unwrap().quantize(0.0), 0);
    assert!(AffineU8::of(&[1.0, f32::NAN]).is_err());
    assert!(AffineU8::of(&[f32::INFINITY]).is_err());
}

/// The vector quantizers give the scalar `quantize` byte for byte: values past both ends of the
/// range (clamped), on .5 boundaries, and lengths that leave every tail size.
#[test]
fn vector_quantizers_match_the_scalar_one() {
    let q = AffineU8::of(&[-1.5, 2.5]).unwrap();
    let mut x = values(300, 11);
    x.iter_mut().step_by(7).for_each(|v| *v *= 4.0);
    // Values that land exactly on .5 after the affine map.
    x.extend((0..40).map(|i| (i as f32 - q.zero_point as f32) / q.inverse));
    let want: Vec<u8> = x.iter().map(|&v| q.quantize(v)).collect();
    assert!(want.contains(&0) && want.contains(&255));
    let offset = q.zero_point as f32 + 0.5;
    for n in [0, 1, 15, 16, 17, 63, 64, 65, 130, x.len()] {
        let mut got = vec![7u8; n];
        q.quantize_into(&x[..n], &mut got);
        assert_eq!(got, want[..n], "quantize_into, {n} values");
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                let mut got = vec![7u8; n];
                // SAFETY: the features are checked just above.
                unsafe { super::x86::quantize_avx2(&x[..n], q.inverse, offset, &mut got) };
                assert_eq!(got, want[..n], "avx2, {n} values");
            }
            if is_x86_feature_detected!("avx512f") {
                let mut got = vec![7u8; n];
                // SAFETY: the features are checked just above.
                unsafe { super::x86::quantize_avx512(&x[..n], q.inverse, offset, &mut got) };
                assert_eq!(got, want[..n], "avx512, {n} values");
            }
        }
    }
}

#[test]
fn every_kernel_computes_the_exact_integer_product() {
    for &(m, k, n) in &[
        (1, 1, 1),
        (3, 5, 10),
        (7, 9, 16),
        (13, 288, 64),
        (6, 300, 33),
        (17, 64, 100),
    ] {
        let w = values(k * n, (m * 31 + k) as u64);
        let packed = PackedInt8::new(&w, k, n).unwrap();
        let (kp, ldc) = (packed.padded_depth(), packed.padded_width());
        let a: Vec<u8> = (0..m * kp).map(|i| ((i * 97 + 13) % 256) as u8).collect();
        let mut want = vec![0i64; m * n];
        for i in 0..m {
            for j in 0..n {
                want[i * n + j] = (0..k)
                    .map(|kk| a[i * kp + kk] as i64 * packed.weight(kk, j) as i64)
                    .sum();
            }
        }
        for kernel in kernels() {
            let mut c = vec![0i32; m * ldc];
            gemm_u8i8(kernel, &a, m, &packed, &mut c);
            for i in 0..m {
                for j in 0..n {
                    assert_eq!(
                        c[i * ldc + j] as i64,
                        want[i * n + j],
                        "{kernel:?} m={m} k={k} n={n} ({i}, {j})"
                    );
                }
            }
        }
    }
}

#[test]
fn linear_matches_an_f64_reference_of_the_quantized_arithmetic() {
    let (rows, k, n) = (37, 70, 21);
    let x: Vec<f32> = values(rows * k, 3).iter().map(|v| v * 3.0 + 0.5).collect();
    let w = values(k * n, 4);
    let bias = values(n, 5);
    let packed = PackedInt8::new(&w, k, n).unwrap();
    let mut want = vec![0f64; rows * n];
    for i in 0..rows {
        let row = &x[i * k..(i + 1) * k];
        let q = AffineU8::of(row).unwrap();
        for j in 0..n {
            let dot: f64 = (0..k)
                .map(|kk| (q.quantize(row[kk]) as f64 - q.zero_point as f64) * packed.weight(kk, j) as f64)
                .sum();
            let y = dot * q.scale as f64 * packed.scales[j] as f64 + bias[j] as f64;
            want[i * n + j] = y.max(0.0);
        }
    }
    for kernel in kernels() {
        let y = linear_int8(&x, rows, &packed, Some(&bias), Activation::Relu, kernel).unwrap();
        assert_close(&y, &want, 1e-5);
    }
    // And it stays near the f32 layer: int8 error is a few hundredths here.
    let exact: Vec<f64> = (0..rows * n)
        .map(|e| {
            let (i, j) = (e / n, e % n);
            let dot: f64 = (0..k).map(|kk| x[i * k + kk] as f64 * w[kk * n + j] as f64).sum();
            (dot + bias[j] as f64).max(0.0)
        })
        .collect();
    // Rounding noise: each of the 70 products carries about 0.005 of error, so the RMS error of a
    // sum is about 0.05 against outputs of RMS about 2.
    let y = linear_int8(&x, rows, &packed, Some(&bias), Activation::Relu, Int8Kernel::detect()).unwrap();
    let rms = |v: &mut dyn Iterator<Item = f64>| {
        let (s, n) = v.fold((0.0, 0usize), |(s, n), e| (s + e * e, n + 1));
        (s / n as f64).sqrt()
    };
    let err = rms(&mut y.iter().zip(&exact).map(|(&g, &w)| g as f64 - w));
    let size = rms(&mut exact.iter().copied());
    assert!(err < 0.05 * size, "int8 RMS error {err} against outputs of RMS {size}");
    assert!(linear_int8(&x[1..], rows, &packed, None, Activation::Linear, Int8Kernel::Portable).is_err());
}

#[test]
fn conv_matches_an_f64_reference_of_the_quantized_arithmetic() {
    for (padding, stride) in [(Padding::Same, 1), (Padding::Valid, 2)] {
        let (batch, h, wd, c, o, kh) = (3, 9, 8, 5, 19, 3);
        let x: Vec<f32> = values(batch * h * wd * c, 7).iter().map(|v| v - 0.3).collect();
        let w = values(kh * kh * c * o, 8);
        let bias = values(o, 9);
        let g = Conv2dGeometry::new(&[batch, h, wd, c], &[kh, kh, c, o], [stride, stride], [1, 1], padding).unwrap();
        let packed = PackedInt8::new(&w, kh * kh * c, o).unwrap();
        let mut want = Vec::new();
        for b in 0..batch {
            let img = &x[b * h * wd * c..(b + 1) * h * wd * c];
            let q = AffineU8::of(img).unwrap();
            for oy in 0..g.out_h {
                for ox in 0..g.out_w {
                    for j in 0..o {
                        let mut dot = 0f64;
                        for ky in 0..kh {
                            for kx in 0..kh {
                                let iy = (oy * stride + ky) as isize - g.pad_top as isize;
                                let ix = (ox * stride + kx) as isize - g.pad_left as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                    continue;
                                }
                                for ci in 0..c {
                                    let v = img[(iy as usize * wd + ix as usize) * c + ci];
                                    let kk = (ky * kh + kx) * c + ci;
                                    dot += (q.quantize(v) as f64 - q.zero_point as f64) * packed.weight(kk, j) as f64;
                                }
                            }
                        }
                        want.push(dot * q.scale as f64 * packed.scales[j] as f64 + bias[j] as f64);
                    }
                }
            }
        }
        for kernel in kernels() {
            let y = conv2d_int8(&x, &g, &packed, Some(&bias), Activation::Linear, kernel).unwrap();
            assert_close(&y, &want, 1e-5);
        }
    }
}

/// A convolution then a max pooling in two passes.
type Conv<'a> = &'a dyn Fn(&[f32], &Conv2dGeometry, &[f32], &[f32], Activation) -> Vec<f32>;
/// The same in one pass, with the pool size last.
type Pooled<'a> = &'a dyn Fn(&[f32], &Conv2dGeometry, &[f32], &[f32], Activation, [usize; 2]) -> Vec<f32>;

/// `pooled` equals `conv` followed by the pooling layer's max pool, bit for bit: geometries
/// whose last rows and columns no window covers, 'same' padding, enough images for several
/// blocks, activations fused and not, and a NaN bias channel (NaN must reach the output).
pub(crate) fn check_pooled_equals_conv_then_pool(conv: Conv, pooled: Pooled) {
    use crate::cpu::pool::{max_pool2d_values, Pool2dGeometry};
    let o = 19;
    for (batch, h, wd, c, strides, dil, padding, pool) in [
        (7, 11, 9, 5, [1, 1], [1, 1], Padding::Valid, [2, 2]),
        (3, 8, 10, 5, [1, 1], [1, 1], Padding::Same, [3, 2]),
        (1, 6, 6, 5, [1, 1], [1, 1], Padding::Valid, [1, 4]),
        // Kernel rows of whole 4-byte groups, unpadded: int8 VNNI reads the images directly,
        // with strides and a row dilation (a column dilation takes the patch matrix); the
        // first leaves its last output row and column outside every window.
        (5, 13, 13, 8, [1, 1], [1, 1], Padding::Valid, [2, 2]),
        (3, 15, 14, 4, [2, 1], [2, 1], Padding::Valid, [2, 3]),
        (2, 12, 17, 32, [1, 2], [1, 1], Padding::Valid, [2, 2]),
        (2, 12, 17, 4, [1, 1], [1, 2], Padding::Valid, [2, 2]),
    ] {
        let x: Vec<f32> = values(batch * h * wd * c, 3).iter().map(|v| v - 0.2).collect();
        let w = values(3 * 3 * c * o, 4);
        let mut bias = values(o, 5);
        bias[7] = f32::NAN;
        let g = Conv2dGeometry::new(&[batch, h, wd, c], &[3, 3, c, o], strides, dil, padding).unwrap();
        for act in [Activation::Relu, Activation::Linear, Activation::Tanh] {
            let y = conv(&x, &g, &w, &bias, act);
            let pg = Pool2dGeometry::new(&[batch, g.out_h, g.out_w, o], pool, pool, Padding::Valid).unwrap();
            let want = max_pool2d_values(&y, &pg);
            let got = pooled(&x, &g, &w, &bias, act, pool);
            assert_eq!(got.len(), want.len(), "{pool:?}");
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert_eq!(a.to_bits(), b.to_bits(), "{pool:?} {act:?} element {i}: {a} vs {b}");
            }
            // (The fused ReLU maps NaN to 0, as `f32::max` does, in both passes.)
            let nan_reached = act == Activation::Relu || got.iter().any(|v| v.is_nan());
            assert!(nan_reached && got.iter().any(|v| !v.is_nan()), "{act:?}");
        }
    }
}

#[test]
fn fused_max_pool_equals_conv_then_pool() {
    for kernel in kernels() {
        let pack = |w: &[f32], g: &Conv2dGeometry| PackedInt8::new(w, g.patch_len(), g.out_c).unwrap();
        check_pooled_equals_conv_then_pool(
            &|x, g, w, b, act| conv2d_int8(x, g, &pack(w, g), Some(b), act, kernel).unwrap(),
            &|x, g, w, b, act, pool| conv2d_int8_max_pool(x, g, &pack(w, g), Some(b), act, pool, kernel).unwrap(),
        );
    }
}

#[test]
fn a_non_finite_row_is_an_error_and_callers_keep_f32() {
    // The RNN step falls back to its f32 product on this Error (cpu/rnn.rs).
    let w = PackedInt8::new(&values(64 * 8, 1), 64, 8).unwrap();
    let mut x = values(2 * 64, 2);
    let mut y = vec![0.0; 16];
    for bad in [f32::NAN, f32::INFINITY] {
        x[70] = bad;
        let err = matmul_int8_serial(&x, 2, &w, Int8Kernel::detect(), &mut y).unwrap_err();
        assert!(err.to_string().contains("finite"), "{err}");
    }
    x[70] = 0.5;
    matmul_int8_serial(&x, 2, &w, Int8Kernel::detect(), &mut y).unwrap();
    let want = linear_int8(&x, 2, &w, None, Activation::Linear, Int8Kernel::detect()).unwrap();
    assert_eq!(y, want, "the serial product equals the blocked one");
    // The pooled convolution quantizes inside its blocks and still reports a bad image.
    let g = Conv2dGeometry::new(&[6, 5, 5, 8], &[3, 3, 8, 4], [1, 1], [1, 1], Padding::Valid).unwrap();
    let w = PackedInt8::new(&values(72 * 4, 3), 72, 4).unwrap();
    let mut x = values(6 * 200, 4);
    x[5 * 200 + 17] = f32::INFINITY;
    let err = conv2d_int8_max_pool(&x, &g, &w, None, Activation::Relu, [2, 2], Int8Kernel::detect()).unwrap_err();
    assert!(err.to_string().contains("finite"), "{err}");
    // Operands that disagree with the geometry, and a pooling no window of which fits.
    let short = &x[..x.len() - 1];
    assert!(conv2d_int8_max_pool(short, &g, &w, None, Activation::Relu, [2, 2], Int8Kernel::detect()).is_err());
    x[5 * 200 + 17] = 0.5;
    for pool in [[4, 2], [0, 1]] {
        let err = conv2d_int8_max_pool(&x, &g, &w, None, Activation::Relu, pool, Int8Kernel::detect()).unwrap_err();
        assert!(err.to_string().contains("does not fit"), "{err}");
    }
}
