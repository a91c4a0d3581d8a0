//! CPU convolution and pooling kernels against the PyTorch-generated fixtures, a naive direct
//! convolution, and their error messages. (Per-layer timings: `examples/conv_layers.rs`.)

use cortex_core::cpu::conv::{
    conv2d_backward_bias, conv2d_backward_filter, conv2d_backward_filter_bias, conv2d_backward_input, conv2d_forward,
    Conv2dGeometry, Padding,
};
use cortex_core::cpu::pool::{
    avg_pool2d_backward, avg_pool2d_forward, global_avg_pool2d_backward, global_avg_pool2d_forward,
    max_pool2d_backward, max_pool2d_forward, Pool2dGeometry,
};
use cortex_core::Error;
use serde_json::Value;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../test/fixtures/fixtures.json");

/// A fixture tensor: `{"shape": [...], "data": [flat, row-major]}`.
fn tensor(v: &Value) -> (Vec<usize>, Vec<f32>) {
    let shape = v["shape"]
        .as_array()
        .expect("tensor shape")
        .iter()
        .map(|d| d.as_u64().expect("dim") as usize)
        .collect::<Vec<_>>();
    let data = v["data"]
        .as_array()
        .expect("tensor data")
        .iter()
        .map(|d| d.as_f64().expect("number") as f32)
        .collect::<Vec<_>>();
    assert_eq!(shape.iter().product::<usize>(), data.len(), "fixture tensor size");
    (shape, data)
}

fn pair(v: &Value) -> [usize; 2] {
    let a = v.as_array().expect("pair");
    [a[0].as_u64().unwrap() as usize, a[1].as_u64().unwrap() as usize]
}

#[track_caller]
fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&a, &b)) in got.iter().zip(want).enumerate() {
        assert!(
            (a - b).abs() <= 1e-5 + 1e-4 * b.abs(),
            "{what}[{i}]: got {a}, want {b} (|diff| {})",
            (a - b).abs()
        );
    }
}

fn cases() -> Vec<Value> {
    let text = std::fs::read_to_string(FIXTURES).expect("read fixtures.json");
    let v: Value = serde_json::from_str(&text).expect("parse fixtures.json");
    v["cases"].as_array().expect("cases").clone()
}

#[test]
fn conv2d_matches_fixtures() {
    let mut n = 0;
    for c in cases().iter().filter(|c| c["op"] == "conv2d") {
        let name = c["name"].as_str().unwrap();
        let a = &c["attrs"];
        assert!(a["data_format"].is_null() || a["data_format"] == "channels_last");
        let (xs, x) = tensor(&c["inputs"]["x"]);
        let (ks, k) = tensor(&c["params"]["kernel"]);
        let (_, b) = tensor(&c["params"]["bias"]);
        let (ys, y) = tensor(&c["outputs"]["y"]);
        let (_, dy) = tensor(&c["cotangents"]["y"]);
        let padding = Padding::parse(a["padding"].as_str().unwrap()).unwrap();
        let dil = if a["dilation_rate"].is_null() {
            [1, 1]
        } else {
            pair(&a["dilation_rate"])
        };
        assert_eq!(pair(&a["kernel_size"]), [ks[0], ks[1]], "{name}");
        assert_eq!(a["filters"].as_u64().unwrap() as usize, ks[3], "{name}");
        let g = Conv2dGeometry::new(&xs, &ks, pair(&a["strides"]), dil, padding).unwrap();
        assert_eq!(g.output_shape(), ys, "{name}: output shape");
        assert_close(&format!("{name} y"), &conv2d_forward(&x, &k, Some(&b), &g), &y);
        let (_, gx) = tensor(&c["grads"]["x"]);
        let (_, gk) = tensor(&c["grads"]["kernel"]);
        let (_, gb) = tensor(&c["grads"]["bias"]);
        assert_close(&format!("{name} dx"), &conv2d_backward_input(&dy, &k, &g), &gx);
        assert_close(&format!("{name} dkernel"), &conv2d_backward_filter(&x, &dy, &g), &gk);
        assert_close(&format!("{name} dbias"), &conv2d_backward_bias(&dy, &g), &gb);
        let (fk, fb) = conv2d_backward_filter_bias(&x, &dy, &g);
        assert_close(&format!("{name} fused dkernel"), &fk, &gk);
        assert_close(&format!("{name} fused dbias"), &fb, &gb);
        // Without bias the output is shifted by exactly the bias.
        let nob = conv2d_forward(&x, &k, None, &g);
        let shifted: Vec<f32> = y.iter().enumerate().map(|(i, v)| v - b[i % b.len()]).collect();
        assert_close(&format!("{name} y (no bias)"), &nob, &shifted);
        n += 1;
    }
    assert!(n >= 6, "expected the 6 conv2d fixtures, found {n}");
}

