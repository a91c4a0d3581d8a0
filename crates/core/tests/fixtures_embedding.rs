//! Embedding masks (maskZero into pooling), bad indices, positional embeddings and a small
//! embedding model, on the CPU (split from fixtures_spatial.rs); PositionalEmbedding on the GPU too.

mod spatial_support;

use cortex_core::backprop::backward_with_seed;
use cortex_core::nn::layers::{self, ForwardCtx};
use cortex_core::nn::Sequential;
use cortex_core::rng::Rng;
use cortex_core::Tensor;
use serde_json::json;
use spatial_support::*;

#[test]
fn embedding_mask_zero_sets_the_output_mask() {
    let l = layer(
        "Embedding",
        json!({"inputDim": 5, "outputDim": 3, "maskZero": true}),
        &[4],
    );
    let x = Tensor::new(vec![3.0, 1.0, 0.0, 0.0, 4.0, 0.0, 2.0, 0.0], &[2, 4]).unwrap();
    let mut rng = Rng::new(0);
    let mut ctx = ForwardCtx::new(false, &mut rng);
    let y = l.forward(&x, &mut ctx).unwrap();
    assert_eq!(y.shape(), [2, 4, 3]);
    let masks = ctx.output_masks.expect("maskZero sets output masks");
    let mask = masks[0].as_ref().expect("one mask");
    assert_eq!(mask.shape(), [2, 4]);
    assert_eq!(mask.data(), [1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0]);
    // Without maskZero no mask is produced.
    let l = layer("Embedding", json!({"inputDim": 5, "outputDim": 3}), &[4]);
    let mut rng = Rng::new(0);
    let mut ctx = ForwardCtx::new(false, &mut rng);
    l.forward(&x, &mut ctx).unwrap();
    assert!(ctx.output_masks.is_none());
    // Default initializer: uniform(-0.05, 0.05).
    let (mut big, _) = layers::from_config("Embedding", &json!({"inputDim": 100, "outputDim": 50})).unwrap();
    big.build(&[3], &mut Rng::new(4)).unwrap();
    let w = big.params()[0].get();
    assert!(w.data().iter().all(|v| v.abs() <= 0.05));
    assert!(w.data().iter().any(|v| v.abs() > 0.04));
    assert!(big.params()[0].name.ends_with("/embeddings"));
}

#[test]
fn embedding_rejects_bad_indices_by_value_and_position() {
    let l = layer("Embedding", json!({"inputDim": 5, "outputDim": 3}), &[3]);
    let mut rng = Rng::new(0);
    for (bad, pos) in [(5.0, 4), (-1.0, 1), (2.5, 2)] {
        let mut data = vec![0.0, 1.0, 2.0, 3.0, 4.0, 0.0];
        data[pos] = bad;
        let x = Tensor::new(data, &[2, 3]).unwrap();
        let e = l
            .forward(&x, &mut ForwardCtx::new(false, &mut rng))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("index {bad}")) && e.contains(&format!("position {pos}")) && e.contains("[0, 5)"),
            "{e}"
        );
        assert!(e.contains("Embedding 'layer'"), "{e}");
    }
}

