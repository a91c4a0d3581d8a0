//! MultiHeadAttention and LayerNormalization: every fixture case against the PyTorch float64
//! references in test/fixtures/fixtures.json (forward values and gradients), the flash attention
//! path against the materialised one (masks, causal, ragged tiles, dropout), finite-difference
//! checks and bad-input errors. The attention and layer-normalisation fixtures (forward and
//! gradients) also run through the layer code on the GPU, and the self-attention ones (forward)
//! through the GPU planner; `CORTEX_SKIP_GPU_TESTS=1` skips that.
//! BatchNormalization is in fixtures_batchnorm.rs.

use cortex_core::backprop::{backward, backward_with_seed};
use cortex_core::cpu::attention::{attention, AttnDropout, AttnMask, AttnOptions};
use cortex_core::nn::layers::{self, ForwardCtx};
use cortex_core::rng::Rng;
use cortex_core::{ops, Device, Tensor};
use serde_json::{json, Value};

mod common;
use common::{layer_on_gpu, layer_on_gpu_with_arity, skip_gpu};
mod norm_support;
use norm_support::*;

/// The fixture cases through the layer code, with the attention scores returned (so their
/// cotangent joins the gradients), on the CPU and, unless GPU tests are skipped, with the
/// weights and inputs on the GPU (where returned scores take the composed kernels).
#[test]
fn multi_head_attention_matches_pytorch() {
    let all = cases("multi_head_attention");
    assert_eq!(all.len(), 3);
    for case in &all {
        check_mha_case(case, Device::Cpu);
        if !skip_gpu() {
            check_mha_case(case, Device::Gpu);
        }
    }
}

fn check_mha_case(case: &serde_json::Value, device: Device) {
    let name = format!("{} ({})", case["name"].as_str().unwrap(), device.name());
    let a = &case["attrs"];
    let mut mha = layer(
        "MultiHeadAttention",
        json!({"name": "mha", "numHeads": a["num_heads"], "keyDim": a["key_dim"],
               "useCausalMask": a["use_causal_mask"], "returnAttentionScores": true}),
    );
    let query = var_of(&case["inputs"]["query"]);
    let value = if a["self_attention"] == true {
        query.clone()
    } else {
        var_of(&case["inputs"]["value"])
    };
    let shapes = vec![query.shape()[1..].to_vec(), value.shape()[1..].to_vec()];
    let out_shapes = mha.build_many(&shapes, &mut Rng::new(0)).unwrap();
    let params = mha.params();
    assert_eq!(params.len(), 8, "{name}: q/k/v/output kernels and biases");
    let key_of = |p: &cortex_core::nn::Param| {
        p.name
            .strip_prefix("mha/")
            .unwrap()
            .replace("attention_output", "output")
            .replace('/', "_")
    };
    for p in &params {
        let want = &case["params"][&key_of(p)];
        assert_eq!(p.shape(), shape_of(want), "{name}: {} shape (Keras layout)", p.name);
        p.set(data_of(want)).unwrap();
        p.to_device(device).unwrap();
    }
    let inputs = [query.to(device).unwrap(), value.to(device).unwrap()];
    let mut rng = Rng::new(0);
    let outs = mha.call(&inputs, &mut ForwardCtx::new(false, &mut rng)).unwrap();
    assert_eq!(outs.len(), 2);
    for (i, key) in ["y", "attention_scores"].iter().enumerate() {
        let want = &case["outputs"][key];
        assert_eq!(outs[i].device(), device, "{name}: {key} stays on the device");
        assert_eq!(outs[i].shape(), shape_of(want).as_slice(), "{name}: {key} shape");
        assert_eq!(outs[i].shape()[1..], out_shapes[i][..], "{name}: {key} built shape");
        assert_close(&format!("{name} {key}"), &outs[i].to_vec(), &data_of(want));
    }
    let cot: Vec<Vec<f32>> = ["y", "attention_scores"]
        .iter()
        .map(|k| data_of(&case["cotangents"][k]))
        .collect();
    let leaves: Vec<Tensor> = params.iter().map(|p| p.get()).collect();
    let grads = backward(&weighted_sum(&outs, &cot)).unwrap();
    let host = |t: &Tensor| grads.get(t).unwrap().to_vec();
    assert_close(
        &format!("{name} dquery"),
        &host(&query),
        &data_of(&case["grads"]["query"]),
    );
    if a["self_attention"] != true {
        assert_close(
            &format!("{name} dvalue"),
            &host(&value),
            &data_of(&case["grads"]["value"]),
        );
    }
    for (p, leaf) in params.iter().zip(&leaves) {
        let key = key_of(p);
        assert_close(&format!("{name} d{key}"), &host(leaf), &data_of(&case["grads"][&key]));
    }
}

