//! Optimizers on GPU weights: every rule's device update, the useEma average and gradient
//! clipping equal the host's, and an in-place device update never changes a value someone
//! still holds.
//!
//! Skipped with a printed reason without an adapter (Mesa's lavapipe is one; CI requires it).

mod fixture_support;

use cortex_core::Device;
use fixture_support::{assert_close, values};

fn skip() -> bool {
    cortex_wgpu::gpu_test_skip_reason().is_some()
}

/// The optimizers' device updates (weights moved with `to_device`) against their host updates:
/// three steps of every rule, the slots and the useEma average read back by `state`.
#[test]
fn optimizer_device_updates_equal_the_host_updates() {
    if skip() {
        return;
    }
    use cortex_core::nn::optim::Optimizer;
    use serde_json::json;
    for spec in [
        json!({"name": "sgd", "learningRate": 0.1}),
        json!({"name": "sgd", "learningRate": 0.1, "momentum": 0.9, "nesterov": true}),
        json!({"name": "adam", "learningRate": 0.01}),
        json!({"name": "adamw", "learningRate": 0.01, "weightDecay": 0.1}),
        json!({"name": "rmsprop", "learningRate": 0.01}),
        json!({"name": "lion", "learningRate": 0.01}),
        json!({"name": "lamb", "learningRate": 0.01}),
        json!({"name": "adam", "learningRate": 0.01, "useEma": true, "emaMomentum": 0.5}),
    ] {
        let (mut host, mut device) = (Optimizer::parse(&spec).unwrap(), Optimizer::parse(&spec).unwrap());
        let mut w_host = values(37, 60);
        let gpu = cortex_core::device::shared_gpu().unwrap();
        let mut w_dev = gpu.upload(&w_host, &[37]).unwrap();
        for step in 0..3u64 {
            let g = values(37, 61 + step);
            host.begin_step();
            host.update(0, &mut w_host, &g).unwrap();
            device.begin_step();
            device
                .update_on_device(0, &mut w_dev, &gpu.upload(&g, &[37]).unwrap())
                .unwrap();
        }
        assert_close(&format!("{spec} weights"), &gpu.download(&w_dev).unwrap(), &w_host);
        let (hs, ds) = (host.state().unwrap(), device.state().unwrap());
        let slots = |s: &cortex_core::nn::optim::OptimizerState| s.slots.first().cloned().unwrap_or_default();
        let (hs, ds) = (slots(&hs), slots(&ds));
        assert_eq!(hs.len(), ds.len(), "{spec}");
        for (h, d) in hs.iter().zip(&ds) {
            assert_close(&format!("{spec} slot"), d, h);
        }
        // useEma: the device average equals the host's, through state() and ema_values.
        let (he, de) = (host.state().unwrap().ema, device.state().unwrap().ema);
        assert_eq!(he.len(), de.len(), "{spec} averages");
        for (h, d) in he.iter().zip(&de) {
            assert_close(&format!("{spec} average"), d, h);
        }
        if spec.get("useEma").is_some() {
            assert_eq!(de.len(), 1, "{spec}: an average was kept");
            assert_close("ema_values", &device.ema_values(0).unwrap().unwrap(), &he[0]);
        }
    }
}

/// Gradient clipping on the device equals the host's: clipvalue, clipnorm (one tensor over its
/// limit, one under) and globalClipnorm (over and under), with a missing gradient among them.
#[test]
fn device_gradient_clipping_equals_the_host_clipping() {
    if skip() {
        return;
    }
    use cortex_core::nn::optim::Optimizer;
    use serde_json::json;
    let gpu = cortex_core::device::shared_gpu().unwrap();
    let big: Vec<f32> = values(30, 80).iter().map(|v| v * 3.0).collect();
    let small: Vec<f32> = values(7, 81).iter().map(|v| v * 0.05).collect();
    for spec in [
        json!({"name": "sgd", "clipvalue": 0.5}),
        json!({"name": "sgd", "clipnorm": 1.0}),
        json!({"name": "sgd", "globalClipnorm": 2.0}),
        json!({"name": "sgd", "globalClipnorm": 100.0}),
    ] {
        let optimizer = Optimizer::parse(&spec).unwrap();
        let mut host = vec![Some(big.clone()), None, Some(small.clone())];
        optimizer.clip_gradients(&mut host);
        let mut device: Vec<Option<cortex_wgpu::GpuTensor>> = [Some(&big), None, Some(&small)]
            .iter()
            .map(|g| g.map(|g| gpu.upload(g, &[g.len()]).unwrap()))
            .collect();
        optimizer.clip_device_gradients(&mut device).unwrap();
        assert!(device[1].is_none());
        for (d, h) in device.iter().zip(&host) {
            if let (Some(d), Some(h)) = (d, h) {
                assert_close(&format!("{spec}"), &gpu.download(d).unwrap(), h);
            }
        }
    }
    // The limits bite: clipped values differ from the inputs.
    let mut clipped = vec![Some(big.clone())];
    Optimizer::parse(&json!({"name": "sgd", "clipnorm": 1.0}))
        .unwrap()
        .clip_gradients(&mut clipped);
    assert!(clipped[0].as_ref().unwrap() != &big);
}

/// An in-place device update (an optimizer kernel writing the weight's buffer) never changes a
/// value someone still holds: a shared buffer is copied first. A failed update leaves the
/// weight readable and as it was, and its version moved (packed copies are dropped).
#[test]
fn device_updates_copy_a_shared_value_and_survive_a_failed_update() {
    if skip() {
        return;
    }
    use cortex_core::nn::optim::Optimizer;
    use cortex_core::nn::param::Param;
    let gpu = cortex_core::device::shared_gpu().unwrap();
    let start = values(24, 70);
    let p = Param::new("w".into(), start.clone(), &[4, 6], true).unwrap();
    p.to_device(Device::Gpu).unwrap();
    let mut sgd = Optimizer::parse(&serde_json::json!({"name": "sgd", "learningRate": 0.5})).unwrap();
    let grad = gpu.upload(&[1.0; 24], &[4, 6]).unwrap();
    let mut step = |p: &Param| {
        sgd.begin_step();
        p.update_on_device(|b| sgd.update_on_device(0, b, &grad))
    };
    let held = p.get();
    step(&p).unwrap();
    assert_eq!(held.to_vec(), start, "a value held before the update is unchanged");
    let after = |k: f32| start.iter().map(|v| v - 0.5 * k).collect::<Vec<f32>>();
    assert_close("one step", &p.get().to_vec(), &after(1.0));
    drop(held);
    step(&p).unwrap();
    assert_close("two steps", &p.get().to_vec(), &after(2.0));
    let version = p.version();
    let err = p
        .update_on_device(|_| Err(cortex_core::Error::Invalid("injected failure".into())))
        .unwrap_err();
    assert!(err.to_string().contains("injected failure"), "{err}");
    assert_close("after a failed update", &p.get().to_vec(), &after(2.0));
    assert!(p.version() > version, "a failed update still invalidates packed copies");
    assert_eq!(p.get().device(), Device::Gpu);
}
