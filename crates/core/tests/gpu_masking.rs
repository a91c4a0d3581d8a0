//! Keras masking on the GPU: an Embedding with maskZero feeding LSTM, GRU and SimpleRNN layers
//! (directly, stacked with returnSequences, goBackwards, inside Bidirectional) on padded token
//! sequences gives the CPU's predictions, losses and trained weights, and so does a mask
//! reaching self-attention.
//!
//! Like gpu_model.rs these run on any wgpu adapter (Mesa's lavapipe without a GPU);
//! `CORTEX_SKIP_GPU_TESTS=1` skips them.

mod gpu_support;

use cortex_core::nn::model::Model;
use cortex_core::Tensor;
use gpu_support::*;
use serde_json::{json, Value};

const CELLS: [&str; 3] = ["LSTM", "GRU", "SimpleRNN"];
const TIME: usize = 6;
const VOCAB: usize = 13;
/// Relative tolerance on weights and predictions after training (as gpu_bidirectional.rs).
const WEIGHTS_TOL: f32 = 1e-3;

/// Padded token ids `[8, 6]`: trailing zeros, leading zeros, interior zeros, an all-zero row,
/// full rows.
fn tokens() -> Tensor {
    let rows: [[u32; TIME]; 8] = [
        [3, 5, 1, 7, 0, 0],
        [0, 0, 4, 2, 9, 1],
        [2, 0, 6, 0, 3, 8],
        [0, 0, 0, 0, 0, 0],
        [1, 2, 3, 4, 5, 6],
        [12, 11, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 10],
        [7, 8, 9, 10, 11, 12],
    ];
    let data = rows.iter().flatten().map(|&v| v as f32).collect();
    Tensor::new(data, &[8, TIME]).unwrap()
}

fn seq(layers: Value) -> Value {
    json!({"className": "Sequential", "inputShape": [TIME], "layers": layers})
}

fn embedding() -> Value {
    layer(
        "Embedding",
        json!({"inputDim": VOCAB, "outputDim": 5, "maskZero": true}),
    )
}

/// Predictions, `steps` Adam steps (every loss within 1e-4), then weights and predictions.
fn check_parity(config: &Value, y: &Tensor, what: &str) {
    let compile = json!({"optimizer": {"name": "adam", "learningRate": 0.02}, "loss": "meanSquaredError"});
    let (mut cpu, mut gpu) = pair(config, compile);
    let x = tokens();
    assert_same_predictions(&mut cpu, &mut gpu, &x, 1e-4, what);
    for step in 0..4 {
        train_step_alike(&mut cpu, &mut gpu, &x, y, &format!("{what} step {step}"));
    }
    assert_same_weights(&cpu, &gpu, WEIGHTS_TOL);
    assert_same_predictions(&mut cpu, &mut gpu, &x, WEIGHTS_TOL, what);
}

/// embedding(maskZero) -> RNN (last state) -> Dense, for every cell, forwards and backwards.
#[test]
fn masked_recurrent_last_state_matches_the_cpu() {
    if skip() {
        return;
    }
    let y = data(&[8, 3], 0.4);
    for class in CELLS {
        for go_backwards in [false, true] {
            let config = seq(json!([
                embedding(),
                layer(class, json!({"units": 6, "goBackwards": go_backwards})),
                layer("Dense", json!({"units": 3}))
            ]));
            check_parity(&config, &y, &format!("{class} goBackwards={go_backwards}"));
        }
    }
}

/// embedding(maskZero) -> RNN (returnSequences) -> RNN (last state) -> Dense: the mask reaches
/// the second layer too, and the first layer's masked outputs (the previous state) feed it; one
/// case with the first layer going backwards.
#[test]
fn masked_stacked_recurrent_layers_match_the_cpu() {
    if skip() {
        return;
    }
    let y = data(&[8, 2], 1.1);
    for (i, class) in CELLS.iter().enumerate() {
        let config = seq(json!([
            embedding(),
            layer(
                class,
                json!({"units": 5, "returnSequences": true, "goBackwards": i == 1})
            ),
            layer(CELLS[(i + 1) % 3], json!({"units": 4})),
            layer("Dense", json!({"units": 2}))
        ]));
        check_parity(&config, &y, &format!("stacked {class}"));
    }
}

/// A masked sequence output read step by step (the previous state at masked steps): RNN
/// (returnSequences) -> Dense per step -> Flatten -> Dense, and Bidirectional(returnSequences,
/// zeros at masked steps) -> LSTM -> Dense.
#[test]
fn masked_sequences_and_bidirectional_match_the_cpu() {
    if skip() {
        return;
    }
    let y = data(&[8, 2], 0.7);
    for class in CELLS {
        let config = seq(json!([
            embedding(),
            layer(class, json!({"units": 4, "returnSequences": true})),
            layer("Dense", json!({"units": 3, "activation": "tanh"})),
            layer("Flatten", json!({})),
            layer("Dense", json!({"units": 2}))
        ]));
        check_parity(&config, &y, &format!("{class} sequence"));
    }
    for (class, merge) in [("GRU", "concat"), ("LSTM", "sum"), ("SimpleRNN", "mul")] {
        let config = seq(json!([
            embedding(),
            layer(
                "Bidirectional",
                json!({"layer": {"className": class, "config": {"units": 4, "returnSequences": true}},
                       "mergeMode": merge})
            ),
            layer("LSTM", json!({"units": 3})),
            layer("Dense", json!({"units": 2}))
        ]));
        check_parity(&config, &y, &format!("Bidirectional({class}) {merge}"));
    }
}