#[test]
fn layer_normalization_matches_pytorch() {
    let all = cases("layer_normalization");
    assert_eq!(all.len(), 1);
    for case in &all {
        let a = &case["attrs"];
        let config = json!({"name": "ln", "axis": a["axis"], "epsilon": a["epsilon"]});
        check_norm_case(case, "LayerNormalization", config.clone());
        if skip_gpu() {
            continue;
        }
        let x = var_of(&case["inputs"]["x"]);
        let weights = [data_of(&case["params"]["gamma"]), data_of(&case["params"]["beta"])];
        let dy = Tensor::new(data_of(&case["cotangents"]["y"]), x.shape()).unwrap();
        let (y, dx, grads) = layer_on_gpu("LayerNormalization", &config, &x, &weights, &dy);
        assert_close("layer_norm (gpu) y", y.data(), &data_of(&case["outputs"]["y"]));
        assert_close("layer_norm (gpu) dx", dx.unwrap().data(), &data_of(&case["grads"]["x"]));
        for (key, grad) in ["gamma", "beta"].iter().zip(&grads) {
            let want = data_of(&case["grads"][*key]);
            assert_close(
                &format!("layer_norm (gpu) d{key}"),
                grad.as_ref().unwrap().data(),
                &want,
            );
        }
    }
}

/// Self-attention fixture cases through a GPU model's fused flash-attention path, forward only:
/// the fixtures' gradients include the cotangent of the attention scores, which the fused
/// kernel never forms (its gradients are checked in crates/wgpu/tests/gpu/attention.rs).
#[test]
fn self_attention_forward_matches_pytorch_on_the_gpu() {
    if skip_gpu() {
        return;
    }
    let mut checked = 0;
    for case in cases("multi_head_attention")
        .into_iter()
        .filter(|c| c["attrs"]["self_attention"] == true)
    {
        let a = &case["attrs"];
        let config = json!({"name": "mha", "numHeads": a["num_heads"], "keyDim": a["key_dim"],
                            "useCausalMask": a["use_causal_mask"]});
        let names = ["query", "key", "value", "output"];
        let weights: Vec<Vec<f32>> = names
            .iter()
            .flat_map(|n| [format!("{n}_kernel"), format!("{n}_bias")])
            .map(|k| data_of(&case["params"][k]))
            .collect();
        let x = var_of(&case["inputs"]["query"]);
        let dy = Tensor::new(data_of(&case["cotangents"]["y"]), x.shape()).unwrap();
        let (y, _, _) = layer_on_gpu_with_arity("MultiHeadAttention", &config, &x, &weights, &dy, 2);
        let name = case["name"].as_str().unwrap();
        assert_close(&format!("{name} (gpu) y"), y.data(), &data_of(&case["outputs"]["y"]));
        checked += 1;
    }
    assert_eq!(checked, 2, "the self-attention cases (one causal)");
}

/// A 0/1 `[b, t]` mask with the last `pad[i]` steps of sample `i` masked.
fn padding_mask(t: usize, pad: &[usize]) -> Tensor {
    let data = pad
        .iter()
        .flat_map(|&p| (0..t).map(move |j| if j + p < t { 1.0 } else { 0.0 }))
        .collect();
    Tensor::new(data, &[pad.len(), t]).unwrap()
}

struct Setup {
    heads: usize,
    key_dim: usize,
    value_dim: usize,
    causal: bool,
    dropout: f32,
    tq: usize,
    tv: usize,
    d: usize,
    batch: usize,
    /// Masked trailing steps per sample, for the query and the value.
    pads: Option<(Vec<usize>, Vec<usize>)>,
    explicit: bool,
}

