//! Models compiled with `device: "gpu"` train like the CPU ones: same losses, same weights
//! after several optimizer steps, same predictions, weights synced back for saving, and a
//! clear fallback (or error with "gpu!") for what the GPU backend lacks.
//!
//! These run on any wgpu adapter; on a machine without a GPU, Mesa's lavapipe (Debian package
//! `mesa-vulkan-drivers`) provides one. `CORTEX_SKIP_GPU_TESTS=1` skips them; otherwise a
//! missing adapter fails them.

mod gpu_support;

use cortex_core::nn::model::Model;
use cortex_core::Tensor;
use gpu_support::*;
use serde_json::{json, Value};

#[test]
fn convnet_trains_on_the_gpu_as_on_the_cpu() {
    if skip() {
        return;
    }
    for optimizer in [
        json!({"name": "adam", "learningRate": 0.01}),
        json!({"name": "sgd", "learningRate": 0.05, "momentum": 0.9, "nesterov": true}),
        json!({"name": "sgd", "learningRate": {"name": "cosineDecay", "initialLearningRate": 0.1, "decaySteps": 4}}),
        json!({"name": "adamw", "learningRate": 0.01, "weightDecay": 0.05}),
    ] {
        let compile = json!({"optimizer": optimizer, "loss": "sparseCategoricalCrossentropy", "metrics": ["accuracy"]});
        let (mut cpu, mut gpu) = pair(&convnet(), compile);
        let x = data(&[16, 12, 12, 2], 0.5);
        let y = Tensor::new((0..16).map(|i| (i % 5) as f32).collect(), &[16]).unwrap();
        for step in 0..4 {
            let a = cpu.train_on_batch(&x, &y).unwrap();
            let b = gpu.train_on_batch(&x, &y).unwrap();
            let rel = ((a[0].1 - b[0].1) / a[0].1).abs();
            assert!(rel < 1e-4, "{optimizer} step {step}: loss {} vs {}", a[0].1, b[0].1);
            assert_eq!(a[1], b[1], "accuracy at step {step}");
        }
        assert_same_weights(&cpu, &gpu, 1e-3);
        let (pa, pb) = (cpu.predict(&x, 7).unwrap(), gpu.predict(&x, 7).unwrap());
        assert_eq!(pa.shape(), pb.shape());
        assert!(max_rel_diff(pa.data(), pb.data()) < 1e-3);
        let (ea, eb) = (cpu.evaluate(&x, &y, 5).unwrap(), gpu.evaluate(&x, &y, 5).unwrap());
        assert!(((ea[0].1 - eb[0].1) / ea[0].1).abs() < 1e-4, "{ea:?} vs {eb:?}");
    }
}

/// A convnet of the parameter-free image layers: zero padding (asymmetric), average pooling
/// (`same` with overlapping strided windows on a ragged size, and `valid`), nearest upsampling
/// and global average pooling, between convolutions.
fn spatial_convnet() -> Value {
    json!({"className": "Sequential", "inputShape": [9, 11, 2], "layers": [
        {"className": "ZeroPadding2D", "config": {"padding": [[1, 0], [2, 1]]}},
        {"className": "Conv2D", "config": {"filters": 4, "kernelSize": [3, 3], "padding": "same", "activation": "relu"}},
        {"className": "AveragePooling2D", "config": {"poolSize": [3, 3], "strides": [2, 2], "padding": "same"}},
        {"className": "UpSampling2D", "config": {"size": [2, 1]}},
        {"className": "Conv2D", "config": {"filters": 5, "kernelSize": [3, 3], "activation": "tanh"}},
        {"className": "AveragePooling2D", "config": {"poolSize": [2, 2]}},
        {"className": "GlobalAveragePooling2D", "config": {}},
        {"className": "Dense", "config": {"units": 3, "activation": "softmax"}}
    ]})
}

