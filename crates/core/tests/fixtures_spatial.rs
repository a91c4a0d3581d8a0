//! Spatial layers and embeddings: the conv1d, conv2d_transpose and embedding fixture cases
//! (PyTorch float64 references in Keras layouts, forward and every gradient), the global
//! pooling fixture through GlobalAveragePooling1D, naive reference implementations for strided,
//! dilated and causal Conv1D and for Conv2DTranspose, finite-difference gradient checks, output
//! shapes of every option, masks and error messages. Zero padding and upsampling also run on
//! the GPU backend, against the CPU layer (`CORTEX_SKIP_GPU_TESTS=1` leaves that out).

mod common;
mod spatial_support;

use cortex_core::backprop::backward_with_seed;
use cortex_core::nn::layers::{self, ForwardCtx};
use cortex_core::rng::Rng;
use cortex_core::{Device, Tensor};
use serde_json::{json, Value};

use common::{check_planner_case, layer_on_gpu, skip_gpu};
use spatial_support::*;

/// Runs one fixture case through the layer code on the CPU and, unless GPU tests are skipped,
/// again with the weights and input on the GPU; with `gpu`, also as a one-layer model planned
/// for the GPU. Returns whether the planner ran it.
fn check_case(case: &Value, class: &str, config: Value, int_input: bool, gpu: bool) -> bool {
    let (keys, layer_config) = check_case_on(case, class, config.clone(), int_input, Device::Cpu);
    if skip_gpu() {
        return false;
    }
    check_case_on(case, class, config, int_input, Device::Gpu);
    if !gpu {
        return false;
    }
    let mut config = layer_config;
    config["name"] = json!("layer");
    check_planner_case(case, class, &config, &keys);
    true
}

/// The case through the layer code with its weights and input on `device`: checks the output
/// and the gradients of sum(y * cotangent) for the input (unless `int_input`) and every param.
/// Returns the weight names and the layer's config.
fn check_case_on(case: &Value, class: &str, config: Value, int_input: bool, device: Device) -> (Vec<String>, Value) {
    let name = format!("{} ({})", case["name"].as_str().unwrap(), device.name());
    let x_ref = if int_input {
        &case["int_inputs"]["x"]
    } else {
        &case["inputs"]["x"]
    };
    let x_shape = shape_of(x_ref);
    let l = layer(class, config, &x_shape[1..]);
    let params = l.params();
    assert_eq!(
        params.len(),
        case["params"].as_object().unwrap().len(),
        "{name}: param count"
    );
    for p in &params {
        let key = p.name.split('/').next_back().unwrap();
        assert_eq!(p.shape(), shape_of(&case["params"][key]), "{name}: {key} shape");
        p.set(data_of(&case["params"][key])).unwrap();
        p.to_device(device).unwrap();
    }
    let x = Tensor::new(data_of(x_ref), &x_shape).unwrap().to(device).unwrap();
    let x = if int_input { x } else { x.with_requires_grad(true) };
    let y = forward(l.as_ref(), &x);
    assert_eq!(y.device(), device, "{name}: the output stays on the device");
    assert_eq!(
        y.shape(),
        shape_of(&case["outputs"]["y"]).as_slice(),
        "{name}: output shape"
    );
    assert_close(&format!("{name} y"), y.data(), &data_of(&case["outputs"]["y"]));
    let leaves: Vec<Tensor> = params.iter().map(|p| p.get()).collect();
    let grads = backward_with_seed(&y, data_of(&case["cotangents"]["y"])).unwrap();
    if int_input {
        assert!(grads.get(&x).is_none(), "{name}: indices get no gradient");
    } else {
        assert_close(
            &format!("{name} dx"),
            grads.get(&x).unwrap(),
            &data_of(&case["grads"]["x"]),
        );
    }
    for (p, leaf) in params.iter().zip(&leaves) {
        let key = p.name.split('/').next_back().unwrap();
        assert_close(
            &format!("{name} d{key}"),
            grads.get(leaf).unwrap(),
            &data_of(&case["grads"][key]),
        );
    }
    let keys = params
        .iter()
        .map(|p| p.name.split('/').next_back().unwrap().to_string())
        .collect();
    (keys, l.config())
}