#[test]
fn pooling_matches_fixtures() {
    let mut counts = [0; 3];
    let pool_ops = ["max_pooling2d", "avg_pooling2d", "global_average_pooling2d"];
    for c in cases().iter().filter(|c| pool_ops.contains(&c["op"].as_str().unwrap())) {
        let op = c["op"].as_str().unwrap();
        let name = c["name"].as_str().unwrap();
        let (xs, x) = tensor(&c["inputs"]["x"]);
        let (ys, y) = tensor(&c["outputs"]["y"]);
        let (_, dy) = tensor(&c["cotangents"]["y"]);
        let (_, gx) = tensor(&c["grads"]["x"]);
        let a = &c["attrs"];
        match op {
            "max_pooling2d" | "avg_pooling2d" => {
                let pool = pair(&a["pool_size"]);
                let strides = if a["strides"].is_null() {
                    pool
                } else {
                    pair(&a["strides"])
                };
                let padding = Padding::parse(a["padding"].as_str().unwrap_or("valid")).unwrap();
                let g = Pool2dGeometry::new(&xs, pool, strides, padding).unwrap();
                assert_eq!(g.output_shape(), ys, "{name}: output shape");
                if op == "max_pooling2d" {
                    let (out, arg) = max_pool2d_forward(&x, &g);
                    assert_close(&format!("{name} y"), &out, &y);
                    for (o, &i) in out.iter().zip(&arg) {
                        assert_eq!(*o, x[i as usize], "{name}: argmax points at the max");
                    }
                    assert_close(&format!("{name} dx"), &max_pool2d_backward(&dy, &arg, &g), &gx);
                    counts[0] += 1;
                } else {
                    assert_close(&format!("{name} y"), &avg_pool2d_forward(&x, &g), &y);
                    assert_close(&format!("{name} dx"), &avg_pool2d_backward(&dy, &g), &gx);
                    counts[1] += 1;
                }
            }
            "global_average_pooling2d" => {
                let (b, s, ch) = (xs[0], xs[1] * xs[2], xs[3]);
                assert_eq!(ys, vec![b, ch]);
                assert_close(&format!("{name} y"), &global_avg_pool2d_forward(&x, b, s, ch), &y);
                assert_close(&format!("{name} dx"), &global_avg_pool2d_backward(&dy, b, s, ch), &gx);
                counts[2] += 1;
            }
            _ => unreachable!(),
        }
    }
    assert_eq!(counts, [2, 2, 1], "fixture cases found (max, avg, global)");
}

/// Deterministic pseudo-random numbers in [-1, 1).
fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Calls `f(n, oh, ow, kh, kw, ih, iw)` for every in-bounds tap of a direct convolution.
fn for_each_tap(g: &Conv2dGeometry, mut f: impl FnMut(usize, usize, usize, usize, usize, usize, usize)) {
    for n in 0..g.batch {
        for oh in 0..g.out_h {
            for ow in 0..g.out_w {
                for kh in 0..g.k_h {
                    for kw in 0..g.k_w {
                        let ih = (oh * g.stride_h + kh * g.dil_h) as isize - g.pad_top as isize;
                        let iw = (ow * g.stride_w + kw * g.dil_w) as isize - g.pad_left as isize;
                        if ih >= 0 && iw >= 0 && (ih as usize) < g.in_h && (iw as usize) < g.in_w {
                            f(n, oh, ow, kh, kw, ih as usize, iw as usize);
                        }
                    }
                }
            }
        }
    }
}