#[test]
fn spatial_layers_train_on_the_gpu_as_on_the_cpu() {
    if skip() {
        return;
    }
    let compile = json!({"optimizer": {"name": "adam", "learningRate": 0.02},
        "loss": "sparseCategoricalCrossentropy", "metrics": ["accuracy"]});
    let (mut cpu, mut gpu) = pair(&spatial_convnet(), compile);
    let x = data(&[6, 9, 11, 2], 0.3);
    let y = Tensor::new((0..6).map(|i| (i % 3) as f32).collect(), &[6]).unwrap();
    train_alike(&mut cpu, &mut gpu, &x, &y, 5, "spatial convnet");
    assert_same_weights(&cpu, &gpu, 1e-3);
    let (pa, pb) = (cpu.predict(&x, 4).unwrap(), gpu.predict(&x, 4).unwrap());
    assert_eq!(pa.shape(), [6, 3]);
    assert!(max_rel_diff(pa.data(), pb.data()) < 1e-3);
}

/// A 1-D convnet: causal dilated, strided `same` and `valid` Conv1D layers (with and without
/// bias) over ragged sequence lengths, then a dense softmax head; once with relu/tanh, once
/// with the activations the GPU gained later (a Conv1D with elu was once refused).
#[test]
fn conv1d_model_trains_on_the_gpu_as_on_the_cpu() {
    if skip() {
        return;
    }
    for (a, b, c) in [
        ("relu", "tanh", "linear"),
        ("elu", "selu", "swish"),
        ("softplus", "gelu", "leaky_relu"),
    ] {
        conv1d_model_case(a, b, c);
    }
}

fn conv1d_model_case(a: &str, b: &str, c: &str) {
    let config = json!({"className": "Sequential", "inputShape": [13, 3], "layers": [
        {"className": "Conv1D", "config": {"filters": 6, "kernelSize": 3, "padding": "causal", "dilationRate": 2, "activation": a}},
        {"className": "Conv1D", "config": {"filters": 5, "kernelSize": 3, "strides": 2, "padding": "same", "activation": b}},
        {"className": "Conv1D", "config": {"filters": 4, "kernelSize": 2, "useBias": false, "activation": c}},
        {"className": "Flatten", "config": {}},
        {"className": "Dense", "config": {"units": 3, "activation": "softmax"}}
    ]});
    let compile = json!({"optimizer": {"name": "adam", "learningRate": 0.01},
        "loss": "sparseCategoricalCrossentropy", "metrics": ["accuracy"]});
    let (mut cpu, mut gpu) = pair(&config, compile);
    let x = data(&[7, 13, 3], 0.7);
    let y = Tensor::new((0..7).map(|i| (i % 3) as f32).collect(), &[7]).unwrap();
    let first = cpu.evaluate(&x, &y, 7).unwrap()[0].1;
    train_alike(&mut cpu, &mut gpu, &x, &y, 5, &format!("conv1d {a}/{b}/{c}"));
    assert_same_weights(&cpu, &gpu, 1e-4);
    let (pa, pb) = (cpu.predict(&x, 4).unwrap(), gpu.predict(&x, 4).unwrap());
    assert_eq!(pa.shape(), [7, 3]);
    assert!(max_rel_diff(pa.data(), pb.data()) < 1e-4);
    let last = gpu.evaluate(&x, &y, 7).unwrap()[0].1;
    assert!(last < first, "training should lower the loss: {first} -> {last}");
}

