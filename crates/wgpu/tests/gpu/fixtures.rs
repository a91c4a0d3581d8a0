//! The PyTorch fixture suite (test/fixtures/fixtures.json) on the GPU kernels: every case whose
//! op the GPU backend implements runs here, forward values and gradients, with the tolerance of
//! the CPU suite (crates/core/tests/fixtures*.rs): |got - want| <= 1e-5 + 1e-4 |want|.
//!
//! Each fixture case is accounted for: it runs on the GPU, or its op is listed in
//! [`CPU_ONLY`] with the reason. A new fixture op fails [`every_fixture_case_is_accounted_for`]
//! until it gets a GPU check or a line there, so coverage cannot shrink silently.
//!
//! The fixtures file is found through `CORTEX_FIXTURES`, else the checkout this test was
//! built in, else `test/fixtures/fixtures.json` under the working directory (a test binary
//! carried to another machine and run from the repository root).

use cortex_wgpu::{
    Activation, AdamParams, BinaryOp, Conv2dSpec, CrossEntropyInput, Gpu, GpuTensor, Pool2dSpec, RmsPropParams,
    SgdParams,
};
use serde_json::Value;

use crate::common::gpu;

/// Fixture ops the GPU backend does not run yet, with why. Activations are per name below.
const CPU_ONLY: &[(&str, &str)] = &[
    ("avg_pooling2d", "no average-pooling kernel on the GPU yet"),
    ("global_average_pooling2d", "no global pooling kernel on the GPU yet"),
    (
        "conv1d",
        "runs on the conv2d kernels through the model code: crates/core/tests/fixtures_spatial.rs, both devices",
    ),
    (
        "conv2d_transpose",
        "runs on the conv2d kernels through the model code: crates/core/tests/fixtures_spatial.rs, both devices",
    ),
    (
        "model_train_step",
        "runs through the model code: crates/core/tests/fixtures.rs, both devices",
    ),
];

/// Activations with a GPU kernel, by fixture name.
fn gpu_activation(name: &str) -> Option<Activation> {
    Some(match name {
        "relu" => Activation::Relu,
        "sigmoid" => Activation::Sigmoid,
        "tanh" => Activation::Tanh,
        "gelu_tanh" => Activation::Gelu,
        "gelu" => Activation::GeluErf,
        "leaky_relu_0.2" => Activation::LeakyRelu(0.2),
        "elu" => Activation::Elu(1.0),
        "selu" => Activation::Selu,
        "swish" => Activation::Swish,
        "softplus" => Activation::Softplus,
        _ => return None,
    })
}

fn fixtures() -> Vec<Value> {
    let candidates = [
        std::env::var("CORTEX_FIXTURES").ok(),
        Some(concat!(env!("CARGO_MANIFEST_DIR"), "/../../test/fixtures/fixtures.json").to_string()),
        Some("test/fixtures/fixtures.json".to_string()),
    ];
    let path = candidates
        .into_iter()
        .flatten()
        .find(|p| std::path::Path::new(p).exists())
        .expect("test/fixtures/fixtures.json not found (set CORTEX_FIXTURES)");
    let text = std::fs::read_to_string(&path).expect("fixtures.json is readable");
    let v: Value = serde_json::from_str(&text).expect("fixtures.json parses");
    v["cases"].as_array().expect("a cases array").clone()
}

fn cases_of(op: &str) -> Vec<Value> {
    fixtures().into_iter().filter(|c| c["op"] == op).collect()
}

fn shape(v: &Value) -> Vec<usize> {
    let dims = v["shape"].as_array().expect("a shape");
    dims.iter().map(|d| d.as_u64().expect("a dimension") as usize).collect()
}

fn data(v: &Value) -> Vec<f32> {
    let values = v["data"].as_array().or_else(|| v.as_array()).expect("data");
    values.iter().map(|d| d.as_f64().expect("a number") as f32).collect()
}

fn upload(g: &Gpu, v: &Value) -> GpuTensor {
    g.upload(&data(v), &shape(v)).expect("upload")
}

fn check(g: &Gpu, what: &str, got: &GpuTensor, want: &Value) {
    let got = g.download(got).expect("download");
    let want = data(want);
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!((g - w).abs() <= 1e-5 + 1e-4 * w.abs(), "{what}[{i}]: got {g}, want {w}");
    }
}

