//! conv2d forward / backward-input / backward-filter against direct f64 loops.

use super::common::{assert_close, gpu, rand_vec};
use cortex_wgpu::{Conv2dSpec, Gpu};

/// One convolution: input shape, kernel shape and geometry.
pub struct Case {
    pub x: [usize; 4],
    pub k: [usize; 4],
    pub spec: Conv2dSpec,
}

/// Visits every (n, oy, ox, ky, kx, ci, co, x index, w index, y index) with an in-bounds input.
fn for_each_tap(c: &Case, oh: usize, ow: usize, mut f: impl FnMut(usize, usize, usize)) {
    let [n, h, w, cin] = c.x;
    let [kh, kw, _, cout] = c.k;
    let (sh, sw) = c.spec.strides;
    let (dh, dw) = c.spec.dilation;
    let [pt, pl, _, _] = c.spec.padding;
    for b in 0..n {
        for oy in 0..oh {
            for ox in 0..ow {
                for ky in 0..kh {
                    let iy = (oy * sh + ky * dh) as isize - pt as isize;
                    if iy < 0 || iy >= h as isize {
                        continue;
                    }
                    for kx in 0..kw {
                        let ix = (ox * sw + kx * dw) as isize - pl as isize;
                        if ix < 0 || ix >= w as isize {
                            continue;
                        }
                        for ci in 0..cin {
                            let xi = ((b * h + iy as usize) * w + ix as usize) * cin + ci;
                            for co in 0..cout {
                                let wi = ((ky * kw + kx) * cin + ci) * cout + co;
                                let yi = ((b * oh + oy) * ow + ox) * cout + co;
                                f(xi, wi, yi);
                            }
                        }
                    }
                }
            }
        }
    }
}

fn check(c: Case) {
    let Some(g) = gpu() else { return };
    check_on(g, &c);
}

/// All three passes of `c` on `g` against the f64 loops.
pub fn check_on(g: &Gpu, c: &Case) {
    let (oh, ow) = c.spec.output_size(c.x[1], c.x[2], c.k[0], c.k[1]).unwrap();
    let nx: usize = c.x.iter().product();
    let nk: usize = c.k.iter().product();
    let ny = c.x[0] * oh * ow * c.k[3];
    let x = rand_vec(nx, nx as u64);
    let w = rand_vec(nk, nk as u64 + 1);
    let dy = rand_vec(ny, ny as u64 + 2);
    let (mut y_ref, mut dx_ref, mut dw_ref) = (vec![0.0f64; ny], vec![0.0f64; nx], vec![0.0f64; nk]);
    for_each_tap(c, oh, ow, |xi, wi, yi| {
        y_ref[yi] += x[xi] as f64 * w[wi] as f64;
        dx_ref[xi] += dy[yi] as f64 * w[wi] as f64;
        dw_ref[wi] += x[xi] as f64 * dy[yi] as f64;
    });
    let gx = g.upload(&x, &c.x).unwrap();
    let gw = g.upload(&w, &c.k).unwrap();
    let gdy = g.upload(&dy, &[c.x[0], oh, ow, c.k[3]]).unwrap();
    let what = format!("x {:?} k {:?} {:?}", c.x, c.k, c.spec);
    let y = g.conv2d(&gx, &gw, &c.spec).unwrap();
    assert_eq!(y.shape(), &[c.x[0], oh, ow, c.k[3]]);
    assert_close(
        &format!("conv2d forward {what}"),
        &g.download(&y).unwrap(),
        &y_ref,
        1e-4,
    );
    let dx = g.conv2d_backward_input(&gdy, &gw, c.x, &c.spec).unwrap();
    assert_close(
        &format!("conv2d backward_input {what}"),
        &g.download(&dx).unwrap(),
        &dx_ref,
        1e-4,
    );
    let dw = g.conv2d_backward_filter(&gx, &gdy, (c.k[0], c.k[1]), &c.spec).unwrap();
    assert_eq!(dw.shape(), &c.k);
    // The filter gradient sums n * oh * ow terms (~2000 here); still within 1e-4.
    assert_close(
        &format!("conv2d backward_filter {what}"),
        &g.download(&dw).unwrap(),
        &dw_ref,
        1e-4,
    );
}

#[test]
fn valid_3x3_stride_1() {
    check(Case {
        x: [2, 13, 13, 32],
        k: [3, 3, 32, 64],
        spec: Conv2dSpec::default(),
    });
}

#[test]
fn odd_channels_same_padding() {
    let spec = Conv2dSpec {
        padding: [1, 1, 1, 1],
        ..Default::default()
    };
    check(Case {
        x: [3, 9, 11, 5],
        k: [3, 3, 5, 7],
        spec,
    });
}

#[test]
fn strides_and_asymmetric_padding() {
    let spec = Conv2dSpec {
        strides: (2, 3),
        padding: [0, 1, 1, 2],
        ..Default::default()
    };
    check(Case {
        x: [2, 10, 13, 3],
        k: [3, 4, 3, 6],
        spec,
    });
}

#[test]
fn dilation() {
    let spec = Conv2dSpec {
        dilation: (2, 2),
        padding: [2, 2, 2, 2],
        ..Default::default()
    };
    check(Case {
        x: [1, 12, 10, 4],
        k: [3, 3, 4, 5],
        spec,
    });
}

#[test]
fn strided_dilated_1x1_and_5x5() {
    check(Case {
        x: [2, 7, 7, 9],
        k: [1, 1, 9, 3],
        spec: Conv2dSpec {
            strides: (2, 2),
            ..Default::default()
        },
    });
    let spec = Conv2dSpec {
        strides: (2, 1),
        dilation: (1, 2),
        padding: [2, 4, 2, 4],
    };
    check(Case {
        x: [2, 8, 9, 2],
        k: [5, 5, 2, 3],
        spec,
    });
}

