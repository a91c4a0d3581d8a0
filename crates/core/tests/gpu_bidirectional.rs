//! Recurrent layers with goBackwards and the Bidirectional wrapper on the GPU: predictions,
//! losses and trained weights match the CPU's layer code (which the fixture suite checks
//! against Keras semantics: a goBackwards sequence comes out in processing order, the backward
//! copy inside Bidirectional in input order), returned and initial states included.
//!
//! Like gpu_model.rs these run on any wgpu adapter (Mesa's lavapipe without a GPU);
//! `CORTEX_SKIP_GPU_TESTS=1` skips them.

mod gpu_support;

use cortex_core::nn::model::Model;
use cortex_core::Tensor;
use gpu_support::*;
use serde_json::{json, Value};

const CELLS: [&str; 3] = ["LSTM", "GRU", "SimpleRNN"];

/// Relative tolerance on weights and predictions after training. Untrained predictions agree
/// within 1e-4 (about 3e-5 seen on lavapipe) and every loss within 1e-4; a few training steps
/// (Adam most) amplify the f32 rounding differences of the GPU's reductions up to about 4e-4
/// on the smallest weights, as in gpu_model.rs's recurrent tests.
const WEIGHTS_TOL: f32 = 1e-3;

fn seq(input: Value, layers: Value) -> Value {
    json!({"className": "Sequential", "inputShape": input, "layers": layers})
}

fn bidirectional(class: &str, inner: Value, merge: &str) -> Value {
    layer(
        "Bidirectional",
        json!({"layer": {"className": class, "config": inner}, "mergeMode": merge}),
    )
}

/// `steps` training steps on both models with the same losses; returns the CPU's losses.
fn train_alike(cpu: &mut Model, gpu: &mut Model, x: &Tensor, y: &Tensor, steps: usize, what: &str) -> Vec<f64> {
    (0..steps)
        .map(|step| train_step_alike(cpu, gpu, x, y, &format!("{what} step {step}")).0[0].1)
        .collect()
}

/// A goBackwards layer alone (its sequence or last state is the model output, so the output's
/// time order is checked directly), and between a per-step Dense and Flatten + Dense:
/// predictions, a few training steps and the trained weights match the CPU for every cell.
#[test]
fn go_backwards_layers_train_on_the_gpu_as_on_the_cpu() {
    if skip() {
        return;
    }
    let (x, batch, time) = (data(&[7, 6, 3], 0.3), 7, 6);
    for class in CELLS {
        for return_sequences in [true, false] {
            let what = format!("{class} goBackwards returnSequences={return_sequences}");
            let rnn = layer(
                class,
                json!({"units": 5, "goBackwards": true, "returnSequences": return_sequences}),
            );
            // The recurrent layer as the output.
            let config = seq(json!([time, 3]), json!([rnn.clone()]));
            let compile = json!({"optimizer": {"name": "sgd", "learningRate": 0.2, "momentum": 0.9},
                                 "loss": "meanSquaredError"});
            let (mut cpu, mut gpu) = pair(&config, compile.clone());
            assert_same_predictions(&mut cpu, &mut gpu, &x, 1e-4, &what);
            let y = if return_sequences {
                data(&[batch, time, 5], 1.7)
            } else {
                data(&[batch, 5], 1.7)
            };
            train_alike(&mut cpu, &mut gpu, &x, &y, 4, &what);
            assert_same_weights(&cpu, &gpu, WEIGHTS_TOL);
            assert_same_predictions(&mut cpu, &mut gpu, &x, WEIGHTS_TOL, &what);

            // After a per-step Dense (so the input gradient, reversed back, trains it) and
            // followed by a head, with Adam.
            let mut layers = vec![layer("Dense", json!({"units": 4, "activation": "tanh"})), rnn];
            if return_sequences {
                layers.push(layer("Flatten", json!({})));
            }
            layers.push(layer("Dense", json!({"units": 2})));
            let config = seq(json!([time, 3]), Value::Array(layers));
            let compile = json!({"optimizer": {"name": "adam", "learningRate": 0.01}, "loss": "meanSquaredError"});
            let (mut cpu, mut gpu) = pair(&config, compile);
            let y = data(&[batch, 2], 0.9);
            assert_same_predictions(&mut cpu, &mut gpu, &x, 1e-4, &format!("{what} + dense"));
            train_alike(&mut cpu, &mut gpu, &x, &y, 4, &format!("{what} + dense"));
            assert_same_weights(&cpu, &gpu, WEIGHTS_TOL);
            assert_same_predictions(&mut cpu, &mut gpu, &x, WEIGHTS_TOL, &what);
        }
    }
}