/// A small decoder: Dense -> Reshape -> Conv2DTranspose (strides 2, same) twice -> an image,
/// fitted by mean squared error; plus a `valid` transposed conv with dilation.
#[test]
fn conv2d_transpose_decoder_trains_on_the_gpu_as_on_the_cpu() {
    if skip() {
        return;
    }
    let config = json!({"className": "Sequential", "inputShape": [5], "layers": [
        {"className": "Dense", "config": {"units": 36, "activation": "relu"}},
        {"className": "Reshape", "config": {"targetShape": [3, 3, 4]}},
        {"className": "Conv2DTranspose", "config": {"filters": 6, "kernelSize": 3, "strides": 2, "padding": "same", "activation": "relu"}},
        {"className": "Conv2DTranspose", "config": {"filters": 3, "kernelSize": [4, 3], "strides": 2, "padding": "same", "activation": "tanh"}},
        {"className": "Conv2DTranspose", "config": {"filters": 2, "kernelSize": 2, "dilationRate": 2, "useBias": false}}
    ]});
    let compile =
        json!({"optimizer": {"name": "sgd", "learningRate": 0.05, "momentum": 0.9}, "loss": "meanSquaredError"});
    let (mut cpu, mut gpu) = pair(&config, compile);
    let x = data(&[6, 5], 0.2);
    let y = data(&[6, 14, 14, 2], 1.3);
    let first = cpu.evaluate(&x, &y, 6).unwrap()[0].1;
    train_alike(&mut cpu, &mut gpu, &x, &y, 5, "conv2d transpose decoder");
    assert_same_weights(&cpu, &gpu, 1e-4);
    let (pa, pb) = (cpu.predict(&x, 4).unwrap(), gpu.predict(&x, 4).unwrap());
    assert_eq!(pa.shape(), [6, 14, 14, 2]);
    assert!(max_rel_diff(pa.data(), pb.data()) < 1e-4);
    let last = gpu.evaluate(&x, &y, 6).unwrap()[0].1;
    assert!(last < first, "training should lower the loss: {first} -> {last}");
}

#[test]
fn mse_regression_and_host_weight_changes_reach_the_gpu() {
    if skip() {
        return;
    }
    let compile = json!({"optimizer": {"name": "adam", "learningRate": 0.02}, "loss": "meanSquaredError"});
    let (mut cpu, mut gpu) = pair(&mlp(), compile);
    let (x, y) = (data(&[9, 7], 0.1), data(&[9, 3], 1.3));
    for _ in 0..3 {
        let (a, b) = (cpu.train_on_batch(&x, &y).unwrap(), gpu.train_on_batch(&x, &y).unwrap());
        assert!(((a[0].1 - b[0].1) / a[0].1).abs() < 1e-4, "{a:?} vs {b:?}");
    }
    assert_same_weights(&cpu, &gpu, 1e-3);
    // New weights set on the host are uploaded before the next GPU step.
    let fresh: Vec<Vec<f32>> = cpu
        .get_weights()
        .unwrap()
        .iter()
        .map(|(_, _, w)| w.iter().map(|v| v * 0.5).collect())
        .collect();
    cpu.set_weights(&fresh).unwrap();
    gpu.set_weights(&fresh).unwrap();
    let (a, b) = (cpu.train_on_batch(&x, &y).unwrap(), gpu.train_on_batch(&x, &y).unwrap());
    assert!(((a[0].1 - b[0].1) / a[0].1).abs() < 1e-4, "{a:?} vs {b:?}");
    assert_same_weights(&cpu, &gpu, 1e-3);
}

/// An MLP ending in `units` outputs with `activation`.
fn mlp_to(units: usize, activation: &str) -> Value {
    json!({"className": "Sequential", "inputShape": [7], "layers": [
        {"className": "Dense", "config": {"units": 11, "activation": "tanh"}},
        {"className": "Dense", "config": {"units": units, "activation": activation}}
    ]})
}

/// `steps` training steps on both models: the same losses (and the same metrics).
fn train_alike(cpu: &mut Model, gpu: &mut Model, x: &Tensor, y: &Tensor, steps: usize, what: &str) {
    for step in 0..steps {
        let (a, b) = (cpu.train_on_batch(x, y).unwrap(), gpu.train_on_batch(x, y).unwrap());
        let rel = ((a[0].1 - b[0].1) / a[0].1).abs();
        assert!(rel < 1e-4, "{what} step {step}: loss {} vs {}", a[0].1, b[0].1);
        assert_eq!(a[1..], b[1..], "{what} step {step}: metrics");
    }
}

