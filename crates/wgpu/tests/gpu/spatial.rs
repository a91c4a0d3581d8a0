//! Zero padding and nearest upsampling forward and backward against f64 loops.

use super::common::{assert_close, gpu, rand_vec};

#[test]
fn zero_pad_forward_and_backward() {
    let Some(g) = gpu() else { return };
    for &([n, h, w, c], pads) in &[
        ([2, 3, 4, 2], [1, 1, 1, 1]),
        ([3, 5, 2, 3], [0, 2, 3, 1]),
        ([1, 4, 4, 5], [2, 0, 0, 0]),
        ([2, 3, 3, 1], [0, 0, 0, 0]),
    ] {
        let [t, bo, l, r] = pads;
        let (oh, ow) = (h + t + bo, w + l + r);
        let x = rand_vec(n * h * w * c, 21);
        let dy = rand_vec(n * oh * ow * c, 22);
        let mut y_ref = vec![0.0f64; n * oh * ow * c];
        let mut dx_ref = vec![0.0f64; n * h * w * c];
        for b in 0..n {
            for iy in 0..h {
                for ix in 0..w {
                    for ch in 0..c {
                        let i = ((b * h + iy) * w + ix) * c + ch;
                        let o = ((b * oh + iy + t) * ow + ix + l) * c + ch;
                        y_ref[o] = x[i] as f64;
                        dx_ref[i] = dy[o] as f64;
                    }
                }
            }
        }
        let what = format!("zero_pad2d {:?} {pads:?}", [n, h, w, c]);
        let gx = g.upload(&x, &[n, h, w, c]).unwrap();
        let y = g.zero_pad2d(&gx, pads).unwrap();
        assert_eq!(y.shape(), &[n, oh, ow, c], "{what}");
        assert_close(&what, &g.download(&y).unwrap(), &y_ref, 0.0);
        let gdy = g.upload(&dy, &[n, oh, ow, c]).unwrap();
        let dx = g.zero_pad2d_backward(&gdy, [n, h, w, c], pads).unwrap();
        assert_eq!(dx.shape(), &[n, h, w, c], "{what}");
        assert_close(&format!("{what} backward"), &g.download(&dx).unwrap(), &dx_ref, 0.0);
    }
}

#[test]
fn upsample_nearest_forward_and_backward() {
    let Some(g) = gpu() else { return };
    for &([n, h, w, c], size) in &[
        ([2, 3, 4, 2], (2, 2)),
        ([3, 5, 2, 3], (3, 1)),
        ([1, 4, 3, 5], (1, 2)),
        ([2, 2, 3, 1], (2, 3)),
    ] {
        let (oh, ow) = (h * size.0, w * size.1);
        let x = rand_vec(n * h * w * c, 31);
        let dy = rand_vec(n * oh * ow * c, 32);
        let mut y_ref = vec![0.0f64; n * oh * ow * c];
        let mut dx_ref = vec![0.0f64; n * h * w * c];
        for b in 0..n {
            for oy in 0..oh {
                for ox in 0..ow {
                    for ch in 0..c {
                        let i = ((b * h + oy / size.0) * w + ox / size.1) * c + ch;
                        let o = ((b * oh + oy) * ow + ox) * c + ch;
                        y_ref[o] = x[i] as f64;
                        dx_ref[i] += dy[o] as f64;
                    }
                }
            }
        }
        let what = format!("upsample_nearest2d {:?} {size:?}", [n, h, w, c]);
        let gx = g.upload(&x, &[n, h, w, c]).unwrap();
        let y = g.upsample_nearest2d(&gx, size).unwrap();
        assert_eq!(y.shape(), &[n, oh, ow, c], "{what}");
        assert_close(&what, &g.download(&y).unwrap(), &y_ref, 0.0);
        let gdy = g.upload(&dy, &[n, oh, ow, c]).unwrap();
        let dx = g.upsample_nearest2d_backward(&gdy, [n, h, w, c], size).unwrap();
        assert_eq!(dx.shape(), &[n, h, w, c], "{what}");
        assert_close(&format!("{what} backward"), &g.download(&dx).unwrap(), &dx_ref, 1e-6);
    }
}

#[test]
fn bad_shapes_are_refused() {
    let Some(g) = gpu() else { return };
    let x = g.zeros(&[2, 3, 4]).unwrap();
    assert!(g.zero_pad2d(&x, [1; 4]).is_err());
    assert!(g.upsample_nearest2d(&x, (2, 2)).is_err());
    let x4 = g.zeros(&[1, 2, 2, 1]).unwrap();
    assert!(g.upsample_nearest2d(&x4, (0, 2)).is_err());
    let dy = g.zeros(&[1, 3, 3, 1]).unwrap();
    assert!(g.zero_pad2d_backward(&dy, [1, 2, 2, 1], [1; 4]).is_err());
    assert!(g.upsample_nearest2d_backward(&dy, [1, 2, 2, 1], (2, 2)).is_err());
}