/// Runs the layer with and without `returnAttentionScores` (materialised vs flash) on the same
/// weights and inputs; returns `(y, grads of x / value / params)` of each.
fn run_both(s: &Setup) -> [(Vec<f32>, Vec<Vec<f32>>); 2] {
    let query = Tensor::variable(values(s.batch * s.tq * s.d, 1), &[s.batch, s.tq, s.d]).unwrap();
    let value = Tensor::variable(values(s.batch * s.tv * s.d, 2), &[s.batch, s.tv, s.d]).unwrap();
    let explicit = s.explicit.then(|| {
        let bits = values(s.batch * s.tq * s.tv, 3)
            .iter()
            .map(|v| if *v > -0.6 { 1.0 } else { 0.0 })
            .collect();
        Tensor::new(bits, &[s.batch, s.tq, s.tv]).unwrap()
    });
    let cot = values(s.batch * s.tq * s.d, 4);
    [true, false].map(|scores| {
        let mut mha = layer(
            "MultiHeadAttention",
            json!({"name": "m", "numHeads": s.heads, "keyDim": s.key_dim, "valueDim": s.value_dim,
                   "useCausalMask": s.causal, "returnAttentionScores": scores, "dropout": s.dropout,
                   "attentionMaskInput": s.explicit}),
        );
        let mut shapes = vec![vec![s.tq, s.d], vec![s.tv, s.d]];
        let mut inputs = vec![query.clone(), value.clone()];
        if let Some(m) = &explicit {
            shapes.push(vec![s.tq, s.tv]);
            inputs.push(m.clone());
        }
        mha.build_many(&shapes, &mut Rng::new(7)).unwrap();
        let masks = match &s.pads {
            Some((qp, vp)) => vec![Some(padding_mask(s.tq, qp)), Some(padding_mask(s.tv, vp))],
            None => Vec::new(),
        };
        let mut rng = Rng::new(11);
        let outs = mha
            .call(&inputs, &mut ctx_with_masks(s.dropout > 0.0, &mut rng, masks))
            .unwrap();
        assert_eq!(outs.len(), if scores { 2 } else { 1 });
        let leaves: Vec<Tensor> = mha.params().iter().map(|p| p.get()).collect();
        let grads = backward(&weighted_sum(&outs[..1], std::slice::from_ref(&cot))).unwrap();
        let mut g = vec![grads.get(&query).unwrap().to_vec(), grads.get(&value).unwrap().to_vec()];
        g.extend(leaves.iter().map(|l| grads.get(l).unwrap().to_vec()));
        (outs[0].to_vec(), g)
    })
}

fn assert_paths_agree(what: &str, s: &Setup) {
    let [(y_mat, g_mat), (y_flash, g_flash)] = run_both(s);
    assert_close_tol(&format!("{what} y"), &y_flash, &y_mat, 1e-5, 1e-4);
    for (i, (a, b)) in g_flash.iter().zip(&g_mat).enumerate() {
        assert_close_tol(&format!("{what} grad {i}"), a, b, 1e-5, 1e-3);
    }
}

fn setup(tq: usize, tv: usize) -> Setup {
    Setup {
        heads: 2,
        key_dim: 8,
        value_dim: 8,
        causal: false,
        dropout: 0.0,
        tq,
        tv,
        d: 12,
        batch: 2,
        pads: None,
        explicit: false,
    }
}

#[test]
fn flash_path_equals_materialised_path() {
    // Ragged tiles: no length is a multiple of the 128 x 128 tile.
    assert_paths_agree("plain 70x150", &setup(70, 150));
    assert_paths_agree("plain 300x40", &setup(300, 40));
    assert_paths_agree(
        "causal 130x130",
        &Setup {
            causal: true,
            ..setup(130, 130)
        },
    );
    assert_paths_agree(
        "causal cross 67x200",
        &Setup {
            causal: true,
            value_dim: 5,
            ..setup(67, 200)
        },
    );
    assert_paths_agree(
        "padding masks 70x131",
        &Setup {
            pads: Some((vec![0, 9], vec![3, 129])),
            ..setup(70, 131)
        },
    );
    // Every value of sample 1 is masked: its queries attend to nothing and give zeros.
    assert_paths_agree(
        "dead rows",
        &Setup {
            pads: Some((vec![5, 0], vec![0, 131])),
            causal: true,
            ..setup(66, 131)
        },
    );
    assert_paths_agree(
        "explicit mask",
        &Setup {
            explicit: true,
            causal: true,
            ..setup(65, 140)
        },
    );
    assert_paths_agree(
        "dropout",
        &Setup {
            dropout: 0.3,
            pads: Some((vec![0, 2], vec![1, 4])),
            ..setup(70, 129)
        },
    );
}