/// Targets in [0, 1]: rows alternately hard 0/1 labels and soft values.
fn binary_targets(rows: usize, cols: usize) -> Tensor {
    let t = data(&[rows, cols], 2.1);
    let v = t
        .data()
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            if (i / cols).is_multiple_of(2) {
                (v > 0.0) as u8 as f32
            } else {
                (v + 1.0) / 2.0
            }
        })
        .collect();
    Tensor::new(v, &[rows, cols]).unwrap()
}

/// Binary cross-entropy after a sigmoid output (from probabilities, clipped as on the CPU)
/// and after a linear one (from logits), with hard and soft targets.
#[test]
fn binary_crossentropy_trains_on_the_gpu_as_on_the_cpu() {
    if skip() {
        return;
    }
    for (activation, from_logits) in [("sigmoid", false), ("linear", true)] {
        let compile = json!({"optimizer": {"name": "sgd", "learningRate": 0.5, "momentum": 0.9},
            "loss": {"name": "binaryCrossentropy", "fromLogits": from_logits}, "metrics": ["accuracy"]});
        let (mut cpu, mut gpu) = pair(&mlp_to(4, activation), compile);
        let (x, y) = (data(&[10, 7], 0.7), binary_targets(10, 4));
        train_alike(&mut cpu, &mut gpu, &x, &y, 5, &format!("bce {activation}"));
        assert_same_weights(&cpu, &gpu, 1e-4);
        let (pa, pb) = (cpu.predict(&x, 4).unwrap(), gpu.predict(&x, 4).unwrap());
        assert!(max_rel_diff(pa.data(), pb.data()) < 1e-4);
    }
}

/// Categorical cross-entropy against one-hot and soft targets: after a softmax output (fused
/// into the loss on the GPU) and from logits.
#[test]
fn categorical_crossentropy_trains_on_the_gpu_as_on_the_cpu() {
    if skip() {
        return;
    }
    let rows = 12;
    let one_hot = Tensor::new(
        (0..rows * 5).map(|i| (i % 5 == (i / 5) % 5) as u8 as f32).collect(),
        &[rows, 5],
    )
    .unwrap();
    let soft = {
        let raw = data(&[rows, 5], 0.9);
        let v: Vec<f32> = raw
            .data()
            .chunks(5)
            .flat_map(|r| {
                let e: Vec<f32> = r.iter().map(|v| (2.0 * v).exp()).collect();
                let sum: f32 = e.iter().sum();
                e.into_iter().map(move |v| v / sum)
            })
            .collect();
        Tensor::new(v, &[rows, 5]).unwrap()
    };
    for (activation, from_logits) in [("softmax", false), ("linear", true)] {
        for (kind, y) in [("one-hot", &one_hot), ("soft", &soft)] {
            let compile = json!({"optimizer": {"name": "sgd", "learningRate": 0.2, "momentum": 0.9},
                "loss": {"name": "categoricalCrossentropy", "fromLogits": from_logits}, "metrics": ["accuracy"]});
            let (mut cpu, mut gpu) = pair(&mlp_to(5, activation), compile);
            let x = data(&[rows, 7], 0.2);
            train_alike(&mut cpu, &mut gpu, &x, y, 5, &format!("cce {activation} {kind}"));
            assert_same_weights(&cpu, &gpu, 1e-4);
            let (pa, pb) = (cpu.predict(&x, 5).unwrap(), gpu.predict(&x, 5).unwrap());
            assert!(max_rel_diff(pa.data(), pb.data()) < 1e-4);
            let (ea, eb) = (cpu.evaluate(&x, y, 5).unwrap(), gpu.evaluate(&x, y, 5).unwrap());
            assert!(((ea[0].1 - eb[0].1) / ea[0].1).abs() < 1e-4, "{ea:?} vs {eb:?}");
        }
    }
}

