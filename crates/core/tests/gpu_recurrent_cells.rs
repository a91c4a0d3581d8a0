//! Recurrent cells on the GPU beyond the defaults: LSTM, GRU and SimpleRNN with initial states
//! as inputs and `returnState`, and with activations other than tanh / sigmoid, with a mask,
//! forwards and backwards, with and without `returnSequences`, give the CPU's outputs and final
//! states, and the CPU's gradients wrt the input, the initial states and every weight for a
//! loss that reads every output (the final cell state included, as an encoder handing its
//! states to a decoder does).
//!
//! Runs on any wgpu adapter (Mesa's lavapipe without a GPU); `CORTEX_SKIP_GPU_TESTS=1` skips.

use cortex_core::backprop::backward_with_seed;
use cortex_core::nn::layers::{self, ForwardCtx, Layer};
use cortex_core::rng::Rng;
use cortex_core::{ops, Device, Tensor};
use serde_json::{json, Value};

mod common;
use common::skip_gpu;

const CELLS: [&str; 3] = ["LSTM", "GRU", "SimpleRNN"];
const BATCH: usize = 3;
const TIME: usize = 5;
const FEATURES: usize = 4;
const UNITS: usize = 6;

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut r = Rng::new(seed);
    (0..n).map(|_| r.uniform() * 2.0 - 1.0).collect()
}

/// A built layer with seeded weights (non-zero biases) on `device`.
fn layer(class: &str, config: &Value, device: Device) -> Box<dyn Layer> {
    let (mut l, _) = layers::from_config(class, config).unwrap();
    l.build(&[TIME, FEATURES], &mut Rng::new(11)).unwrap();
    for (i, p) in l.params().iter().enumerate() {
        if p.name.ends_with("bias") {
            p.set(values(p.get().len(), 100 + i as u64)).unwrap();
        }
        p.to_device(device).unwrap();
    }
    l
}

/// Outputs of the layer on `device` for the input and initial states (with a mask when
/// `masked`), and the gradients wrt those inputs and the layer's weights of
/// `sum_k <outputs[k], cotangent_k>`.
fn run(class: &str, config: &Value, device: Device, masked: bool) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let l = layer(class, config, device);
    let n_states = if class == "LSTM" { 2 } else { 1 };
    let variable = |data: Vec<f32>, shape: &[usize]| {
        Tensor::new(data, shape)
            .unwrap()
            .to(device)
            .unwrap()
            .with_requires_grad(true)
    };
    let mut inputs = vec![variable(values(BATCH * TIME * FEATURES, 7), &[BATCH, TIME, FEATURES])];
    inputs.extend((0..n_states).map(|i| variable(values(BATCH * UNITS, 20 + i as u64), &[BATCH, UNITS])));
    // Row 0 has padded steps inside and at the end (so the final states are carried over),
    // row 1 a padded first step, row 2 none.
    let mask = [[1., 0., 1., 1., 0.], [0., 1., 1., 1., 1.], [1.; 5]].concat();
    let mut rng = Rng::new(0);
    let mut ctx = ForwardCtx::new(false, &mut rng);
    ctx.input_masks = vec![masked.then(|| Tensor::new(mask, &[BATCH, TIME]).unwrap())];
    let outs = l.call(&inputs, &mut ctx).unwrap();
    let returned_states = if config["returnState"] == json!(true) {
        n_states
    } else {
        0
    };
    assert_eq!(
        outs.len(),
        1 + returned_states,
        "{class} {config}: output and final states"
    );
    let mut total: Option<Tensor> = None;
    for (k, o) in outs.iter().enumerate() {
        assert_eq!(o.device(), device, "{class} {config}: output {k} stays on the device");
        let cot = Tensor::new(values(o.len(), 40 + k as u64), o.shape())
            .unwrap()
            .to(device)
            .unwrap();
        let term = ops::sum(&ops::mul(o, &cot).unwrap()).unwrap();
        total = Some(match total {
            None => term,
            Some(t) => ops::add(&t, &term).unwrap(),
        });
    }
    let grads = backward_with_seed(&total.unwrap(), vec![1.0]).unwrap();
    let mut wanted: Vec<Tensor> = inputs.clone();
    wanted.extend(l.params().iter().map(|p| p.get()));
    let grads = wanted
        .iter()
        .map(|t| grads.get(t).expect("every input and weight gets a gradient").to_vec())
        .collect();
    (outs.iter().map(|o| o.to_vec()).collect(), grads)
}

fn assert_near(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 1e-4 * (1.0 + w.abs()), "{what}[{i}]: GPU {g}, CPU {w}");
    }
}

