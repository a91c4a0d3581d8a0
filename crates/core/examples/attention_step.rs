//! Times a MultiHeadAttention self-attention block (batch 16, sequence 128, model dim 256,
//! 8 heads of 32): forward, and forward + backward of `sum(y * cotangent)`, as the PyTorch
//! comparison does. `cargo run --release -p cortex-core --example attention_step`
//! (`STEPS`, `CAUSAL=1`, `CORTEX_NUM_THREADS` to vary it).

use cortex_core::backprop::backward_with_seed;
use cortex_core::cpu::attention::{attention, AttnMask, AttnOptions};
use cortex_core::nn::layers::{self, ForwardCtx};
use cortex_core::rng::Rng;
use cortex_core::tensor::no_grad;
use cortex_core::{threads, Tensor};
use serde_json::json;

/// CPU time of the whole process (user + system, all threads), from /proc on Linux: unlike wall
/// time it does not count the time other processes hold the cores.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<f64> = rest
        .split(' ')
        .skip(11)
        .take(2)
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    Some(f.iter().sum::<f64>() / 100.0)
}

fn main() {
    let (batch, seq, dim, heads) = (16, 128, 256, 8);
    let causal = std::env::var("CAUSAL").is_ok_and(|v| v == "1");
    let config = json!({"name": "mha", "numHeads": heads, "keyDim": dim / heads, "useCausalMask": causal});
    let (mut mha, _) = layers::from_config("MultiHeadAttention", &config).unwrap();
    let mut rng = Rng::new(3);
    mha.build_many(&[vec![seq, dim], vec![seq, dim]], &mut rng).unwrap();
    let n = batch * seq * dim;
    let x = Tensor::variable((0..n).map(|_| rng.normal()).collect(), &[batch, seq, dim]).unwrap();
    let cot: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
    let steps: usize = std::env::var("STEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(30);
    let time = |what: &str, f: &mut dyn FnMut()| {
        for _ in 0..3 {
            f();
        }
        let (t, cpu) = (std::time::Instant::now(), cpu_seconds());
        for _ in 0..steps {
            f();
        }
        let wall = t.elapsed().as_secs_f64() / steps as f64 * 1e3;
        if let Ok(statm) = std::fs::read_to_string("/proc/self/statm") {
            let pages: f64 = statm.split(' ').nth(1).and_then(|v| v.parse().ok()).unwrap_or(0.0);
            println!("  rss {:.0} MB", pages * 4096.0 / 1e6);
        }
        match (cpu, cpu_seconds()) {
            (Some(a), Some(b)) => println!("{what}: {wall:.2} ms (cpu {:.2} ms)", (b - a) / steps as f64 * 1e3),
            _ => println!("{what}: {wall:.2} ms"),
        }
    };
    threads::run(|| {
        println!("threads: {}, causal: {causal}", threads::num_threads());
        let core_only = std::env::var("CORE_ONLY").is_ok_and(|v| v == "1");
        if !core_only {
            time("forward", &mut || {
                no_grad(|| {
                    mha.call(&[x.clone(), x.clone()], &mut ForwardCtx::new(false, &mut rng))
                        .unwrap()
                });
            });
            time("forward+backward", &mut || {
                let y = mha
                    .call(&[x.clone(), x.clone()], &mut ForwardCtx::new(true, &mut rng))
                    .unwrap();
                let grads = backward_with_seed(&y[0], cot.clone()).unwrap();
                assert!(grads.get(&x).is_some());
            });
        }
        // The fused attention core alone, on already projected q, k, v.
        let opts = AttnOptions {
            heads,
            mask: AttnMask {
                causal,
                ..Default::default()
            },
            dropout: None,
            return_scores: false,
        };
        let qkv: Vec<Tensor> = (0..3)
            .map(|_| Tensor::variable((0..n).map(|_| rng.normal()).collect(), &[batch, seq, dim]).unwrap())
            .collect();
        time("attention core forward", &mut || {
            no_grad(|| attention(&qkv[0], &qkv[1], &qkv[2], &opts).unwrap());
        });
        time("attention core forward+backward", &mut || {
            let (o, _) = attention(&qkv[0], &qkv[1], &qkv[2], &opts).unwrap();
            backward_with_seed(&o, cot.clone()).unwrap();
        });
    });
}
