//! Tests of the optimizers: update rules against f64 references written from the papers,
//! against Keras 3 (test/fixtures/keras/optimizer_refs.json), clipping, and exact resumption
//! through `state`/`set_state`.

use serde_json::{json, Value};

use super::*;

#[test]
fn ema_tracks_the_weights_as_keras_does() {
    let mut o =
        Optimizer::parse(&json!({"name": "sgd", "learningRate": 1.0, "useEma": true, "emaMomentum": 0.5})).unwrap();
    let mut p = vec![0.0f32];
    for _ in 0..2 {
        o.begin_step();
        o.update(0, &mut p, &[1.0]).unwrap();
    }
    assert_eq!(p, vec![-2.0]);
    // First update starts the average at the weights (-1); then 0.5 * -1 + 0.5 * -2.
    assert_eq!(o.ema_of(0), Some(&[-1.5f32][..]));
    let round_trip = Optimizer::parse(&o.to_json()).unwrap();
    assert_eq!(round_trip.ema_momentum, Some(0.5));
    let e = Optimizer::parse(&json!({"name": "adam", "emaMomentum": 0.9})).unwrap_err();
    assert!(e.to_string().contains("emaMomentum needs useEma"), "{e}");
}

#[test]
fn a_schedule_sets_the_rate_of_each_step() {
    let spec = json!({"name": "sgd", "learningRate": {"name": "exponentialDecay", "initialLearningRate": 1.0,
                      "decaySteps": 1, "decayRate": 0.5}});
    let mut o = Optimizer::parse(&spec).unwrap();
    let mut p = vec![0.0f32];
    for _ in 0..3 {
        o.begin_step();
        o.update(0, &mut p, &[1.0]).unwrap();
    }
    // Steps of 1, 0.5 and 0.25.
    assert_eq!(p, vec![-1.75]);
    assert_eq!(Optimizer::parse(&o.to_json()).unwrap().schedule, o.schedule);
}

/// Deterministic values in [-1, 1).
fn values(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (f64::from(s) / 2f64.powi(32) * 2.0 - 1.0) as f32
        })
        .collect()
}

/// Runs `steps` steps of `o` on the parameters, with the gradients of `grads(step)`.
fn run(o: &mut Optimizer, params: &mut [Vec<f32>], steps: std::ops::Range<u32>) {
    for step in steps {
        let mut grads: Vec<Option<Vec<f32>>> = params
            .iter()
            .enumerate()
            .map(|(i, p)| Some(values(p.len(), step * 10 + i as u32)))
            .collect();
        o.clip_gradients(&mut grads);
        o.begin_step();
        for (i, (p, g)) in params.iter_mut().zip(&grads).enumerate() {
            o.update(i, p, g.as_ref().unwrap()).unwrap();
        }
    }
}

fn assert_close(what: &str, got: &[f32], want: &[f64], rel: f64) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (f64::from(g) - w).abs() <= rel * w.abs().max(1e-3),
            "{what}[{i}]: got {g}, want {w}"
        );
    }
}

/// Lion from the paper's Algorithm 2 (without weight decay), in f64.
fn lion_reference(p: &mut [f64], m: &mut [f64], g: &[f64], lr: f64, b1: f64, b2: f64) {
    for i in 0..p.len() {
        let c = b1 * m[i] + (1.0 - b1) * g[i];
        let sign = if c > 0.0 {
            1.0
        } else if c < 0.0 {
            -1.0
        } else {
            0.0
        };
        p[i] -= lr * sign;
        m[i] = b2 * m[i] + (1.0 - b2) * g[i];
    }
}

