//! Models compiled with `device: "gpu"` train like the CPU ones: same losses, same weights
//! after several optimizer steps, same predictions, weights synced back for saving, and a
//! clear fallback (or error with "gpu!") for what the GPU backend lacks.
//!
//! These run on any wgpu adapter; on a machine without a GPU, Mesa's lavapipe (Debian package
//! `mesa-vulkan-drivers`) provides one. `CORTEX_SKIP_GPU_TESTS=1` skips them; otherwise a
//! missing adapter fails them.

use cortex_core::nn::gpu_model;
use cortex_core::nn::model::Model;
use cortex_core::Tensor;
use serde_json::{json, Value};

fn skip() -> bool {
    std::env::var("CORTEX_SKIP_GPU_TESTS").is_ok_and(|v| v == "1")
}

fn convnet() -> Value {
    json!({"className": "Sequential", "inputShape": [12, 12, 2], "layers": [
        {"className": "Conv2D", "config": {"filters": 8, "kernelSize": [3, 3], "padding": "same", "activation": "relu"}},
        {"className": "MaxPooling2D", "config": {"poolSize": [2, 2]}},
        {"className": "Conv2D", "config": {"filters": 6, "kernelSize": [3, 3], "strides": [2, 2], "activation": "tanh"}},
        {"className": "Flatten", "config": {}},
        {"className": "Dense", "config": {"units": 16, "activation": "relu"}},
        {"className": "Dropout", "config": {"rate": 0.0}},
        {"className": "Dense", "config": {"units": 5, "activation": "softmax"}}
    ]})
}

fn mlp() -> Value {
    json!({"className": "Sequential", "inputShape": [7], "layers": [
        {"className": "Dense", "config": {"units": 11, "activation": "sigmoid"}},
        {"className": "Dense", "config": {"units": 3}}
    ]})
}

fn data(shape: &[usize], salt: f32) -> Tensor {
    let n: usize = shape.iter().product();
    Tensor::new((0..n).map(|i| ((i as f32) * 0.37 + salt).sin()).collect(), shape).unwrap()
}

fn pair(config: &Value, compile: Value) -> (Model, Model) {
    let mut cpu = Model::from_config(config, 11).unwrap();
    let mut gpu = Model::from_config(config, 11).unwrap();
    cpu.compile(&compile).unwrap();
    let mut on_gpu = compile.clone();
    on_gpu["device"] = json!("gpu!");
    gpu.compile(&on_gpu).unwrap();
    assert!(gpu.device_name().is_some(), "the model should be on the GPU");
    assert!(cpu.device_name().is_none());
    (cpu, gpu)
}

fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / (1e-3 + x.abs()))
        .fold(0.0, f32::max)
}

