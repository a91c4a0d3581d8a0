//! Conformance suite: every fixture case of the foundation ops (dense, conv2d, pooling,
//! activations, losses, optimizers, a whole CNN training step) against the PyTorch float64
//! references in test/fixtures/fixtures.json, forward values and gradients, through the same
//! layer, loss and optimizer code that models use.
//!
//! Layer cases run on the CPU and, for the layers the GPU has, twice more there: through the
//! same layer code with GPU weights and input (the tape's ops dispatch on the device), and as
//! a one-layer model compiled for the GPU (the planner GPU models train with). The
//! kernel-level GPU suite (crates/wgpu/tests/gpu/fixtures.rs) covers losses and optimizer
//! updates there.
//! `CORTEX_SKIP_GPU_TESTS=1` leaves the GPU out.

use cortex_core::backprop::backward_with_seed;
use cortex_core::nn::layers::{self, ForwardCtx};
use cortex_core::nn::loss::Loss;
use cortex_core::nn::optim::Optimizer;
use cortex_core::nn::Sequential;
use cortex_core::rng::Rng;
use cortex_core::{Device, Tensor};
use serde_json::{json, Value};

mod common;
mod fixture_support;
use common::{check_planner_case, skip_gpu};
use fixture_support::{all_cases, cases, data_of, shape_of};

fn tensor_of(v: &Value) -> Tensor {
    Tensor::new(data_of(v), &shape_of(v)).unwrap()
}

/// |got - want| <= 1e-5 + 1e-4 |want| for every element.
fn assert_close(what: &str, got: &[f32], want: &Value) {
    let want = data_of(want);
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!((g - w).abs() <= 1e-5 + 1e-4 * w.abs(), "{what}[{i}]: got {g}, want {w}");
    }
}

fn camel(attrs: &Value, op: &str) -> (String, Value) {
    let a = |k: &str| attrs[k].clone();
    match op {
        "dense" => ("Dense".into(), json!({"units": 0, "useBias": a("use_bias")})),
        "conv2d" => (
            "Conv2D".into(),
            json!({"filters": a("filters"), "kernelSize": a("kernel_size"), "strides": a("strides"),
                   "padding": a("padding"), "dilationRate": a("dilation_rate")}),
        ),
        "max_pooling2d" => (
            "MaxPooling2D".into(),
            json!({"poolSize": a("pool_size"), "strides": a("strides"), "padding": a("padding")}),
        ),
        "avg_pooling2d" => (
            "AveragePooling2D".into(),
            json!({"poolSize": a("pool_size"), "strides": a("strides"), "padding": a("padding")}),
        ),
        "global_average_pooling2d" => ("GlobalAveragePooling2D".into(), json!({})),
        "activation" => {
            let name = attrs["activation"].as_str().unwrap();
            let name = if name.starts_with("leaky_relu") {
                "leaky_relu"
            } else {
                name
            };
            ("Activation".into(), json!({ "activation": name }))
        }
        other => panic!("no layer for {other}"),
    }
}

/// Checks one layer case on the CPU, and on the GPU where it has the layer; returns whether the
/// GPU ran it.
/// How a layer case was checked besides the CPU.
#[derive(Default)]
struct Checked {
    /// Through a one-layer model compiled for the GPU (the planner, `nn/gpu_model`).
    planner: usize,
    /// Through the same layer code as the CPU, with GPU weights and input (the tape's ops).
    tape: usize,
}

fn check_layer_case(case: &Value) -> Checked {
    let op = case["op"].as_str().unwrap();
    let keys = check_layer_on(case, Device::Cpu);
    let mut checked = Checked::default();
    if skip_gpu() {
        return checked;
    }
    if on_gpu_too(op, &case["attrs"]) {
        let (class, config) = layer_config(case);
        check_planner_case(case, &class, &config, &keys);
        checked.planner = 1;
    }
    if through_tape_on_gpu(op) {
        check_layer_on(case, Device::Gpu);
        checked.tape = 1;
    }
    checked
}