/// RMSprop (with a per-step schedule) on a convnet with sparse cross-entropy, and on an MLP
/// regression with mean absolute error.
#[test]
fn rmsprop_and_mean_absolute_error_train_on_the_gpu_as_on_the_cpu() {
    if skip() {
        return;
    }
    let schedule = json!({"name": "exponentialDecay", "initialLearningRate": 0.01, "decaySteps": 2, "decayRate": 0.5});
    let compile = json!({"optimizer": {"name": "rmsprop", "learningRate": schedule, "rho": 0.8},
                         "loss": "sparseCategoricalCrossentropy", "metrics": ["accuracy"]});
    let (mut cpu, mut gpu) = pair(&convnet(), compile);
    let x = data(&[16, 12, 12, 2], 0.5);
    let y = Tensor::new((0..16).map(|i| (i % 5) as f32).collect(), &[16]).unwrap();
    train_alike(&mut cpu, &mut gpu, &x, &y, 4, "rmsprop convnet");
    assert_same_weights(&cpu, &gpu, 1e-3);

    let compile = json!({"optimizer": {"name": "rmsprop", "learningRate": 0.01}, "loss": "meanAbsoluteError"});
    let (mut cpu, mut gpu) = pair(&mlp(), compile);
    let (x, y) = (data(&[9, 7], 0.1), data(&[9, 3], 1.3));
    train_alike(&mut cpu, &mut gpu, &x, &y, 5, "rmsprop mae");
    assert_same_weights(&cpu, &gpu, 1e-4);
}

/// Embedding -> LSTM (all steps) -> LSTM (last step) -> Dense: the recurrent kernels train
/// like the CPU's, with batch and units not multiples of the kernels' tiles.
#[test]
fn recurrent_model_trains_on_the_gpu_as_on_the_cpu() {
    if skip() {
        return;
    }
    let config = json!({"className": "Sequential", "inputShape": [7], "layers": [
        {"className": "Embedding", "config": {"inputDim": 13, "outputDim": 6}},
        {"className": "LSTM", "config": {"units": 5, "returnSequences": true}},
        {"className": "LSTM", "config": {"units": 9}},
        {"className": "Dense", "config": {"units": 3, "activation": "softmax"}}
    ]});
    let compile = json!({"optimizer": {"name": "adam", "learningRate": 0.01}, "loss": "sparseCategoricalCrossentropy",
                         "metrics": ["accuracy"]});
    let (mut cpu, mut gpu) = pair(&config, compile);
    let x = Tensor::new((0..11 * 7).map(|i| ((i * 5 + i / 7) % 13) as f32).collect(), &[11, 7]).unwrap();
    let y = Tensor::new((0..11).map(|i| (i % 3) as f32).collect(), &[11]).unwrap();
    let first = cpu.train_on_batch(&x, &y).unwrap()[0].1;
    let again = gpu.train_on_batch(&x, &y).unwrap()[0].1;
    assert!(((first - again) / first).abs() < 1e-4, "loss {first} vs {again}");
    for step in 1..5 {
        let (a, b) = (cpu.train_on_batch(&x, &y).unwrap(), gpu.train_on_batch(&x, &y).unwrap());
        assert!(((a[0].1 - b[0].1) / a[0].1).abs() < 1e-4, "step {step}: {a:?} vs {b:?}");
    }
    assert_same_weights(&cpu, &gpu, 1e-3);
    let (pa, pb) = (cpu.predict(&x, 4).unwrap(), gpu.predict(&x, 4).unwrap());
    assert_eq!(pa.shape(), &[11, 3]);
    assert!(max_rel_diff(pa.data(), pb.data()) < 1e-3);
    let last = cpu.train_on_batch(&x, &y).unwrap()[0].1;
    assert!(last < first, "training should lower the loss: {first} -> {last}");
}

