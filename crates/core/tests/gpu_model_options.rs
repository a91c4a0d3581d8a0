//! GPU models: what the GPU backend refuses (fallback warning or a "gpu!" error), the test hook
//! for output gradients, and the precision policy.

mod gpu_support;

use cortex_core::nn::gpu_model;
use cortex_core::nn::model::Model;
use cortex_core::Tensor;
use gpu_support::*;
use serde_json::{json, Value};

#[test]
fn unsupported_models_fall_back_with_a_warning_or_fail_when_strict() {
    if skip() {
        return;
    }
    assert!(!gpu_model::devices().is_empty(), "wgpu sees no adapter");
    // The planner has only tanh / sigmoid cells; the layers' own GPU ops have gelu cells but
    // not mixed precision: neither path takes this model.
    let config = json!({"className": "Sequential", "inputShape": [5, 1], "layers": [
        {"className": "LSTM", "config": {"units": 3, "activation": "gelu"}},
        {"className": "Dense", "config": {"units": 2}}
    ]});
    let compile = |device: &str| json!({"optimizer": "adam", "loss": "meanSquaredError", "device": device, "precision": "mixed_float16"});
    let mut model = Model::from_config(&config, 3).unwrap();
    model.compile(&compile("gpu")).unwrap();
    assert!(model.device_name().is_none());
    let warning = model.compiled_ref().unwrap().device_warning.clone().unwrap();
    assert!(warning.contains("activations other than tanh / sigmoid"), "{warning}");
    assert!(
        warning.contains("'mixed_float16' runs on the planned GPU models only"),
        "{warning}"
    );
    let x = Tensor::new((0..20).map(|i| (i * 7 % 9) as f32 / 9.0).collect(), &[4, 5, 1]).unwrap();
    let logs = model.train_on_batch(&x, &data(&[4, 2], 1.0)).unwrap();
    assert!(logs[0].1.is_finite());
    let err = model.compile(&compile("gpu!")).unwrap_err().to_string();
    assert!(err.contains("activations other than tanh / sigmoid"), "{err}");
    // In float32 the layers' own GPU ops take it, and train it as the CPU does.
    let (mut cpu, mut gpu) = pair(&config, json!({"optimizer": "adam", "loss": "meanSquaredError"}));
    for step in 0..3 {
        train_step_alike(
            &mut cpu,
            &mut gpu,
            &x,
            &data(&[4, 2], 1.0),
            &format!("gelu LSTM step {step}"),
        );
    }
    let err = model
        .compile(&json!({"optimizer": "adam", "loss": "meanSquaredError", "device": "tpu"}))
        .unwrap_err()
        .to_string();
    assert!(err.contains("device must be 'cpu', 'gpu'"), "{err}");
}

/// Attention options the planner's flash kernels lack (a value size other than the key size,
/// heads wider than 64, attention dropout while training): with "gpu!" the layers' own GPU
/// ops run them, and training matches the CPU step by step (one seed, one dropout mask).
#[test]
fn attention_the_planner_refuses_trains_on_the_gpu_through_its_layers() {
    if skip() {
        return;
    }
    for options in [
        json!({"numHeads": 2, "keyDim": 4, "valueDim": 3}),
        json!({"numHeads": 2, "keyDim": 80}),
        json!({"numHeads": 2, "keyDim": 4, "dropout": 0.3}),
    ] {
        let config = json!({"className": "Functional", "inputs": [[4, 6]],
            "layers": [{"className": "MultiHeadAttention", "config": options}],
            "nodes": [{"layer": 0, "inputs": [[-1, 0], [-1, 0]]}], "outputs": [[0, 0]]});
        // SGD, not Adam: the key bias's gradient is zero in exact arithmetic (the softmax
        // ignores a shift along a row), and Adam would turn each device's rounding noise in it
        // into full-size steps of opposite signs.
        let compile = json!({"optimizer": {"name": "sgd", "learningRate": 0.1}, "loss": "meanSquaredError"});
        let (mut cpu, mut gpu) = pair(&config, compile);
        let (x, y) = (data(&[5, 4, 6], 0.3), data(&[5, 4, 6], 0.8));
        for step in 0..3 {
            train_step_alike(&mut cpu, &mut gpu, &x, &y, &format!("{options} step {step}"));
        }
        let gap = weight_gap(&cpu, &gpu);
        assert!(gap < 1e-4, "{options}: weights differ by {gap}");
    }
}