fn pair(v: &Value) -> (usize, usize) {
    let a = v.as_array().expect("a pair");
    (a[0].as_u64().unwrap() as usize, a[1].as_u64().unwrap() as usize)
}

/// TensorFlow's padding (top, left, bottom, right): none for 'valid'; for 'same', enough for
/// ceil(in / stride) outputs with the odd pixel at the bottom/right.
fn tf_padding(same: bool, hw: (usize, usize), window: (usize, usize), strides: (usize, usize)) -> [usize; 4] {
    if !same {
        return [0; 4];
    }
    let total = |n: usize, k: usize, s: usize| ((n.div_ceil(s) - 1) * s + k).saturating_sub(n);
    let (th, tw) = (total(hw.0, window.0, strides.0), total(hw.1, window.1, strides.1));
    [th / 2, tw / 2, th - th / 2, tw - tw / 2]
}

#[test]
fn every_fixture_case_is_accounted_for() {
    let gpu_ops = [
        "dense",
        "conv2d",
        "max_pooling2d",
        "activation",
        "loss",
        "optimizer",
        "layer_normalization",
        "batch_normalization",
        "embedding",
        "lstm",
        "gru",
        "simple_rnn",
        "multi_head_attention",
    ];
    for case in fixtures() {
        let op = case["op"].as_str().unwrap();
        assert!(
            gpu_ops.contains(&op) || CPU_ONLY.iter().any(|(o, _)| *o == op),
            "fixture op '{op}' ({}) is neither checked on the GPU nor listed in CPU_ONLY",
            case["name"]
        );
        if op == "activation" {
            let name = case["attrs"]["activation"].as_str().unwrap();
            assert!(
                gpu_activation(name).is_some() || name == "softmax" || name == "log_softmax",
                "activation '{name}' is not accounted for"
            );
        }
    }
}

#[test]
fn dense_fixtures_on_gpu() {
    let Some(g) = gpu() else { return };
    let cases = cases_of("dense");
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let x = upload(g, &case["inputs"]["x"]);
        let w = upload(g, &case["params"]["kernel"]);
        let b = upload(g, &case["params"]["bias"]);
        let y = g.bias_add(&g.matmul(&x, &w, false, false).unwrap(), &b).unwrap();
        check(g, &format!("{name} y"), &y, &case["outputs"]["y"]);
        let dy = upload(g, &case["cotangents"]["y"]);
        check(
            g,
            &format!("{name} dx"),
            &g.matmul(&dy, &w, false, true).unwrap(),
            &case["grads"]["x"],
        );
        check(
            g,
            &format!("{name} dkernel"),
            &g.matmul(&x, &dy, true, false).unwrap(),
            &case["grads"]["kernel"],
        );
        check(
            g,
            &format!("{name} dbias"),
            &g.sum_rows(&dy).unwrap(),
            &case["grads"]["bias"],
        );
    }
    assert_eq!(cases.len(), 2);
}

#[test]
fn conv2d_fixtures_on_gpu() {
    let Some(g) = gpu() else { return };
    let cases = cases_of("conv2d");
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let a = &case["attrs"];
        let xs = shape(&case["inputs"]["x"]);
        let ks = shape(&case["params"]["kernel"]);
        let dilation = pair(&a["dilation_rate"]);
        let strides = pair(&a["strides"]);
        let extent = (dilation.0 * (ks[0] - 1) + 1, dilation.1 * (ks[1] - 1) + 1);
        let spec = Conv2dSpec {
            strides,
            dilation,
            padding: tf_padding(a["padding"] == "same", (xs[1], xs[2]), extent, strides),
        };
        let x = upload(g, &case["inputs"]["x"]);
        let k = upload(g, &case["params"]["kernel"]);
        let b = upload(g, &case["params"]["bias"]);
        let y = g.bias_add(&g.conv2d(&x, &k, &spec).unwrap(), &b).unwrap();
        assert_eq!(
            y.shape(),
            shape(&case["outputs"]["y"]).as_slice(),
            "{name}: output shape"
        );
        check(g, &format!("{name} y"), &y, &case["outputs"]["y"]);
        let dy = upload(g, &case["cotangents"]["y"]);
        let dx = g
            .conv2d_backward_input(&dy, &k, [xs[0], xs[1], xs[2], xs[3]], &spec)
            .unwrap();
        check(g, &format!("{name} dx"), &dx, &case["grads"]["x"]);
        let dk = g.conv2d_backward_filter(&x, &dy, (ks[0], ks[1]), &spec).unwrap();
        check(g, &format!("{name} dkernel"), &dk, &case["grads"]["kernel"]);
        check(
            g,
            &format!("{name} dbias"),
            &g.sum_rows(&dy).unwrap(),
            &case["grads"]["bias"],
        );
    }
    assert_eq!(cases.len(), 6);
}