/// The expected count of GPU-checked cases: `n`, or 0 when GPU tests are skipped.
fn on_gpu(n: usize) -> usize {
    if skip_gpu() {
        0
    } else {
        n
    }
}

/// Runs every case of `op` on the CPU (and on the GPU too with `gpu`); returns (cases, cases
/// the GPU ran).
fn run(op: &str, int_input: bool, gpu: bool, config: impl Fn(&Value) -> (String, Value)) -> (usize, usize) {
    let (mut n, mut on) = (0, 0);
    for case in cases(op) {
        let (class, cfg) = config(&case["attrs"]);
        on += check_case(&case, &class, cfg, int_input, gpu) as usize;
        n += 1;
    }
    (n, on)
}

/// On both devices.
#[test]
fn conv1d_matches_pytorch() {
    let n = run("conv1d", false, true, |a| {
        let cfg = json!({"filters": a["filters"], "kernelSize": a["kernel_size"], "strides": a["strides"],
                         "padding": a["padding"], "dilationRate": a["dilation_rate"]});
        ("Conv1D".into(), cfg)
    });
    assert_eq!(n, (2, on_gpu(2)));
}

/// On both devices.
#[test]
fn conv2d_transpose_matches_pytorch() {
    let n = run("conv2d_transpose", false, true, |a| {
        let cfg = json!({"filters": a["filters"], "kernelSize": a["kernel_size"], "strides": a["strides"],
                         "padding": a["padding"]});
        ("Conv2DTranspose".into(), cfg)
    });
    assert_eq!(n, (2, on_gpu(2)));
}

#[test]
fn embedding_matches_pytorch() {
    let n = run("embedding", true, false, |a| {
        (
            "Embedding".into(),
            json!({"inputDim": a["input_dim"], "outputDim": a["output_dim"]}),
        )
    });
    assert_eq!(n, (1, 0));
}

/// There is no 1-D global pooling fixture; the 2-D one is the same mean over `h * w` steps.
#[test]
fn global_average_pooling1d_matches_the_2d_fixture() {
    let case = cases("global_average_pooling2d").into_iter().next().unwrap();
    let s = shape_of(&case["inputs"]["x"]);
    let x = Tensor::variable(data_of(&case["inputs"]["x"]), &[s[0], s[1] * s[2], s[3]]).unwrap();
    let l = layer("GlobalAveragePooling1D", json!({}), &x.shape()[1..]);
    let y = forward(l.as_ref(), &x);
    assert_eq!(y.shape(), shape_of(&case["outputs"]["y"]).as_slice());
    assert_close("gap1d y", y.data(), &data_of(&case["outputs"]["y"]));
    let grads = backward_with_seed(&y, data_of(&case["cotangents"]["y"])).unwrap();
    assert_close("gap1d dx", grads.get(&x).unwrap(), &data_of(&case["grads"]["x"]));
}

/// Naive 1-D convolution in f64: returns (y, dx, dkernel, dbias) for cotangent `g`.
#[allow(clippy::type_complexity)]
fn naive_conv1d(
    x: &[f32],
    [b, t, c]: [usize; 3],
    w: &[f32],
    [k, f]: [usize; 2],
    bias: &[f32],
    (s, d, pad_left, out_t): (usize, usize, usize, usize),
    g: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut y = vec![0.0f64; b * out_t * f];
    let mut dx = vec![0.0f64; x.len()];
    let mut dw = vec![0.0f64; w.len()];
    let mut db = vec![0.0f64; f];
    for n in 0..b {
        for o in 0..out_t {
            for q in 0..f {
                let yi = (n * out_t + o) * f + q;
                let gv = g[yi] as f64;
                y[yi] = bias[q] as f64;
                db[q] += gv;
                for j in 0..k {
                    let i = (o * s + j * d) as isize - pad_left as isize;
                    if i < 0 || i >= t as isize {
                        continue;
                    }
                    for ch in 0..c {
                        let xi = (n * t + i as usize) * c + ch;
                        let wi = (j * c + ch) * f + q;
                        y[yi] += x[xi] as f64 * w[wi] as f64;
                        dx[xi] += w[wi] as f64 * gv;
                        dw[wi] += x[xi] as f64 * gv;
                    }
                }
            }
        }
    }
    let f32s = |v: Vec<f64>| v.into_iter().map(|v| v as f32).collect();
    (f32s(y), f32s(dx), f32s(dw), f32s(db))
}

