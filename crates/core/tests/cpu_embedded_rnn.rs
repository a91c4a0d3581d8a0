//! A model's predict folds an Embedding into the recurrent layer after it (each token's input
//! projection looked up in `embeddings · W + b`): the result must be the layers' own, run one
//! at a time, for every cell and option the fused path takes, after weight changes too.

use cortex_core::nn::layers::ForwardCtx;
use cortex_core::nn::model::Model;
use cortex_core::rng::Rng;
use cortex_core::Tensor;
use serde_json::{json, Value};

const VOCABULARY: usize = 50;

fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| rng.uniform() * 2.0 - 1.0).collect()
}

fn ids(batch: usize, time: usize, seed: u64) -> Tensor {
    let mut rng = Rng::new(seed);
    let v = (0..batch * time).map(|_| rng.below(VOCABULARY) as f32).collect();
    Tensor::new(v, &[batch, time]).unwrap()
}

fn model(time: usize, recurrent: Value) -> Model {
    let config = json!({"className": "Sequential", "inputShape": [time], "layers": [
        {"className": "Embedding", "config": {"inputDim": VOCABULARY, "outputDim": 12}},
        recurrent,
        {"className": "Dense", "config": {"units": 3}}
    ]});
    Model::from_config(&config, 11).unwrap()
}

/// The model's layers run one at a time (nothing fused).
fn one_by_one(model: &Model, x: &Tensor) -> Tensor {
    let mut y = x.clone();
    let mut rng = Rng::new(0);
    cortex_core::tensor::no_grad(|| {
        for cell in model.layers() {
            y = cell.read().forward(&y, &mut ForwardCtx::new(false, &mut rng)).unwrap();
        }
    });
    y
}

#[track_caller]
fn assert_close(what: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    for (i, (&a, &b)) in got.data().iter().zip(want.data()).enumerate() {
        assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{what}[{i}]: {a} vs {b}");
    }
}

#[test]
fn folded_embedding_equals_the_layers_one_by_one() {
    let mut cases = 0;
    for cell in ["SimpleRNN", "LSTM", "GRU"] {
        for (go_backwards, return_sequences) in [(false, false), (true, false), (false, true), (true, true)] {
            // Short and long sequences (the per-step product changes kernel at 16 steps);
            // batches on one chunk and split across the pool.
            for (batch, time) in [(1, 5), (3, 20), (9, 17)] {
                let recurrent = json!({"className": cell, "config": {
                    "units": 7, "goBackwards": go_backwards, "returnSequences": return_sequences}});
                let m = model(time, recurrent);
                let x = ids(batch, time, (batch * time) as u64);
                let what =
                    format!("{cell} goBackwards={go_backwards} returnSequences={return_sequences} {batch}x{time}");
                assert_close(&what, &m.predict(&x, batch).unwrap(), &one_by_one(&m, &x));
                cases += 1;
            }
        }
    }
    assert_eq!(cases, 36);
}

#[test]
fn folded_embedding_equals_the_layers_one_by_one_in_bidirectional() {
    for (cell, merge) in [
        ("LSTM", "concat"),
        ("GRU", "sum"),
        ("SimpleRNN", "mul"),
        ("LSTM", "ave"),
    ] {
        for return_sequences in [false, true] {
            for (batch, time) in [(1, 6), (5, 19)] {
                let recurrent = json!({"className": "Bidirectional", "config": {"mergeMode": merge, "layer": {
                    "className": cell, "config": {"units": 4, "returnSequences": return_sequences}}}});
                let m = model(time, recurrent);
                let x = ids(batch, time, (batch + time) as u64);
                let what = format!("Bidirectional({cell}) {merge} returnSequences={return_sequences} {batch}x{time}");
                assert_close(&what, &m.predict(&x, batch).unwrap(), &one_by_one(&m, &x));
            }
        }
    }
}

/// The projection table is cached; a change of the embeddings, the kernel or the bias is seen
/// by the next predict.
#[test]
fn folded_embedding_sees_weight_changes() {
    let m = model(18, json!({"className": "LSTM", "config": {"units": 6}}));
    let x = ids(2, 18, 3);
    let before = m.predict(&x, 2).unwrap();
    assert_close("first predict", &before, &one_by_one(&m, &x));
    // One weight at a time (`setWeights` would change every version at once): the
    // embeddings, then the LSTM's kernel, then its bias.
    for (layer, weight, name) in [(0, 0, "embeddings"), (1, 0, "kernel"), (1, 2, "bias")] {
        let cell = &m.layers()[layer];
        let guard = cell.read();
        let param = guard.params()[weight];
        let seed = 40 + (layer * 3 + weight) as u64;
        param.set(rand_vec(param.shape().iter().product(), seed)).unwrap();
        drop(guard);
        let after = m.predict(&x, 2).unwrap();
        assert_close(&format!("after a new {name}"), &after, &one_by_one(&m, &x));
        assert_ne!(after.data(), before.data(), "{name}: the prediction did not change");
    }
}

/// Out-of-range ids are refused with the Embedding's error, as without the fold; `maskZero`
/// masks apply to the folded layer; int8 recurrent kernels keep working.
#[test]
fn folded_embedding_keeps_errors_masks_and_int8() {
    let m = model(16, json!({"className": "GRU", "config": {"units": 5}}));
    let bad = Tensor::new(vec![VOCABULARY as f32; 16], &[1, 16]).unwrap();
    let err = m.predict(&bad, 1).unwrap_err().to_string();
    assert!(err.contains("Embedding"), "{err}");

    // maskZero: masked steps keep the state. The reference is the same model run with its
    // weights on the tape (a pass that records gradients is never folded).
    for (cell, bidirectional) in [("LSTM", false), ("GRU", false), ("LSTM", true)] {
        let inner = json!({"className": cell, "config": {"units": 6}});
        let recurrent = if bidirectional {
            json!({"className": "Bidirectional", "config": {"layer": inner}})
        } else {
            inner
        };
        let config = json!({"className": "Sequential", "inputShape": [16], "layers": [
            {"className": "Embedding", "config": {"inputDim": VOCABULARY, "outputDim": 12, "maskZero": true}},
            recurrent
        ]});
        let masked = Model::from_config(&config, 4).unwrap();
        let mut x = ids(3, 16, 8).data().to_vec();
        x[10..16].fill(0.0);
        x[16..20].fill(0.0);
        let x = Tensor::new(x, &[3, 16]).unwrap();
        let folded = masked.predict(&x, 3).unwrap();
        let taped = masked.forward(&x, false, &mut Rng::new(0)).unwrap();
        let what = format!("maskZero {cell} bidirectional={bidirectional}");
        assert_close(&what, &folded, &taped.detach());
        let mut unmasked = x.data().to_vec();
        unmasked.iter_mut().for_each(|v| *v = v.max(1.0));
        let unmasked = masked.predict(&Tensor::new(unmasked, &[3, 16]).unwrap(), 3).unwrap();
        assert_ne!(folded.data(), unmasked.data(), "{what}: the mask changed nothing");
    }

    let x = ids(4, 16, 5);
    let f32_prediction = m.predict(&x, 4).unwrap();
    m.quantize(cortex_core::nn::quantize::Precision::Int8).unwrap();
    let int8 = m.predict(&x, 4).unwrap();
    assert_close("int8, folded vs one by one", &int8, &one_by_one(&m, &x));
    let gap = int8
        .data()
        .iter()
        .zip(f32_prediction.data())
        .fold(0.0f32, |g, (a, b)| g.max((a - b).abs()));
    assert!(gap < 0.05, "int8 vs f32: {gap}");
}