#[test]
fn max_pooling_fixtures_on_gpu() {
    let Some(g) = gpu() else { return };
    let cases = cases_of("max_pooling2d");
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let a = &case["attrs"];
        let xs = shape(&case["inputs"]["x"]);
        let (pool, strides) = (pair(&a["pool_size"]), pair(&a["strides"]));
        let spec = Pool2dSpec {
            pool,
            strides,
            padding: tf_padding(a["padding"] == "same", (xs[1], xs[2]), pool, strides),
        };
        let x = upload(g, &case["inputs"]["x"]);
        let out = g.max_pool2d(&x, &spec).unwrap();
        check(g, &format!("{name} y"), &out.output, &case["outputs"]["y"]);
        let dy = upload(g, &case["cotangents"]["y"]);
        let dx = g
            .max_pool2d_backward(&dy, &out.argmax, [xs[0], xs[1], xs[2], xs[3]], &spec)
            .unwrap();
        check(g, &format!("{name} dx"), &dx, &case["grads"]["x"]);
    }
    assert_eq!(cases.len(), 2);
}

#[test]
fn activation_fixtures_on_gpu() {
    let Some(g) = gpu() else { return };
    let mut checked = 0;
    for case in cases_of("activation") {
        let name = case["attrs"]["activation"].as_str().unwrap();
        let x = upload(g, &case["inputs"]["x"]);
        if name == "softmax" || name == "log_softmax" {
            let y = match name {
                "softmax" => g.softmax(&x).unwrap(),
                _ => g.log_softmax(&x).unwrap(),
            };
            check(g, &format!("{name} y"), &y, &case["outputs"]["y"]);
            let dy = upload(g, &case["cotangents"]["y"]);
            let dx = match name {
                "softmax" => g.softmax_backward(&y, &dy).unwrap(),
                _ => g.log_softmax_backward(&y, &dy).unwrap(),
            };
            check(g, &format!("{name} dx"), &dx, &case["grads"]["x"]);
            checked += 1;
            continue;
        }
        let Some(act) = gpu_activation(name) else { continue };
        check(
            g,
            &format!("{name} y"),
            &g.activation(act, &x).unwrap(),
            &case["outputs"]["y"],
        );
        let dy = upload(g, &case["cotangents"]["y"]);
        let dx = g.activation_backward(act, &x, &dy).unwrap();
        check(g, &format!("{name} dx"), &dx, &case["grads"]["x"]);
        checked += 1;
    }
    assert_eq!(
        checked, 12,
        "relu, sigmoid, tanh, gelu, gelu_tanh, leaky_relu_0.2, elu, selu, swish, softplus, softmax \
         and log_softmax"
    );
}

#[test]
fn loss_fixtures_on_gpu() {
    let Some(g) = gpu() else { return };
    let mut checked = 0;
    for case in cases_of("loss") {
        let name = case["name"].as_str().unwrap();
        let x = upload(g, &case["inputs"]["x"]);
        let seed = data(&case["cotangents"]["loss"])[0];
        let (loss, grad) = match case["attrs"]["loss"].as_str().unwrap() {
            "sparse_categorical_crossentropy" => {
                let labels = upload(g, &case["int_targets"]);
                let ce = g.sparse_categorical_crossentropy(&x, &labels, input_of(&case)).unwrap();
                (ce.loss, ce.grad)
            }
            // The same composition as the GPU models' MSE: mean((x - t)^2), 2 (x - t) / n.
            "mean_squared_error" => {
                let t = upload(g, &case["targets"]);
                let diff = g.binary(BinaryOp::Sub, &x, &t).unwrap();
                let loss = g.mean(&g.mul(&diff, &diff).unwrap()).unwrap();
                (loss, g.scale(&diff, 2.0 / x.len() as f32, 0.0).unwrap())
            }
            "categorical_crossentropy" => {
                let out = g
                    .categorical_crossentropy(&x, &upload(g, &case["targets"]), input_of(&case))
                    .unwrap();
                (out.loss, out.grad)
            }
            "binary_crossentropy" => {
                let out = g
                    .binary_crossentropy(&x, &upload(g, &case["targets"]), input_of(&case))
                    .unwrap();
                (out.loss, out.grad)
            }
            "mean_absolute_error" => {
                let out = g.mean_absolute_error(&x, &upload(g, &case["targets"])).unwrap();
                (out.loss, out.grad)
            }
            other => panic!("loss fixture '{name}': no GPU check for '{other}'"),
        };
        check(g, &format!("{name} loss"), &loss, &case["outputs"]["loss"]);
        check(
            g,
            &format!("{name} dx"),
            &g.scale(&grad, seed, 0.0).unwrap(),
            &case["grads"]["x"],
        );
        checked += 1;
    }
    assert_eq!(
        checked, 5,
        "categorical cross-entropy (probabilities, logits), sparse categorical cross-entropy (logits), \
         binary cross-entropy (logits) and MSE"
    );
}