/// The GPU's goBackwards sequence is the forward layer's sequence on the time-reversed input,
/// in processing order (Keras), pinned without going through the CPU.
#[test]
fn go_backwards_sequence_is_in_processing_order_on_the_gpu() {
    if skip() {
        return;
    }
    let (batch, time, features) = (3, 5, 2);
    let x = data(&[batch, time, features], 0.6);
    let mut reversed = Vec::with_capacity(x.len());
    for b in 0..batch {
        for t in (0..time).rev() {
            reversed.extend_from_slice(&x.data()[(b * time + t) * features..][..features]);
        }
    }
    let reversed = Tensor::new(reversed, x.shape()).unwrap();
    let compile = json!({"optimizer": "sgd", "loss": "meanSquaredError", "device": "gpu!"});
    for class in CELLS {
        let model = |go_backwards: bool| {
            let config = seq(
                json!([time, features]),
                json!([layer(
                    class,
                    json!({"units": 4, "returnSequences": true, "goBackwards": go_backwards})
                )]),
            );
            let mut m = Model::from_config(&config, 5).unwrap();
            m.compile(&compile).unwrap();
            assert!(m.device_name().is_some());
            m
        };
        let (back, fwd) = (model(true), model(false));
        let (a, b) = (back.predict(&x, 8).unwrap(), fwd.predict(&reversed, 8).unwrap());
        let d = max_rel_diff(a.data(), b.data());
        assert!(d < 1e-5, "{class}: goBackwards differs from the reversed input by {d}");
    }
}

/// Bidirectional(LSTM), concat, returnSequences -> Flatten -> Dense (the head sees every step
/// at its own position, so the backward copy's time order matters), with Adam.
#[test]
fn bidirectional_lstm_concat_sequences_trains_on_the_gpu_as_on_the_cpu() {
    if skip() {
        return;
    }
    let config = seq(
        json!([6, 3]),
        json!([
            bidirectional("LSTM", json!({"units": 4, "returnSequences": true}), "concat"),
            layer("Flatten", json!({})),
            layer("Dense", json!({"units": 3}))
        ]),
    );
    let compile = json!({"optimizer": {"name": "adam", "learningRate": 0.01}, "loss": "meanSquaredError"});
    let (mut cpu, mut gpu) = pair(&config, compile);
    let (x, y) = (data(&[9, 6, 3], 0.2), data(&[9, 3], 1.4));
    assert_same_predictions(&mut cpu, &mut gpu, &x, 1e-4, "bi lstm concat");
    train_alike(&mut cpu, &mut gpu, &x, &y, 5, "bi lstm concat");
    assert_same_weights(&cpu, &gpu, WEIGHTS_TOL);
    assert_same_predictions(&mut cpu, &mut gpu, &x, WEIGHTS_TOL, "bi lstm concat");
}