/// Direct convolution (f64 accumulation) and its two adjoints.
fn naive(g: &Conv2dGeometry, x: &[f32], k: &[f32], b: &[f32], dy: &[f32]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (ci, co) = (g.in_c, g.out_c);
    let mut y = vec![0f64; g.batch * g.out_h * g.out_w * co];
    let mut dx = vec![0f64; x.len()];
    let mut dk = vec![0f64; k.len()];
    for_each_tap(g, |n, oh, ow, kh, kw, ih, iw| {
        let yo = ((n * g.out_h + oh) * g.out_w + ow) * co;
        let xo = ((n * g.in_h + ih) * g.in_w + iw) * ci;
        let ko = (kh * g.k_w + kw) * ci * co;
        for c in 0..ci {
            for o in 0..co {
                let kv = k[ko + c * co + o] as f64;
                y[yo + o] += x[xo + c] as f64 * kv;
                dx[xo + c] += dy[yo + o] as f64 * kv;
                dk[ko + c * co + o] += x[xo + c] as f64 * dy[yo + o] as f64;
            }
        }
    });
    let y = y
        .iter()
        .enumerate()
        .map(|(i, v)| (v + b[i % co] as f64) as f32)
        .collect();
    let f = |v: Vec<f64>| v.into_iter().map(|v| v as f32).collect();
    (y, f(dx), f(dk))
}

/// Relative tolerance for sums of many f32 products (looser than the fixtures' 1e-4 because
/// the reductions here are long).
#[track_caller]
fn assert_close_sum(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1.0);
    for (i, (&a, &b)) in got.iter().zip(want).enumerate() {
        assert!((a - b).abs() <= 1e-4 * scale, "{what}[{i}]: got {a}, want {b}");
    }
}

fn check_against_naive(x_shape: [usize; 4], k_shape: [usize; 4], strides: [usize; 2], dil: [usize; 2], p: Padding) {
    let g = Conv2dGeometry::new(&x_shape, &k_shape, strides, dil, p).unwrap();
    let seed = x_shape.iter().chain(&k_shape).fold(7u64, |s, &d| s * 31 + d as u64);
    let x = rand_vec(x_shape.iter().product(), seed);
    let k = rand_vec(k_shape.iter().product(), seed + 1);
    let b = rand_vec(k_shape[3], seed + 2);
    let dy = rand_vec(g.output_shape().iter().product(), seed + 3);
    let (y, dx, dk) = naive(&g, &x, &k, &b, &dy);
    let what = format!("{x_shape:?} * {k_shape:?} s{strides:?} d{dil:?} {p:?}");
    assert_close_sum(&format!("{what} y"), &conv2d_forward(&x, &k, Some(&b), &g), &y);
    assert_close_sum(&format!("{what} dx"), &conv2d_backward_input(&dy, &k, &g), &dx);
    assert_close_sum(&format!("{what} dkernel"), &conv2d_backward_filter(&x, &dy, &g), &dk);
    let mut db = vec![0f32; k_shape[3]];
    for (i, v) in dy.iter().enumerate() {
        db[i % k_shape[3]] += v;
    }
    assert_close_sum(&format!("{what} dbias"), &conv2d_backward_bias(&dy, &g), &db);
    let (fk, fb) = conv2d_backward_filter_bias(&x, &dy, &g);
    assert_close_sum(&format!("{what} fused dkernel"), &fk, &dk);
    assert_close_sum(&format!("{what} fused dbias"), &fb, &db);
}

#[test]
fn conv2d_strided_dilated_same_matches_direct_convolution() {
    // Different strides and dilations per axis, odd total padding on both axes.
    let g = Conv2dGeometry::new(&[3, 11, 10, 5], &[3, 4, 5, 7], [2, 3], [2, 1], Padding::Same).unwrap();
    assert_eq!(g.output_shape(), vec![3, 6, 4, 7]);
    assert_eq!((g.pad_top, g.pad_left), (2, 1));
    check_against_naive([3, 11, 10, 5], [3, 4, 5, 7], [2, 3], [2, 1], Padding::Same);
    check_against_naive([2, 9, 12, 3], [5, 3, 3, 4], [3, 2], [1, 3], Padding::Same);
    check_against_naive([2, 13, 9, 2], [3, 3, 2, 3], [2, 2], [3, 2], Padding::Valid);
}