fn assert_same_weights(cpu: &Model, gpu: &Model, tol: f32) {
    let (a, b) = (cpu.get_weights().unwrap(), gpu.get_weights().unwrap());
    assert_eq!(a.len(), b.len());
    for ((name, shape, x), (_, shape2, y)) in a.iter().zip(&b) {
        assert_eq!(shape, shape2);
        let d = max_rel_diff(x, y);
        assert!(d < tol, "{name}: relative difference {d}");
    }
}

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
/// bias) over ragged sequence lengths, then a dense softmax head.
#[test]
fn conv1d_model_trains_on_the_gpu_as_on_the_cpu() {
    if skip() {
        return;
    }
    let config = json!({"className": "Sequential", "inputShape": [13, 3], "layers": [
        {"className": "Conv1D", "config": {"filters": 6, "kernelSize": 3, "padding": "causal", "dilationRate": 2, "activation": "relu"}},
        {"className": "Conv1D", "config": {"filters": 5, "kernelSize": 3, "strides": 2, "padding": "same", "activation": "tanh"}},
        {"className": "Conv1D", "config": {"filters": 4, "kernelSize": 2, "useBias": false}},
        {"className": "Flatten", "config": {}},
        {"className": "Dense", "config": {"units": 3, "activation": "softmax"}}
    ]});
    let compile = json!({"optimizer": {"name": "adam", "learningRate": 0.01},
        "loss": "sparseCategoricalCrossentropy", "metrics": ["accuracy"]});
    let (mut cpu, mut gpu) = pair(&config, compile);
    let x = data(&[7, 13, 3], 0.7);
    let y = Tensor::new((0..7).map(|i| (i % 3) as f32).collect(), &[7]).unwrap();
    let first = cpu.evaluate(&x, &y, 7).unwrap()[0].1;
    train_alike(&mut cpu, &mut gpu, &x, &y, 5, "conv1d");
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

#[test]
fn unsupported_models_fall_back_with_a_warning_or_fail_when_strict() {
    if skip() {
        return;
    }
    assert!(!gpu_model::devices().is_empty(), "wgpu sees no adapter");
    // A masking embedding has no GPU kernel yet (Conv1D, the earlier example, now has one).
    let config = json!({"className": "Sequential", "inputShape": [5], "layers": [
        {"className": "Embedding", "config": {"inputDim": 9, "outputDim": 4, "maskZero": true}},
        {"className": "GlobalAveragePooling1D", "config": {}},
        {"className": "Dense", "config": {"units": 2}}
    ]});
    let mut model = Model::from_config(&config, 3).unwrap();
    model
        .compile(&json!({"optimizer": "adam", "loss": "meanSquaredError", "device": "gpu"}))
        .unwrap();
    assert!(model.device_name().is_none());
    let warning = model.compiled_ref().unwrap().device_warning.clone().unwrap();
    assert!(warning.contains("Embedding maskZero"), "{warning}");
    let tokens = Tensor::new((0..20).map(|i| (i * 7 % 9) as f32).collect(), &[4, 5]).unwrap();
    let logs = model.train_on_batch(&tokens, &data(&[4, 2], 1.0)).unwrap();
    assert!(logs[0].1.is_finite());
    let err = model
        .compile(&json!({"optimizer": "adam", "loss": "meanSquaredError", "device": "gpu!"}))
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not support Embedding maskZero"), "{err}");
    let err = model
        .compile(&json!({"optimizer": "adam", "loss": "meanSquaredError", "device": "tpu"}))
        .unwrap_err()
        .to_string();
    assert!(err.contains("device must be 'cpu', 'gpu'"), "{err}");
}

/// Each configuration the GPU path cannot run yet is refused with "gpu!" by name, never run
/// wrongly: recurrent options, attention options, masking, softmax placement, losses a softmax
/// output cannot feed, graph shapes and optimizer options.
#[test]
fn gpu_only_compiles_refuse_what_the_gpu_lacks_by_name() {
    if skip() {
        return;
    }
    let seq = |input: Value, layers: Value| json!({"className": "Sequential", "inputShape": input, "layers": layers});
    let layer = |class: &str, config: Value| json!({"className": class, "config": config});
    let cases = [
        (
            seq(
                json!([5, 3]),
                json!([layer("LSTM", json!({"units": 4, "goBackwards": true}))]),
            ),
            "adam",
            "LSTM goBackwards",
        ),
        (
            seq(
                json!([5]),
                json!([
                    layer("Embedding", json!({"inputDim": 9, "outputDim": 3, "maskZero": true})),
                    layer("Flatten", json!({}))
                ]),
            ),
            "adam",
            "Embedding maskZero",
        ),
        (
            seq(
                json!([5]),
                json!([
                    layer("Dense", json!({"units": 4})),
                    layer("Embedding", json!({"inputDim": 9, "outputDim": 3}))
                ]),
            ),
            "adam",
            "an Embedding layer that does not read the model input",
        ),
        (
            seq(
                json!([5]),
                json!([
                    layer("Dense", json!({"units": 4, "activation": "softmax"})),
                    layer("Dense", json!({"units": 2}))
                ]),
            ),
            "adam",
            "softmax before the model output",
        ),
        (
            seq(
                json!([5]),
                json!([layer("Dense", json!({"units": 2, "activation": "elu"}))]),
            ),
            "adam",
            "activation 'elu'",
        ),
    ];
    for (config, optimizer, want) in cases {
        let err = gpu_compile_error(&config, optimizer);
        assert!(err.contains(want), "expected '{want}' in: {err}");
    }
    // A softmax output runs only fused into a cross-entropy from probabilities; the moving
    // average of useEma has no GPU update.
    let softmax_out = seq(
        json!([5]),
        json!([layer("Dense", json!({"units": 3, "activation": "softmax"}))]),
    );
    for (optimizer, loss, want) in [
        (
            json!("adam"),
            json!("binaryCrossentropy"),
            "the loss BinaryCrossentropy { from_logits: false } with this output layer",
        ),
        (
            json!("adam"),
            json!({"name": "categoricalCrossentropy", "fromLogits": true}),
            "the loss CategoricalCrossentropy { from_logits: true } with this output layer",
        ),
        (
            json!("rmsprop"),
            json!("meanAbsoluteError"),
            "the loss MeanAbsoluteError with this output layer",
        ),
        (
            json!({"name": "rmsprop", "useEma": true}),
            json!("categoricalCrossentropy"),
            "optimizer useEma",
        ),
    ] {
        let err = gpu_compile_error_with(&softmax_out, json!({"optimizer": optimizer, "loss": loss}));
        assert!(err.contains(want), "expected '{want}' in: {err}");
    }
    // Attention: value size, head size and scores.
    for (options, want) in [
        (json!({"numHeads": 2, "keyDim": 4, "valueDim": 3}), "valueDim != keyDim"),
        (json!({"numHeads": 2, "keyDim": 80}), "keyDim 80"),
        (json!({"numHeads": 2, "keyDim": 4, "dropout": 0.1}), "attention dropout"),
    ] {
        let config = json!({"className": "Functional", "inputs": [[4, 6]],
            "layers": [{"className": "MultiHeadAttention", "config": options}],
            "nodes": [{"layer": 0, "inputs": [[-1, 0], [-1, 0]]}], "outputs": [[0, 0]]});
        let err = gpu_compile_error(&config, "adam");
        assert!(err.contains(want), "expected '{want}' in: {err}");
    }
    // Two outputs.
    let config = json!({"className": "Functional", "inputs": [[5]],
        "layers": [{"className": "Dense", "config": {"units": 2}}, {"className": "Dense", "config": {"units": 3}}],
        "nodes": [{"layer": 0, "inputs": [[-1, 0]]}, {"layer": 1, "inputs": [[-1, 0]]}],
        "outputs": [[0, 0], [1, 0]]});
    let err = gpu_compile_error(&config, "adam");
    assert!(err.contains("several inputs or outputs"), "{err}");
}

/// The error of compiling `config` with `optimizer`, MSE and `device: "gpu!"`.
fn gpu_compile_error(config: &Value, optimizer: &str) -> String {
    gpu_compile_error_with(config, json!({"optimizer": optimizer, "loss": "meanSquaredError"}))
}

/// The error of compiling `config` with `compile` and `device: "gpu!"`.
fn gpu_compile_error_with(config: &Value, mut compile: Value) -> String {
    let mut model = Model::from_config(config, 1).unwrap();
    compile["device"] = json!("gpu!");
    model.compile(&compile).unwrap_err().to_string()
}

/// The fixture hook checks the cotangent's shape instead of reading past a buffer.
#[test]
fn output_and_gradients_rejects_a_cotangent_of_the_wrong_shape() {
    if skip() {
        return;
    }
    let model = Model::from_config(&mlp(), 2).unwrap();
    let sgd = cortex_core::nn::optim::Optimizer::parse(&json!("sgd")).unwrap();
    let loss = cortex_core::nn::loss::Loss::MeanSquaredError;
    let mut gpu = gpu_model::GpuModel::new(&model, &loss, &sgd, &|_| true).unwrap();
    let x = data(&[4, 7], 0.3);
    let err = gpu
        .output_and_gradients(&model, &x, &data(&[4, 2], 0.1))
        .unwrap_err()
        .to_string();
    assert!(err.contains("output cotangent") && err.contains("[4, 3]"), "{err}");
    let (y, dx, grads) = gpu.output_and_gradients(&model, &x, &data(&[4, 3], 0.1)).unwrap();
    assert_eq!((y.shape(), dx.unwrap().shape()), (&[4, 3][..], &[4, 7][..]));
    assert!(grads.iter().all(Option::is_some), "every weight reached");
}

/// Largest |a - b| / max|a| over every weight of two models.
fn weight_gap(a: &Model, b: &Model) -> f32 {
    let (a, b) = (a.get_weights().unwrap(), b.get_weights().unwrap());
    a.iter()
        .zip(&b)
        .map(|((_, _, x), (_, _, y))| {
            let scale = x.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
            x.iter().zip(y).fold(0.0f32, |m, (p, q)| m.max((p - q).abs() / scale))
        })
        .fold(0.0, f32::max)
}

#[test]
fn mixed_float16_trains_dense_layers_close_to_float32() {
    if skip() {
        return;
    }
    // Shapes the f16 GEMM takes (multiples of 4), large enough for the 128 tiles to matter.
    let config = json!({"className": "Sequential", "inputShape": [64], "layers": [
        {"className": "Dense", "config": {"units": 128, "activation": "relu"}},
        {"className": "Dense", "config": {"units": 12, "activation": "softmax"}}
    ]});
    let compile = json!({"optimizer": {"name": "sgd", "learningRate": 0.1, "momentum": 0.9},
        "loss": "sparseCategoricalCrossentropy", "device": "gpu!"});
    let mut f32_model = Model::from_config(&config, 5).unwrap();
    f32_model.compile(&compile).unwrap();
    let mut mixed = Model::from_config(&config, 5).unwrap();
    let mut mixed_compile = compile.clone();
    mixed_compile["precision"] = json!("mixed_float16");
    mixed.compile(&mixed_compile).unwrap();
    let x = data(&[200, 64], 0.3);
    // A learnable rule: the class is the largest of the first 12 features.
    let labels = x
        .data()
        .chunks(64)
        .map(|row| (0..12).fold(0, |best, j| if row[j] > row[best] { j } else { best }) as f32)
        .collect();
    let y = Tensor::new(labels, &[200]).unwrap();
    let has_f16 = cortex_core::nn::gpu_model::devices().iter().any(|d| d.shader_f16);
    let warning = mixed.compiled_ref().unwrap().device_warning.clone();
    assert_eq!(warning.is_some(), !has_f16, "{warning:?}");
    let mut losses = Vec::new();
    for step in 0..8 {
        let a = f32_model.train_on_batch(&x, &y).unwrap()[0].1;
        let b = mixed.train_on_batch(&x, &y).unwrap()[0].1;
        assert!(((a - b) / a).abs() < 1e-2, "step {step}: float32 loss {a} vs mixed {b}");
        losses.push(b);
    }
    assert!(losses[7] < 0.8 * losses[0], "mixed precision should learn: {losses:?}");
    let gap = weight_gap(&f32_model, &mixed);
    eprintln!("mixed_float16: losses {losses:?}, weight gap to float32 {gap:e}");
    assert!(gap < 2e-2, "weights drifted {gap} from float32");
    if has_f16 {
        // f16 operands really were used: float32 runs agree to ~1e-6.
        assert!(gap > 1e-5, "weights match float32 to {gap}: did the f16 GEMM run?");
    }
}

#[test]
fn precision_option_is_checked() {
    let mut m = Model::from_config(&mlp(), 1).unwrap();
    let cpu = m
        .compile(&json!({"loss": "meanSquaredError", "precision": "mixed_float16"}))
        .unwrap_err()
        .to_string();
    assert!(cpu.contains("GPU only"), "{cpu}");
    let bad = m
        .compile(&json!({"loss": "meanSquaredError", "device": "gpu", "precision": "float16"}))
        .unwrap_err()
        .to_string();
    assert!(
        bad.contains("'float32' or 'mixed_float16'") && bad.contains("float16"),
        "{bad}"
    );
    m.compile(&json!({"loss": "meanSquaredError", "precision": "float32"}))
        .unwrap();
}