#[test]
fn global_average_pooling1d_honours_the_mask() {
    let l = layer("GlobalAveragePooling1D", json!({}), &[3, 2]);
    let xd = vec![1.0, 2.0, 3.0, 4.0, 100.0, 100.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0];
    let mask = Tensor::new(vec![1.0, 1.0, 0.0, 1.0, 0.0, 0.0], &[2, 3]).unwrap();
    let run = |x: &Tensor| {
        let mut rng = Rng::new(0);
        let mut ctx = ForwardCtx::new(false, &mut rng);
        ctx.input_masks = vec![Some(mask.clone())];
        let y = l.forward(x, &mut ctx).unwrap();
        assert_eq!(
            ctx.output_masks.as_ref().map(|m| m[0].is_none()),
            Some(true),
            "mask is consumed"
        );
        y
    };
    let y = run(&Tensor::new(xd.clone(), &[2, 3, 2]).unwrap());
    assert_eq!(y.shape(), [2, 2]);
    assert_eq!(y.data(), [2.0, 3.0, 5.0, 6.0]);
    check_fd("masked gap1d", &xd, &[2, 3, 2], &run);
    let mut rng = Rng::new(0);
    let mut ctx = ForwardCtx::new(false, &mut rng);
    ctx.input_masks = vec![Some(Tensor::zeros(&[2, 4]))];
    let e = l.forward(&Tensor::zeros(&[2, 3, 2]), &mut ctx).unwrap_err().to_string();
    assert!(e.contains("[2, 3]") && e.contains("[2, 4]"), "{e}");
}

#[test]
fn positional_embedding_adds_positions_and_rejects_long_sequences() {
    let l = layer("PositionalEmbedding", json!({"sequenceLength": 5}), &[4, 3]);
    let table = values(15, 3);
    l.params()[0].set(table.clone()).unwrap();
    assert_eq!(l.params()[0].name, "layer/embeddings");
    let xd = values(2 * 3 * 3, 4);
    // Shorter than sequenceLength at run time: positions 0..3.
    let x = Tensor::variable(xd.clone(), &[2, 3, 3]).unwrap();
    let y = forward(l.as_ref(), &x);
    for (i, v) in y.data().iter().enumerate() {
        assert!((v - (xd[i] + table[i % 9])).abs() < 1e-6);
    }
    let g = values(y.len(), 5);
    let leaf = l.params()[0].get();
    let grads = backward_with_seed(&y, g.clone()).unwrap();
    assert_eq!(grads.get(&x).unwrap(), g.as_slice());
    let gt = grads.get(&leaf).unwrap();
    for i in 0..15 {
        let want = if i < 9 { g[i] + g[9 + i] } else { 0.0 };
        assert!((gt[i] - want).abs() < 1e-6, "dtable[{i}]");
    }
    check_fd("positionalEmbedding", &xd, &[2, 3, 3], &|x| forward(l.as_ref(), x));
    let e = l
        .forward(
            &Tensor::zeros(&[1, 6, 3]),
            &mut ForwardCtx::new(false, &mut Rng::new(0)),
        )
        .unwrap_err();
    let e = e.to_string();
    assert!(e.contains("6 steps") && e.contains("sequenceLength is 5"), "{e}");
    let e = l
        .forward(
            &Tensor::zeros(&[1, 2, 4]),
            &mut ForwardCtx::new(false, &mut Rng::new(0)),
        )
        .unwrap_err();
    assert!(e.to_string().contains("[batch, steps, 3]"), "{e}");
    let (mut l2, _) = layers::from_config("PositionalEmbedding", &json!({"sequenceLength": 3})).unwrap();
    let e = l2.build(&[4, 2], &mut Rng::new(0)).unwrap_err().to_string();
    assert!(e.contains("4 steps") && e.contains("sequenceLength is 3"), "{e}");
}

/// On the GPU, as ops: full-length and shorter sequences give the CPU's output and gradients
/// (a shorter one adds a leading slice of the table, whose gradient goes back into place).
#[test]
fn positional_embedding_on_the_gpu_equals_the_cpu() {
    if cortex_wgpu::gpu_test_skip_reason().is_some() {
        return;
    }
    for steps in [5, 3] {
        let run = |device: cortex_core::Device| {
            let l = layer("PositionalEmbedding", json!({"sequenceLength": 5}), &[4, 3]);
            l.params()[0].set(values(15, 3)).unwrap();
            l.params()[0].to_device(device).unwrap();
            let x = Tensor::variable(values(2 * steps * 3, 4), &[2, steps, 3]).unwrap();
            let y = forward(l.as_ref(), &x.to(device).unwrap());
            let leaf = l.params()[0].get();
            let grads = backward_with_seed(&y, values(y.len(), 5)).unwrap();
            [
                y.to_vec(),
                grads.get(&x).unwrap().to_vec(),
                grads.get(&leaf).unwrap().to_vec(),
            ]
        };
        let (cpu, gpu) = (run(cortex_core::Device::Cpu), run(cortex_core::Device::Gpu));
        for (what, (c, g)) in ["y", "dx", "dtable"].iter().zip(cpu.iter().zip(&gpu)) {
            assert_eq!(c.len(), g.len());
            for (a, b) in c.iter().zip(g) {
                assert!(
                    (a - b).abs() <= 1e-6 * (1.0 + a.abs()),
                    "{steps} steps {what}: cpu {a}, gpu {b}"
                );
            }
        }
    }
}

