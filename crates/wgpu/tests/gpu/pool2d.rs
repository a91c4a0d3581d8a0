//! 2-D max pooling forward (values and argmax) and backward, average pooling and global
//! average pooling forward and backward, against f64 loops.

use super::common::{assert_close, gpu, rand_vec};
use cortex_wgpu::Pool2dSpec;

fn check(x_shape: [usize; 4], spec: Pool2dSpec) {
    let Some(g) = gpu() else { return };
    let [n, h, w, c] = x_shape;
    let (oh, ow) = spec.output_size(h, w).unwrap();
    let nx = n * h * w * c;
    let x = rand_vec(nx, nx as u64);
    let dy = rand_vec(n * oh * ow * c, 3);
    let mut y_ref = vec![0.0f64; n * oh * ow * c];
    let mut arg_ref = vec![u32::MAX; y_ref.len()];
    let mut dx_ref = vec![0.0f64; nx];
    for b in 0..n {
        for oy in 0..oh {
            for ox in 0..ow {
                for ch in 0..c {
                    let (mut best, mut bi) = (f32::MIN, usize::MAX);
                    for ky in 0..spec.pool.0 {
                        for kx in 0..spec.pool.1 {
                            let iy = (oy * spec.strides.0 + ky) as isize - spec.padding[0] as isize;
                            let ix = (ox * spec.strides.1 + kx) as isize - spec.padding[1] as isize;
                            if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                continue;
                            }
                            let i = ((b * h + iy as usize) * w + ix as usize) * c + ch;
                            if bi == usize::MAX || x[i] > best {
                                best = x[i];
                                bi = i;
                            }
                        }
                    }
                    let o = ((b * oh + oy) * ow + ox) * c + ch;
                    y_ref[o] = best as f64;
                    arg_ref[o] = bi as u32;
                    dx_ref[bi] += dy[o] as f64;
                }
            }
        }
    }
    let gx = g.upload(&x, &x_shape).unwrap();
    let out = g.max_pool2d(&gx, &spec).unwrap();
    assert_eq!(out.output.shape(), &[n, oh, ow, c]);
    assert_close("max_pool2d", &g.download(&out.output).unwrap(), &y_ref, 0.0);
    assert_eq!(g.download_u32(&out.argmax).unwrap(), arg_ref);
    let gdy = g.upload(&dy, &[n, oh, ow, c]).unwrap();
    let dx = g.max_pool2d_backward(&gdy, &out.argmax, x_shape, &spec).unwrap();
    assert_close("max_pool2d_backward", &g.download(&dx).unwrap(), &dx_ref, 1e-6);
}

#[test]
fn pool_2x2_stride_2_even_and_odd() {
    check(
        [2, 26, 26, 32],
        Pool2dSpec {
            pool: (2, 2),
            strides: (2, 2),
            padding: [0; 4],
        },
    );
    check(
        [3, 11, 13, 5],
        Pool2dSpec {
            pool: (2, 2),
            strides: (2, 2),
            padding: [0; 4],
        },
    );
}

#[test]
fn overlapping_windows_and_padding() {
    check(
        [2, 9, 10, 3],
        Pool2dSpec {
            pool: (3, 3),
            strides: (2, 2),
            padding: [1, 1, 1, 1],
        },
    );
    check(
        [1, 7, 8, 4],
        Pool2dSpec {
            pool: (3, 2),
            strides: (1, 1),
            padding: [0, 1, 2, 0],
        },
    );
}

#[test]
fn argmax_dtype_is_checked() {
    let Some(g) = gpu() else { return };
    let spec = Pool2dSpec {
        pool: (2, 2),
        strides: (2, 2),
        padding: [0; 4],
    };
    let dy = g.zeros(&[1, 1, 1, 1]).unwrap();
    let bad = g.zeros(&[1, 1, 1, 1]).unwrap();
    assert!(g.max_pool2d_backward(&dy, &bad, [1, 2, 2, 1], &spec).is_err());
    assert!(g.download_u32(&bad).is_err());
}