/// LAMB from the paper's Algorithm 2 (phi the identity, no weight decay, a trust ratio of 1
/// when a norm is zero as Keras has it), in f64.
#[allow(clippy::too_many_arguments)]
fn lamb_reference(p: &mut [f64], m: &mut [f64], v: &mut [f64], g: &[f64], t: i32, lr: f64, b1: f64, b2: f64, eps: f64) {
    let mut r = vec![0.0; p.len()];
    for i in 0..p.len() {
        m[i] = b1 * m[i] + (1.0 - b1) * g[i];
        v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
        let m_hat = m[i] / (1.0 - b1.powi(t));
        let v_hat = v[i] / (1.0 - b2.powi(t));
        r[i] = m_hat / (v_hat.sqrt() + eps);
    }
    let norm = |x: &[f64]| x.iter().map(|a| a * a).sum::<f64>().sqrt();
    let (p_norm, r_norm) = (norm(p), norm(&r));
    let ratio = if p_norm > 0.0 && r_norm > 0.0 {
        p_norm / r_norm
    } else {
        1.0
    };
    for i in 0..p.len() {
        p[i] -= lr * ratio * r[i];
    }
}

#[test]
fn lion_follows_the_paper() {
    let mut o = Optimizer::parse(&json!({"name": "lion", "learningRate": 0.01, "beta1": 0.8, "beta2": 0.95})).unwrap();
    let mut params = vec![values(7, 1)];
    let mut p: Vec<f64> = params[0].iter().map(|&x| f64::from(x)).collect();
    let mut m = vec![0.0; 7];
    for step in 0..5 {
        run(&mut o, &mut params, step..step + 1);
        let g: Vec<f64> = values(7, step * 10).into_iter().map(f64::from).collect();
        lion_reference(&mut p, &mut m, &g, 0.01, 0.8, 0.95);
        assert_close(&format!("lion step {step}"), &params[0], &p, 1e-5);
    }
    // A zero direction leaves the weight where it is (Rust's signum would move it).
    let mut o = Optimizer::parse(&json!("lion")).unwrap();
    let mut p = vec![0.5f32, 0.5];
    o.begin_step();
    o.update(0, &mut p, &[0.0, 1.0]).unwrap();
    assert_eq!(p, vec![0.5, 0.499]);
}

#[test]
fn lamb_follows_the_paper() {
    let mut o =
        Optimizer::parse(&json!({"name": "lamb", "learningRate": 0.01, "beta1": 0.8, "epsilon": 1e-4})).unwrap();
    // The second parameter starts at zero: its trust ratio is 1 at the first step.
    let mut params = vec![values(6, 3), vec![0.0; 4]];
    let mut p: Vec<Vec<f64>> = params
        .iter()
        .map(|p| p.iter().map(|&x| f64::from(x)).collect())
        .collect();
    let mut m = vec![vec![0.0; 6], vec![0.0; 4]];
    let mut v = m.clone();
    for step in 0..5u32 {
        run(&mut o, &mut params, step..step + 1);
        for i in 0..2 {
            let g: Vec<f64> = values(p[i].len(), step * 10 + i as u32)
                .into_iter()
                .map(f64::from)
                .collect();
            lamb_reference(
                &mut p[i],
                &mut m[i],
                &mut v[i],
                &g,
                step as i32 + 1,
                0.01,
                0.8,
                0.999,
                1e-4,
            );
            assert_close(&format!("lamb step {step} param {i}"), &params[i], &p[i], 1e-5);
        }
    }
}

#[test]
fn lion_and_lamb_have_keras_defaults_and_round_trip() {
    let lion = Optimizer::parse(&json!("lion")).unwrap();
    assert_eq!(
        lion.rule,
        Rule::Lion {
            beta1: 0.9,
            beta2: 0.99
        }
    );
    assert_eq!(lion.learning_rate, 0.001);
    let lamb = Optimizer::parse(&json!("lamb")).unwrap();
    assert_eq!(
        lamb.rule,
        Rule::Lamb {
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-7
        }
    );
    assert_eq!(lamb.learning_rate, 0.001);
    for o in [lion, lamb] {
        let back = Optimizer::parse(&o.to_json()).unwrap();
        assert_eq!((back.rule, back.learning_rate), (o.rule, o.learning_rate));
    }
    let e = Optimizer::parse(&json!({"name": "lion", "beta1": 0})).unwrap_err();
    assert!(e.to_string().contains("beta1 must be in (0, 1]"), "{e}");
    let e = Optimizer::parse(&json!({"name": "lamb", "beta3": 0.5})).unwrap_err();
    assert!(e.to_string().contains("beta3"), "{e}");
}

