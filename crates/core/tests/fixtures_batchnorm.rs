//! BatchNormalization: the PyTorch fixture cases (also on the GPU), every center/scale option
//! trained and frozen on the GPU against the CPU layer, and the moving statistics (split from
//! fixtures_attention.rs).

use cortex_core::backprop::{backward, backward_with_seed};
use cortex_core::nn::layers::ForwardCtx;
use cortex_core::rng::Rng;
use cortex_core::{ops, Tensor};
use serde_json::{json, Value};

mod common;
use common::{layer_on_gpu, skip_gpu};
mod norm_support;
use norm_support::*;

/// The CPU BatchNormalization layer with `weights` (its parameter order) on `x`: the output,
/// the input gradient and the trainable parameters' gradients for the cotangent `dy`.
fn batch_norm_on_cpu(
    config: &Value,
    x: &Tensor,
    weights: &[Vec<f32>],
    dy: &Tensor,
    training: bool,
) -> (Vec<f32>, Vec<f32>, Vec<Vec<f32>>) {
    let mut l = layer("BatchNormalization", config.clone());
    l.build(&x.shape()[1..], &mut Rng::new(0)).unwrap();
    let params = l.params();
    for (p, w) in params.iter().zip(weights) {
        p.set(w.clone()).unwrap();
    }
    let xv = Tensor::variable(x.data().to_vec(), x.shape()).unwrap();
    let y = l
        .forward(&xv, &mut ForwardCtx::new(training, &mut Rng::new(0)))
        .unwrap();
    let leaves: Vec<Tensor> = params.iter().map(|p| p.get()).collect();
    let grads = backward_with_seed(&y, dy.data().to_vec()).unwrap();
    let dparams = params
        .iter()
        .zip(&leaves)
        .filter(|(p, _)| p.trainable)
        .map(|(_, leaf)| grads.get(leaf).unwrap().to_vec())
        .collect();
    (y.data().to_vec(), grads.get(&xv).unwrap().to_vec(), dparams)
}

#[test]
fn batch_normalization_training_matches_pytorch() {
    let all = cases("batch_normalization");
    assert_eq!(all.len(), 1);
    for case in &all {
        let a = &case["attrs"];
        assert_eq!(a["training"], true);
        let config = json!({"name": "bn", "axis": a["axis"], "epsilon": a["epsilon"], "momentum": a["momentum"]});
        check_norm_case(case, "BatchNormalization", config.clone());
        if skip_gpu() {
            continue;
        }
        // On the GPU: batch statistics, as in a training step (the moving ones do not matter).
        let x = var_of(&case["inputs"]["x"]);
        let c = *x.shape().last().unwrap();
        let weights = [
            data_of(&case["params"]["gamma"]),
            data_of(&case["params"]["beta"]),
            vec![0.3; c],
            vec![2.0; c],
        ];
        let dy = Tensor::new(data_of(&case["cotangents"]["y"]), x.shape()).unwrap();
        let (y, dx, grads) = layer_on_gpu("BatchNormalization", &config, &x, &weights, &dy);
        assert_close("batch_norm (gpu) y", y.data(), &data_of(&case["outputs"]["y"]));
        assert_close("batch_norm (gpu) dx", dx.unwrap().data(), &data_of(&case["grads"]["x"]));
        for (key, grad) in ["gamma", "beta"].iter().zip(&grads) {
            assert_close(
                &format!("batch_norm (gpu) d{key}"),
                grad.as_ref().unwrap().data(),
                &data_of(&case["grads"][*key]),
            );
        }
        assert!(
            grads[2..].iter().all(Option::is_none),
            "no gradient for the moving statistics"
        );
    }
}

/// BatchNormalization on the GPU against the CPU layer, NHWC, for every center/scale option:
/// in a training step (batch statistics), and frozen (`trainable: false`: the moving
/// statistics, as constants, even in a training step) against the CPU layer in inference.
#[test]
fn batch_normalization_options_and_inference_match_the_cpu_on_the_gpu() {
    if skip_gpu() {
        return;
    }
    let shape = [3, 4, 2, 5];
    let c = shape[3];
    let n: usize = shape.iter().product();
    let xs: Vec<f32> = values(n, 21)
        .iter()
        .enumerate()
        .map(|(i, v)| v * (1.0 + (i % c) as f32 * 0.5) + (i % c) as f32 - 2.0)
        .collect();
    let x = Tensor::new(xs, &shape).unwrap();
    let dy = Tensor::new(values(n, 22), &shape).unwrap();
    let gamma: Vec<f32> = values(c, 23).iter().map(|v| v + 1.5).collect();
    let beta = values(c, 24);
    let moving = [values(c, 25), values(c, 26).iter().map(|v| v + 1.3).collect()];
    let mut checked = 0;
    for (center, scale) in [(true, true), (false, true), (true, false), (false, false)] {
        let mut weights: Vec<Vec<f32>> = Vec::new();
        if scale {
            weights.push(gamma.clone());
        }
        if center {
            weights.push(beta.clone());
        }
        weights.extend(moving.iter().cloned());
        let affine = weights.len() - 2;
        for frozen in [false, true] {
            let what = format!("center {center}, scale {scale}, frozen {frozen}");
            let config = json!({"name": "bn", "center": center, "scale": scale, "epsilon": 0.01,
                                "momentum": 0.8});
            // The CPU reference: batch statistics in training, moving ones in inference.
            let (y, dx, dparams) = batch_norm_on_cpu(&config, &x, &weights, &dy, !frozen);
            let mut gpu_config = config.clone();
            if frozen {
                gpu_config["trainable"] = json!(false);
            }
            let (gy, gdx, grads) = layer_on_gpu("BatchNormalization", &gpu_config, &x, &weights, &dy);
            assert_close(&format!("{what}: y"), gy.data(), &y);
            assert_close(&format!("{what}: dx"), gdx.unwrap().data(), &dx);
            assert_eq!(dparams.len(), affine);
            for (k, want) in dparams.iter().enumerate() {
                assert_close(
                    &format!("{what}: weight {k} gradient"),
                    grads[k].as_ref().unwrap().data(),
                    want,
                );
            }
            assert!(grads[affine..].iter().all(Option::is_none), "{what}");
            checked += 1;
        }
    }
    assert_eq!(checked, 8);
}