/// Embedding -> GlobalAveragePooling1D -> Dense trains end to end in a Sequential model.
#[test]
fn embedding_model_trains() {
    let config = json!({"layers": [
        {"className": "Embedding", "config": {"inputDim": 6, "outputDim": 8, "inputShape": [4]}},
        {"className": "Conv1D", "config": {"filters": 8, "kernelSize": 2, "padding": "causal", "activation": "relu"}},
        {"className": "GlobalAveragePooling1D", "config": {}},
        {"className": "Dense", "config": {"units": 2}},
    ]});
    let mut model = Sequential::from_config(&config, 3).unwrap();
    model
        .compile(&json!({"optimizer": {"name": "adam", "learningRate": 0.05},
                         "loss": {"name": "sparseCategoricalCrossentropy", "fromLogits": true}}))
        .unwrap();
    // Class 1 iff token 5 appears.
    let x = Tensor::new(
        vec![
            1.0, 2.0, 3.0, 4.0, 5.0, 1.0, 2.0, 3.0, 2.0, 2.0, 1.0, 0.0, 0.0, 5.0, 5.0, 1.0,
        ],
        &[4, 4],
    )
    .unwrap();
    let y = Tensor::new(vec![0.0, 1.0, 0.0, 1.0], &[4]).unwrap();
    let first = model.train_on_batch(&x, &y).unwrap()[0].1;
    let mut last = first;
    for _ in 0..60 {
        last = model.train_on_batch(&x, &y).unwrap()[0].1;
    }
    assert!(last < first * 0.2, "loss {first} -> {last}");
}

/// In a model, Embedding(maskZero) -> GlobalAveragePooling1D averages only the real tokens:
/// `[3, 4, 0, 0]` pools like `[3, 4, 3, 4]`, and the padding index's vector is never used.
#[test]
fn mask_zero_flows_into_global_average_pooling() {
    let config = json!({"layers": [
        {"className": "Embedding", "config": {"inputDim": 6, "outputDim": 5, "maskZero": true, "inputShape": [4]}},
        {"className": "GlobalAveragePooling1D", "config": {}},
    ]});
    let model = Sequential::from_config(&config, 5).unwrap();
    let x = Tensor::new(vec![3.0, 4.0, 0.0, 0.0, 3.0, 4.0, 3.0, 4.0], &[2, 4]).unwrap();
    let y = model.predict(&x, 2).unwrap();
    assert_eq!(y.shape(), [2, 5]);
    assert_close("masked mean", &y.data()[..5], &y.data()[5..]);
    let unmasked = json!({"layers": [
        {"className": "Embedding", "config": {"inputDim": 6, "outputDim": 5, "inputShape": [4]}},
        {"className": "GlobalAveragePooling1D", "config": {}},
    ]});
    let y = Sequential::from_config(&unmasked, 5).unwrap().predict(&x, 2).unwrap();
    assert!(
        y.data()[..5]
            .iter()
            .zip(&y.data()[5..])
            .any(|(a, b)| (a - b).abs() > 1e-4),
        "without the mask, padding counts"
    );
}