#[test]
fn conv2d_block_boundaries_and_special_cases_match_direct_convolution() {
    // Blocks of rows that straddle images (many pixels, few channels).
    check_against_naive([5, 40, 40, 3], [3, 3, 3, 4], [1, 1], [1, 1], Padding::Same);
    // Several blocks inside one image (large patch length), batch 1 and batch > threads.
    check_against_naive([1, 30, 30, 64], [3, 3, 64, 8], [1, 1], [1, 1], Padding::Valid);
    check_against_naive([7, 12, 12, 48], [3, 3, 48, 5], [1, 1], [1, 1], Padding::Same);
    // Pointwise (no im2col) and 1x1 with stride (im2col).
    check_against_naive([3, 6, 5, 7], [1, 1, 7, 4], [1, 1], [1, 1], Padding::Same);
    check_against_naive([3, 6, 5, 7], [1, 1, 7, 4], [2, 2], [1, 1], Padding::Valid);
    // Kernel as large as the input; one output pixel.
    check_against_naive([2, 4, 5, 2], [4, 5, 2, 3], [1, 1], [1, 1], Padding::Valid);
    // The MNIST convnet's layers at a small batch.
    check_against_naive([4, 28, 28, 1], [3, 3, 1, 32], [1, 1], [1, 1], Padding::Valid);
    check_against_naive([4, 13, 13, 32], [3, 3, 32, 64], [1, 1], [1, 1], Padding::Valid);
}

#[test]
fn conv2d_empty_batch() {
    let g = Conv2dGeometry::new(&[0, 5, 5, 2], &[3, 3, 2, 4], [1, 1], [1, 1], Padding::Same).unwrap();
    assert!(conv2d_forward(&[], &vec![0.0; 72], None, &g).is_empty());
    assert!(conv2d_backward_input(&[], &vec![0.0; 72], &g).is_empty());
    assert_eq!(conv2d_backward_filter(&[], &[], &g), vec![0.0; 72]);
    assert_eq!(conv2d_backward_bias(&[], &g), vec![0.0; 4]);
    assert_eq!(conv2d_backward_filter_bias(&[], &[], &g), (vec![0.0; 72], vec![0.0; 4]));
}

/// Naive pooling reference in f64: (max, argmax, average).
fn naive_pool(x: &[f32], g: &Pool2dGeometry) -> (Vec<f32>, Vec<u32>, Vec<f32>) {
    let c = g.channels;
    let (mut mx, mut am, mut av) = (vec![], vec![], vec![]);
    for n in 0..g.batch {
        for oh in 0..g.out_h {
            for ow in 0..g.out_w {
                for ch in 0..c {
                    let (mut best, mut arg, mut sum, mut cnt) = (f32::NEG_INFINITY, 0, 0f64, 0);
                    for ph in 0..g.pool_h {
                        for pw in 0..g.pool_w {
                            let ih = (oh * g.stride_h + ph) as isize - g.pad_top as isize;
                            let iw = (ow * g.stride_w + pw) as isize - g.pad_left as isize;
                            if ih < 0 || iw < 0 || ih as usize >= g.in_h || iw as usize >= g.in_w {
                                continue;
                            }
                            let i = ((n * g.in_h + ih as usize) * g.in_w + iw as usize) * c + ch;
                            if x[i] > best {
                                best = x[i];
                                arg = i as u32;
                            }
                            sum += x[i] as f64;
                            cnt += 1;
                        }
                    }
                    mx.push(best);
                    am.push(arg);
                    av.push((sum / cnt as f64) as f32);
                }
            }
        }
    }
    (mx, am, av)
}