/// Bidirectional over each cell and merge mode, with and without returnSequences, some with
/// the wrapped layer itself going backwards, some without bias, after a per-step Dense; the
/// merged output feeds a Dense head through GlobalAveragePooling1D or directly, or is itself
/// the output.
#[test]
fn bidirectional_merge_modes_train_on_the_gpu_as_on_the_cpu() {
    if skip() {
        return;
    }
    let cases = [
        ("GRU", "sum", false, json!({}), "dense"),
        ("GRU", "ave", true, json!({"useBias": false}), "pool"),
        ("SimpleRNN", "mul", true, json!({}), "output"),
        ("LSTM", "ave", false, json!({"goBackwards": true}), "dense"),
        ("SimpleRNN", "concat", true, json!({"goBackwards": true}), "output"),
        ("LSTM", "mul", false, json!({}), "output"),
        ("GRU", "concat", true, json!({}), "pool"),
    ];
    let (batch, time) = (8, 5);
    let x = data(&[batch, time, 3], 0.8);
    for (class, merge, return_sequences, extra, head) in cases {
        let what = format!("Bidirectional({class} {extra}) {merge} returnSequences={return_sequences} -> {head}");
        let mut inner = json!({"units": 4, "returnSequences": return_sequences});
        for (k, v) in extra.as_object().unwrap() {
            inner[k] = v.clone();
        }
        // A per-step Dense first: both directions' input gradients reach it.
        let mut layers = vec![
            layer("Dense", json!({"units": 3, "activation": "tanh"})),
            bidirectional(class, inner, merge),
        ];
        let width = if merge == "concat" { 8 } else { 4 };
        let y = match head {
            "output" if return_sequences => data(&[batch, time, width], 1.2),
            "output" => data(&[batch, width], 1.2),
            _ => data(&[batch, 2], 1.2),
        };
        if head == "pool" {
            layers.push(layer("GlobalAveragePooling1D", json!({})));
        }
        if head != "output" {
            layers.push(layer("Dense", json!({"units": 2})));
        }
        let config = seq(json!([time, 3]), Value::Array(layers));
        let compile = json!({"optimizer": {"name": "sgd", "learningRate": 0.1, "momentum": 0.9},
                             "loss": "meanSquaredError"});
        let (mut cpu, mut gpu) = pair(&config, compile);
        assert_same_predictions(&mut cpu, &mut gpu, &x, 1e-4, &what);
        train_alike(&mut cpu, &mut gpu, &x, &y, 4, &what);
        assert_same_weights(&cpu, &gpu, WEIGHTS_TOL);
        assert_same_predictions(&mut cpu, &mut gpu, &x, WEIGHTS_TOL, &what);
    }
}

/// Embedding -> Bidirectional(LSTM) -> Dense softmax, a text classifier: trains on the GPU
/// like on the CPU (same losses and accuracy, same weights) and its loss goes down.
#[test]
fn bidirectional_text_classifier_trains_on_the_gpu_as_on_the_cpu() {
    if skip() {
        return;
    }
    let config = seq(
        json!([8]),
        json!([
            layer("Embedding", json!({"inputDim": 20, "outputDim": 6})),
            bidirectional("LSTM", json!({"units": 8}), "concat"),
            layer("Dense", json!({"units": 3, "activation": "softmax"}))
        ]),
    );
    let compile = json!({"optimizer": {"name": "adam", "learningRate": 0.02},
                         "loss": "sparseCategoricalCrossentropy", "metrics": ["accuracy"]});
    let (mut cpu, mut gpu) = pair(&config, compile);
    let rows = 12;
    // The class is where token 1 sits: first, middle or last half (both directions matter).
    let mut tokens = Vec::with_capacity(rows * 8);
    let mut labels = Vec::with_capacity(rows);
    for r in 0..rows {
        let class = r % 3;
        let at = [0, 3, 7][class];
        tokens.extend((0..8).map(|t| {
            if t == at {
                1.0
            } else {
                (2 + (r * 7 + t * 3) % 18) as f32
            }
        }));
        labels.push(class as f32);
    }
    let x = Tensor::new(tokens, &[rows, 8]).unwrap();
    let y = Tensor::new(labels, &[rows]).unwrap();
    assert_same_predictions(&mut cpu, &mut gpu, &x, 1e-4, "text classifier");
    let mut losses = Vec::new();
    for step in 0..8 {
        let (a, b) = train_step_alike(&mut cpu, &mut gpu, &x, &y, &format!("text classifier step {step}"));
        assert_eq!(a[1], b[1], "step {step}: accuracy");
        losses.push(b[0].1);
    }
    assert_same_weights(&cpu, &gpu, WEIGHTS_TOL);
    assert_same_predictions(&mut cpu, &mut gpu, &x, WEIGHTS_TOL, "text classifier");
    let (first, last) = (losses[0], losses[losses.len() - 1]);
    assert!(last < 0.8 * first, "training should lower the loss: {losses:?}");
}