#[test]
fn fully_masked_queries_give_zero_attention() {
    let q = Tensor::new(values(2 * 3 * 4, 5), &[1, 3, 8]).unwrap();
    let k = Tensor::new(values(2 * 5 * 4, 6), &[1, 5, 8]).unwrap();
    let v = Tensor::new(values(2 * 5 * 4, 7), &[1, 5, 8]).unwrap();
    let mask = AttnMask {
        query: Some(vec![1.0, 0.0, 1.0]),
        value: Some(vec![1.0, 1.0, 0.0, 1.0, 0.0]),
        ..Default::default()
    };
    let (o, p) = attention(
        &q,
        &k,
        &v,
        &AttnOptions {
            heads: 2,
            mask,
            dropout: None,
            return_scores: true,
        },
    )
    .unwrap();
    let (o, p) = (o.to_vec(), p.unwrap().to_vec());
    assert!(o[8..16].iter().all(|&v| v == 0.0), "masked query row is zero");
    for h in 0..2 {
        for i in [0, 2] {
            let row = &p[(h * 3 + i) * 5..][..5];
            assert!(
                (row.iter().sum::<f32>() - 1.0).abs() < 1e-6 && row[2] == 0.0 && row[4] == 0.0,
                "{row:?}"
            );
        }
        assert!(p[(h * 3 + 1) * 5..][..5].iter().all(|&v| v == 0.0));
    }
}

/// Central differences of `sum(o * c)` against the flash backward, with masks, causality and
/// dropout (the keep mask is regenerated from its seed in the backward).
#[test]
fn flash_gradients_match_finite_differences() {
    let (b, tq, tv, h, kd, vd) = (2, 5, 7, 2, 3, 2);
    let qd = values(b * tq * h * kd, 21);
    let kdata = values(b * tv * h * kd, 22);
    let vdata = values(b * tv * h * vd, 23);
    let cot = values(b * tq * h * vd, 24);
    let opts = AttnOptions {
        heads: h,
        mask: AttnMask {
            value: Some(vec![1., 1., 1., 0., 1., 1., 1., 1., 1., 1., 1., 1., 1., 0.]),
            causal: true,
            ..Default::default()
        },
        dropout: Some(AttnDropout { rate: 0.25, seed: 99 }),
        return_scores: false,
    };
    let loss = |q: &[f32], k: &[f32], v: &[f32]| -> f64 {
        let t = |d: &[f32], s: &[usize]| Tensor::new(d.to_vec(), s).unwrap();
        let (o, _) = attention(
            &t(q, &[b, tq, h * kd]),
            &t(k, &[b, tv, h * kd]),
            &t(v, &[b, tv, h * vd]),
            &opts,
        )
        .unwrap();
        o.data().iter().zip(&cot).map(|(a, c)| (*a as f64) * (*c as f64)).sum()
    };
    let q = Tensor::variable(qd.clone(), &[b, tq, h * kd]).unwrap();
    let k = Tensor::variable(kdata.clone(), &[b, tv, h * kd]).unwrap();
    let v = Tensor::variable(vdata.clone(), &[b, tv, h * vd]).unwrap();
    let (o, _) = attention(&q, &k, &v, &opts).unwrap();
    let grads = backward_with_seed(&o, cot.clone()).unwrap();
    let eps = 1e-2;
    for (which, base, tensor) in [(0, &qd, &q), (1, &kdata, &k), (2, &vdata, &v)] {
        let g = grads.get(tensor).unwrap();
        for i in 0..base.len() {
            let mut plus = base.clone();
            plus[i] += eps;
            let mut minus = base.clone();
            minus[i] -= eps;
            let f = |x: &Vec<f32>| match which {
                0 => loss(x, &kdata, &vdata),
                1 => loss(&qd, x, &vdata),
                _ => loss(&qd, &kdata, x),
            };
            let fd = ((f(&plus) - f(&minus)) / (2.0 * eps as f64)) as f32;
            assert!(
                (fd - g[i]).abs() < 2e-3 * (1.0 + fd.abs()),
                "input {which}[{i}]: fd {fd} vs {}",
                g[i]
            );
        }
    }
}

