//! Times one training step of the Keras MNIST convnet at batch 128 (for profiling:
//! `cargo run --release -p cortex-core --example convnet_step`).

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use cortex_core::nn::Sequential;
use cortex_core::rng::Rng;
use cortex_core::{threads, Tensor};
use serde_json::json;

fn main() {
    let config = json!({"layers": [
        {"className": "Conv2D", "config": {"filters": 32, "kernelSize": 3, "activation": "relu", "inputShape": [28, 28, 1]}},
        {"className": "MaxPooling2D", "config": {"poolSize": 2}},
        {"className": "Conv2D", "config": {"filters": 64, "kernelSize": 3, "activation": "relu"}},
        {"className": "MaxPooling2D", "config": {"poolSize": 2}},
        {"className": "Flatten", "config": {}},
        {"className": "Dropout", "config": {"rate": 0.5}},
        {"className": "Dense", "config": {"units": 10, "activation": "softmax"}},
    ]});
    let mut model = Sequential::from_config(&config, 1).unwrap();
    model
        .compile(&json!({"optimizer": "adam", "loss": "sparseCategoricalCrossentropy", "metrics": ["accuracy"]}))
        .unwrap();
    let batch = 128;
    let mut rng = Rng::new(3);
    let x = Tensor::new((0..batch * 784).map(|_| rng.uniform()).collect(), &[batch, 28, 28, 1]).unwrap();
    let y = Tensor::new((0..batch).map(|i| (i % 10) as f32).collect(), &[batch]).unwrap();
    let steps: usize = std::env::var("STEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(50);
    threads::run(|| {
        for _ in 0..5 {
            model.train_on_batch(&x, &y).unwrap();
        }
        let t = std::time::Instant::now();
        for _ in 0..steps {
            model.train_on_batch(&x, &y).unwrap();
        }
        let s = t.elapsed().as_secs_f64() / steps as f64;
        println!("train step: {:.2} ms, {:.0} samples/s", s * 1e3, batch as f64 / s);
        let t = std::time::Instant::now();
        for _ in 0..steps {
            model.predict(&x, 128).unwrap();
        }
        let s = t.elapsed().as_secs_f64() / steps as f64;
        println!("forward only: {:.2} ms", s * 1e3);
    });
}