#[test]
fn clipping_options_parse_validate_and_round_trip() {
    for (key, clip) in [
        ("clipnorm", Clip::Norm(2.0)),
        ("clipvalue", Clip::Value(2.0)),
        ("globalClipnorm", Clip::GlobalNorm(2.0)),
    ] {
        let o = Optimizer::parse(&json!({"name": "adam", key: 2.0})).unwrap();
        assert_eq!(o.clip(), Some(clip));
        assert_eq!(o.to_json()[key], json!(2.0));
        assert_eq!(Optimizer::parse(&o.to_json()).unwrap().clip(), Some(clip));
        for bad in [json!(0.0), json!(-1.0), json!("1")] {
            let e = Optimizer::parse(&json!({"name": "sgd", key: bad})).unwrap_err();
            assert!(e.to_string().contains(key), "{e}");
        }
    }
    let e = Optimizer::parse(&json!({"name": "sgd", "clipnorm": 1.0, "globalClipnorm": 2.0})).unwrap_err();
    assert!(
        e.to_string()
            .contains("only one of clipnorm, clipvalue and globalClipnorm"),
        "{e}"
    );
    assert_eq!(Optimizer::parse(&json!("sgd")).unwrap().to_json().get("clipnorm"), None);
}

#[test]
fn clipping_matches_keras_semantics() {
    let clip = |spec: Value, grads: &[Option<Vec<f32>>]| {
        let mut grads = grads.to_vec();
        Optimizer::parse(&spec).unwrap().clip_gradients(&mut grads);
        grads
    };
    // Per tensor: [3, 4] has norm 5 and becomes [1.2, 1.6]; [0.6, 0.8] (norm 1) is under 2.
    let grads = vec![Some(vec![3.0, 4.0]), None, Some(vec![0.6, 0.8])];
    assert_eq!(
        clip(json!({"name": "sgd", "clipnorm": 2.0}), &grads),
        vec![Some(vec![1.2, 1.6]), None, Some(vec![0.6, 0.8])]
    );
    // Jointly: the global norm is sqrt(26); everything is scaled by 2 / sqrt(26).
    let s = (2.0 / 26f64.sqrt()) as f32;
    assert_eq!(
        clip(json!({"name": "sgd", "globalClipnorm": 2.0}), &grads),
        vec![Some(vec![3.0 * s, 4.0 * s]), None, Some(vec![0.6 * s, 0.8 * s])]
    );
    assert_eq!(clip(json!({"name": "sgd", "globalClipnorm": 6.0}), &grads), grads);
    assert_eq!(
        clip(json!({"name": "sgd", "clipvalue": 0.7}), &grads),
        vec![Some(vec![0.7, 0.7]), None, Some(vec![0.6, 0.7])]
    );
    assert_eq!(
        clip(json!({"name": "sgd", "clipvalue": 0.7}), &[Some(vec![-3.0, -0.5])]),
        vec![Some(vec![-0.7, -0.5])]
    );
    // Keras turns every gradient into NaN when the global norm is not finite.
    let clipped = clip(
        json!({"name": "sgd", "globalClipnorm": 1.0}),
        &[Some(vec![f32::INFINITY]), Some(vec![1.0])],
    );
    assert!(clipped.iter().flatten().flatten().all(|x| x.is_nan()), "{clipped:?}");
    // All-zero gradients stay zero.
    let zeros = vec![Some(vec![0.0f32; 3])];
    assert_eq!(clip(json!({"name": "sgd", "clipnorm": 1.0}), &zeros), zeros);
    assert_eq!(clip(json!({"name": "sgd", "globalClipnorm": 1.0}), &zeros), zeros);
}