fn input_of(case: &Value) -> CrossEntropyInput {
    if case["attrs"]["from_logits"] == true {
        CrossEntropyInput::Logits
    } else {
        CrossEntropyInput::Probabilities
    }
}

#[test]
fn optimizer_fixtures_on_gpu() {
    let Some(g) = gpu() else { return };
    let mut checked = 0;
    for case in cases_of("optimizer") {
        let name = case["name"].as_str().unwrap();
        let a = &case["attrs"];
        let f = |k: &str| a[k].as_f64().unwrap_or(0.0) as f32;
        let p0 = &case["params"]["p0"];
        let mut w = upload(g, p0);
        let mut s1 = g.zeros(&shape(p0)).unwrap();
        let mut s2 = g.zeros(&shape(p0)).unwrap();
        let trajectory = case["outputs"]["trajectory"].as_array().unwrap();
        let kind = a["optimizer"].as_str().unwrap();
        for (step, grad) in case["grads_sequence"].as_array().unwrap().iter().enumerate() {
            let grad = g.upload(&data(grad), &shape(p0)).unwrap();
            if kind == "sgd" {
                let hp = SgdParams {
                    lr: f("learning_rate"),
                    momentum: f("momentum"),
                    nesterov: a["nesterov"] == true,
                };
                let velocity = (hp.momentum != 0.0).then_some(&mut s1);
                g.sgd_update(&mut w, &grad, velocity, &hp).unwrap();
            } else if kind == "rmsprop" {
                let hp = RmsPropParams {
                    lr: f("learning_rate"),
                    rho: f("rho"),
                    epsilon: f("epsilon"),
                };
                g.rmsprop_update(&mut w, &grad, &mut s1, &hp).unwrap();
            } else {
                assert!(
                    matches!(kind, "adam" | "adamw"),
                    "optimizer fixture '{name}': no GPU check for '{kind}'"
                );
                // AdamW as GPU models run it: the decoupled decay, then the Adam step.
                let decay = f("learning_rate") * f("weight_decay");
                if decay > 0.0 {
                    w = g.scale(&w, 1.0 - decay, 0.0).unwrap();
                }
                let hp = AdamParams {
                    lr: f("learning_rate"),
                    beta1: f("beta_1"),
                    beta2: f("beta_2"),
                    epsilon: f("epsilon"),
                    step: step as u32 + 1,
                };
                g.adam_update(&mut w, &grad, &mut s1, &mut s2, &hp).unwrap();
            }
            check(g, &format!("{name} step {step}"), &w, &trajectory[step]);
        }
        checked += 1;
    }
    assert_eq!(checked, 6, "sgd, sgd_momentum, sgd_nesterov, adam, adamw, rmsprop");
}

