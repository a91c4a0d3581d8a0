use super::*;
use crate::cpu::conv::{conv2d_forward, Padding};

/// Deterministic input, kernel and bias values for a layer of these shapes.
fn operands(x_shape: [usize; 4], k: [usize; 4]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let x = (0..x_shape.iter().product::<usize>())
        .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
        .collect();
    let w = (0..k.iter().product::<usize>())
        .map(|i| ((i * 53 % 97) as f32 / 48.0) - 1.0)
        .collect();
    let b = (0..k[3]).map(|i| i as f32 * 0.1 - 0.3).collect();
    (x, w, b)
}

fn check(x_shape: [usize; 4], k: [usize; 4], strides: [usize; 2], dil: [usize; 2], padding: Padding, bias: bool) {
    let g = Conv2dGeometry::new(&x_shape, &k, strides, dil, padding).unwrap();
    let (x, w, b) = operands(x_shape, k);
    let bias = bias.then_some(&b[..]);
    let Some(direct) = conv2d_direct(&x, &w, bias, &g, Activation::Relu) else {
        eprintln!("skipped: this CPU has no direct convolution kernel (needs AVX2+FMA or AVX-512F)");
        return;
    };
    let mut reference = conv2d_forward(&x, &w, bias, &g);
    activation_in_place(Activation::Relu, &mut reference);
    assert_eq!(direct.len(), reference.len());
    for (i, (a, r)) in direct.iter().zip(&reference).enumerate() {
        assert!(
            (a - r).abs() <= 1e-4 * (1.0 + r.abs()),
            "{x_shape:?} {k:?} at {i}: {a} vs {r}"
        );
    }
}

#[test]
fn direct_matches_im2col_gemm() {
    // The convnet's two layers, odd channel counts (masked tails), strides, dilation,
    // 'same' padding, rows shorter and longer than a tile.
    check([3, 28, 28, 1], [3, 3, 1, 32], [1, 1], [1, 1], Padding::Valid, true);
    check([2, 13, 13, 32], [3, 3, 32, 64], [1, 1], [1, 1], Padding::Valid, true);
    check([2, 9, 11, 3], [3, 3, 3, 10], [1, 1], [1, 1], Padding::Same, true);
    check([2, 9, 11, 5], [5, 3, 5, 70], [2, 1], [1, 1], Padding::Same, false);
    check([1, 12, 17, 4], [3, 3, 4, 33], [1, 2], [2, 1], Padding::Valid, true);
    check([2, 7, 3, 2], [2, 2, 2, 7], [3, 3], [1, 1], Padding::Same, true);
    check([1, 4, 40, 8], [1, 1, 8, 130], [1, 1], [1, 1], Padding::Valid, true);
}