#[test]
fn pooling_matches_naive_with_overlap_and_padding() {
    for (shape, pool, strides, p) in [
        ([3, 9, 8, 5], [3, 2], [2, 1], Padding::Same),
        ([2, 10, 7, 4], [4, 3], [3, 2], Padding::Same),
        ([2, 10, 7, 4], [3, 3], [2, 2], Padding::Valid),
        ([4, 26, 26, 32], [2, 2], [2, 2], Padding::Valid),
    ] {
        let g = Pool2dGeometry::new(&shape, pool, strides, p).unwrap();
        let x = rand_vec(shape.iter().product(), 99);
        let (mx, am, av) = naive_pool(&x, &g);
        let (y, arg) = max_pool2d_forward(&x, &g);
        assert_eq!(y, mx);
        assert_eq!(arg, am);
        assert_close_sum("avg", &avg_pool2d_forward(&x, &g), &av);
        // Backward passes are the adjoints: <dy, f(x)> == <df(dy), x> for these linear maps.
        let dy = rand_vec(y.len(), 5);
        let dx = max_pool2d_backward(&dy, &arg, &g);
        let mut want = vec![0f32; x.len()];
        for (d, &a) in dy.iter().zip(&am) {
            want[a as usize] += d;
        }
        assert_close_sum("max dx", &dx, &want);
        let dxa = avg_pool2d_backward(&dy, &g);
        let lhs: f64 = dy.iter().zip(&av).map(|(a, b)| (*a as f64) * (*b as f64)).sum();
        let rhs: f64 = dxa.iter().zip(&x).map(|(a, b)| (*a as f64) * (*b as f64)).sum();
        assert!(
            (lhs - rhs).abs() < 1e-3 * lhs.abs().max(1.0),
            "avg adjoint {lhs} vs {rhs}"
        );
    }
}

#[test]
fn max_pool_propagates_nan() {
    let g = Pool2dGeometry::new(&[1, 2, 2, 1], [2, 2], [2, 2], Padding::Valid).unwrap();
    let (y, arg) = max_pool2d_forward(&[1.0, f32::NAN, 3.0, 2.0], &g);
    assert!(y[0].is_nan());
    assert_eq!(arg, vec![1]);
}

fn message(e: Error) -> String {
    e.to_string()
}

#[test]
fn conv2d_geometry_errors_are_clear() {
    let same = Padding::Same;
    let e = message(Conv2dGeometry::new(&[2, 5, 5], &[3, 3, 1, 4], [1, 1], [1, 1], same).unwrap_err());
    assert!(
        e.contains("conv2d") && e.contains("rank 4") && e.contains("[2, 5, 5]"),
        "{e}"
    );
    let e = message(Conv2dGeometry::new(&[2, 5, 5, 1], &[3, 3, 4], [1, 1], [1, 1], same).unwrap_err());
    assert!(e.contains("kernel of rank 4") && e.contains("[3, 3, 4]"), "{e}");
    let e = message(Conv2dGeometry::new(&[2, 5, 5, 3], &[3, 3, 2, 4], [1, 1], [1, 1], same).unwrap_err());
    assert!(e.contains("3 channels") && e.contains("[3, 3, 2, 4]"), "{e}");
    let e = message(Conv2dGeometry::new(&[2, 5, 5, 3], &[3, 3, 3, 4], [0, 1], [1, 1], same).unwrap_err());
    assert!(e.contains("strides must be positive"), "{e}");
    let e = message(Conv2dGeometry::new(&[2, 5, 5, 3], &[3, 3, 3, 4], [1, 1], [1, 0], same).unwrap_err());
    assert!(e.contains("dilation_rate must be positive"), "{e}");
    let e = message(Conv2dGeometry::new(&[2, 5, 5, 3], &[3, 0, 3, 4], [1, 1], [1, 1], same).unwrap_err());
    assert!(e.contains("no zero dimension"), "{e}");
    let e = message(Conv2dGeometry::new(&[2, 0, 5, 3], &[3, 3, 3, 4], [1, 1], [1, 1], same).unwrap_err());
    assert!(e.contains("positive height"), "{e}");
    let e = message(Conv2dGeometry::new(&[2, 5, 2, 3], &[3, 3, 3, 4], [1, 1], [1, 1], Padding::Valid).unwrap_err());
    assert!(e.contains("width 2 is smaller than the window width 3"), "{e}");
    let e = message(Conv2dGeometry::new(&[2, 4, 9, 3], &[3, 3, 3, 4], [1, 1], [2, 1], Padding::Valid).unwrap_err());
    assert!(
        e.contains("height 4 is smaller than the window height 5") && e.contains("dilation 2"),
        "{e}"
    );
    // Same padding accepts any input size.
    let g = Conv2dGeometry::new(&[2, 1, 2, 3], &[5, 5, 3, 4], [1, 1], [1, 1], same).unwrap();
    assert_eq!(g.output_shape(), vec![2, 1, 2, 4]);
    let e = message(Padding::parse("full").unwrap_err());
    assert!(e.contains("'valid' or 'same'") && e.contains("full"), "{e}");
    assert_eq!(Padding::parse("SAME").unwrap(), Padding::Same);
    assert_eq!(Padding::parse("valid").unwrap(), Padding::Valid);
}