#[test]
fn layer_norm_fixture_on_gpu() {
    let Some(g) = gpu() else { return };
    let cases = cases_of("layer_normalization");
    for case in &cases {
        let eps = case["attrs"]["epsilon"].as_f64().unwrap() as f32;
        let x = upload(g, &case["inputs"]["x"]);
        let gamma = upload(g, &case["params"]["gamma"]);
        let out = g
            .layer_norm(&x, &gamma, &upload(g, &case["params"]["beta"]), eps)
            .unwrap();
        check(g, "layer_norm y", &out.y, &case["outputs"]["y"]);
        let dy = upload(g, &case["cotangents"]["y"]);
        let grads = g.layer_norm_backward(&x, &gamma, &out.mean, &out.rstd, &dy).unwrap();
        check(g, "layer_norm dx", &grads.dx, &case["grads"]["x"]);
        check(g, "layer_norm dgamma", &grads.dgamma, &case["grads"]["gamma"]);
        check(g, "layer_norm dbeta", &grads.dbeta, &case["grads"]["beta"]);
    }
    assert_eq!(cases.len(), 1);
}

/// Training mode: the batch statistics, and dx through them.
#[test]
fn batch_norm_fixture_on_gpu() {
    let Some(g) = gpu() else { return };
    let cases = cases_of("batch_normalization");
    for case in &cases {
        assert_eq!(case["attrs"]["training"], true);
        let eps = case["attrs"]["epsilon"].as_f64().unwrap() as f32;
        let x = upload(g, &case["inputs"]["x"]);
        let (gamma, beta) = (upload(g, &case["params"]["gamma"]), upload(g, &case["params"]["beta"]));
        let stats = g.batch_norm_stats(&x).unwrap();
        let y = g
            .batch_norm(&x, &stats.mean, &stats.var, Some(&gamma), Some(&beta), eps)
            .unwrap();
        check(g, "batch_norm y", &y, &case["outputs"]["y"]);
        let dy = upload(g, &case["cotangents"]["y"]);
        let grads = g
            .batch_norm_backward(&x, &dy, &stats.mean, &stats.var, Some(&gamma), eps, true, true)
            .unwrap();
        check(g, "batch_norm dx", grads.dx.as_ref().unwrap(), &case["grads"]["x"]);
        check(g, "batch_norm dgamma", &grads.dgamma, &case["grads"]["gamma"]);
        check(g, "batch_norm dbeta", &grads.dbeta, &case["grads"]["beta"]);
    }
    assert_eq!(cases.len(), 1);
}

#[test]
fn embedding_fixture_on_gpu() {
    let Some(g) = gpu() else { return };
    let cases = cases_of("embedding");
    for case in &cases {
        let table = upload(g, &case["params"]["embeddings"]);
        let ids = upload(g, &case["int_inputs"]["x"]);
        check(
            g,
            "embedding y",
            &g.embedding(&table, &ids).unwrap(),
            &case["outputs"]["y"],
        );
        let dy = upload(g, &case["cotangents"]["y"]);
        let vocab = shape(&case["params"]["embeddings"])[0];
        let d_table = g.embedding_backward(&ids, &dy, vocab).unwrap();
        check(g, "embedding dtable", &d_table, &case["grads"]["embeddings"]);
    }
    assert_eq!(cases.len(), 1);
}