#[test]
fn conv1d_strided_dilated_and_causal_match_a_naive_convolution() {
    let (b, t, c, f) = (2, 11, 3, 4);
    // (kernel, stride, dilation, padding, expected output steps, left pad)
    let configs = [
        (3, 2, 1, "valid", 5, 0),
        (3, 3, 1, "same", 4, 0), // total pad (3*3 + 3 - 11) = 1 -> 0 left
        (2, 2, 1, "same", 6, 0), // total pad (5*2 + 2 - 11) = 1 -> 0 left
        (3, 1, 2, "valid", 7, 0),
        (3, 1, 3, "same", 11, 3), // span 7: total 6 -> 3 left
        (4, 1, 2, "causal", 11, 6),
        (3, 2, 1, "causal", 6, 2),
        (1, 1, 1, "causal", 11, 0),
    ];
    for (i, &(k, s, d, padding, out_t, pad_left)) in configs.iter().enumerate() {
        let what = format!("conv1d k{k} s{s} d{d} {padding}");
        let cfg = json!({"filters": f, "kernelSize": [k], "strides": s, "dilationRate": d, "padding": padding});
        let l = layer("Conv1D", cfg, &[t, c]);
        let (xd, wd, bd) = (
            values(b * t * c, 10 + i as u64),
            values(k * c * f, 20 + i as u64),
            values(f, 30),
        );
        let params = l.params();
        params[0].set(wd.clone()).unwrap();
        params[1].set(bd.clone()).unwrap();
        let x = Tensor::variable(xd.clone(), &[b, t, c]).unwrap();
        let y = forward(l.as_ref(), &x);
        assert_eq!(y.shape(), [b, out_t, f], "{what}");
        let g = values(y.len(), 40 + i as u64);
        let (wy, wdx, wdw, wdb) = naive_conv1d(&xd, [b, t, c], &wd, [k, f], &bd, (s, d, pad_left, out_t), &g);
        assert_close(&format!("{what} y"), y.data(), &wy);
        let (kt, bt) = (params[0].get(), params[1].get());
        let grads = backward_with_seed(&y, g).unwrap();
        assert_close(&format!("{what} dx"), grads.get(&x).unwrap(), &wdx);
        assert_close(&format!("{what} dkernel"), grads.get(&kt).unwrap(), &wdw);
        assert_close(&format!("{what} dbias"), grads.get(&bt).unwrap(), &wdb);
    }
}

/// Naive transposed convolution by scattering, TensorFlow padding: the `same` crop is that of
/// the forward convolution on the output size.
fn naive_conv2d_transpose(
    x: &[f32],
    [b, h, w, c]: [usize; 4],
    kernel: &[f32],
    [kh, kw, f]: [usize; 3],
    [sh, sw]: [usize; 2],
    d: usize,
    [oh, ow]: [usize; 2],
    same: bool,
) -> Vec<f32> {
    let pad = |input: usize, k: usize, s: usize, out: usize| {
        if same {
            ((input - 1) * s + (k - 1) * d + 1).saturating_sub(out) / 2
        } else {
            0
        }
    };
    let (pt, pl) = (pad(h, kh, sh, oh), pad(w, kw, sw, ow));
    let mut y = vec![0.0f64; b * oh * ow * f];
    for n in 0..b {
        for i in 0..h {
            for j in 0..w {
                for a in 0..kh {
                    for e in 0..kw {
                        let r = (i * sh + a * d) as isize - pt as isize;
                        let q = (j * sw + e * d) as isize - pl as isize;
                        if r < 0 || q < 0 || r >= oh as isize || q >= ow as isize {
                            continue;
                        }
                        for o in 0..f {
                            let yi = ((n * oh + r as usize) * ow + q as usize) * f + o;
                            for ch in 0..c {
                                let xv = x[((n * h + i) * w + j) * c + ch] as f64;
                                y[yi] += xv * kernel[((a * kw + e) * f + o) * c + ch] as f64;
                            }
                        }
                    }
                }
            }
        }
    }
    y.into_iter().map(|v| v as f32).collect()
}

