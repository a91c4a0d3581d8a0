//! Times LSTM(128) forward + backward on a `[32, 100, 64]` batch, and a whole training step of
//! the `embedding(1000, 64) -> lstm(128) -> dense(10)` benchmark model on `[32, 100]` tokens
//! (`CORTEX_NUM_THREADS=2 cargo run --release -p cortex-core --example lstm_step`; `STEPS` sets
//! the repetitions). The PyTorch counterparts are `torch.nn.LSTM(64, 128, batch_first=True)`
//! with `y.sum().backward()`, and the same model with Adam and cross-entropy.

use cortex_core::backprop::backward_with_seed;
use cortex_core::nn::layers::{self, ForwardCtx};
use cortex_core::nn::Sequential;
use cortex_core::rng::Rng;
use cortex_core::tensor::no_grad;
use cortex_core::{threads, Tensor};
use serde_json::json;

fn main() {
    let (batch, time, features, units) = (32, 100, 64, 128);
    let steps: usize = std::env::var("STEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(30);
    let mut rng = Rng::new(3);
    let x = Tensor::variable(
        (0..batch * time * features).map(|_| rng.normal()).collect(),
        &[batch, time, features],
    )
    .expect("shape matches");
    for return_sequences in [true, false] {
        let config = json!({"units": units, "returnSequences": return_sequences});
        let (mut lstm, _) = layers::from_config("LSTM", &config).expect("valid config");
        lstm.build(&[time, features], &mut rng).expect("builds");
        let lstm = lstm.as_ref();
        threads::run(|| {
            let step = || {
                let mut r = Rng::new(0);
                let y = lstm.forward(&x, &mut ForwardCtx::new(true, &mut r)).expect("forward");
                backward_with_seed(&y, vec![1.0; y.len()]).expect("backward");
            };
            for _ in 0..3 {
                step();
            }
            let train = timings(steps, step);
            let infer = timings(steps, || {
                no_grad(|| {
                    lstm.forward(&x, &mut ForwardCtx::new(false, &mut Rng::new(0)))
                        .expect("forward")
                });
            });
            println!(
                "LSTM({units}) on [{batch}, {time}, {features}], returnSequences={return_sequences}, {} threads: \
                 forward+backward {train}; forward only {infer}",
                threads::num_threads(),
            );
        });
    }
    let config = json!({"layers": [
        {"className": "Embedding", "config": {"inputDim": 1000, "outputDim": features, "inputShape": [time]}},
        {"className": "LSTM", "config": {"units": units}},
        {"className": "Dense", "config": {"units": 10}},
    ]});
    let mut model = Sequential::from_config(&config, 1).expect("valid model");
    model
        .compile(&json!({"optimizer": "adam", "loss": {"name": "sparseCategoricalCrossentropy", "fromLogits": true}}))
        .expect("compiles");
    let tokens = Tensor::new(
        (0..batch * time).map(|_| rng.below(1000) as f32).collect(),
        &[batch, time],
    )
    .expect("shape");
    let labels = Tensor::new((0..batch).map(|_| rng.below(10) as f32).collect(), &[batch]).expect("shape");
    threads::run(|| {
        for _ in 0..3 {
            model.train_on_batch(&tokens, &labels).expect("trains");
        }
        let train = timings(steps, || {
            model.train_on_batch(&tokens, &labels).expect("trains");
        });
        println!("embedding -> LSTM({units}) -> dense(10), batch {batch} x {time} tokens: train step {train}");
    });
}

/// "median X ms (best Y ms)" over `steps` runs of `f` (the best is the least disturbed by
/// other processes on a shared machine).
fn timings(steps: usize, mut f: impl FnMut()) -> String {
    let mut ms: Vec<f64> = (0..steps.max(1))
        .map(|_| {
            let t = std::time::Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    format!("median {:.2} ms (best {:.2} ms)", ms[ms.len() / 2], ms[0])
}