#[test]
fn self_attention_as_a_single_input_layer() {
    let mut mha = layer(
        "MultiHeadAttention",
        json!({"name": "sa", "numHeads": 2, "keyDim": 4, "outputShape": 6}),
    );
    assert_eq!(mha.build(&[5, 3], &mut Rng::new(1)).unwrap(), vec![5, 6]);
    let x = Tensor::new(values(2 * 5 * 3, 8), &[2, 5, 3]).unwrap();
    let mut rng = Rng::new(0);
    let y = mha.forward(&x, &mut ForwardCtx::new(false, &mut rng)).unwrap();
    let both = mha
        .call(&[x.clone(), x.clone()], &mut ForwardCtx::new(false, &mut rng))
        .unwrap();
    assert_eq!(y.shape(), [2, 5, 6]);
    assert_eq!(y.to_vec(), both[0].to_vec());
    let names: Vec<String> = mha.params().iter().map(|p| p.name.clone()).collect();
    assert_eq!(
        names[6..],
        [
            "sa/attention_output/kernel".to_string(),
            "sa/attention_output/bias".to_string()
        ]
    );
    assert_eq!(mha.params()[6].shape(), [2, 4, 6]);
    // The config rebuilds an identical layer.
    let (mut again, _) = layers::from_config("MultiHeadAttention", &mha.config()).unwrap();
    assert_eq!(again.build(&[5, 3], &mut Rng::new(1)).unwrap(), vec![5, 6]);
}

#[test]
fn layer_norm_without_center_and_scale() {
    let mut ln = layer(
        "LayerNormalization",
        json!({"name": "ln", "center": false, "scale": false, "epsilon": 1e-5}),
    );
    ln.build(&[2, 4], &mut Rng::new(0)).unwrap();
    assert!(ln.params().is_empty());
    let x = Tensor::variable(values(3 * 2 * 4, 10), &[3, 2, 4]).unwrap();
    let y = ln.forward(&x, &mut ForwardCtx::new(false, &mut Rng::new(0))).unwrap();
    for row in y.data().chunks(4) {
        let m = row.iter().sum::<f32>() / 4.0;
        let v = row.iter().map(|v| (v - m) * (v - m)).sum::<f32>() / 4.0;
        assert!(m.abs() < 1e-5 && (v - 1.0).abs() < 1e-3, "{m} {v}");
    }
    // Rows sum to a constant, so the gradient of sum(y) is zero.
    let grads = backward(&ops::sum(&y).unwrap()).unwrap();
    assert!(grads.get(&x).unwrap().iter().all(|g| g.abs() < 1e-5));
}