#[test]
fn conv2d_transpose_matches_a_naive_scatter_and_finite_differences() {
    // (input h, w, kernel, strides, dilation, padding, expected output h, w); stride 1 runs the
    // flipped-kernel direct convolution, other strides the adjoint (col2im) form.
    let configs = [
        (3, 4, [3, 3], [2, 2], 1, "same", [6, 8]),
        (5, 3, [3, 2], [2, 3], 1, "same", [10, 9]),
        (3, 3, [1, 1], [2, 2], 1, "valid", [6, 6]), // kernel < stride: Keras pads to in * stride
        (2, 3, [2, 4], [1, 2], 1, "valid", [3, 8]),
        (4, 4, [5, 5], [2, 2], 1, "same", [8, 8]),
        (4, 5, [3, 3], [1, 1], 1, "same", [4, 5]),
        (4, 5, [4, 2], [1, 1], 1, "same", [4, 5]),
        (3, 4, [2, 3], [1, 1], 1, "valid", [4, 6]),
        (3, 3, [1, 1], [1, 1], 1, "valid", [3, 3]),
        (4, 5, [3, 2], [1, 1], 2, "same", [4, 5]),
        (3, 4, [3, 3], [1, 1], 2, "valid", [7, 8]),
    ];
    let (b, c, f) = (2, 3, 2);
    for (i, &(h, w, k, s, d, padding, out)) in configs.iter().enumerate() {
        let what = format!("conv2dTranspose {h}x{w} k{k:?} s{s:?} d{d} {padding}");
        let cfg = json!({"filters": f, "kernelSize": k, "strides": s, "dilationRate": d, "padding": padding});
        let l = layer("Conv2DTranspose", cfg, &[h, w, c]);
        let kd = values(k[0] * k[1] * f * c, 50 + i as u64);
        l.params()[0].set(kd.clone()).unwrap();
        let bias = [0.25, -0.5];
        l.params()[1].set(bias.to_vec()).unwrap();
        let xd = values(b * h * w * c, 60 + i as u64);
        let y = forward(l.as_ref(), &Tensor::new(xd.clone(), &[b, h, w, c]).unwrap());
        assert_eq!(y.shape(), [b, out[0], out[1], f], "{what}");
        let mut want = naive_conv2d_transpose(&xd, [b, h, w, c], &kd, [k[0], k[1], f], s, d, out, padding == "same");
        want.iter_mut().enumerate().for_each(|(j, v)| *v += bias[j % f]);
        assert_close(&what, y.data(), &want);
        check_fd(&what, &xd, &[b, h, w, c], &|x| forward(l.as_ref(), x));
    }
}

#[test]
fn padding_and_upsampling_gradients_match_finite_differences() {
    let x = values(2 * 3 * 4 * 2, 7);
    for padding in [json!(1), json!([2, 0]), json!([[0, 2], [3, 1]])] {
        let l = layer("ZeroPadding2D", json!({ "padding": padding }), &[3, 4, 2]);
        check_fd(&format!("zeroPadding2d {padding}"), &x, &[2, 3, 4, 2], &|x| {
            forward(l.as_ref(), x)
        });
    }
    for size in [json!(2), json!([3, 1]), json!([1, 2])] {
        let l = layer("UpSampling2D", json!({ "size": size }), &[3, 4, 2]);
        check_fd(&format!("upSampling2d {size}"), &x, &[2, 3, 4, 2], &|x| {
            forward(l.as_ref(), x)
        });
    }
}