/// The fixture cases of one recurrent op (`lstm`, `gru`, `simple_rnn`) on its sequence kernels:
/// input projection, recurrence, BPTT and weight gradients; `y` and every gradient checked.
fn recurrent_fixtures_on_gpu(op: &str) {
    let Some(g) = gpu() else { return };
    let cases = cases_of(op);
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let p = &case["params"];
        let x = upload(g, &case["inputs"]["x"]);
        let (w, u, bias) = (
            upload(g, &p["kernel"]),
            upload(g, &p["recurrent_kernel"]),
            upload(g, &p["bias"]),
        );
        let sequences = case["attrs"]["return_sequences"] == true;
        let dy = upload(g, &case["cotangents"]["y"]);
        let (dh_seq, dh_last) = if sequences {
            (Some(&dy), None)
        } else {
            (None, Some(&dy))
        };
        let pick = |h_seq, h_last| if sequences { h_seq } else { h_last };
        // (output, [dx, dkernel, drecurrent, dbias]) per cell.
        let (y, grads) = match op {
            "lstm" => {
                let fwd = g
                    .lstm_forward(&g.rnn_input_projection(&x, &w, &bias).unwrap(), &u, None, None)
                    .unwrap();
                let back = g.lstm_backward(&fwd.saved, &u, dh_seq, dh_last).unwrap();
                let d = g.lstm_weight_grads(&x, &w, &fwd.saved, &back.d_gates).unwrap();
                (pick(fwd.h_seq, fwd.h_last), [d.dx, d.dw, d.du, d.dbias])
            }
            "gru" => {
                assert_eq!(case["attrs"]["reset_after"], true, "{name}: only resetAfter on the GPU");
                let (b_in, b_rec) = g.gru_bias_rows(&bias).unwrap();
                let projected = g.rnn_input_projection(&x, &w, &b_in).unwrap();
                let fwd = g.gru_forward(&projected, &u, &b_rec, None).unwrap();
                let back = g.gru_backward(&fwd.saved, &u, dh_seq, dh_last).unwrap();
                let d = g
                    .gru_weight_grads(&x, &w, &fwd.saved, &back.d_proj, &back.d_rec)
                    .unwrap();
                (pick(fwd.h_seq, fwd.h_last), [d.dx, d.dw, d.du, d.dbias])
            }
            _ => {
                let projected = g.rnn_input_projection(&x, &w, &bias).unwrap();
                let fwd = g.simple_rnn_forward(&projected, &u, None).unwrap();
                let back = g.simple_rnn_backward(&fwd.saved, &u, dh_seq, dh_last).unwrap();
                let d = g.simple_rnn_weight_grads(&x, &w, &fwd.saved, &back.d_pre).unwrap();
                (pick(fwd.h_seq, fwd.h_last), [d.dx, d.dw, d.du, d.dbias])
            }
        };
        check(g, &format!("{name} y"), &y, &case["outputs"]["y"]);
        for (grad, key) in grads.iter().zip(["x", "kernel", "recurrent_kernel", "bias"]) {
            check(g, &format!("{name} d{key}"), grad, &case["grads"][key]);
        }
    }
    assert_eq!(cases.len(), 2, "{op}: a return-sequences and a last-step case");
}

#[test]
fn lstm_fixtures_on_gpu() {
    recurrent_fixtures_on_gpu("lstm");
}

#[test]
fn gru_fixtures_on_gpu() {
    recurrent_fixtures_on_gpu("gru");
}

#[test]
fn simple_rnn_fixtures_on_gpu() {
    recurrent_fixtures_on_gpu("simple_rnn");
}

/// Multi-head attention composed as the GPU runs it: Q/K/V projections (GEMMs straight into
/// the `[batch, seq, heads, key_dim]` layout of the fused kernel), flash attention, output
/// projection. Forward only: the fixtures' gradients include the cotangent of the returned
/// attention scores, which the fused kernel never materialises (its gradients are checked
/// against f64 references in tests/gpu/attention.rs).
#[test]
fn multi_head_attention_fixtures_forward_on_gpu() {
    let Some(g) = gpu() else { return };
    let cases = cases_of("multi_head_attention");
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let p = &case["params"];
        let (heads, key_dim) = {
            let s = shape(&p["query_kernel"]);
            (s[1], s[2])
        };
        let query = &case["inputs"]["query"];
        let value = case["inputs"].get("value").unwrap_or(query);
        let project = |input: &Value, which: &str| {
            let s = shape(input);
            let x = g.upload(&data(input), &[s[0] * s[1], s[2]]).unwrap();
            let w = g
                .upload(&data(&p[format!("{which}_kernel")]), &[s[2], heads * key_dim])
                .unwrap();
            let b = g
                .upload(&data(&p[format!("{which}_bias")]), &[heads * key_dim])
                .unwrap();
            let y = g.bias_add(&g.matmul(&x, &w, false, false).unwrap(), &b).unwrap();
            y.reshape(&[s[0], s[1], heads, key_dim]).unwrap()
        };
        let (q, k, v) = (project(query, "query"), project(value, "key"), project(value, "value"));
        let causal = case["attrs"]["use_causal_mask"] == true;
        let attended = g.attention_forward(&q, &k, &v, causal).unwrap().out;
        let qs = shape(query);
        let flat = attended.reshape(&[qs[0] * qs[1], heads * key_dim]).unwrap();
        let wo = g.upload(&data(&p["output_kernel"]), &[heads * key_dim, qs[2]]).unwrap();
        let y = g
            .bias_add(
                &g.matmul(&flat, &wo, false, false).unwrap(),
                &upload(g, &p["output_bias"]),
            )
            .unwrap();
        check(g, &format!("{name} y"), &y, &case["outputs"]["y"]);
    }
    assert_eq!(cases.len(), 3);
}