/// returnState and initial states train on the GPU as on the CPU: an encoder handing its
/// final states to a decoder (every cell), every output of an LSTM with returnState read by the
/// loss (its final cell state's gradient included), and a Bidirectional GRU's two final states.
#[test]
fn returned_and_initial_states_train_on_the_gpu_as_on_the_cpu() {
    if skip() {
        return;
    }
    let functional = |layers: Value, nodes: Value, out: usize| {
        json!({"className": "Functional", "inputs": [[5, 3]], "layers": layers, "nodes": nodes,
               "outputs": [[out, 0]]})
    };
    let mut cases = Vec::new();
    for class in CELLS {
        let states: Vec<Value> = (1..=if class == "LSTM" { 2 } else { 1 })
            .map(|k| json!([0, k]))
            .collect();
        let mut decoder_inputs = vec![json!([-1, 0])];
        decoder_inputs.extend(states);
        cases.push((
            format!("{class} encoder -> decoder"),
            functional(
                json!([
                    layer(class, json!({"units": 4, "returnState": true})),
                    layer(class, json!({"units": 4})),
                    layer("Dense", json!({"units": 2}))
                ]),
                json!([{"layer": 0, "inputs": [[-1, 0]]}, {"layer": 1, "inputs": decoder_inputs},
                       {"layer": 2, "inputs": [[1, 0]]}]),
                2,
            ),
        ));
    }
    cases.push((
        "LSTM output, h and c".into(),
        functional(
            json!([
                layer("LSTM", json!({"units": 4, "returnState": true, "goBackwards": true})),
                layer("Concatenate", json!({})),
                layer("Dense", json!({"units": 2}))
            ]),
            json!([{"layer": 0, "inputs": [[-1, 0]]}, {"layer": 1, "inputs": [[0, 0], [0, 1], [0, 2]]},
                   {"layer": 2, "inputs": [[1, 0]]}]),
            2,
        ),
    ));
    cases.push((
        "Bidirectional GRU states".into(),
        functional(
            json!([
                bidirectional(
                    "GRU",
                    json!({"units": 4, "returnState": true, "returnSequences": true}),
                    "sum"
                ),
                layer("Concatenate", json!({})),
                layer("Dense", json!({"units": 2}))
            ]),
            json!([{"layer": 0, "inputs": [[-1, 0]]}, {"layer": 1, "inputs": [[0, 1], [0, 2]]},
                   {"layer": 2, "inputs": [[1, 0]]}]),
            2,
        ),
    ));
    let x = data(&[6, 5, 3], 0.3);
    let y = data(&[6, 2], 0.9);
    let compile = json!({"optimizer": {"name": "adam", "learningRate": 0.02}, "loss": "meanSquaredError"});
    for (what, config) in cases {
        let (mut cpu, mut gpu) = pair(&config, compile.clone());
        assert_same_predictions(&mut cpu, &mut gpu, &x, 1e-4, &what);
        train_alike(&mut cpu, &mut gpu, &x, &y, 4, &what);
        assert_same_weights(&cpu, &gpu, WEIGHTS_TOL);
        assert_same_predictions(&mut cpu, &mut gpu, &x, WEIGHTS_TOL, &what);
    }
}
