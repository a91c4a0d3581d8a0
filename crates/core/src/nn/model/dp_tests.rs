use super::*;
use serde_json::json;

fn data(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = Rng::new(seed);
    Tensor::new((0..numel(shape)).map(|_| rng.normal()).collect(), shape).unwrap()
}

/// Conv2D (tanh) -> max pool -> flatten -> Dense (tanh) -> Dense, and a Dense applied to a
/// sequence ([B, T, in]) -> flatten -> Dense.
fn models() -> Vec<(Model, Batch)> {
    let conv = json!({"className": "Sequential", "inputShape": [6, 6, 2], "layers": [
        {"className": "Conv2D", "config": {"filters": 3, "kernelSize": 3, "strides": 2, "padding": "same", "activation": "tanh"}},
        {"className": "MaxPooling2D", "config": {"poolSize": 2, "strides": 1}},
        {"className": "Flatten", "config": {}},
        {"className": "Dense", "config": {"units": 4, "activation": "tanh"}},
        {"className": "Dense", "config": {"units": 3}}
    ]});
    let seq = json!({"className": "Sequential", "inputShape": [3, 4], "layers": [
        {"className": "Dense", "config": {"units": 5, "activation": "tanh"}},
        {"className": "Flatten", "config": {}},
        {"className": "Dense", "config": {"units": 3}}
    ]});
    let labels = Tensor::new(vec![0.0, 2.0, 1.0, 1.0, 0.0], &[5]).unwrap();
    let mut out = Vec::new();
    for (cfg, x) in [(conv, data(&[5, 6, 6, 2], 1)), (seq, data(&[5, 3, 4], 2))] {
        let mut m = Model::from_config(&cfg, 7).unwrap();
        m.compile(&json!({"optimizer": {"name": "sgd", "learningRate": 0.1},
            "loss": {"name": "sparseCategoricalCrossentropy", "fromLogits": true}}))
            .unwrap();
        m.ensure_built(&x).unwrap();
        out.push((m, Batch::single(x, labels.clone())));
    }
    out
}

/// The gradient of one sample's loss, through the tape, one sample at a time.
fn one_sample_norm(m: &Model, batch: &Batch, i: usize) -> f64 {
    let one = batch.slice(i, i + 1);
    let preds = m.run(&one.xs, &[], true, &mut Rng::new(0)).unwrap();
    let loss = m.score(&preds, &one).unwrap().total;
    let mut grads = backprop::backward(&loss).unwrap();
    let mut sq = 0.0f64;
    for t in m.trainable_leaves().unwrap().into_iter().flatten() {
        sq += grads
            .remove(&t)
            .unwrap()
            .iter()
            .map(|v| (*v as f64).powi(2))
            .sum::<f64>();
    }
    sq.sqrt()
}

fn weights(m: &Model) -> Vec<f32> {
    m.get_weights().unwrap().into_iter().flat_map(|w| w.2).collect()
}

#[test]
fn per_sample_norms_equal_one_sample_at_a_time_gradients() {
    for (m, batch) in models() {
        let (norms, _) = m.per_sample_grad_norms(&batch, &mut Rng::new(0)).unwrap();
        assert_eq!(norms.len(), 5);
        for (i, n) in norms.iter().enumerate() {
            let want = one_sample_norm(&m, &batch, i);
            assert!(want > 1e-3, "a degenerate test: gradient norm {want}");
            assert!(((*n as f64) - want).abs() <= 1e-4 * want, "sample {i}: {n} vs {want}");
        }
    }
}

#[test]
fn without_noise_and_with_a_huge_clip_a_dp_step_is_an_sgd_step() {
    let dp = DpConfig {
        l2_norm_clip: 1e6,
        noise_multiplier: 0.0,
        delta: 1e-5,
        target_epsilon: None,
    };
    for ((mut a, batch), (mut b, _)) in models().into_iter().zip(models()) {
        let before = weights(&a);
        a.train_step(&batch).unwrap();
        b.dp_train_step(&batch, &dp, batch.rows() as f64).unwrap();
        let (wa, wb) = (weights(&a), weights(&b));
        let moved: f32 = wa.iter().zip(&before).map(|(x, y)| (x - y).abs()).sum();
        assert!(moved > 1e-3, "the step did not move the weights");
        for (x, y) in wa.iter().zip(&wb) {
            assert!((x - y).abs() <= 1e-5 * (1.0 + x.abs()), "{x} vs {y}");
        }
    }
}

#[test]
fn with_a_tiny_clip_every_sample_is_clipped_and_the_update_is_bounded() {
    let clip = 1e-3;
    let dp = DpConfig {
        l2_norm_clip: clip,
        noise_multiplier: 0.0,
        delta: 1e-5,
        target_epsilon: None,
    };
    for (mut m, batch) in models() {
        let (norms, _) = m.per_sample_grad_norms(&batch, &mut Rng::new(0)).unwrap();
        assert!(norms.iter().all(|n| *n > 10.0 * clip), "{norms:?}");
        let before = weights(&m);
        // SGD with learning rate 0.1: the update is 0.1 × (Σ clipped) / B, of norm ≤ 0.1 C.
        m.dp_train_step(&batch, &dp, batch.rows() as f64).unwrap();
        let step: f64 = weights(&m)
            .iter()
            .zip(&before)
            .map(|(x, y)| ((x - y) as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!(step <= 0.1 * clip as f64 * 1.001, "update norm {step}");
        assert!(step > 0.0);
    }
}

#[test]
fn noise_has_the_configured_scale() {
    // An empty batch takes a pure noise step: N(0, (σC)²) / B per coordinate, times the rate.
    let dp = DpConfig {
        l2_norm_clip: 2.0,
        noise_multiplier: 1.5,
        delta: 1e-5,
        target_epsilon: None,
    };
    let (mut m, batch) = models().remove(0);
    let before = weights(&m);
    m.dp_train_step(&batch.slice(0, 0), &dp, 4.0).unwrap();
    let d: Vec<f64> = weights(&m).iter().zip(&before).map(|(x, y)| (x - y) as f64).collect();
    let sd = (d.iter().map(|v| v * v).sum::<f64>() / d.len() as f64).sqrt();
    let want = 0.1 * 1.5 * 2.0 / 4.0;
    assert!(
        (sd - want).abs() < 0.15 * want,
        "noise sd {sd} vs {want} over {} weights",
        d.len()
    );
}

#[test]
fn an_unsupported_trainable_layer_is_refused_by_name() {
    let cfg = json!({"className": "Sequential", "inputShape": [4], "layers": [
        {"className": "Dense", "config": {"units": 4}},
        {"className": "BatchNormalization", "config": {"name": "bn1"}},
        {"className": "Dense", "config": {"units": 2}}
    ]});
    let mut m = Model::from_config(&cfg, 1).unwrap();
    m.compile(&json!({"optimizer": "sgd", "loss": "meanSquaredError"}))
        .unwrap();
    let batch = Batch::single(data(&[3, 4], 1), data(&[3, 2], 2));
    m.ensure_built(&batch.xs[0]).unwrap();
    let err = m
        .per_sample_grad_norms(&batch, &mut Rng::new(0))
        .unwrap_err()
        .to_string();
    assert!(err.contains("'bn1'") && err.contains("BatchNormalization"), "{err}");
}