/// The mask is really applied on the GPU: the same weights without maskZero predict
/// differently on every padded row and identically on the rows without padding.
#[test]
fn the_mask_changes_padded_rows_only() {
    if skip() {
        return;
    }
    let compile = json!({"optimizer": "adam", "loss": "meanSquaredError", "device": "gpu!"});
    let model = |mask_zero: bool| {
        let config = seq(json!([
            layer(
                "Embedding",
                json!({"inputDim": VOCAB, "outputDim": 5, "maskZero": mask_zero})
            ),
            layer("LSTM", json!({"units": 6})),
            layer("Dense", json!({"units": 3}))
        ]));
        let mut m = Model::from_config(&config, 11).unwrap();
        m.compile(&compile).unwrap();
        assert!(m.device_name().is_some());
        m
    };
    let x = tokens();
    let (a, b) = (
        model(true).predict(&x, 8).unwrap(),
        model(false).predict(&x, 8).unwrap(),
    );
    for row in 0..8 {
        let ids = &x.data()[row * TIME..(row + 1) * TIME];
        let d = max_rel_diff(&a.data()[row * 3..row * 3 + 3], &b.data()[row * 3..row * 3 + 3]);
        if ids.contains(&0.0) {
            assert!(d > 1e-3, "row {row}: the mask changed nothing ({d})");
        } else {
            assert!(d < 1e-6, "row {row}: an unpadded row changed ({d})");
        }
    }
}

/// A mask the CPU would apply in a layer the GPU path does not mask is refused by name with
/// "gpu!" (and "gpu" falls back to the CPU); where the CPU drops the mask (a Conv1D that
/// shortens the time axis) the model runs on the GPU as on the CPU.
/// A mask reaching GlobalAveragePooling1D (after a recurrent layer's sequences, or a `same`
/// Conv1D that keeps it): the planner refuses it, so the model trains through the layers' own
/// GPU ops, whose masked mean is composed from device ops; it matches the CPU.
#[test]
fn masked_global_average_pooling_matches_the_cpu() {
    if skip() {
        return;
    }
    for (middle, what) in [
        (
            layer("GRU", json!({"units": 4, "returnSequences": true})),
            "GRU sequences -> masked GlobalAveragePooling1D",
        ),
        (
            layer("Conv1D", json!({"filters": 4, "kernelSize": 3, "padding": "same"})),
            "Conv1D same -> masked GlobalAveragePooling1D",
        ),
    ] {
        let config = seq(json!([
            embedding(),
            middle,
            layer("GlobalAveragePooling1D", json!({})),
            layer("Dense", json!({"units": 2}))
        ]));
        check_parity(&config, &data(&[8, 2], 0.3), what);
    }
}

/// A mask reaching self-attention on [x, x] (a functional graph): the planner refuses it, the
/// layers' own GPU ops (attention composed from primitive kernels) train it as the CPU does.
#[test]
fn masks_reaching_attention_or_a_valid_conv1d_match_the_cpu() {
    if skip() {
        return;
    }
    let attention = json!({"className": "Functional", "inputs": [[TIME]],
        "layers": [
            embedding(),
            layer("Dense", json!({"units": 8})),
            layer("MultiHeadAttention", json!({"numHeads": 2, "keyDim": 4})),
            layer("GlobalAveragePooling1D", json!({})),
            layer("Dense", json!({"units": 2}))
        ],
        "nodes": [
            {"layer": 0, "inputs": [[-1, 0]]},
            {"layer": 1, "inputs": [[0, 0]]},
            {"layer": 2, "inputs": [[1, 0], [1, 0]]},
            {"layer": 3, "inputs": [[2, 0]]},
            {"layer": 4, "inputs": [[3, 0]]}
        ],
        "outputs": [[4, 0]]
    });
    check_parity(&attention, &data(&[8, 2], 0.3), "Embedding maskZero -> self-attention");
    // A valid Conv1D shortens the time axis, so (as on the CPU) the mask stops there.
    let config = seq(json!([
        embedding(),
        layer("Conv1D", json!({"filters": 4, "kernelSize": 3})),
        layer("GlobalAveragePooling1D", json!({})),
        layer("Dense", json!({"units": 2}))
    ]));
    check_parity(&config, &data(&[8, 2], 0.3), "Conv1D valid");
}