/// ZeroPadding2D and UpSampling2D as one-layer GPU models: the CPU layer's output and input
/// gradient, for ragged shapes, asymmetric padding and unequal factors, batch 2.
#[test]
fn padding_and_upsampling_match_the_cpu_on_the_gpu() {
    if skip_gpu() {
        return;
    }
    let shape = [2, 3, 5, 3];
    let xd = values(shape.iter().product(), 17);
    let cases = [
        ("ZeroPadding2D", json!({ "padding": 1 })),
        ("ZeroPadding2D", json!({ "padding": [2, 0] })),
        ("ZeroPadding2D", json!({ "padding": [[0, 2], [3, 1]] })),
        ("UpSampling2D", json!({ "size": 2 })),
        ("UpSampling2D", json!({ "size": [3, 1] })),
        ("UpSampling2D", json!({ "size": [1, 2], "interpolation": "nearest" })),
    ];
    for (class, config) in cases {
        let what = format!("{class} {config} (gpu)");
        let l = layer(class, config.clone(), &shape[1..]);
        let x = Tensor::variable(xd.clone(), &shape).unwrap();
        let y = forward(l.as_ref(), &x);
        let g = values(y.len(), 23);
        let want_dx = backward_with_seed(&y, g.clone()).unwrap().get(&x).unwrap().to_vec();
        let mut config = l.config();
        config["name"] = json!("layer");
        let dy = Tensor::new(g, y.shape()).unwrap();
        let (gy, gdx, _) = layer_on_gpu(class, &config, &Tensor::new(xd.clone(), &shape).unwrap(), &[], &dy);
        assert_eq!(gy.shape(), y.shape(), "{what}: output shape");
        assert_close(&format!("{what} y"), gy.data(), y.data());
        assert_close(&format!("{what} dx"), gdx.unwrap().data(), &want_dx);
    }
}