/// GRU (with and without bias) and SimpleRNN layers on float sequences: their GPU kernels train
/// like the CPU's layer code.
#[test]
fn gru_and_simple_rnn_train_on_the_gpu_as_on_the_cpu() {
    if skip() {
        return;
    }
    let config = json!({"className": "Sequential", "inputShape": [6, 3], "layers": [
        {"className": "GRU", "config": {"units": 7, "returnSequences": true}},
        {"className": "SimpleRNN", "config": {"units": 5, "returnSequences": true}},
        {"className": "GRU", "config": {"units": 4, "useBias": false}},
        {"className": "Dense", "config": {"units": 2}}
    ]});
    let compile =
        json!({"optimizer": {"name": "sgd", "learningRate": 0.1, "momentum": 0.9}, "loss": "meanSquaredError"});
    let (mut cpu, mut gpu) = pair(&config, compile);
    let (x, y) = (data(&[9, 6, 3], 0.4), data(&[9, 2], 1.1));
    for step in 0..4 {
        let (a, b) = (cpu.train_on_batch(&x, &y).unwrap(), gpu.train_on_batch(&x, &y).unwrap());
        assert!(((a[0].1 - b[0].1) / a[0].1).abs() < 1e-4, "step {step}: {a:?} vs {b:?}");
    }
    assert_same_weights(&cpu, &gpu, 1e-3);
    let (pa, pb) = (cpu.predict(&x, 4).unwrap(), gpu.predict(&x, 4).unwrap());
    assert!(max_rel_diff(pa.data(), pb.data()) < 1e-3);
}

/// A small vision transformer as a functional model: patch convolution, reshape to tokens,
/// positional embedding, a pre-norm encoder block (layer norm, self-attention, residual add,
/// layer norm, gelu feed-forward, residual add; the attention layer is called on
/// `[normed, normed]`, so two gradients meet at one tensor), pooling over tokens and a softmax
/// head. The GPU's composed graph trains like the CPU's layer code.
#[test]
fn functional_transformer_trains_on_the_gpu_as_on_the_cpu() {
    if skip() {
        return;
    }
    let layer = |class: &str, config: Value| json!({"className": class, "config": config});
    let config = json!({"className": "Functional", "inputs": [[8, 8, 1]],
        "layers": [
            layer("Conv2D", json!({"filters": 12, "kernelSize": [4, 4], "strides": [4, 4]})),
            layer("Reshape", json!({"targetShape": [4, 12]})),
            layer("PositionalEmbedding", json!({"sequenceLength": 4})),
            layer("LayerNormalization", json!({"epsilon": 1e-6})),
            layer("MultiHeadAttention", json!({"numHeads": 3, "keyDim": 4})),
            layer("Add", json!({})),
            layer("LayerNormalization", json!({"epsilon": 1e-6})),
            layer("Dense", json!({"units": 16, "activation": "gelu"})),
            layer("Dense", json!({"units": 12})),
            layer("Add", json!({})),
            layer("GlobalAveragePooling1D", json!({})),
            layer("Dense", json!({"units": 3, "activation": "softmax"}))
        ],
        "nodes": [
            {"layer": 0, "inputs": [[-1, 0]]},
            {"layer": 1, "inputs": [[0, 0]]},
            {"layer": 2, "inputs": [[1, 0]]},
            {"layer": 3, "inputs": [[2, 0]]},
            {"layer": 4, "inputs": [[3, 0], [3, 0]]},
            {"layer": 5, "inputs": [[2, 0], [4, 0]]},
            {"layer": 6, "inputs": [[5, 0]]},
            {"layer": 7, "inputs": [[6, 0]]},
            {"layer": 8, "inputs": [[7, 0]]},
            {"layer": 9, "inputs": [[5, 0], [8, 0]]},
            {"layer": 10, "inputs": [[9, 0]]},
            {"layer": 11, "inputs": [[10, 0]]}
        ],
        "outputs": [[11, 0]]
    });
    // SGD, not Adam: the key bias has an exactly-zero gradient (softmax ignores a shift shared by
    // all of a query's scores), and Adam would blow its rounding noise up to full-size steps.
    let compile = json!({"optimizer": {"name": "sgd", "learningRate": 0.1, "momentum": 0.9},
                         "loss": "sparseCategoricalCrossentropy", "metrics": ["accuracy"]});
    let (mut cpu, mut gpu) = pair(&config, compile);
    let x = data(&[6, 8, 8, 1], 0.3);
    let y = Tensor::new((0..6).map(|i| (i % 3) as f32).collect(), &[6]).unwrap();
    let first = cpu.train_on_batch(&x, &y).unwrap()[0].1;
    let again = gpu.train_on_batch(&x, &y).unwrap()[0].1;
    assert!(((first - again) / first).abs() < 1e-4, "loss {first} vs {again}");
    for step in 1..4 {
        let (a, b) = (cpu.train_on_batch(&x, &y).unwrap(), gpu.train_on_batch(&x, &y).unwrap());
        assert!(((a[0].1 - b[0].1) / a[0].1).abs() < 1e-4, "step {step}: {a:?} vs {b:?}");
    }
    assert_same_weights(&cpu, &gpu, 1e-3);
    let (pa, pb) = (cpu.predict(&x, 4).unwrap(), gpu.predict(&x, 4).unwrap());
    assert!(max_rel_diff(pa.data(), pb.data()) < 1e-3);
}