#[test]
fn batch_norm_moving_statistics_and_inference() {
    let (n, c) = (6, 3);
    let mut bn = layer("BatchNormalization", json!({"name": "bn", "momentum": 0.9}));
    bn.build(&[c], &mut Rng::new(0)).unwrap();
    let names: Vec<String> = bn.params().iter().map(|p| p.name.clone()).collect();
    assert_eq!(names, ["bn/gamma", "bn/beta", "bn/moving_mean", "bn/moving_variance"]);
    assert_eq!(
        bn.params().iter().map(|p| p.trainable).collect::<Vec<_>>(),
        [true, true, false, false]
    );
    bn.params()[0].set(vec![1.5, 0.5, 2.0]).unwrap();
    bn.params()[1].set(vec![0.1, -0.2, 0.3]).unwrap();
    let xs: Vec<f32> = values(n * c, 9)
        .iter()
        .enumerate()
        .map(|(i, v)| v * 3.0 + (i % c) as f32)
        .collect();
    let x = Tensor::new(xs.clone(), &[n, c]).unwrap();
    let mut rng = Rng::new(0);
    bn.forward(&x, &mut ForwardCtx::new(true, &mut rng)).unwrap();
    let mean: Vec<f64> = (0..c)
        .map(|j| (0..n).map(|i| xs[i * c + j] as f64).sum::<f64>() / n as f64)
        .collect();
    let var: Vec<f64> = (0..c)
        .map(|j| (0..n).map(|i| (xs[i * c + j] as f64 - mean[j]).powi(2)).sum::<f64>() / n as f64)
        .collect();
    let mm = bn.params()[2].get().to_vec();
    let mv = bn.params()[3].get().to_vec();
    for j in 0..c {
        assert!((mm[j] as f64 - 0.1 * mean[j]).abs() < 1e-5, "moving mean {j}");
        assert!(
            (mv[j] as f64 - (0.9 + 0.1 * var[j])).abs() < 1e-5,
            "moving variance {j} (biased batch variance)"
        );
    }
    // Inference normalises with the moving statistics and leaves them alone.
    let y = bn.forward(&x, &mut ForwardCtx::new(false, &mut rng)).unwrap();
    let (g, b) = ([1.5, 0.5, 2.0], [0.1, -0.2, 0.3]);
    let want: Vec<f32> = (0..n * c)
        .map(|i| (xs[i] - mm[i % c]) / (mv[i % c] + 1e-3).sqrt() * g[i % c] + b[i % c])
        .collect();
    assert_close("inference y", y.data(), &want);
    assert_eq!(bn.params()[2].get().to_vec(), mm);
    // A frozen layer runs in inference mode even in training, and its statistics stay put.
    let mut frozen = layer("BatchNormalization", json!({"name": "bf", "trainable": false}));
    frozen.build(&[c], &mut Rng::new(0)).unwrap();
    let y = frozen.forward(&x, &mut ForwardCtx::new(true, &mut rng)).unwrap();
    let want: Vec<f32> = xs.iter().map(|v| v / (1.0f32 + 1e-3).sqrt()).collect();
    assert_close("frozen y", y.data(), &want);
    assert_eq!(frozen.params()[2].get().to_vec(), vec![0.0; c]);
    // Inference gradients treat the statistics as constants.
    let xv = Tensor::variable(xs.clone(), &[n, c]).unwrap();
    let y = bn.forward(&xv, &mut ForwardCtx::new(false, &mut rng)).unwrap();
    let grads = backward(&ops::sum(&y).unwrap()).unwrap();
    let dx = grads.get(&xv).unwrap();
    for i in 0..n * c {
        assert!((dx[i] - g[i % c] / (mv[i % c] + 1e-3).sqrt()).abs() < 1e-5);
    }
}