/// Conv1D (strided, dilated, valid / same / causal, kernel 1) and Conv2DTranspose (valid /
/// same, unequal and kernel-exceeding strides, dilation, no bias) as one-layer GPU models: the
/// CPU layer's output, input gradient and kernel and bias gradients, batch 2.
#[test]
fn conv1d_and_conv2d_transpose_match_the_cpu_on_the_gpu() {
    if skip_gpu() {
        return;
    }
    let conv1d = |k: usize, s: usize, d: usize, p: &str| json!({"filters": 4, "kernelSize": k, "strides": s, "dilationRate": d, "padding": p, "activation": "tanh"});
    let convt = |k: [usize; 2], s: [usize; 2], d: usize, p: &str| json!({"filters": 3, "kernelSize": k, "strides": s, "dilationRate": d, "padding": p});
    let cases = [
        ("Conv1D", conv1d(3, 2, 1, "valid"), vec![2, 11, 3]),
        ("Conv1D", conv1d(3, 3, 1, "same"), vec![2, 11, 3]),
        ("Conv1D", conv1d(2, 2, 1, "same"), vec![2, 11, 3]),
        ("Conv1D", conv1d(3, 1, 3, "same"), vec![2, 11, 3]),
        ("Conv1D", conv1d(4, 1, 2, "causal"), vec![2, 11, 3]),
        ("Conv1D", conv1d(3, 2, 1, "causal"), vec![2, 11, 3]),
        ("Conv1D", conv1d(1, 1, 1, "causal"), vec![2, 11, 3]),
        ("Conv2DTranspose", convt([3, 3], [2, 2], 1, "same"), vec![2, 3, 4, 2]),
        ("Conv2DTranspose", convt([3, 2], [2, 3], 1, "same"), vec![2, 5, 3, 2]),
        ("Conv2DTranspose", convt([1, 1], [2, 2], 1, "valid"), vec![2, 3, 3, 2]),
        ("Conv2DTranspose", convt([2, 4], [1, 2], 1, "valid"), vec![2, 2, 3, 2]),
        ("Conv2DTranspose", convt([5, 5], [2, 2], 1, "same"), vec![2, 4, 4, 2]),
        ("Conv2DTranspose", convt([4, 2], [1, 1], 1, "same"), vec![2, 4, 5, 2]),
        ("Conv2DTranspose", convt([3, 2], [1, 1], 2, "same"), vec![2, 4, 5, 2]),
        ("Conv2DTranspose", convt([3, 3], [1, 1], 2, "valid"), vec![2, 3, 4, 2]),
        (
            "Conv2DTranspose",
            json!({"filters": 2, "kernelSize": 3, "strides": 2, "padding": "same", "useBias": false, "activation": "relu"}),
            vec![2, 3, 3, 4],
        ),
    ];
    for (i, (class, config, shape)) in cases.into_iter().enumerate() {
        let what = format!("{class} {config} (gpu)");
        let l = layer(class, config, &shape[1..]);
        let weights: Vec<Vec<f32>> = l
            .params()
            .iter()
            .enumerate()
            .map(|(j, p)| values(p.shape().iter().product(), 70 + 10 * i as u64 + j as u64))
            .collect();
        for (p, w) in l.params().iter().zip(&weights) {
            p.set(w.clone()).unwrap();
        }
        let xd = values(shape.iter().product(), 71 + 10 * i as u64);
        let x = Tensor::variable(xd.clone(), &shape).unwrap();
        let y = forward(l.as_ref(), &x);
        let g = values(y.len(), 72 + 10 * i as u64);
        let leaves: Vec<Tensor> = l.params().iter().map(|p| p.get()).collect();
        let grads = backward_with_seed(&y, g.clone()).unwrap();
        let mut config = l.config();
        config["name"] = json!("layer");
        let dy = Tensor::new(g, y.shape()).unwrap();
        let (gy, gdx, gw) = layer_on_gpu(class, &config, &Tensor::new(xd, &shape).unwrap(), &weights, &dy);
        assert_eq!(gy.shape(), y.shape(), "{what}: output shape");
        assert_close(&format!("{what} y"), gy.data(), y.data());
        assert_close(&format!("{what} dx"), gdx.unwrap().data(), grads.get(&x).unwrap());
        assert_eq!(gw.len(), leaves.len(), "{what}: weight gradients");
        for (j, (got, leaf)) in gw.iter().zip(&leaves).enumerate() {
            assert_close(
                &format!("{what} dweight{j}"),
                got.as_ref().unwrap().data(),
                grads.get(leaf).unwrap(),
            );
        }
    }
}

#[test]
fn zero_padding_and_upsampling_values() {
    let x = Tensor::new(vec![1.0, 2.0, 3.0, 4.0], &[1, 2, 2, 1]).unwrap();
    let l = layer("ZeroPadding2D", json!({"padding": [[1, 0], [0, 2]]}), &[2, 2, 1]);
    let y = forward(l.as_ref(), &x);
    assert_eq!(y.shape(), [1, 3, 4, 1]);
    assert_eq!(y.data(), [0.0, 0.0, 0.0, 0.0, 1.0, 2.0, 0.0, 0.0, 3.0, 4.0, 0.0, 0.0]);
    let l = layer(
        "UpSampling2D",
        json!({"size": [2, 1], "interpolation": "nearest"}),
        &[2, 2, 1],
    );
    let y = forward(l.as_ref(), &x);
    assert_eq!(y.shape(), [1, 4, 2, 1]);
    assert_eq!(y.data(), [1.0, 2.0, 1.0, 2.0, 3.0, 4.0, 3.0, 4.0]);
}