/// A layer applied twice shares its weights; the GPU sums both uses' gradients.
#[test]
fn shared_layers_sum_their_gradients_on_the_gpu() {
    if skip() {
        return;
    }
    let config = json!({"className": "Functional", "inputs": [[5]],
        "layers": [
            {"className": "Dense", "config": {"units": 5, "activation": "tanh"}},
            {"className": "Add", "config": {}},
            {"className": "Dense", "config": {"units": 2}}
        ],
        "nodes": [
            {"layer": 0, "inputs": [[-1, 0]]},
            {"layer": 0, "inputs": [[0, 0]]},
            {"layer": 1, "inputs": [[0, 0], [1, 0]]},
            {"layer": 2, "inputs": [[2, 0]]}
        ],
        "outputs": [[3, 0]]
    });
    let compile = json!({"optimizer": {"name": "sgd", "learningRate": 0.1}, "loss": "meanSquaredError"});
    let (mut cpu, mut gpu) = pair(&config, compile);
    let (x, y) = (data(&[7, 5], 0.2), data(&[7, 2], 0.9));
    for step in 0..3 {
        let (a, b) = (cpu.train_on_batch(&x, &y).unwrap(), gpu.train_on_batch(&x, &y).unwrap());
        assert!(((a[0].1 - b[0].1) / a[0].1).abs() < 1e-4, "step {step}: {a:?} vs {b:?}");
    }
    assert_same_weights(&cpu, &gpu, 1e-4);
}

/// A convnet with BatchNormalization over NHWC feature maps (statistics per channel over
/// batch, height and width) and over a dense layer's output (rank 2), with and without
/// center/scale, plus a frozen one (`trainable: false`: moving statistics even in training).
fn batchnorm_convnet() -> Value {
    json!({"className": "Sequential", "inputShape": [10, 10, 3], "layers": [
        {"className": "Conv2D", "config": {"filters": 6, "kernelSize": [3, 3], "padding": "same"}},
        {"className": "BatchNormalization", "config": {"name": "bn_a", "momentum": 0.8}},
        {"className": "Activation", "config": {"activation": "relu"}},
        {"className": "MaxPooling2D", "config": {"poolSize": [2, 2]}},
        {"className": "Conv2D", "config": {"filters": 4, "kernelSize": [3, 3], "activation": "relu"}},
        {"className": "BatchNormalization", "config": {"name": "bn_b", "center": false, "epsilon": 0.01}},
        {"className": "Flatten", "config": {}},
        {"className": "Dense", "config": {"units": 10}},
        {"className": "BatchNormalization", "config": {"name": "bn_c", "scale": false, "momentum": 0.5}},
        {"className": "Activation", "config": {"activation": "tanh"}},
        {"className": "BatchNormalization", "config": {"name": "bn_frozen", "trainable": false}},
        {"className": "Dense", "config": {"units": 5, "activation": "softmax"}}
    ]})
}