/// What the planner refuses but the layers' own GPU ops run: the model's weights move to the
/// GPU at compile (even with "gpu!") and train there as on the CPU.
#[test]
fn models_the_planner_refuses_train_on_the_gpu_through_their_layers() {
    if skip() {
        return;
    }
    let seq = |input: Value, layers: Value| json!({"className": "Sequential", "inputShape": input, "layers": layers});
    let layer = |class: &str, config: Value| json!({"className": class, "config": config});
    let softmax_out = seq(
        json!([5]),
        json!([layer("Dense", json!({"units": 3, "activation": "softmax"}))]),
    );
    let two_outputs = json!({"className": "Functional", "inputs": [[5]],
        "layers": [{"className": "Dense", "config": {"units": 3}}, {"className": "Dense", "config": {"units": 3}}],
        "nodes": [{"layer": 0, "inputs": [[-1, 0]]}, {"layer": 1, "inputs": [[-1, 0]]}],
        "outputs": [[0, 0], [1, 0]]});
    let softmax_inside = seq(
        json!([5]),
        json!([
            layer("Dense", json!({"units": 4, "activation": "softmax"})),
            layer("Dense", json!({"units": 3}))
        ]),
    );
    for (config, compile) in [
        (
            &softmax_inside,
            json!({"optimizer": "adam", "loss": "meanSquaredError"}),
        ),
        (&softmax_out, json!({"optimizer": "adam", "loss": "binaryCrossentropy"})),
        (
            &softmax_out,
            json!({"optimizer": "adam", "loss": {"name": "categoricalCrossentropy", "fromLogits": true}}),
        ),
        (
            &softmax_out,
            json!({"optimizer": "rmsprop", "loss": "meanAbsoluteError"}),
        ),
        (&two_outputs, json!({"optimizer": "sgd", "loss": "meanSquaredError"})),
    ] {
        let mut cpu = Model::from_config(config, 4).unwrap();
        let mut gpu = Model::from_config(config, 4).unwrap();
        cpu.compile(&compile).unwrap();
        let mut strict = compile.clone();
        strict["device"] = json!("gpu!");
        gpu.compile(&strict).unwrap();
        assert!(gpu.device_name().is_some(), "{compile}");
        assert_eq!(gpu.weights_device(), cortex_core::Device::Gpu);
        let outputs = cpu.output_shapes().len();
        let x = data(&[6, 5], 0.2);
        let y = data(&[6, 3], 0.9).to_vec().iter().map(|v| v.abs()).collect::<Vec<_>>();
        let y = Tensor::new(y, &[6, 3]).unwrap();
        let batch = cortex_core::nn::model::Batch {
            xs: vec![x.clone()],
            ys: vec![y; outputs],
            sample_weight: None,
        };
        for _ in 0..3 {
            let (a, b) = (cpu.train_step(&batch).unwrap(), gpu.train_step(&batch).unwrap());
            assert!(
                (a[0].1 - b[0].1).abs() <= 1e-4 * a[0].1.abs().max(1e-3),
                "{compile}: {a:?} vs {b:?}"
            );
        }
        assert!(weight_gap(&cpu, &gpu) < 1e-4, "{compile}");
        // A CPU compile takes the weights back.
        gpu.compile(&compile).unwrap();
        assert_eq!(gpu.weights_device(), cortex_core::Device::Cpu);
    }
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

/// Largest |a - b| / max(max|a|, 1e-3) over every weight of two models.
fn weight_gap(a: &Model, b: &Model) -> f32 {
    let (a, b) = (a.get_weights().unwrap(), b.get_weights().unwrap());
    a.iter()
        .zip(&b)
        .map(|((_, _, x), (_, _, y))| {
            // At least 1e-3: a weight whose gradient is zero in exact arithmetic (attention's
            // key bias) holds only rounding noise, about 1e-10, on either device.
            let scale = x.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
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

/// Lion, LAMB, the clipping options and useEma train on the GPU as on the CPU: a planned model (dense
/// layers) and one the planner refuses (an LSTM whose returned states feed the loss, through
/// the layers' own GPU ops), same losses, weights and predictions after four steps.
#[test]
fn lion_lamb_and_gradient_clipping_train_on_the_gpu_as_on_the_cpu() {
    if skip() {
        return;
    }
    let planned = json!({"className": "Sequential", "inputShape": [5, 3], "layers": [
        {"className": "Flatten", "config": {}},
        {"className": "Dense", "config": {"units": 6, "activation": "tanh"}},
        {"className": "Dense", "config": {"units": 2}}
    ]});
    let layers_path = json!({"className": "Functional", "inputs": [[5, 3]],
        "layers": [
            {"className": "LSTM", "config": {"units": 4, "returnState": true}},
            {"className": "Concatenate", "config": {}},
            {"className": "Dense", "config": {"units": 2}}
        ],
        "nodes": [{"layer": 0, "inputs": [[-1, 0]]}, {"layer": 1, "inputs": [[0, 1], [0, 2]]},
                  {"layer": 2, "inputs": [[1, 0]]}],
        "outputs": [[2, 0]]});
    let x = data(&[6, 5, 3], 0.3);
    let y = Tensor::new((0..12).map(|i| (i % 5) as f32 * 3.0 - 4.0).collect(), &[6, 2]).unwrap();
    for optimizer in [
        json!({"name": "lion", "learningRate": 0.01}),
        json!({"name": "lamb", "learningRate": 0.05}),
        json!({"name": "sgd", "learningRate": 0.1, "clipnorm": 0.5}),
        json!({"name": "adam", "learningRate": 0.05, "clipvalue": 0.05}),
        json!({"name": "rmsprop", "learningRate": 0.01, "globalClipnorm": 0.5}),
        json!({"name": "sgd", "learningRate": 0.1, "useEma": true, "emaMomentum": 0.5}),
    ] {
        for (what, config) in [("planned", &planned), ("layers", &layers_path)] {
            let what = format!("{what} {optimizer}");
            let compile = json!({"optimizer": optimizer, "loss": "meanSquaredError"});
            let (mut cpu, mut gpu) = pair(config, compile);
            for step in 0..4 {
                train_step_alike(&mut cpu, &mut gpu, &x, &y, &format!("{what} step {step}"));
            }
            assert_same_weights(&cpu, &gpu, 1e-3);
            assert_same_predictions(&mut cpu, &mut gpu, &x, 1e-3, &what);
            // useEma: the averages replace the weights, as fit does at its end.
            let before = gpu.get_weights().unwrap();
            cpu.finalize_ema().unwrap();
            gpu.finalize_ema().unwrap();
            assert_same_weights(&cpu, &gpu, 1e-3);
            if optimizer.get("useEma").is_some() {
                assert!(
                    gpu.get_weights().unwrap() != before,
                    "{what}: the averages replaced the weights"
                );
            }
        }
    }
}

/// Dale's-law layers (eiDense with interneurons, an eiRNN into the row-sign eiDense readout)
/// train on the GPU as on the CPU: their sign-constrained weights take the host projection
/// after each device step, and no weight changes sign.
#[test]
fn dale_layers_train_on_the_gpu_as_on_the_cpu() {
    if skip() {
        return;
    }
    let dense = json!({"className": "Sequential", "inputShape": [5], "layers": [
        {"className": "EIDense", "config": {"units": 6, "activation": "relu"}},
        {"className": "Dense", "config": {"units": 3}}
    ]});
    let rnn = json!({"className": "Sequential", "inputShape": [4, 5], "layers": [
        {"className": "EIRNN", "config": {"units": 10}},
        {"className": "EIDense", "config": {"units": 3, "inhibitoryUnits": 0}}
    ]});
    for (what, config, x) in [
        ("eiDense", &dense, data(&[6, 5], 0.2)),
        ("eiRNN", &rnn, data(&[6, 4, 5], 0.2)),
    ] {
        let compile = json!({"optimizer": {"name": "adam", "learningRate": 0.05}, "loss": "meanSquaredError"});
        let (mut cpu, mut gpu) = pair(config, compile);
        let y = data(&[6, 3], 0.9);
        let before = cpu.get_weights().unwrap();
        for step in 0..4 {
            train_step_alike(&mut cpu, &mut gpu, &x, &y, &format!("{what} step {step}"));
        }
        let gap = weight_gap(&cpu, &gpu);
        assert!(gap < 1e-4, "{what}: weights differ by {gap}");
        let signed = |name: &str| name.starts_with("ei_") && !name.ends_with("bias");
        let mut checked = 0;
        for ((name, _, w0), (_, _, w1)) in before.iter().zip(&gpu.get_weights().unwrap()) {
            for (a, b) in w0.iter().zip(w1).filter(|_| signed(name)) {
                assert!(a * b >= 0.0, "{what}: '{name}' changed sign ({a} -> {b})");
                checked += 1;
            }
        }
        assert!(checked > 0, "{what}: no sign-constrained weight found");
    }
}
