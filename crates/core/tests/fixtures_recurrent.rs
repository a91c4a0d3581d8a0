//! Recurrent layers: every SimpleRNN / LSTM / GRU fixture case against the PyTorch float64
//! references in test/fixtures/fixtures.json (forward and all gradients, through the layer),
//! plus Keras semantics that the fixtures do not cover: returned states, goBackwards, masking,
//! initial states, Bidirectional, finite-difference gradients and input errors. The fixture
//! cases also run on the GPU backend (a one-layer GPU model; `CORTEX_SKIP_GPU_TESTS=1` skips).

use cortex_core::backprop::backward_with_seed;
use cortex_core::nn::layers::{self, ForwardCtx, Layer};
use cortex_core::rng::Rng;
use cortex_core::{ops, Device, Tensor};
use serde_json::{json, Value};

mod common;
mod fixture_support;
use common::{check_planner_case, skip_gpu};
use fixture_support::{assert_close, cases, data_of, shape_of};

fn class_of(op: &str) -> &'static str {
    match op {
        "simple_rnn" => "SimpleRNN",
        "lstm" => "LSTM",
        "gru" => "GRU",
        other => panic!("no recurrent layer for {other}"),
    }
}

fn ctx(rng: &mut Rng) -> ForwardCtx<'_> {
    ForwardCtx::new(false, rng)
}

/// One recurrent fixture case through the layer code on the CPU and, unless GPU tests are
/// skipped, again with the weights and input on the GPU, then through the GPU planner.
fn check_case(case: &Value) {
    let (config, keys) = check_case_on(case, Device::Cpu);
    if skip_gpu() {
        return;
    }
    check_case_on(case, Device::Gpu);
    let class = class_of(case["op"].as_str().unwrap());
    check_planner_case(case, class, &config, &keys);
}

/// The case through the layer code with its weights and input on `device`; returns the
/// layer config and the weight names.
fn check_case_on(case: &Value, device: Device) -> (Value, Vec<String>) {
    let name = format!("{} ({})", case["name"].as_str().unwrap(), device.name());
    let attrs = &case["attrs"];
    let x_ref = &case["inputs"]["x"];
    let x_shape = shape_of(x_ref);
    let mut config = json!({"name": "rnn", "units": attrs["units"], "returnSequences": attrs["return_sequences"]});
    if let Some(r) = attrs.get("reset_after") {
        config["resetAfter"] = r.clone();
    }
    let (mut layer, _) = layers::from_config(class_of(case["op"].as_str().unwrap()), &config).unwrap();
    layer.build(&x_shape[1..], &mut Rng::new(0)).unwrap();
    let params = layer.params();
    assert_eq!(params.len(), 3, "{name}: kernel, recurrent_kernel, bias");
    for p in &params {
        let key = p.name.split('/').next_back().unwrap();
        assert_eq!(p.shape(), shape_of(&case["params"][key]), "{name}: {key} shape");
        p.set(data_of(&case["params"][key])).unwrap();
        p.to_device(device).unwrap();
    }
    let x = Tensor::new(data_of(x_ref), &x_shape)
        .unwrap()
        .to(device)
        .unwrap()
        .with_requires_grad(true);
    let mut rng = Rng::new(0);
    let y = layer.forward(&x, &mut ctx(&mut rng)).unwrap();
    assert_eq!(y.device(), device, "{name}: the output stays on the device");
    assert_eq!(
        y.shape(),
        shape_of(&case["outputs"]["y"]).as_slice(),
        "{name}: output shape"
    );
    assert_close(&format!("{name} y"), y.data(), &data_of(&case["outputs"]["y"]));
    let leaves: Vec<Tensor> = params.iter().map(|p| p.get()).collect();
    let grads = backward_with_seed(&y, data_of(&case["cotangents"]["y"])).unwrap();
    assert_close(
        &format!("{name} dx"),
        grads.get(&x).unwrap(),
        &data_of(&case["grads"]["x"]),
    );
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
    (config, keys)
}

fn run_op(op: &str) -> usize {
    cases(op).iter().map(check_case).count()
}

#[test]
fn simple_rnn_matches_pytorch() {
    assert_eq!(run_op("simple_rnn"), 2);
}

#[test]
fn lstm_matches_pytorch() {
    assert_eq!(run_op("lstm"), 2);
}