fn layer_config(case: &Value) -> (String, Value) {
    let op = case["op"].as_str().unwrap();
    let (class, mut config) = camel(&case["attrs"], op);
    if op == "dense" {
        config["units"] = json!(shape_of(&case["params"]["kernel"])[1]);
    }
    config["name"] = json!("layer");
    (class, config)
}

/// Runs the case's layer with its weights and input on `device`; returns the weight names.
fn check_layer_on(case: &Value, device: Device) -> Vec<String> {
    let name = format!("{} ({})", case["name"].as_str().unwrap(), device.name());
    let (class, config) = layer_config(case);
    let x_ref = &case["inputs"]["x"];
    let x_shape = shape_of(x_ref);
    let (mut layer, _) = layers::from_config(&class, &config).unwrap();
    layer.build(&x_shape[1..], &mut Rng::new(0)).unwrap();
    let params = layer.params();
    for p in &params {
        let key = p.name.split('/').next_back().unwrap();
        p.set(data_of(&case["params"][key])).unwrap();
        p.to_device(device).unwrap();
    }
    let x = tensor_of(x_ref).to(device).unwrap().with_requires_grad(true);
    let y = layer
        .forward(&x, &mut ForwardCtx::new(false, &mut Rng::new(0)))
        .unwrap();
    assert_eq!(y.device(), device, "{name}: the output stays on the device");
    assert_eq!(
        y.shape(),
        shape_of(&case["outputs"]["y"]).as_slice(),
        "{name}: output shape"
    );
    assert_close(&format!("{name} y"), y.data(), &case["outputs"]["y"]);
    let leaves: Vec<Tensor> = params.iter().map(|p| p.get()).collect();
    let grads = backward_with_seed(&y, data_of(&case["cotangents"]["y"])).unwrap();
    assert_close(&format!("{name} dx"), grads.get(&x).unwrap(), &case["grads"]["x"]);
    for (p, leaf) in params.iter().zip(&leaves) {
        let key = p.name.split('/').next_back().unwrap();
        assert_close(&format!("{name} d{key}"), grads.get(leaf).unwrap(), &case["grads"][key]);
    }
    params
        .iter()
        .map(|p| p.name.split('/').next_back().unwrap().to_string())
        .collect()
}

/// Layers whose ops all have GPU kernels, so their CPU code runs on the GPU unchanged.
fn through_tape_on_gpu(op: &str) -> bool {
    matches!(
        op,
        "dense" | "conv2d" | "max_pooling2d" | "avg_pooling2d" | "global_average_pooling2d" | "activation"
    )
}

/// The expected count of GPU-checked cases: `n`, or 0 when GPU tests are skipped.
fn on_gpu(n: usize) -> usize {
    if skip_gpu() {
        0
    } else {
        n
    }
}

/// Whether the GPU backend has this layer (softmax is only fused into the cross-entropy there).
fn on_gpu_too(op: &str, attrs: &Value) -> bool {
    if skip_gpu() {
        return false;
    }
    match op {
        "dense" | "conv2d" | "max_pooling2d" | "avg_pooling2d" | "global_average_pooling2d" => true,
        "activation" => !matches!(attrs["activation"].as_str().unwrap(), "softmax" | "log_softmax"),
        _ => false,
    }
}

/// Runs every layer case of `ops`; returns (cases, cases also checked on the GPU through the
/// planner, cases also checked on the GPU through the layer code).
fn run_ops(ops: &[&str]) -> (usize, usize, usize) {
    let (mut n, mut planner, mut tape) = (0, 0, 0);
    for case in all_cases() {
        if ops.contains(&case["op"].as_str().unwrap()) {
            let checked = check_layer_case(&case);
            (planner, tape) = (planner + checked.planner, tape + checked.tape);
            n += 1;
        }
    }
    (n, planner, tape)
}

#[test]
fn dense_matches_pytorch() {
    assert_eq!(run_ops(&["dense"]), (2, on_gpu(2), on_gpu(2)));
}

