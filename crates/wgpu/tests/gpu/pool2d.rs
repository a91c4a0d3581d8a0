//! 2-D max pooling forward (values and argmax) and backward against f64 loops.

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