#[test]
fn matches_keras_lion_lamb_and_clipping() {
    let text = include_str!("../../../../../test/fixtures/keras/optimizer_refs.json");
    let refs: Value = serde_json::from_str(text).unwrap();
    let floats = |v: &Value| -> Vec<f32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    };
    let cases = refs["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 9);
    for case in cases {
        let mut o = Optimizer::parse(&case["config"]).unwrap();
        let mut params: Vec<Vec<f32>> = refs["initial"].as_array().unwrap().iter().map(floats).collect();
        for (step, (grads, after)) in refs["grads"]
            .as_array()
            .unwrap()
            .iter()
            .zip(case["after"].as_array().unwrap())
            .enumerate()
        {
            let mut grads: Vec<Option<Vec<f32>>> = grads.as_array().unwrap().iter().map(|g| Some(floats(g))).collect();
            o.clip_gradients(&mut grads);
            o.begin_step();
            for (i, p) in params.iter_mut().enumerate() {
                o.update(i, p, grads[i].as_ref().unwrap()).unwrap();
                let want: Vec<f64> = floats(&after[i]).into_iter().map(f64::from).collect();
                assert_close(&format!("{} step {step} param {i}", case["config"]), p, &want, 1e-6);
            }
        }
    }
}

#[test]
fn resuming_from_state_continues_bit_for_bit() {
    let configs = [
        json!({"name": "sgd", "learningRate": 0.1, "momentum": 0.9}),
        json!({"name": "sgd", "learningRate": 0.1, "momentum": 0.8, "nesterov": true}),
        json!({"name": "adam", "learningRate": 0.01}),
        json!({"name": "adamw", "learningRate": 0.01, "clipnorm": 0.5}),
        json!({"name": "rmsprop", "learningRate": 0.01}),
        json!({"name": "lion", "learningRate": 0.01}),
        json!({"name": "lamb", "learningRate": 0.01, "globalClipnorm": 1.0}),
        json!({"name": "lamb", "learningRate": {"name": "exponentialDecay", "initialLearningRate": 0.05,
                "decaySteps": 1, "decayRate": 0.5}}),
    ];
    for base in configs {
        for ema in [false, true] {
            let mut config = base.clone();
            if ema {
                config["useEma"] = json!(true);
                config["emaMomentum"] = json!(0.7);
            }
            let start = vec![values(5, 100), values(3, 200)];
            let mut x = Optimizer::parse(&config).unwrap();
            let mut x_params = start.clone();
            run(&mut x, &mut x_params, 0..4);

            let mut y = Optimizer::parse(&config).unwrap();
            let mut z_params = start.clone();
            run(&mut y, &mut z_params, 0..2);
            let mut z = Optimizer::parse(&config).unwrap();
            z.set_state(y.state().unwrap()).unwrap();
            run(&mut z, &mut z_params, 2..4);

            assert_eq!(z_params, x_params, "{config}");
            assert_eq!(z.state().unwrap(), x.state().unwrap(), "{config}");
            if ema {
                assert!(z.ema_of(0).is_some(), "{config}");
            }
            // And the run did move the weights (a no-op would pass the comparison).
            assert_ne!(x_params, start, "{config}");
        }
    }
}

#[test]
fn a_state_of_another_rule_is_an_error_not_a_panic() {
    let mut adam = Optimizer::parse(&json!("adam")).unwrap();
    let mut params = vec![values(4, 1)];
    run(&mut adam, &mut params, 0..1);
    let mut lion = Optimizer::parse(&json!("lion")).unwrap();
    lion.set_state(adam.state().unwrap()).unwrap();
    lion.begin_step();
    let e = lion.update(0, &mut params[0], &[0.0; 4]).unwrap_err();
    assert!(e.to_string().contains("optimizer update"), "{e}");
}