/// Average pooling against an f64 loop: the mean over each window's in-bounds elements, and
/// its gradient (each `dy` spread evenly over those elements).
fn check_avg(x_shape: [usize; 4], spec: Pool2dSpec) {
    let Some(g) = gpu() else { return };
    let [n, h, w, c] = x_shape;
    let (oh, ow) = spec.output_size(h, w).unwrap();
    let nx = n * h * w * c;
    let x = rand_vec(nx, nx as u64 + 1);
    let dy = rand_vec(n * oh * ow * c, 5);
    let mut y_ref = vec![0.0f64; n * oh * ow * c];
    let mut dx_ref = vec![0.0f64; nx];
    for b in 0..n {
        for oy in 0..oh {
            for ox in 0..ow {
                for ch in 0..c {
                    let mut inside = Vec::new();
                    for ky in 0..spec.pool.0 {
                        for kx in 0..spec.pool.1 {
                            let iy = (oy * spec.strides.0 + ky) as isize - spec.padding[0] as isize;
                            let ix = (ox * spec.strides.1 + kx) as isize - spec.padding[1] as isize;
                            if iy >= 0 && ix >= 0 && iy < h as isize && ix < w as isize {
                                inside.push(((b * h + iy as usize) * w + ix as usize) * c + ch);
                            }
                        }
                    }
                    let o = ((b * oh + oy) * ow + ox) * c + ch;
                    let count = inside.len() as f64;
                    y_ref[o] = inside.iter().map(|&i| x[i] as f64).sum::<f64>() / count;
                    for &i in &inside {
                        dx_ref[i] += dy[o] as f64 / count;
                    }
                }
            }
        }
    }
    let gx = g.upload(&x, &x_shape).unwrap();
    let y = g.avg_pool2d(&gx, &spec).unwrap();
    assert_eq!(y.shape(), &[n, oh, ow, c]);
    assert_close("avg_pool2d", &g.download(&y).unwrap(), &y_ref, 1e-5);
    let gdy = g.upload(&dy, &[n, oh, ow, c]).unwrap();
    let dx = g.avg_pool2d_backward(&gdy, x_shape, &spec).unwrap();
    assert_eq!(dx.shape(), &x_shape);
    assert_close("avg_pool2d_backward", &g.download(&dx).unwrap(), &dx_ref, 1e-5);
}

#[test]
fn avg_pool_valid_strided_and_ragged() {
    let spec = |pool, strides| Pool2dSpec {
        pool,
        strides,
        padding: [0; 4],
    };
    check_avg([2, 8, 8, 16], spec((2, 2), (2, 2)));
    // Odd sizes leave a ragged edge that valid padding drops.
    check_avg([3, 11, 13, 5], spec((2, 2), (2, 2)));
    check_avg([2, 9, 7, 3], spec((3, 2), (1, 2)));
    check_avg([1, 10, 9, 2], spec((3, 3), (2, 1)));
}

/// Padded windows: the divisor counts only the in-bounds elements (Keras' `same`).
#[test]
fn avg_pool_same_padding_counts_only_the_input() {
    check_avg(
        [2, 9, 10, 3],
        Pool2dSpec {
            pool: (3, 3),
            strides: (2, 2),
            padding: [1, 1, 1, 1],
        },
    );
    check_avg(
        [2, 5, 7, 4],
        Pool2dSpec {
            pool: (2, 2),
            strides: (2, 2),
            padding: [0, 0, 1, 1],
        },
    );
    check_avg(
        [1, 7, 8, 4],
        Pool2dSpec {
            pool: (3, 2),
            strides: (1, 1),
            padding: [0, 1, 2, 0],
        },
    );
}

#[test]
fn global_avg_pool_means_over_height_and_width() {
    let Some(g) = gpu() else { return };
    for &[n, h, w, c] in &[[3, 5, 7, 6], [2, 1, 1, 3], [1, 16, 16, 33]] {
        let x = rand_vec(n * h * w * c, (n * h * w * c) as u64);
        let dy = rand_vec(n * c, 11);
        let mut y_ref = vec![0.0f64; n * c];
        let mut dx_ref = vec![0.0f64; n * h * w * c];
        let hw = (h * w) as f64;
        for (i, v) in x.iter().enumerate() {
            let (b, ch) = (i / (h * w * c), i % c);
            y_ref[b * c + ch] += *v as f64 / hw;
            dx_ref[i] = dy[b * c + ch] as f64 / hw;
        }
        let gx = g.upload(&x, &[n, h, w, c]).unwrap();
        let y = g.global_avg_pool2d(&gx).unwrap();
        assert_eq!(y.shape(), &[n, c]);
        assert_close("global_avg_pool2d", &g.download(&y).unwrap(), &y_ref, 1e-5);
        let gdy = g.upload(&dy, &[n, c]).unwrap();
        let dx = g.global_avg_pool2d_backward(&gdy, [n, h, w, c]).unwrap();
        assert_eq!(dx.shape(), &[n, h, w, c]);
        assert_close("global_avg_pool2d_backward", &g.download(&dx).unwrap(), &dx_ref, 1e-5);
    }
}