#[test]
fn conv2d_matches_pytorch() {
    assert_eq!(run_ops(&["conv2d"]), (6, on_gpu(6), on_gpu(6)));
}

/// Max, average and global average pooling, on both devices.
#[test]
fn pooling_matches_pytorch() {
    assert_eq!(
        run_ops(&["max_pooling2d", "avg_pooling2d", "global_average_pooling2d"]),
        (5, on_gpu(5), on_gpu(5))
    );
}

/// Every activation on both devices through the layer code; the planner has all but softmax
/// and logSoftmax (it folds softmax into the cross-entropy).
#[test]
fn activations_match_pytorch() {
    let (mut n, mut planner, mut tape) = (0, 0, 0);
    for case in cases("activation") {
        let act = case["attrs"]["activation"].as_str().unwrap();
        if act == "leaky_relu_0.2" {
            assert!(act.ends_with("0.2"), "the default leakyRelu slope is 0.2");
        }
        let checked = check_layer_case(&case);
        (planner, tape) = (planner + checked.planner, tape + checked.tape);
        n += 1;
    }
    assert_eq!((n, planner, tape), (12, on_gpu(10), on_gpu(12)));
}

/// Every loss on the CPU and, through the same `Loss::compute`, on the GPU.
#[test]
fn losses_match_pytorch() {
    let devices: &[Device] = if skip_gpu() {
        &[Device::Cpu]
    } else {
        &[Device::Cpu, Device::Gpu]
    };
    let mut n = 0;
    for (case, &device) in cases("loss").iter().flat_map(|c| devices.iter().map(move |d| (c, d))) {
        let name = format!("{} ({})", case["name"].as_str().unwrap(), device.name());
        let attrs = &case["attrs"];
        let loss_name = attrs["loss"].as_str().unwrap();
        let spec = match attrs.get("from_logits") {
            Some(f) => json!({"name": loss_name, "fromLogits": f}),
            None => json!(loss_name),
        };
        let loss = Loss::parse(&spec).unwrap();
        let target = if case.get("int_targets").is_some() {
            tensor_of(&case["int_targets"])
        } else {
            tensor_of(&case["targets"])
        };
        let target = target.to(device).unwrap();
        let x = tensor_of(&case["inputs"]["x"])
            .to(device)
            .unwrap()
            .with_requires_grad(true);
        let value = loss.compute(&x, &target).unwrap();
        assert_eq!(value.device(), device, "{name}: the loss stays on the device");
        assert_close(&format!("{name} loss"), value.data(), &case["outputs"]["loss"]);
        let grads = backward_with_seed(&value, data_of(&case["cotangents"]["loss"])).unwrap();
        assert_close(&format!("{name} dx"), grads.get(&x).unwrap(), &case["grads"]["x"]);
        n += 1;
    }
    assert_eq!(n, 5 * devices.len());
}

#[test]
fn optimizers_match_pytorch() {
    let (mut n, mut on_device) = (0, 0);
    for case in cases("optimizer") {
        let a = &case["attrs"];
        let mut spec = json!({"name": a["optimizer"], "learningRate": a["learning_rate"]});
        for (from, to) in [
            ("momentum", "momentum"),
            ("nesterov", "nesterov"),
            ("beta_1", "beta1"),
            ("beta_2", "beta2"),
            ("epsilon", "epsilon"),
            ("weight_decay", "weightDecay"),
            ("rho", "rho"),
        ] {
            if let Some(v) = a.get(from) {
                spec[to] = v.clone();
            }
        }
        let mut opt = Optimizer::parse(&spec).unwrap();
        let mut p = data_of(&case["params"]["p0"]);
        let trajectory = case["outputs"]["trajectory"].as_array().unwrap();
        let grads_sequence: Vec<Vec<f32>> = case["grads_sequence"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| {
                g.as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap() as f32)
                    .collect()
            })
            .collect();
        for (step, g) in grads_sequence.iter().enumerate() {
            opt.begin_step();
            opt.update(0, &mut p, g).unwrap();
            let want = json!({ "data": trajectory[step] });
            assert_close(&format!("{} step {step}", case["name"]), &p, &want);
        }
        n += 1;
        // The device kernels (weights moved with to_device) follow the same trajectory.
        let mut opt = Optimizer::parse(&spec).unwrap();
        if skip_gpu() {
            continue;
        }
        let gpu = cortex_core::device::shared_gpu().unwrap();
        let p0 = data_of(&case["params"]["p0"]);
        let mut w = gpu.upload(&p0, &[p0.len()]).unwrap();
        for (step, g) in grads_sequence.iter().enumerate() {
            opt.begin_step();
            let g = gpu.upload(g, &[g.len()]).unwrap();
            opt.update_on_device(0, &mut w, &g).unwrap();
            let want = json!({ "data": trajectory[step] });
            assert_close(
                &format!("{} (gpu) step {step}", case["name"]),
                &gpu.download(&w).unwrap(),
                &want,
            );
        }
        on_device += 1;
    }
    assert_eq!((n, on_device), (6, on_gpu(6)));
}