#[test]
fn kernel_channel_mismatch_is_an_error() {
    let Some(g) = gpu() else { return };
    let x = g.zeros(&[1, 5, 5, 3]).unwrap();
    let w = g.zeros(&[3, 3, 4, 2]).unwrap();
    let err = g.conv2d(&x, &w, &Conv2dSpec::default()).unwrap_err().to_string();
    assert!(err.contains("expected") && err.contains("got"), "{err}");
}

#[test]
fn backward_filter_split_k() {
    // k = n * oh * ow = 8 * 18 * 18 = 2592 over a single 64x64 output tile: split over
    // workgroups (10 chunks) and summed by a second pass.
    check(Case {
        x: [8, 20, 20, 4],
        k: [3, 3, 4, 8],
        spec: Conv2dSpec::default(),
    });
}

/// Small kernels with a long k take the per-thread backward-filter path: a first layer
/// ([3, 3, 1, 8] over 8 * 26 * 26 positions), and strided, padded, dilated two-channel input
/// with more weights than threads in a workgroup (3 * 3 * 2 * 30 = 540 > 256).
#[test]
fn small_kernels_with_long_k() {
    check(Case {
        x: [8, 28, 28, 1],
        k: [3, 3, 1, 8],
        spec: Conv2dSpec::default(),
    });
    check(Case {
        x: [50, 19, 20, 2],
        k: [3, 3, 2, 30],
        spec: Conv2dSpec {
            strides: (2, 2),
            dilation: (2, 1),
            padding: [2, 1, 1, 1],
        },
    });
}

/// `conv2d_bias` against the f64 loops plus the bias, on the default device (a short k runs
/// the direct `forward_small` kernel) and on one forced to the 64-tile GEMM (+ `bias_add`).
fn check_bias(g: &Gpu, c: &Case) {
    let (oh, ow) = c.spec.output_size(c.x[1], c.x[2], c.k[0], c.k[1]).unwrap();
    let nx: usize = c.x.iter().product();
    let nk: usize = c.k.iter().product();
    let cout = c.k[3];
    let ny = c.x[0] * oh * ow * cout;
    let x = rand_vec(nx, nx as u64 + 7);
    let w = rand_vec(nk, nk as u64 + 8);
    let b = rand_vec(cout, cout as u64 + 9);
    let mut y_ref: Vec<f64> = (0..ny).map(|i| b[i % cout] as f64).collect();
    for_each_tap(c, oh, ow, |xi, wi, yi| y_ref[yi] += x[xi] as f64 * w[wi] as f64);
    let gx = g.upload(&x, &c.x).unwrap();
    let gw = g.upload(&w, &c.k).unwrap();
    let gb = g.upload(&b, &[cout]).unwrap();
    let what = format!(
        "conv2d_bias x {:?} k {:?} {:?} on {:?}",
        c.x,
        c.k,
        c.spec,
        g.conv_kernel()
    );
    let y = g.conv2d_bias(&gx, &gw, Some(&gb), &c.spec).unwrap();
    assert_eq!(y.shape(), &[c.x[0], oh, ow, cout]);
    assert_close(&what, &g.download(&y).unwrap(), &y_ref, 1e-4);
    // Without a bias: the plain convolution.
    let y0 = g.conv2d_bias(&gx, &gw, None, &c.spec).unwrap();
    let no_bias: Vec<f64> = y_ref.iter().enumerate().map(|(i, v)| v - b[i % cout] as f64).collect();
    assert_close(&format!("{what}, no bias"), &g.download(&y0).unwrap(), &no_bias, 1e-4);
}

/// The short-k cases: MNIST's first layer, an RGB first layer with 64 filters, a channel
/// count that is not a multiple of 4 with padding, strides and dilation, k = 64 with exactly
/// 2048 weights (the direct kernel's limits), and k = 72 (past them: GEMM on every device).
#[test]
fn conv2d_bias_short_k_direct_and_gemm() {
    let Some(g) = gpu() else { return };
    let tile64 = Gpu::new().expect("device");
    tile64.set_conv_kernel(cortex_wgpu::MatmulKernel::Tile64);
    let cases = [
        Case {
            x: [3, 28, 28, 1],
            k: [3, 3, 1, 32],
            spec: Conv2dSpec::default(),
        },
        Case {
            x: [2, 16, 15, 3],
            k: [3, 3, 3, 64],
            spec: Conv2dSpec {
                padding: [1, 1, 1, 1],
                ..Default::default()
            },
        },
        Case {
            x: [3, 9, 11, 5],
            k: [3, 3, 5, 7],
            spec: Conv2dSpec {
                strides: (2, 1),
                dilation: (1, 2),
                padding: [1, 2, 0, 2],
            },
        },
        Case {
            x: [2, 6, 6, 16],
            k: [2, 2, 16, 32],
            spec: Conv2dSpec::default(),
        },
        Case {
            x: [2, 6, 6, 8],
            k: [3, 3, 8, 16],
            spec: Conv2dSpec::default(),
        },
    ];
    for c in &cases {
        check_bias(g, c);
        check_bias(&tile64, c);
    }
}

#[test]
fn conv2d_bias_of_the_wrong_length_is_an_error() {
    let Some(g) = gpu() else { return };
    let x = g.zeros(&[1, 5, 5, 1]).unwrap();
    let w = g.zeros(&[3, 3, 1, 4]).unwrap();
    let b = g.zeros(&[3]).unwrap();
    let err = g
        .conv2d_bias(&x, &w, Some(&b), &Conv2dSpec::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("bias [4]") && err.contains("[3]"), "{err}");
}