#[test]
fn initial_and_returned_states_match_the_cpu_with_gradients() {
    if skip_gpu() {
        return;
    }
    for class in CELLS {
        for return_sequences in [false, true] {
            for go_backwards in [false, true] {
                let config = json!({
                    "name": "rnn", "units": UNITS, "returnState": true,
                    "returnSequences": return_sequences, "goBackwards": go_backwards,
                });
                let what = format!("{class} returnSequences={return_sequences} goBackwards={go_backwards}");
                let (cpu_outs, cpu_grads) = run(class, &config, Device::Cpu, true);
                let (gpu_outs, gpu_grads) = run(class, &config, Device::Gpu, true);
                for (k, (g, c)) in gpu_outs.iter().zip(&cpu_outs).enumerate() {
                    assert_near(&format!("{what} output {k}"), g, c);
                }
                for (k, (g, c)) in gpu_grads.iter().zip(&cpu_grads).enumerate() {
                    assert_near(&format!("{what} gradient {k}"), g, c);
                }
            }
        }
    }
}

/// Other activations (the kernels save pre-activations and take each derivative from them):
/// relu, leaky relu, elu, selu, softplus, linear, gelu (both forms) and swish cells and
/// gates, with states and a mask.
#[test]
fn other_activations_match_the_cpu_with_gradients() {
    if skip_gpu() {
        return;
    }
    let pairs = [
        ("relu", "sigmoid"),
        ("elu", "softplus"),
        ("selu", "leaky_relu"),
        ("softplus", "relu"),
        ("linear", "tanh"),
        ("gelu", "swish"),
        ("swish", "gelu"),
    ];
    for class in CELLS {
        for (activation, recurrent) in pairs {
            for go_backwards in [false, true] {
                let mut config = json!({
                    "name": "rnn", "units": UNITS, "returnState": true, "returnSequences": true,
                    "goBackwards": go_backwards, "activation": activation,
                });
                // SimpleRNN has no gates.
                if class != "SimpleRNN" {
                    config["recurrentActivation"] = json!(recurrent);
                }
                let what = format!("{class} {activation}/{recurrent} goBackwards={go_backwards}");
                let (cpu_outs, cpu_grads) = run(class, &config, Device::Cpu, true);
                let (gpu_outs, gpu_grads) = run(class, &config, Device::Gpu, true);
                for (k, (g, c)) in gpu_outs.iter().zip(&cpu_outs).enumerate() {
                    assert_near(&format!("{what} output {k}"), g, c);
                }
                for (k, (g, c)) in gpu_grads.iter().zip(&cpu_grads).enumerate() {
                    assert_near(&format!("{what} gradient {k}"), g, c);
                }
            }
        }
    }
}

/// Without `returnState` the layer takes initial states on the GPU too (a decoder started from
/// an encoder's states), and their gradients reach them.
#[test]
fn initial_states_alone_match_the_cpu() {
    if skip_gpu() {
        return;
    }
    for class in CELLS {
        let config = json!({"name": "rnn", "units": UNITS, "returnSequences": true});
        let (cpu_outs, cpu_grads) = run(class, &config, Device::Cpu, false);
        let (gpu_outs, gpu_grads) = run(class, &config, Device::Gpu, false);
        assert_near(&format!("{class} output"), &gpu_outs[0], &cpu_outs[0]);
        for (k, (g, c)) in gpu_grads.iter().zip(&cpu_grads).enumerate() {
            assert_near(&format!("{class} gradient {k}"), g, c);
        }
    }
}

/// The kernels' own check: every cell activation is accepted, the losses' clipped log is not.
#[test]
fn kernel_activations_accept_every_cell_activation() {
    use cortex_wgpu::{Activation as GpuAct, RnnActivations};
    assert!(RnnActivations::new(GpuAct::LogClipped(1e-7), GpuAct::Sigmoid).is_err());
    assert!(RnnActivations::new(GpuAct::Tanh, GpuAct::LogClipped(1e-7)).is_err());
    for good in [
        GpuAct::Relu,
        GpuAct::Elu(1.0),
        GpuAct::Selu,
        GpuAct::Softplus,
        GpuAct::LeakyRelu(0.2),
        GpuAct::Gelu,
        GpuAct::GeluErf,
        GpuAct::Swish,
    ] {
        assert!(RnnActivations::new(good, GpuAct::Sigmoid).is_ok(), "{good:?}");
        assert!(RnnActivations::new(GpuAct::Tanh, good).is_ok(), "{good:?}");
    }
}