fn err_of<T>(r: cortex_core::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_inputs_are_errors() {
    let from = |class: &str, c: Value| layers::from_config(class, &c).map(|_| ());
    let e = err_of(from("MultiHeadAttention", json!({"keyDim": 4})));
    assert!(e.contains("numHeads") && e.contains("required"), "{e}");
    let e = err_of(from(
        "MultiHeadAttention",
        json!({"numHeads": 2, "keyDim": 4, "causal": true}),
    ));
    assert!(
        e.contains("unknown option 'causal'") && e.contains("useCausalMask"),
        "{e}"
    );
    let e = err_of(from(
        "MultiHeadAttention",
        json!({"numHeads": 2, "keyDim": 4, "dropout": 1.5}),
    ));
    assert!(e.contains("dropout"), "{e}");
    let e = err_of(from("LayerNormalization", json!({"axis": 1, "epsilon": -1})));
    assert!(e.contains("epsilon"), "{e}");
    let e = err_of(from("BatchNormalization", json!({"momentum": 2})));
    assert!(e.contains("momentum"), "{e}");

    let mut mha = layer("MultiHeadAttention", json!({"name": "m", "numHeads": 2, "keyDim": 4}));
    let e = err_of(mha.build_many(&[vec![5, 3]], &mut Rng::new(0)));
    assert!(e.contains("[query, value]") && e.contains("got 1"), "{e}");
    let e = err_of(mha.build_many(&[vec![5, 3], vec![6, 3], vec![7, 3]], &mut Rng::new(0)));
    assert!(e.contains("key") && e.contains("[7, 3]"), "{e}");
    let mut rng = Rng::new(0);
    let x = Tensor::zeros(&[2, 5, 3]);
    let e = err_of(mha.call(&[x.clone(), x.clone()], &mut ForwardCtx::new(false, &mut rng)));
    assert!(e.contains("before it was built"), "{e}");
    mha.build_many(&[vec![5, 3], vec![6, 3]], &mut Rng::new(0)).unwrap();
    let e = err_of(mha.call(
        &[x.clone(), Tensor::zeros(&[2, 6, 4])],
        &mut ForwardCtx::new(false, &mut rng),
    ));
    assert!(
        e.contains("value") && e.contains("[batch, time, 3]") && e.contains("[2, 6, 4]"),
        "{e}"
    );
    let e = err_of(mha.call(
        &[x.clone(), Tensor::zeros(&[3, 6, 3])],
        &mut ForwardCtx::new(false, &mut rng),
    ));
    assert!(e.contains("value/key"), "{e}");
    let bad_mask = vec![None, Some(Tensor::zeros(&[2, 5]))];
    let e = err_of(mha.call(
        &[x.clone(), Tensor::zeros(&[2, 6, 3])],
        &mut ctx_with_masks(false, &mut rng, bad_mask),
    ));
    assert!(
        e.contains("value mask") && e.contains("[2, 6]") && e.contains("[2, 5]"),
        "{e}"
    );

    let mut masked = layer(
        "MultiHeadAttention",
        json!({"name": "mm", "numHeads": 1, "keyDim": 2, "attentionMaskInput": true}),
    );
    let e = err_of(masked.build_many(&[vec![5, 3], vec![6, 3], vec![6, 5]], &mut Rng::new(0)));
    assert!(e.contains("attention mask") && e.contains("[5, 6]"), "{e}");
    masked
        .build_many(&[vec![5, 3], vec![6, 3], vec![5, 6]], &mut Rng::new(0))
        .unwrap();
    let e = err_of(masked.call(
        &[x.clone(), Tensor::zeros(&[2, 6, 3])],
        &mut ForwardCtx::new(false, &mut rng),
    ));
    assert!(e.contains("attentionMask") && e.contains("got 2"), "{e}");
    let e = err_of(masked.call(
        &[x.clone(), Tensor::zeros(&[2, 6, 3]), Tensor::zeros(&[2, 6, 5])],
        &mut ForwardCtx::new(false, &mut rng),
    ));
    assert!(e.contains("attention mask") && e.contains("[2, 5, 6]"), "{e}");

    let e = err_of(attention(
        &x,
        &x,
        &x,
        &AttnOptions {
            heads: 2,
            mask: AttnMask::default(),
            dropout: None,
            return_scores: false,
        },
    ));
    assert!(e.contains("divisible by 2"), "{e}");
    let empty = Tensor::zeros(&[2, 0, 4]);
    let opts = AttnOptions {
        heads: 2,
        mask: AttnMask::default(),
        dropout: None,
        return_scores: false,
    };
    let e = err_of(attention(&Tensor::zeros(&[2, 3, 4]), &empty, &empty, &opts));
    assert!(e.contains("non-empty") && e.contains("[2, 0, 4]"), "{e}");

    let mut ln = layer("LayerNormalization", json!({"name": "ln", "axis": 1}));
    let e = err_of(ln.build(&[4, 5], &mut Rng::new(0)));
    assert!(e.contains("last axis") && e.contains("axis 1"), "{e}");
    let mut ln = layer("LayerNormalization", json!({"name": "ln"}));
    ln.build(&[4, 5], &mut Rng::new(0)).unwrap();
    let e = err_of(ln.forward(&Tensor::zeros(&[2, 4, 6]), &mut ForwardCtx::new(false, &mut rng)));
    assert!(e.contains("[batch, ..., 5]") && e.contains("[2, 4, 6]"), "{e}");
    let mut bn = layer("BatchNormalization", json!({"name": "bn"}));
    let e = err_of(bn.forward(&Tensor::zeros(&[2, 4]), &mut ForwardCtx::new(true, &mut rng)));
    assert!(e.contains("before it was built"), "{e}");
    bn.build(&[4], &mut Rng::new(0)).unwrap();
    let e = err_of(bn.forward(&Tensor::zeros(&[2, 3]), &mut ForwardCtx::new(true, &mut rng)));
    assert!(e.contains("[batch, ..., 4]"), "{e}");
}