#[test]
fn output_shapes_follow_keras() {
    let shape = |class: &str, cfg: Value, input: &[usize]| -> Vec<usize> {
        let (mut l, _) = layers::from_config(class, &cfg).unwrap();
        l.build(input, &mut Rng::new(0)).unwrap()
    };
    let conv1d = |k: usize, s: usize, d: usize, p: &str| {
        shape(
            "Conv1D",
            json!({"filters": 5, "kernelSize": k, "strides": s, "dilationRate": d, "padding": p}),
            &[10, 3],
        )
    };
    assert_eq!(conv1d(3, 1, 1, "valid"), [8, 5]);
    assert_eq!(conv1d(3, 2, 1, "valid"), [4, 5]);
    assert_eq!(conv1d(3, 3, 1, "same"), [4, 5]);
    assert_eq!(conv1d(3, 1, 2, "valid"), [6, 5]);
    assert_eq!(conv1d(3, 1, 4, "same"), [10, 5]);
    assert_eq!(conv1d(5, 1, 3, "causal"), [10, 5]);
    assert_eq!(conv1d(3, 4, 1, "causal"), [3, 5]);
    let convt = |k: [usize; 2], s: [usize; 2], p: &str| {
        shape(
            "Conv2DTranspose",
            json!({"filters": 4, "kernelSize": k, "strides": s, "padding": p}),
            &[5, 6, 3],
        )
    };
    assert_eq!(convt([3, 3], [1, 1], "valid"), [7, 8, 4]);
    assert_eq!(convt([3, 3], [1, 1], "same"), [5, 6, 4]);
    assert_eq!(convt([4, 4], [2, 2], "same"), [10, 12, 4]);
    assert_eq!(convt([3, 5], [2, 3], "valid"), [11, 20, 4]);
    assert_eq!(convt([1, 2], [3, 3], "valid"), [15, 18, 4]);
    let dil = json!({"filters": 2, "kernelSize": 3, "dilationRate": 2, "padding": "valid"});
    assert_eq!(shape("Conv2DTranspose", dil, &[5, 6, 3]), [9, 10, 2]);
    assert_eq!(shape("UpSampling2D", json!({}), &[3, 4, 2]), [6, 8, 2]);
    assert_eq!(shape("UpSampling2D", json!({"size": [3, 1]}), &[3, 4, 2]), [9, 4, 2]);
    assert_eq!(shape("ZeroPadding2D", json!({}), &[3, 4, 2]), [5, 6, 2]);
    assert_eq!(shape("ZeroPadding2D", json!({"padding": 2}), &[3, 4, 2]), [7, 8, 2]);
    assert_eq!(
        shape("ZeroPadding2D", json!({"padding": [1, 3]}), &[3, 4, 2]),
        [5, 10, 2]
    );
    assert_eq!(
        shape("ZeroPadding2D", json!({"padding": [[0, 1], [2, 3]]}), &[3, 4, 2]),
        [4, 9, 2]
    );
    assert_eq!(shape("GlobalAveragePooling1D", json!({}), &[7, 3]), [3]);
    assert_eq!(
        shape("GlobalAveragePooling1D", json!({"keepdims": true}), &[7, 3]),
        [1, 3]
    );
    assert_eq!(
        shape("Embedding", json!({"inputDim": 10, "outputDim": 6}), &[7]),
        [7, 6]
    );
    assert_eq!(
        shape("Embedding", json!({"inputDim": 10, "outputDim": 6}), &[2, 3]),
        [2, 3, 6]
    );
    assert_eq!(
        shape("PositionalEmbedding", json!({"sequenceLength": 8}), &[5, 6]),
        [5, 6]
    );
    // Batch of runtime shapes too.
    let l = layer(
        "Conv1D",
        json!({"filters": 2, "kernelSize": 3, "padding": "causal"}),
        &[6, 1],
    );
    assert_eq!(forward(l.as_ref(), &Tensor::zeros(&[3, 9, 1])).shape(), [3, 9, 2]);
    let l = layer(
        "Conv2DTranspose",
        json!({"filters": 2, "kernelSize": 3, "strides": 2, "padding": "same"}),
        &[4, 4, 1],
    );
    assert_eq!(
        forward(l.as_ref(), &Tensor::zeros(&[2, 3, 5, 1])).shape(),
        [2, 6, 10, 2]
    );
}