#[test]
fn pool2d_geometry_errors_are_clear() {
    let e = message(Pool2dGeometry::new(&[2, 6, 6], [2, 2], [2, 2], Padding::Valid).unwrap_err());
    assert!(
        e.contains("pooling2d") && e.contains("rank 4") && e.contains("[2, 6, 6]"),
        "{e}"
    );
    let e = message(Pool2dGeometry::new(&[2, 6, 6, 1], [0, 2], [2, 2], Padding::Valid).unwrap_err());
    assert!(e.contains("pool_size must be positive"), "{e}");
    let e = message(Pool2dGeometry::new(&[2, 6, 6, 1], [2, 2], [2, 0], Padding::Valid).unwrap_err());
    assert!(e.contains("strides must be positive"), "{e}");
    let e = message(Pool2dGeometry::new(&[2, 1, 6, 1], [2, 2], [2, 2], Padding::Valid).unwrap_err());
    assert!(e.contains("height 1 is smaller than the window height 2"), "{e}");
    let g = Pool2dGeometry::new(&[2, 7, 5, 2], [3, 3], [2, 2], Padding::Same).unwrap();
    assert_eq!(g.output_shape(), vec![2, 4, 3, 2]);
    assert_eq!((g.pad_top, g.pad_left), (1, 1));
}

/// A model's predict fuses each Conv2D into the plain max pooling after it; the result is the
/// layers' own, run one at a time (bit for bit: the same convolution kernel), for a pooling
/// fused and one that is not (strides unlike its window), and int8 inference still runs.
#[test]
fn fused_conv_pool_predict_equals_the_layers_one_by_one() {
    use cortex_core::nn::layers::ForwardCtx;
    use cortex_core::nn::model::Model;
    use cortex_core::rng::Rng;
    use cortex_core::Tensor;
    let config = serde_json::json!({"className": "Sequential", "inputShape": [14, 13, 3], "layers": [
        {"className": "Conv2D", "config": {"filters": 8, "kernelSize": 3, "activation": "relu"}},
        {"className": "MaxPooling2D", "config": {"poolSize": 2}},
        {"className": "Conv2D", "config": {"filters": 20, "kernelSize": 3, "activation": "tanh", "padding": "same"}},
        {"className": "MaxPooling2D", "config": {"poolSize": 2, "strides": 1}},
        {"className": "Flatten", "config": {}},
        {"className": "Dense", "config": {"units": 4}}
    ]});
    let model = Model::from_config(&config, 5).unwrap();
    let x = Tensor::new(rand_vec(3 * 14 * 13 * 3, 9), &[3, 14, 13, 3]).unwrap();
    let fused = model.predict(&x, 3).unwrap();
    let mut y = x.clone();
    let mut rng = Rng::new(0);
    cortex_core::tensor::no_grad(|| {
        for cell in model.layers() {
            y = cell.read().forward(&y, &mut ForwardCtx::new(false, &mut rng)).unwrap();
        }
    });
    assert_eq!(fused.shape(), y.shape());
    assert_eq!(fused.data(), y.data());
    model.quantize(cortex_core::nn::quantize::Precision::Int8).unwrap();
    let int8 = model.predict(&x, 3).unwrap();
    let gap = int8
        .data()
        .iter()
        .zip(fused.data())
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(gap < 0.05, "int8 vs f32: {gap}");
}