/// The whole-model step runs on the CPU, and twice on whatever adapter wgpu finds (lavapipe
/// without a GPU; skipped as `skip_gpu` says): compiled for the GPU (the planner), and with
/// the weights moved there (`tape-gpu`: the CPU's layer, loss and fit code on GPU tensors).
#[test]
fn cnn_training_step_matches_pytorch() {
    for device in ["cpu", "gpu!", "tape-gpu"] {
        if device != "cpu" && skip_gpu() {
            continue;
        }
        cnn_training_step_on(device);
    }
}

fn cnn_training_step_on(device: &str) {
    let case = all_cases()
        .into_iter()
        .find(|c| c["name"] == "model_cnn_sgd_step")
        .unwrap();
    let x = tensor_of(&case["inputs"]["x"]);
    let y = tensor_of(&case["int_inputs"]["y"]);
    let classes = shape_of(&case["params"]["dense_kernel"])[1];
    let config = json!({"layers": [
        {"className": "Conv2D", "config": {"filters": shape_of(&case["params"]["conv_kernel"])[3], "kernelSize": 3,
                                           "activation": "relu", "inputShape": &x.shape()[1..]}},
        {"className": "MaxPooling2D", "config": {"poolSize": 2}},
        {"className": "Flatten", "config": {}},
        {"className": "Dense", "config": {"units": classes}},
    ]});
    let mut model = Sequential::from_config(&config, 1).unwrap();
    model
        .compile(
            &json!({"optimizer": {"name": "sgd", "learningRate": case["attrs"]["learning_rate"]},
                         "loss": {"name": "sparseCategoricalCrossentropy", "fromLogits": true},
                         "device": if device == "tape-gpu" { "cpu" } else { device }}),
        )
        .unwrap();
    let p = &case["params"];
    let names = ["conv_kernel", "conv_bias", "dense_kernel", "dense_bias"];
    model
        .set_weights(&names.iter().map(|k| data_of(&p[k])).collect::<Vec<_>>())
        .unwrap();
    if device == "tape-gpu" {
        model.to_device(Device::Gpu).unwrap();
        assert_eq!(model.weights_device(), Device::Gpu);
    }
    let logs = model.train_on_batch(&x, &y).unwrap();
    assert_close("loss before", &[logs[0].1 as f32], &case["outputs"]["loss"]);
    let after = model.get_weights().unwrap();
    for (k, (_, _, w)) in names.iter().zip(&after) {
        assert_close(&format!("{k} after"), w, &case["outputs"]["params_after"][k]);
    }
    let loss_after = model.evaluate(&x, &y, 64).unwrap();
    assert_close("loss after", &[loss_after[0].1 as f32], &case["outputs"]["loss_after"]);
    if device == "tape-gpu" {
        assert_eq!(
            model.weights_device(),
            Device::Gpu,
            "training keeps the weights on the GPU"
        );
        let preds = model.predict(&x, 64).unwrap();
        assert_eq!(preds.device(), Device::Cpu, "predictions come back as host data");
    }
}
