//! MultiHeadAttention on the GPU beyond the flash kernels: padding masks, an explicit mask,
//! queries with nothing to attend to, attention dropout, returned scores, a value size other
//! than the key size and heads wider than 64. The GPU composes these from primitive kernels;
//! each case must give the CPU's output, scores and gradients (inputs, mask-free weights).
//!
//! Runs on any wgpu adapter (Mesa's lavapipe without a GPU); `CORTEX_SKIP_GPU_TESTS=1` skips.

use cortex_core::backprop::backward;
use cortex_core::nn::layers::{self, ForwardCtx};
use cortex_core::rng::Rng;
use cortex_core::{ops, Device, Tensor};
use serde_json::json;

mod common;
use common::skip_gpu;

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut r = Rng::new(seed);
    (0..n).map(|_| r.uniform() * 2.0 - 1.0).collect()
}

#[derive(Clone)]
struct Case {
    heads: usize,
    key_dim: usize,
    value_dim: usize,
    causal: bool,
    dropout: f32,
    scores: bool,
    tq: usize,
    tv: usize,
    /// Masked trailing steps per sample, for the query and the value.
    pads: Option<([usize; 2], [usize; 2])>,
    explicit: bool,
}

const BATCH: usize = 2;
const FEATURES: usize = 6;

fn case(tq: usize, tv: usize) -> Case {
    Case {
        heads: 2,
        key_dim: 4,
        value_dim: 4,
        causal: false,
        dropout: 0.0,
        scores: false,
        tq,
        tv,
        pads: None,
        explicit: false,
    }
}

fn padding(t: usize, pad: [usize; 2]) -> Tensor {
    let data = pad
        .iter()
        .flat_map(|&p| (0..t).map(move |j| if j + p < t { 1.0 } else { 0.0 }))
        .collect();
    Tensor::new(data, &[BATCH, t]).unwrap()
}

/// Output, scores (when returned) and the gradients of query, value and every weight for
/// `sum(y * c1) + sum(scores * c2)`, with the layer's weights and inputs on `device`.
fn run(c: &Case, device: Device) -> Vec<(String, Vec<f32>)> {
    let query = Tensor::variable(values(BATCH * c.tq * FEATURES, 1), &[BATCH, c.tq, FEATURES]).unwrap();
    let value = Tensor::variable(values(BATCH * c.tv * FEATURES, 2), &[BATCH, c.tv, FEATURES]).unwrap();
    let (mut mha, _) = layers::from_config(
        "MultiHeadAttention",
        &json!({"name": "m", "numHeads": c.heads, "keyDim": c.key_dim, "valueDim": c.value_dim,
                "useCausalMask": c.causal, "returnAttentionScores": c.scores, "dropout": c.dropout,
                "attentionMaskInput": c.explicit}),
    )
    .unwrap();
    let mut shapes = vec![vec![c.tq, FEATURES], vec![c.tv, FEATURES]];
    let mut inputs = vec![query.to(device).unwrap(), value.to(device).unwrap()];
    if c.explicit {
        let bits = values(BATCH * c.tq * c.tv, 3)
            .iter()
            .map(|v| if *v > -0.5 { 1.0 } else { 0.0 })
            .collect();
        shapes.push(vec![c.tq, c.tv]);
        inputs.push(Tensor::new(bits, &[BATCH, c.tq, c.tv]).unwrap().to(device).unwrap());
    }
    mha.build_many(&shapes, &mut Rng::new(7)).unwrap();
    let params = mha.params();
    for (i, p) in params.iter().enumerate() {
        if p.name.ends_with("bias") {
            p.set(values(p.get().len(), 50 + i as u64)).unwrap();
        }
        p.to_device(device).unwrap();
    }
    let mut rng = Rng::new(11);
    let mut ctx = ForwardCtx::new(c.dropout > 0.0, &mut rng);
    if let Some((qp, vp)) = c.pads {
        ctx.input_masks = vec![Some(padding(c.tq, qp)), Some(padding(c.tv, vp))];
    }
    let outs = mha.call(&inputs, &mut ctx).unwrap();
    assert_eq!(outs.len(), 1 + c.scores as usize);
    let mut loss: Option<Tensor> = None;
    for (i, y) in outs.iter().enumerate() {
        assert_eq!(y.device(), device, "output {i} stays on the device");
        let cot = Tensor::new(values(y.len(), 20 + i as u64), y.shape())
            .unwrap()
            .to(device)
            .unwrap();
        let s = ops::sum(&ops::mul(y, &cot).unwrap()).unwrap();
        loss = Some(match loss {
            None => s,
            Some(l) => ops::add(&l, &s).unwrap(),
        });
    }
    let leaves: Vec<Tensor> = params.iter().map(|p| p.get()).collect();
    let grads = backward(&loss.unwrap()).unwrap();
    let mut got = vec![("y".to_string(), outs[0].to_vec())];
    if c.scores {
        got.push(("scores".into(), outs[1].to_vec()));
    }
    got.push(("dquery".into(), grads.get(&query).unwrap().to_vec()));
    got.push(("dvalue".into(), grads.get(&value).unwrap().to_vec()));
    for (p, leaf) in params.iter().zip(&leaves) {
        got.push((format!("d{}", p.name), grads.get(leaf).unwrap().to_vec()));
    }
    got
}

fn assert_devices_agree(what: &str, c: &Case) {
    let (cpu, gpu) = (run(c, Device::Cpu), run(c, Device::Gpu));
    assert_eq!(cpu.len(), gpu.len());
    for ((name, want), (_, got)) in cpu.iter().zip(&gpu) {
        assert_eq!(got.len(), want.len(), "{what} {name}: length");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-5 + 1e-4 * w.abs(),
                "{what} {name}[{i}]: gpu {g}, cpu {w}"
            );
        }
    }
}

#[test]
fn masked_attention_on_the_gpu_equals_the_cpu() {
    if skip_gpu() {
        return;
    }
    let padded = Case {
        pads: Some(([0, 2], [1, 3])),
        ..case(5, 7)
    };
    assert_devices_agree("padding masks", &padded);
    assert_devices_agree(
        "padding masks, causal, scores",
        &Case {
            causal: true,
            scores: true,
            ..padded.clone()
        },
    );
    // Every value of sample 1 is masked: its queries attend to nothing and give zeros.
    assert_devices_agree(
        "dead rows",
        &Case {
            pads: Some(([1, 0], [0, 7])),
            scores: true,
            ..case(5, 7)
        },
    );
    assert_devices_agree(
        "explicit mask",
        &Case {
            explicit: true,
            ..case(6, 5)
        },
    );
}

#[test]
fn dropout_scores_and_head_sizes_on_the_gpu_equal_the_cpu() {
    if skip_gpu() {
        return;
    }
    // One seed draws the same keep mask on both devices.
    assert_devices_agree(
        "dropout",
        &Case {
            dropout: 0.3,
            ..case(6, 6)
        },
    );
    assert_devices_agree(
        "dropout with masks and scores",
        &Case {
            dropout: 0.4,
            scores: true,
            pads: Some(([0, 1], [2, 0])),
            causal: true,
            ..case(6, 6)
        },
    );
    assert_devices_agree(
        "scores",
        &Case {
            scores: true,
            ..case(4, 9)
        },
    );
    assert_devices_agree(
        "value size 3, key size 5",
        &Case {
            key_dim: 5,
            value_dim: 3,
            ..case(5, 4)
        },
    );
    assert_devices_agree(
        "head size 80",
        &Case {
            key_dim: 80,
            value_dim: 80,
            causal: true,
            ..case(4, 4)
        },
    );
}