#[test]
fn gru_matches_pytorch() {
    assert_eq!(run_op("gru"), 2);
}

// ---------------------------------------------------------------------------------------------
// Helpers for the semantic tests

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut r = Rng::new(seed);
    (0..n).map(|_| r.uniform() * 2.0 - 1.0).collect()
}

/// A built layer with random (seeded) weights.
fn layer(class: &str, config: Value, features: usize) -> Box<dyn Layer> {
    let mut config = config;
    config["name"] = json!(config.get("name").cloned().unwrap_or(json!("rnn")));
    let (mut l, _) = layers::from_config(class, &config).unwrap();
    l.build(&[5, features], &mut Rng::new(11)).unwrap();
    // Non-trivial biases so every term of the cell is exercised.
    for (i, p) in l.params().iter().enumerate() {
        if p.name.ends_with("bias") {
            p.set(values(p.get().len(), 100 + i as u64).iter().map(|v| v * 0.5).collect())
                .unwrap();
        }
    }
    l
}

/// Copies every weight of `from` into `to` (same layout).
fn copy_weights(from: &[&cortex_core::nn::param::Param], to: &[&cortex_core::nn::param::Param]) {
    assert_eq!(from.len(), to.len());
    for (a, b) in from.iter().zip(to) {
        b.set(a.get().to_vec()).unwrap();
    }
}

fn call(l: &dyn Layer, inputs: &[Tensor], mask: Option<Tensor>) -> Vec<Tensor> {
    let mut rng = Rng::new(0);
    let mut c = ForwardCtx::new(false, &mut rng);
    c.input_masks = vec![mask];
    l.call(inputs, &mut c).unwrap()
}

/// Rows `keep` of time steps of `x [b, t, f]` for batch row `row`, as a `[1, keep.len(), f]` tensor.
fn pick_steps(x: &Tensor, row: usize, keep: &[usize]) -> Tensor {
    let (t, f) = (x.shape()[1], x.shape()[2]);
    let mut d = Vec::new();
    for &s in keep {
        d.extend_from_slice(&x.data()[(row * t + s) * f..(row * t + s + 1) * f]);
    }
    Tensor::new(d, &[1, keep.len(), f]).unwrap()
}

fn assert_near(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol * (1.0 + w.abs()), "{what}[{i}]: got {g}, want {w}");
    }
}

const CELLS: [&str; 3] = ["SimpleRNN", "LSTM", "GRU"];

// ---------------------------------------------------------------------------------------------
// Semantics

#[test]
fn return_state_gives_output_and_final_states() {
    for class in CELLS {
        let l = layer(
            class,
            json!({"units": 3, "returnSequences": true, "returnState": true}),
            4,
        );
        let x = Tensor::new(values(2 * 5 * 4, 1), &[2, 5, 4]).unwrap();
        let outs = call(l.as_ref(), std::slice::from_ref(&x), None);
        let n_states = if class == "LSTM" { 2 } else { 1 };
        assert_eq!(outs.len(), 1 + n_states, "{class}");
        assert_eq!(outs[0].shape(), [2, 5, 3]);
        for s in &outs[1..] {
            assert_eq!(s.shape(), [2, 3]);
        }
        // The final hidden state is the last step's output.
        for b in 0..2 {
            assert_eq!(
                &outs[0].data()[(b * 5 + 4) * 3..(b * 5 + 5) * 3],
                &outs[1].data()[b * 3..(b + 1) * 3]
            );
        }
        let mut l2 = layer(class, json!({"units": 3, "returnState": true}), 4);
        let shapes = l2.build_many(&[vec![5, 4]], &mut Rng::new(0)).unwrap();
        assert_eq!(shapes.len(), 1 + n_states);
        assert_eq!(shapes[0], vec![3]);
        // Plain forward still returns the output alone.
        let mut rng = Rng::new(0);
        assert_eq!(l.forward(&x, &mut ctx(&mut rng)).unwrap().shape(), [2, 5, 3]);
    }
}