#[test]
fn configs_rebuild_the_same_layer() {
    let specs = [
        (
            "Conv1D",
            json!({"filters": 3, "kernelSize": 2, "strides": 2, "padding": "causal", "activation": "relu"}),
            vec![8, 2],
        ),
        (
            "Conv2DTranspose",
            json!({"filters": 3, "kernelSize": [3, 2], "strides": 2, "padding": "same", "useBias": false}),
            vec![4, 4, 2],
        ),
        ("UpSampling2D", json!({"size": [2, 3]}), vec![4, 4, 2]),
        ("ZeroPadding2D", json!({"padding": [[1, 2], [3, 4]]}), vec![4, 4, 2]),
        ("GlobalAveragePooling1D", json!({"keepdims": true}), vec![4, 2]),
        (
            "Embedding",
            json!({"inputDim": 9, "outputDim": 3, "maskZero": true}),
            vec![4],
        ),
        (
            "PositionalEmbedding",
            json!({"sequenceLength": 6, "initializer": "zeros"}),
            vec![4, 2],
        ),
    ];
    for (class, cfg, input) in specs {
        let l = layer(class, cfg, &input);
        let config = l.config();
        let (mut again, _) = layers::from_config(class, &config).unwrap();
        assert_eq!(again.config(), config, "{class}");
        assert_eq!(again.class_name(), class);
        assert_ne!(layers::base_name(class), "layer", "{class} has a Keras base name");
        let out = again.build(&input, &mut Rng::new(1)).unwrap();
        let shapes: Vec<Vec<usize>> = again.params().iter().map(|p| p.shape()).collect();
        let before: Vec<Vec<usize>> = l.params().iter().map(|p| p.shape()).collect();
        assert_eq!(shapes, before, "{class} params");
        assert!(!out.is_empty());
    }
    let e = layers::from_config("Conv1D", &json!({"filters": 2, "kernelSize": 3, "padding": "full"}))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("causal") && e.contains("full"), "{e}");
    let e = layers::from_config("UpSampling2D", &json!({"interpolation": "bilinear"}))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("nearest") && e.contains("bilinear"), "{e}");
    let e = layers::from_config("ZeroPadding2D", &json!({"padding": [1, 2, 3]}))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("[[top, bottom], [left, right]]") && e.contains("[1,2,3]"),
        "{e}"
    );
    let e = layers::from_config(
        "Conv1D",
        &json!({"filters": 2, "kernelSize": 3, "strides": 2, "dilationRate": 2}),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("strides") && e.contains("dilationRate"), "{e}");
    let e = layers::from_config("Embedding", &json!({"inputDim": 3, "outputDim": 2, "inputLength": 5}))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("inputLength"), "{e}");
}

#[test]
fn shape_errors_name_expected_and_got() {
    let l = layer("Conv1D", json!({"filters": 2, "kernelSize": 3}), &[5, 2]);
    let e = l
        .forward(
            &Tensor::zeros(&[1, 5, 3]),
            &mut ForwardCtx::new(false, &mut Rng::new(0)),
        )
        .unwrap_err();
    assert!(
        e.to_string().contains("conv1d") && e.to_string().contains("3 channels"),
        "{e}"
    );
    let e = l
        .forward(
            &Tensor::zeros(&[1, 2, 2]),
            &mut ForwardCtx::new(false, &mut Rng::new(0)),
        )
        .unwrap_err();
    assert!(e.to_string().contains("smaller than the window"), "{e}");
    let l = layer("Conv2DTranspose", json!({"filters": 2, "kernelSize": 3}), &[5, 5, 2]);
    let e = l
        .forward(
            &Tensor::zeros(&[1, 5, 5]),
            &mut ForwardCtx::new(false, &mut Rng::new(0)),
        )
        .unwrap_err();
    assert!(e.to_string().contains("rank 4"), "{e}");
    let (mut up, _) = layers::from_config("UpSampling2D", &json!({})).unwrap();
    assert!(up
        .build(&[4, 4], &mut Rng::new(0))
        .unwrap_err()
        .to_string()
        .contains("[height, width, channels]"));
}