/// The fused pooling against the unfused convolution followed by a naive max pooling, for
/// several activations, windows that do not divide the output (the last row or column
/// dropped), 'same' padding, strides and channel counts with masked tails.
#[test]
fn max_pool_rows_matches_its_scalar_form() {
    // 3 rows of 7 pixels x 20 channels (a partial vector), windows of 2 pixels: the last
    // pixel is outside every window. NaNs in the first and the last row must come out.
    let (rows, px, o, pw) = (3, 7, 20, 2);
    let row = px * o;
    let mut scratch: Vec<f32> = (0..rows * row).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
    scratch[3] = f32::NAN;
    scratch[2 * row + 2 * o + 5] = f32::NAN;
    let mut want = vec![0.0; (px / pw) * o];
    max_pool_rows_plain(&scratch, row, rows, pw, o, &mut want);
    let mut got = vec![0.0; want.len()];
    max_pool_rows(&mut scratch.clone(), row, rows, pw, o, &mut got);
    assert_eq!(want.iter().filter(|v| v.is_nan()).count(), 2);
    assert_eq!(
        got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        want.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
}

#[test]
#[cfg(target_arch = "x86_64")]
fn fused_max_pool_equals_conv_then_pool() {
    type Case = ([usize; 4], [usize; 4], [usize; 2], Padding, [usize; 2], Activation);
    let cases: [Case; 9] = [
        // 2x2 windows after relu or no activation pool in registers: every channel-block
        // width (70 = 4 + partial vectors, 48 = 3, 32 = 2, 16 = 1), pixel tiles of every
        // even width, a last row / column outside every window, strides and padding.
        (
            [2, 11, 14, 3],
            [3, 3, 3, 70],
            [1, 1],
            Padding::Valid,
            [2, 2],
            Activation::Linear,
        ),
        (
            [2, 10, 21, 2],
            [3, 3, 2, 48],
            [1, 2],
            Padding::Same,
            [2, 2],
            Activation::Relu,
        ),
        (
            [2, 28, 28, 1],
            [3, 3, 1, 32],
            [1, 1],
            Padding::Valid,
            [2, 2],
            Activation::Linear,
        ),
        (
            [1, 9, 30, 1],
            [2, 2, 1, 16],
            [1, 1],
            Padding::Valid,
            [2, 2],
            Activation::Linear,
        ),
        (
            [3, 28, 28, 1],
            [3, 3, 1, 32],
            [1, 1],
            Padding::Valid,
            [2, 2],
            Activation::Relu,
        ),
        (
            [2, 9, 11, 3],
            [3, 3, 3, 10],
            [1, 1],
            Padding::Same,
            [2, 2],
            Activation::Tanh,
        ),
        (
            [2, 13, 12, 5],
            [5, 3, 5, 70],
            [1, 1],
            Padding::Valid,
            [3, 2],
            Activation::Linear,
        ),
        (
            [1, 12, 17, 4],
            [3, 3, 4, 33],
            [2, 1],
            Padding::Same,
            [2, 3],
            Activation::LeakyRelu(0.2),
        ),
        (
            [2, 5, 5, 2],
            [3, 3, 2, 17],
            [1, 1],
            Padding::Valid,
            [3, 3],
            Activation::Relu,
        ),
    ];
    // Every kernel this CPU runs: an AVX-512 CPU tests the AVX2 kernels too.
    let isas: Vec<(Isa, usize)> = [(Isa::Avx512, 16), (Isa::Avx2, 8)]
        .into_iter()
        .filter(|&(isa, _)| match isa {
            Isa::Avx512 => is_x86_feature_detected!("avx512f"),
            Isa::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
        })
        .collect();
    if isas.is_empty() {
        eprintln!("skipped: this CPU has no direct convolution kernel");
    }
    let all = cases.iter().flat_map(|case| isas.iter().map(move |isa| (case, isa)));
    for (&(x_shape, k, strides, padding, [ph, pw], act), &(isa, lanes)) in all {
        let g = Conv2dGeometry::new(&x_shape, &k, strides, [1, 1], padding).unwrap();
        let (mut x, w, b) = operands(x_shape, k);
        // One NaN input: the windows its outputs reach must come out NaN, as pooled alone.
        let third = x.len() / 3;
        x[third] = f32::NAN;
        let conv = run_with(&x, &w, Some(&b), &g, act, isa, lanes, None);
        let fused = run_with(&x, &w, Some(&b), &g, act, isa, lanes, Some([ph, pw]));
        let (o, qh, qw) = (g.out_c, g.out_h / ph, g.out_w / pw);
        let mut nans = 0;
        assert_eq!(fused.len(), g.batch * qh * qw * o, "{x_shape:?} {k:?}");
        for n in 0..g.batch {
            for (qy, qx, c) in (0..qh).flat_map(|a| (0..qw).flat_map(move |b| (0..o).map(move |c| (a, b, c)))) {
                let mut want = f32::NEG_INFINITY;
                for dy in 0..ph {
                    for dx in 0..pw {
                        let at = ((n * g.out_h + qy * ph + dy) * g.out_w + qx * pw + dx) * o + c;
                        want = if want.is_nan() || conv[at].is_nan() {
                            f32::NAN
                        } else {
                            want.max(conv[at])
                        };
                    }
                }
                let got = fused[((n * qh + qy) * qw + qx) * o + c];
                assert_eq!(
                    got.to_bits(),
                    want.to_bits(),
                    "{isa:?} {x_shape:?} {k:?} {act:?} at ({n}, {qy}, {qx}, {c})"
                );
                nans += usize::from(got.is_nan());
            }
        }
        // The direct kernel's fused relu is max(v, 0), which maps NaN to 0 in both paths.
        if act != Activation::Relu {
            assert!(nans > 0, "{x_shape:?}: the NaN reached no window");
        }
    }
}