/// Inference (`no_grad`: the forward keeps no tape) gives the same outputs and states as a
/// recorded forward, for every cell, with and without a mask, forwards and backwards, at batch
/// sizes on either side of the cutoff (4 rows per chunk) below which `h·U` runs as the packed
/// register-tiled product (`cpu::gemv`) instead of through the `gemm` crate. Row 0 of batch 9
/// (`gemm` path) is also checked against that row alone (packed path).
#[test]
fn inference_without_a_tape_matches_the_recorded_forward() {
    for class in CELLS {
        for go_backwards in [false, true] {
            for batch in [1usize, 3, 9] {
                let cfg =
                    json!({"units": 20, "returnSequences": true, "returnState": true, "goBackwards": go_backwards});
                let l = layer(class, cfg, 7);
                // 20 steps: enough for the packed-`U` path of small chunks (>= 16 steps).
                let x = Tensor::new(values(batch * 20 * 7, 40 + batch as u64), &[batch, 20, 7]).unwrap();
                let mask: Vec<f32> = (0..batch * 20).map(|i| if i % 5 == 3 { 0.0 } else { 1.0 }).collect();
                let mask = Tensor::new(mask, &[batch, 20]).unwrap();
                for m in [None, Some(mask)] {
                    let taped = call(l.as_ref(), std::slice::from_ref(&x), m.clone());
                    assert!(taped[0].tracks(), "the training-mode forward records");
                    let inferred =
                        cortex_core::tensor::no_grad(|| call(l.as_ref(), std::slice::from_ref(&x), m.clone()));
                    let what = format!("{class} b{batch} goBackwards={go_backwards} mask={}", m.is_some());
                    for (a, b) in inferred.iter().zip(&taped) {
                        assert_near(&what, a.data(), b.data(), 1e-5);
                    }
                    if batch == 9 && m.is_none() {
                        let all: Vec<usize> = (0..20).collect();
                        let alone = call(l.as_ref(), &[pick_steps(&x, 0, &all)], None);
                        assert_near(
                            &format!("{what} row 0 alone"),
                            alone[0].data(),
                            &taped[0].data()[..20 * 20],
                            1e-5,
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn go_backwards_runs_the_reversed_sequence_and_returns_it_in_processing_order() {
    for class in CELLS {
        let back = layer(
            class,
            json!({"units": 3, "returnSequences": true, "goBackwards": true}),
            4,
        );
        let fwd = layer(class, json!({"units": 3, "returnSequences": true}), 4);
        copy_weights(&back.params(), &fwd.params());
        let x = Tensor::new(values(2 * 5 * 4, 2), &[2, 5, 4]).unwrap();
        let mut rev = Vec::new();
        for b in 0..2 {
            for s in (0..5).rev() {
                rev.extend_from_slice(&x.data()[(b * 5 + s) * 4..(b * 5 + s + 1) * 4]);
            }
        }
        let rev = Tensor::new(rev, &[2, 5, 4]).unwrap();
        let yb = call(back.as_ref(), &[x], None).remove(0);
        let yf = call(fwd.as_ref(), &[rev], None).remove(0);
        assert_near(class, yb.data(), yf.data(), 1e-6);
    }
}

#[test]
fn masked_steps_keep_the_state() {
    for class in CELLS {
        for go_backwards in [false, true] {
            let cfg = json!({"units": 3, "returnSequences": true, "returnState": true, "goBackwards": go_backwards});
            let l = layer(class, cfg, 4);
            let x = Tensor::new(values(2 * 5 * 4, 3), &[2, 5, 4]).unwrap();
            // Row 0: steps 2 and 4 padded; row 1: nothing padded.
            let mask = Tensor::new(vec![1., 1., 0., 1., 0., 1., 1., 1., 1., 1.], &[2, 5]).unwrap();
            let outs = call(l.as_ref(), std::slice::from_ref(&x), Some(mask));
            // Row 0 must equal the sequence of its kept steps alone.
            let alone = call(l.as_ref(), &[pick_steps(&x, 0, &[0, 1, 3])], None);
            let what = format!("{class} goBackwards={go_backwards}");
            for (o, a) in outs[1..].iter().zip(&alone[1..]) {
                assert_near(&format!("{what} state"), &o.data()[..3], a.data(), 1e-6);
            }
            // In processing order, a masked step repeats the previous output.
            let seq = |s: usize| &outs[0].data()[s * 3..(s + 1) * 3];
            // (Forward the padded steps are visited 2nd and 4th; backwards 0th and 2nd.)
            assert_eq!(seq(1), seq(2), "{what}: masked step output");
            if go_backwards {
                assert_eq!(
                    seq(0),
                    [0.0; 3],
                    "{what}: a leading masked step outputs the initial state"
                );
            } else {
                assert_eq!(seq(3), seq(4), "{what}: masked step output");
            }
            // Row 1 is unaffected by row 0's mask.
            let row1 = call(l.as_ref(), &[pick_steps(&x, 1, &[0, 1, 2, 3, 4])], None);
            assert_near(&format!("{what} row 1"), &outs[0].data()[15..], row1[0].data(), 1e-6);
        }
    }
}

#[test]
fn initial_states_continue_a_sequence() {
    for class in CELLS {
        let l = layer(class, json!({"units": 3, "returnState": true}), 4);
        let x = Tensor::new(values(2 * 5 * 4, 4), &[2, 5, 4]).unwrap();
        let full = call(l.as_ref(), std::slice::from_ref(&x), None);
        let part = |steps: &[usize]| -> Tensor {
            let rows: Vec<Tensor> = (0..2).map(|b| pick_steps(&x, b, steps)).collect();
            let mut d = rows[0].to_vec();
            d.extend(rows[1].data());
            Tensor::new(d, &[2, steps.len(), 4]).unwrap()
        };
        let first = call(l.as_ref(), &[part(&[0, 1])], None);
        let mut inputs = vec![part(&[2, 3, 4])];
        inputs.extend(first[1..].iter().cloned());
        let second = call(l.as_ref(), &inputs, None);
        for (a, b) in full.iter().zip(&second) {
            assert_near(class, a.data(), b.data(), 1e-6);
        }
    }
}

#[test]
fn bidirectional_equals_a_forward_and_a_backward_layer() {
    for class in CELLS {
        for merge in ["concat", "sum", "mul", "ave"] {
            let inner = json!({"className": class, "config": {"units": 3, "returnSequences": true}});
            let bi = layer(
                "Bidirectional",
                json!({"name": "bi", "layer": inner, "mergeMode": merge}),
                4,
            );
            let names: Vec<String> = bi.params().iter().map(|p| p.name.clone()).collect();
            let base = layers::base_name(class);
            assert_eq!(names[0], format!("bi/forward_{base}/kernel"));
            assert_eq!(names[names.len() / 2], format!("bi/backward_{base}/kernel"));
            let fwd = layer(class, json!({"units": 3, "returnSequences": true}), 4);
            let back = layer(
                class,
                json!({"units": 3, "returnSequences": true, "goBackwards": true}),
                4,
            );
            let p = bi.params();
            let half = p.len() / 2;
            copy_weights(&p[..half], &fwd.params());
            copy_weights(&p[half..], &back.params());
            let x = Tensor::new(values(2 * 5 * 4, 5), &[2, 5, 4]).unwrap();
            let y = call(bi.as_ref(), std::slice::from_ref(&x), None).remove(0);
            let yf = call(fwd.as_ref(), std::slice::from_ref(&x), None).remove(0);
            let yb = call(back.as_ref(), &[x], None).remove(0);
            let width = if merge == "concat" { 6 } else { 3 };
            assert_eq!(y.shape(), [2, 5, width], "{class} {merge}");
            for b in 0..2 {
                for s in 0..5 {
                    let f = &yf.data()[(b * 5 + s) * 3..][..3];
                    // The backward layer's output comes back in input time order.
                    let r = &yb.data()[(b * 5 + 4 - s) * 3..][..3];
                    let want: Vec<f32> = match merge {
                        "concat" => f.iter().chain(r).copied().collect(),
                        "sum" => f.iter().zip(r).map(|(a, b)| a + b).collect(),
                        "mul" => f.iter().zip(r).map(|(a, b)| a * b).collect(),
                        _ => f.iter().zip(r).map(|(a, b)| (a + b) / 2.0).collect(),
                    };
                    assert_near(
                        &format!("{class} {merge}"),
                        &y.data()[(b * 5 + s) * width..][..width],
                        &want,
                        1e-6,
                    );
                }
            }
        }
    }
}

#[test]
fn bidirectional_states_masks_and_config() {
    let inner = json!({"className": "LSTM", "config": {"units": 3, "returnState": true}});
    let mut bi = layer("Bidirectional", json!({"layer": inner, "mergeMode": "sum"}), 4);
    let shapes = bi.build_many(&[vec![5, 4]], &mut Rng::new(0)).unwrap();
    assert_eq!(shapes, vec![vec![3], vec![3], vec![3], vec![3], vec![3]]);
    let x = Tensor::new(values(2 * 5 * 4, 6), &[2, 5, 4]).unwrap();
    let outs = call(bi.as_ref(), std::slice::from_ref(&x), None);
    assert_eq!(outs.len(), 5);
    // Forward h + backward h is the summed output.
    let sum: Vec<f32> = outs[1].data().iter().zip(outs[3].data()).map(|(a, b)| a + b).collect();
    assert_near("sum of final states", outs[0].data(), &sum, 1e-6);
    // Initial states: forward (h, c) then backward (h, c).
    let zeros = Tensor::zeros(&[2, 3]);
    let with = call(
        bi.as_ref(),
        &[x.clone(), zeros.clone(), zeros.clone(), zeros.clone(), zeros],
        None,
    );
    assert_near("zero initial states", with[0].data(), outs[0].data(), 1e-7);
    // Config rebuilds the same layer.
    let config = bi.config();
    assert_eq!(config["layer"]["className"], "LSTM");
    assert_eq!(config["mergeMode"], "sum");
    let (mut again, _) = layers::from_config("Bidirectional", &config).unwrap();
    again.build(&[5, 4], &mut Rng::new(0)).unwrap();
    let names: Vec<String> = again.params().iter().map(|p| p.name.clone()).collect();
    let want: Vec<String> = bi.params().iter().map(|p| p.name.clone()).collect();
    assert_eq!(names, want);

    // With returnSequences and a mask, masked steps output zeros in both directions (Keras).
    let inner = json!({"className": "GRU", "config": {"units": 3, "returnSequences": true}});
    let bi = layer("Bidirectional", json!({"layer": inner}), 4);
    let mask = Tensor::new(vec![1., 1., 1., 0., 0., 1., 1., 1., 1., 1.], &[2, 5]).unwrap();
    let mut rng = Rng::new(0);
    let mut c = ForwardCtx::new(false, &mut rng);
    c.input_masks = vec![Some(mask.clone())];
    let y = bi.call(std::slice::from_ref(&x), &mut c).unwrap().remove(0);
    assert!(y.data()[18..30].iter().all(|&v| v == 0.0), "padded steps are zero");
    let kept = bi
        .call(
            &[pick_steps(&x, 0, &[0, 1, 2])],
            &mut ForwardCtx::new(false, &mut Rng::new(0)),
        )
        .unwrap();
    assert_near("masked row equals truncated row", &y.data()[..18], kept[0].data(), 1e-6);
    let out_mask = c.output_masks.unwrap();
    assert_eq!(
        out_mask[0].as_ref().unwrap().data(),
        mask.data(),
        "sequence output keeps the mask"
    );
}

/// Central finite differences of `sum(outputs * cotangents)` against the analytic gradients of
/// the input, the initial states and every weight, for a masked batch of `batch` rows.
fn check_gradients(class: &str, options: Value, batch: usize) {
    let mut cfg = json!({"units": 3, "returnSequences": true, "returnState": true});
    cfg.as_object_mut()
        .unwrap()
        .extend(options.as_object().unwrap().clone());
    let what = format!("{class} {options} batch {batch}");
    let l = layer(class, cfg, 4);
    let x = Tensor::variable(values(batch * 5 * 4, 7), &[batch, 5, 4]).unwrap();
    // Row 0 has padded steps inside and at the end, row 1 a padded first step, others none.
    let rows = [[1., 0., 1., 1., 0.], [0., 1., 1., 1., 1.], [1.; 5]];
    let mask: Vec<f32> = (0..batch).flat_map(|b| rows[b.min(2)]).collect();
    let mask = Tensor::new(mask, &[batch, 5]).unwrap();
    let n_states = if class == "LSTM" { 2 } else { 1 };
    let mut inputs = vec![x];
    inputs.extend((0..n_states).map(|i| Tensor::variable(values(batch * 3, 20 + i as u64), &[batch, 3]).unwrap()));
    let cots: Vec<Vec<f32>> = (0..1 + n_states)
        .map(|i| values(if i == 0 { batch * 15 } else { batch * 3 }, 40 + i as u64))
        .collect();
    let loss = |inputs: &[Tensor]| -> f64 {
        let outs = call(l.as_ref(), inputs, Some(mask.clone()));
        let dot =
            |(o, c): (&Tensor, &Vec<f32>)| o.data().iter().zip(c).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>();
        outs.iter().zip(&cots).map(dot).sum()
    };
    // One scalar: the sum over outputs of <output, cotangent>.
    let outs = call(l.as_ref(), &inputs, Some(mask.clone()));
    let terms: Vec<Tensor> = outs
        .iter()
        .zip(&cots)
        .map(|(o, c)| ops::sum(&ops::mul(o, &Tensor::new(c.clone(), o.shape()).unwrap()).unwrap()).unwrap())
        .collect();
    let total = terms[1..]
        .iter()
        .fold(terms[0].clone(), |acc, t| ops::add(&acc, t).unwrap());
    let grads = backward_with_seed(&total, vec![1.0]).unwrap();
    let eps = 1e-2f32;
    let check = |name: &str, analytic: &[f32], perturb: &dyn Fn(usize, f32) -> f64| {
        for (i, &an) in analytic.iter().enumerate() {
            let fd = (perturb(i, eps) - perturb(i, -eps)) / (2.0 * eps as f64);
            assert!(
                (fd as f32 - an).abs() <= 2e-3 * (1.0 + fd.abs() as f32),
                "{what} d{name}[{i}]: finite difference {fd}, analytic {an}"
            );
        }
    };
    for (k, t) in inputs.iter().enumerate() {
        let perturb = |i: usize, e: f32| {
            let mut d = t.to_vec();
            d[i] += e;
            let mut ins = inputs.clone();
            ins[k] = Tensor::new(d, t.shape()).unwrap();
            loss(&ins)
        };
        check(&format!("input{k}"), grads.get(t).unwrap(), &perturb);
    }
    for p in l.params() {
        let leaf = p.get();
        let original = leaf.to_vec();
        let perturb = |i: usize, e: f32| {
            let mut d = original.clone();
            d[i] += e;
            p.set(d).unwrap();
            let v = loss(&inputs);
            p.set(original.clone()).unwrap();
            v
        };
        check(&p.name, grads.get(&leaf).unwrap(), &perturb);
    }
}

#[test]
fn masked_gradients_match_finite_differences() {
    for class in CELLS {
        for go_backwards in [false, true] {
            check_gradients(class, json!({ "goBackwards": go_backwards }), 2);
        }
        // One row (a single chunk, whole-batch GEMMs) and three (uneven chunks).
        check_gradients(class, json!({}), 1);
        check_gradients(class, json!({}), 3);
    }
}

#[test]
fn other_activations_have_correct_gradients() {
    // gelu / swish derivatives need the saved pre-activations; elu's comes from its output.
    check_gradients("SimpleRNN", json!({"activation": "gelu"}), 2);
    check_gradients("SimpleRNN", json!({"activation": "elu"}), 2);
    check_gradients("LSTM", json!({"activation": "swish"}), 2);
    check_gradients(
        "LSTM",
        json!({"activation": "elu", "recurrentActivation": "gelu", "goBackwards": true}),
        3,
    );
    check_gradients("GRU", json!({"activation": "elu"}), 2);
    check_gradients("GRU", json!({"recurrentActivation": "swish"}), 3);
}

#[test]
fn options_and_input_errors_are_reported() {
    let err = |class: &str, cfg: Value| layers::from_config(class, &cfg).err().expect("should fail").to_string();
    let e = err("GRU", json!({"units": 3, "resetAfter": false}));
    assert!(e.contains("resetAfter"), "{e}");
    let e = err("LSTM", json!({"units": 3, "unitz": 2}));
    assert!(e.contains("unitz"), "{e}");
    let e = err("SimpleRNN", json!({"units": 3, "recurrentActivation": "sigmoid"}));
    assert!(e.contains("recurrentActivation"), "{e}");
    let e = err(
        "Bidirectional",
        json!({"layer": {"className": "Dense", "config": {"units": 2}}}),
    );
    assert!(e.contains("LSTM"), "{e}");
    let e = err(
        "Bidirectional",
        json!({"layer": {"className": "LSTM", "config": {"units": 2}}, "mergeMode": "max"}),
    );
    assert!(e.contains("mergeMode"), "{e}");
    let e = err("LSTM", json!({"units": 3, "activation": "nope"}));
    assert!(e.contains("nope"), "{e}");

    let (mut l, _) = layers::from_config("LSTM", &json!({"units": 3})).unwrap();
    let mut rng = Rng::new(0);
    let x = Tensor::new(values(2 * 5 * 4, 8), &[2, 5, 4]).unwrap();
    let e = l.forward(&x, &mut ctx(&mut rng)).unwrap_err().to_string();
    assert!(e.contains("built"), "{e}");
    let e = l.build(&[4], &mut Rng::new(0)).unwrap_err().to_string();
    assert!(e.contains("[time, features]"), "{e}");
    l.build(&[5, 4], &mut Rng::new(0)).unwrap();
    let e = l
        .forward(&Tensor::zeros(&[2, 4]), &mut ctx(&mut rng))
        .unwrap_err()
        .to_string();
    assert!(e.contains("[batch, time >= 1, 4]") && e.contains("[2, 4]"), "{e}");
    let e = l
        .forward(&Tensor::zeros(&[2, 5, 6]), &mut ctx(&mut rng))
        .unwrap_err()
        .to_string();
    assert!(e.contains("4") && e.contains("[2, 5, 6]"), "{e}");
    let e = l
        .call(&[x.clone(), Tensor::zeros(&[2, 3])], &mut ctx(&mut rng))
        .unwrap_err()
        .to_string();
    assert!(e.contains("initial state"), "{e}");
    let e = l
        .call(
            &[x.clone(), Tensor::zeros(&[2, 4]), Tensor::zeros(&[2, 3])],
            &mut ctx(&mut rng),
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("[2, 3]") && e.contains("[2, 4]"), "{e}");
    let mut c = ForwardCtx::new(false, &mut rng);
    c.input_masks = vec![Some(Tensor::zeros(&[2, 4]))];
    let e = l.forward(&x, &mut c).unwrap_err().to_string();
    assert!(e.contains("mask"), "{e}");
    let e = l
        .build_many(&[vec![5, 4], vec![3]], &mut Rng::new(0))
        .unwrap_err()
        .to_string();
    assert!(e.contains("initial state"), "{e}");
}

#[test]
fn config_round_trips_and_initializers_follow_keras() {
    let (mut l, _) = layers::from_config("LSTM", &json!({"name": "l", "units": 4, "returnSequences": true})).unwrap();
    l.build(&[7, 3], &mut Rng::new(1)).unwrap();
    let config = l.config();
    assert_eq!(config["recurrentInitializer"], "orthogonal");
    assert_eq!(config["unitForgetBias"], true);
    let (mut again, _) = layers::from_config("LSTM", &config).unwrap();
    assert_eq!(again.build(&[7, 3], &mut Rng::new(1)).unwrap(), vec![7, 4]);
    let p = l.params();
    assert_eq!(
        p.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        ["l/kernel", "l/recurrent_kernel", "l/bias"]
    );
    assert_eq!(p[0].shape(), [3, 16]);
    assert_eq!(p[1].shape(), [4, 16]);
    // unitForgetBias: forget-gate slice of the bias starts at one, the rest at zero.
    let b = p[2].get().to_vec();
    assert!(b[..4].iter().chain(&b[8..]).all(|&v| v == 0.0) && b[4..8].iter().all(|&v| v == 1.0));
    // Orthogonal recurrent kernel: U U^T = I for [4, 16].
    let u = p[1].get().to_vec();
    for i in 0..4 {
        for j in 0..4 {
            let d: f32 = (0..16).map(|k| u[i * 16 + k] * u[j * 16 + k]).sum();
            assert!((d - if i == j { 1.0 } else { 0.0 }).abs() < 1e-5);
        }
    }
    let (mut g, _) = layers::from_config("GRU", &json!({"units": 2, "useBias": true})).unwrap();
    g.build(&[3, 5], &mut Rng::new(0)).unwrap();
    assert_eq!(g.params()[2].shape(), [2, 6]);
    let (mut s, _) = layers::from_config(
        "SimpleRNN",
        &json!({"units": 2, "useBias": false, "recurrentInitializer": "glorotUniform"}),
    )
    .unwrap();
    s.build(&[3, 5], &mut Rng::new(0)).unwrap();
    assert_eq!(s.params().len(), 2);
}
