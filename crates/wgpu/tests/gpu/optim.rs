//! In-place SGD (plain, momentum, Nesterov), Adam and RMSprop updates against f64 references.

use super::common::{assert_close, gpu, rand_vec};
use cortex_wgpu::{AdamParams, RmsPropParams, SgdParams};

#[test]
fn sgd_plain_momentum_nesterov() {
    let Some(g) = gpu() else { return };
    let n = 1037;
    for (momentum, nesterov) in [(0.0f32, false), (0.9, false), (0.9, true)] {
        let hp = SgdParams {
            lr: 0.05,
            momentum,
            nesterov,
        };
        let mut w_ref: Vec<f64> = rand_vec(n, 1).iter().map(|&v| v as f64).collect();
        let mut v_ref = vec![0.0f64; n];
        let w0: Vec<f32> = w_ref.iter().map(|&v| v as f32).collect();
        let mut w = g.upload(&w0, &[n]).unwrap();
        let mut vel = g.zeros(&[n]).unwrap();
        for step in 0..3 {
            let grad = rand_vec(n, 10 + step);
            let gg = g.upload(&grad, &[n]).unwrap();
            g.sgd_update(&mut w, &gg, Some(&mut vel), &hp).unwrap();
            for i in 0..n {
                let gi = grad[i] as f64;
                if momentum == 0.0 {
                    w_ref[i] -= hp.lr as f64 * gi;
                } else {
                    v_ref[i] = momentum as f64 * v_ref[i] - hp.lr as f64 * gi;
                    w_ref[i] += if nesterov {
                        momentum as f64 * v_ref[i] - hp.lr as f64 * gi
                    } else {
                        v_ref[i]
                    };
                }
            }
        }
        assert_close(&format!("sgd {hp:?}"), &g.download(&w).unwrap(), &w_ref, 1e-5);
    }
    let mut w = g.zeros(&[4]).unwrap();
    let grad = g.zeros(&[4]).unwrap();
    assert!(g
        .sgd_update(
            &mut w,
            &grad,
            None,
            &SgdParams {
                lr: 0.1,
                momentum: 0.9,
                nesterov: false
            }
        )
        .is_err());
}

#[test]
fn adam_keras_rule() {
    let Some(g) = gpu() else { return };
    let n = 2049;
    let (lr, b1, b2, eps) = (1e-2f64, 0.9f64, 0.999f64, 1e-7f64);
    let mut w_ref: Vec<f64> = rand_vec(n, 2).iter().map(|&v| v as f64).collect();
    let (mut m_ref, mut v_ref) = (vec![0.0f64; n], vec![0.0f64; n]);
    let w0: Vec<f32> = w_ref.iter().map(|&v| v as f32).collect();
    let mut w = g.upload(&w0, &[n]).unwrap();
    let mut m = g.zeros(&[n]).unwrap();
    let mut v = g.zeros(&[n]).unwrap();
    for t in 1..=5u32 {
        let grad = rand_vec(n, 20 + t as u64);
        let gg = g.upload(&grad, &[n]).unwrap();
        let hp = AdamParams {
            lr: lr as f32,
            beta1: b1 as f32,
            beta2: b2 as f32,
            epsilon: eps as f32,
            step: t,
        };
        g.adam_update(&mut w, &gg, &mut m, &mut v, &hp).unwrap();
        let lr_t = lr * (1.0 - b2.powi(t as i32)).sqrt() / (1.0 - b1.powi(t as i32));
        for i in 0..n {
            let gi = grad[i] as f64;
            m_ref[i] = b1 * m_ref[i] + (1.0 - b1) * gi;
            v_ref[i] = b2 * v_ref[i] + (1.0 - b2) * gi * gi;
            w_ref[i] -= lr_t * m_ref[i] / (v_ref[i].sqrt() + eps);
        }
    }
    assert_close("adam w", &g.download(&w).unwrap(), &w_ref, 1e-4);
    assert_close("adam m", &g.download(&m).unwrap(), &m_ref, 1e-4);
    assert_close("adam v", &g.download(&v).unwrap(), &v_ref, 1e-4);
}

#[test]
fn rmsprop_keras_rule() {
    let Some(g) = gpu() else { return };
    let n = 1500;
    let (lr, rho, eps) = (1e-2f64, 0.9f64, 1e-7f64);
    let mut w_ref: Vec<f64> = rand_vec(n, 3).iter().map(|&v| v as f64).collect();
    let mut v_ref = vec![0.0f64; n];
    let w0: Vec<f32> = w_ref.iter().map(|&v| v as f32).collect();
    let mut w = g.upload(&w0, &[n]).unwrap();
    let mut v = g.zeros(&[n]).unwrap();
    let hp = RmsPropParams {
        lr: lr as f32,
        rho: rho as f32,
        epsilon: eps as f32,
    };
    for step in 0..5u64 {
        let grad = rand_vec(n, 30 + step);
        g.rmsprop_update(&mut w, &g.upload(&grad, &[n]).unwrap(), &mut v, &hp)
            .unwrap();
        for i in 0..n {
            let gi = grad[i] as f64;
            v_ref[i] = rho * v_ref[i] + (1.0 - rho) * gi * gi;
            w_ref[i] -= lr * gi / (v_ref[i].sqrt() + eps);
        }
    }
    assert_close("rmsprop w", &g.download(&w).unwrap(), &w_ref, 1e-4);
    assert_close("rmsprop v", &g.download(&v).unwrap(), &v_ref, 1e-4);
    let mut short = g.zeros(&[n - 1]).unwrap();
    let err = g
        .rmsprop_update(&mut w, &g.zeros(&[n]).unwrap(), &mut short, &hp)
        .unwrap_err();
    assert!(err.to_string().contains("v (same size as w)"), "{err}");
}