/// The weights of `model` with every moving statistic shifted (means +0.2, variances x1.5 +0.1).
fn shifted_moving_statistics(model: &Model) -> Vec<Vec<f32>> {
    model
        .get_weights()
        .unwrap()
        .into_iter()
        .map(|(name, _, w)| {
            if name.ends_with("moving_mean") {
                w.iter().map(|v| v + 0.2).collect()
            } else if name.ends_with("moving_variance") {
                w.iter().map(|v| v * 1.5 + 0.1).collect()
            } else {
                w
            }
        })
        .collect()
}

/// Every weight (moving statistics included) of the two models within `abs` of each other, and
/// within 1e-3 relative as [`assert_same_weights`] measures it.
fn assert_weights_within(cpu: &Model, gpu: &Model, abs: f32) {
    for ((name, _, a), (_, _, b)) in cpu.get_weights().unwrap().iter().zip(&gpu.get_weights().unwrap()) {
        let d = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
        assert!(d <= abs, "{name}: absolute difference {d}");
    }
    assert_same_weights(cpu, gpu, 1e-3);
}

/// BatchNormalization trains on the GPU as on the CPU: batch statistics in each step, the
/// moving statistics updated on the device and synced back with the weights, the frozen
/// layer's left alone, inference on the moving statistics, and moving statistics set on the
/// host reaching the device.
#[test]
fn batch_normalization_trains_on_the_gpu_as_on_the_cpu() {
    if skip() {
        return;
    }
    // SGD: a bias feeding a normalisation has a zero gradient (the batch mean absorbs it), and
    // Adam would turn the rounding noise standing in for it into full-size steps of any sign.
    let compile = json!({"optimizer": {"name": "sgd", "learningRate": 0.1, "momentum": 0.9},
        "loss": "sparseCategoricalCrossentropy", "metrics": ["accuracy"]});
    let (mut cpu, mut gpu) = pair(&batchnorm_convnet(), compile);
    // Non-trivial moving statistics from the host (the frozen layer normalises with them).
    let start = shifted_moving_statistics(&cpu);
    cpu.set_weights(&start).unwrap();
    gpu.set_weights(&start).unwrap();
    let x = data(&[8, 10, 10, 3], 0.7);
    let y = Tensor::new((0..8).map(|i| (i % 5) as f32).collect(), &[8]).unwrap();
    train_alike(&mut cpu, &mut gpu, &x, &y, 6, "batchnorm convnet");
    assert_weights_within(&cpu, &gpu, 1e-4);
    let after = gpu.get_weights().unwrap();
    for ((name, _, w), w0) in after.iter().zip(&start) {
        if name.contains("moving_") {
            if name.contains("bn_frozen") {
                assert_eq!(w, w0, "{name}: a frozen layer keeps its moving statistics");
            } else {
                assert!(max_rel_diff(w0, w) > 1e-3, "{name} should have moved");
            }
        }
    }
    let (pa, pb) = (cpu.predict(&x, 5).unwrap(), gpu.predict(&x, 5).unwrap());
    assert_eq!(pa.shape(), [8, 5]);
    assert!(max_rel_diff(pa.data(), pb.data()) < 1e-4);
    let (ea, eb) = (cpu.evaluate(&x, &y, 3).unwrap(), gpu.evaluate(&x, &y, 3).unwrap());
    assert!(((ea[0].1 - eb[0].1) / ea[0].1).abs() < 1e-4, "{ea:?} vs {eb:?}");
    // Moving statistics changed on the host after training are uploaded before GPU inference
    // and training.
    let moved = shifted_moving_statistics(&cpu);
    cpu.set_weights(&moved).unwrap();
    gpu.set_weights(&moved).unwrap();
    let (pa, pb) = (cpu.predict(&x, 8).unwrap(), gpu.predict(&x, 8).unwrap());
    assert!(max_rel_diff(pa.data(), pb.data()) < 1e-4);
    train_alike(&mut cpu, &mut gpu, &x, &y, 2, "batchnorm convnet, new statistics");
    assert_weights_within(&cpu, &gpu, 1e-4);
}
