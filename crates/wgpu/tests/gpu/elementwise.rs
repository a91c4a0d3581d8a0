//! Bias add, activations forward/backward, binary ops and scale against f64 references.

use super::common::{assert_close, gpu, rand_vec};
use cortex_wgpu::{Activation, BinaryOp};

fn f64_act(act: Activation, x: f64) -> f64 {
    match act {
        Activation::Linear => x,
        Activation::Relu => x.max(0.0),
        Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        Activation::Tanh => x.tanh(),
        Activation::LeakyRelu(s) => {
            if x > 0.0 {
                x
            } else {
                s as f64 * x
            }
        }
        Activation::Gelu => {
            let c = (2.0 / std::f64::consts::PI).sqrt();
            0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())
        }
        Activation::GeluErf => 0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2)),
        Activation::Elu(a) => {
            if x > 0.0 {
                x
            } else {
                a as f64 * x.exp_m1()
            }
        }
        Activation::Selu => {
            let (alpha, scale) = (1.6732632423543772, 1.0507009873554805);
            scale * if x > 0.0 { x } else { alpha * x.exp_m1() }
        }
        Activation::Swish => x / (1.0 + (-x).exp()),
        Activation::Softplus => x.max(0.0) + (-x.abs()).exp().ln_1p(),
        Activation::LogClipped(eps) => x.clamp(eps as f64, 1.0 - eps as f64).ln(),
    }
}

/// erf by its Maclaurin series (exact to ~1e-13 for the |x| < 3 used here).
fn erf(x: f64) -> f64 {
    let (mut term, mut sum) = (x, x);
    for n in 1..80 {
        term *= -x * x / n as f64;
        sum += term / (2 * n + 1) as f64;
    }
    sum * 2.0 / std::f64::consts::PI.sqrt()
}

/// Central difference of the f64 activation (smooth ones) or the exact piecewise derivative.
fn f64_grad(act: Activation, x: f64) -> f64 {
    match act {
        Activation::Relu => (x > 0.0) as u8 as f64,
        Activation::LeakyRelu(s) => {
            if x > 0.0 {
                1.0
            } else {
                s as f64
            }
        }
        Activation::Linear => 1.0,
        // Zero where the clip bites (most of the [-4, 4] inputs), 1/x inside.
        Activation::LogClipped(eps) => {
            if (eps as f64..=1.0 - eps as f64).contains(&x) {
                1.0 / x
            } else {
                0.0
            }
        }
        // Piecewise at 0: the one-sided derivatives (a central difference straddling 0 is neither).
        Activation::Elu(a) if x <= 0.0 => a as f64 * x.exp(),
        Activation::Selu => 1.0507009873554805 * if x > 0.0 { 1.0 } else { 1.6732632423543772 * x.exp() },
        _ => {
            let h = 1e-6;
            (f64_act(act, x + h) - f64_act(act, x - h)) / (2.0 * h)
        }
    }
}

const ACTS: [Activation; 12] = [
    Activation::Linear,
    Activation::Relu,
    Activation::Sigmoid,
    Activation::Tanh,
    Activation::LeakyRelu(0.2),
    Activation::Gelu,
    Activation::GeluErf,
    Activation::Elu(0.7),
    Activation::Selu,
    Activation::Swish,
    Activation::Softplus,
    Activation::LogClipped(1e-7),
];

#[test]
fn activations_forward_and_backward() {
    let Some(g) = gpu() else { return };
    let n = 37 * 53;
    let x: Vec<f32> = rand_vec(n, 1).iter().map(|v| v * 4.0).collect();
    let dy = rand_vec(n, 2);
    let gx = g.upload(&x, &[37, 53]).unwrap();
    let gdy = g.upload(&dy, &[37, 53]).unwrap();
    for act in ACTS {
        let y = g.download(&g.activation(act, &gx).unwrap()).unwrap();
        let want: Vec<f64> = x.iter().map(|&v| f64_act(act, v as f64)).collect();
        assert_close(&format!("{act:?} forward"), &y, &want, 1e-4);
        let dx = g.download(&g.activation_backward(act, &gx, &gdy).unwrap()).unwrap();
        let want: Vec<f64> = x
            .iter()
            .zip(&dy)
            .map(|(&v, &d)| d as f64 * f64_grad(act, v as f64))
            .collect();
        assert_close(&format!("{act:?} backward"), &dx, &want, 1e-4);
    }
}

#[test]
fn activations_stay_finite_for_large_inputs() {
    let Some(g) = gpu() else { return };
    let x = [-1e4f32, -100.0, -30.0, 30.0, 100.0, 1e4];
    let gx = g.upload(&x, &[6]).unwrap();
    for act in ACTS {
        let y = g.download(&g.activation(act, &gx).unwrap()).unwrap();
        assert!(y.iter().all(|v| v.is_finite()), "{act:?}: {y:?}");
        let ones = g.upload(&[1.0; 6], &[6]).unwrap();
        let d = g.download(&g.activation_backward(act, &gx, &ones).unwrap()).unwrap();
        assert!(d.iter().all(|v| v.is_finite()), "{act:?} grad: {d:?}");
    }
}

#[test]
fn bias_add_last_axis() {
    let Some(g) = gpu() else { return };
    let (r, c) = (29, 37);
    let x = rand_vec(r * c, 3);
    let b = rand_vec(c, 4);
    let out = g
        .bias_add(&g.upload(&x, &[r, c]).unwrap(), &g.upload(&b, &[c]).unwrap())
        .unwrap();
    let want: Vec<f64> = (0..r * c).map(|i| x[i] as f64 + b[i % c] as f64).collect();
    assert_close("bias_add", &g.download(&out).unwrap(), &want, 1e-6);
    assert!(g
        .bias_add(&g.upload(&x, &[r, c]).unwrap(), &g.upload(&b[..5], &[5]).unwrap())
        .is_err());
}

#[test]
fn binary_ops_and_scale() {
    let Some(g) = gpu() else { return };
    let n = 1000;
    let a = rand_vec(n, 5);
    let b = rand_vec(n, 6);
    let ga = g.upload(&a, &[10, 100]).unwrap();
    let gb = g.upload(&b, &[10, 100]).unwrap();
    type Reference = fn(f64, f64) -> f64;
    let cases: [(BinaryOp, Reference); 3] = [
        (BinaryOp::Add, |x, y| x + y),
        (BinaryOp::Sub, |x, y| x - y),
        (BinaryOp::Mul, |x, y| x * y),
    ];
    for (op, f) in cases {
        let out = g.download(&g.binary(op, &ga, &gb).unwrap()).unwrap();
        let want: Vec<f64> = a.iter().zip(&b).map(|(&x, &y)| f(x as f64, y as f64)).collect();
        assert_close(&format!("{op:?}"), &out, &want, 1e-6);
    }
    let sum = g.download(&g.add(&ga, &gb).unwrap()).unwrap();
    assert_eq!(sum[7], a[7] + b[7]);
    let prod = g.download(&g.mul(&ga, &gb).unwrap()).unwrap();
    assert_eq!(prod[9], a[9] * b[9]);
    let s = g.download(&g.scale(&ga, -2.5, 0.5).unwrap()).unwrap();
    let want: Vec<f64> = a.iter().map(|&x| -2.5 * x as f64 + 0.5).collect();
    assert_close("scale", &s, &want, 1e-6);
}

#[test]
fn large_elementwise_uses_a_2d_grid() {
    // 65535 * 256 + 1000 elements needs more workgroups than one dimension allows.
    let Some(g) = gpu() else { return };
    let n = 65535 * 256 + 1000;
    let x: Vec<f32> = (0..n).map(|i| (i % 1000) as f32).collect();
    let y = g
        .download(&g.scale(&g.upload(&x, &[n]).unwrap(), 2.0, 1.0).unwrap())
        .unwrap();
    assert_eq!(y[n - 1], 2.0 * x[n - 1] + 1.0);
    assert_eq!(y[65535 * 256 + 3], 2.0 * x[65535 * 256 + 3] + 1.0);
    assert_eq!(y[12345], 2.0 * x[12345] + 1.0);
}

/// Dropout: about `rate` of the elements are zeroed, the rest scaled by 1 / (1 - rate); the
/// same seed gives the same mask (so the backward pass is the same call on dy), another seed
/// another mask.
#[test]
fn dropout_masks_are_seeded_and_unbiased() {
    let Some(g) = gpu() else { return };
    let n = 100_000;
    let ones = g.upload(&vec![1.0; n], &[n]).unwrap();
    let a = g.download(&g.dropout(&ones, 0.3, 42).unwrap()).unwrap();
    let again = g.download(&g.dropout(&ones, 0.3, 42).unwrap()).unwrap();
    let other = g.download(&g.dropout(&ones, 0.3, 43).unwrap()).unwrap();
    assert_eq!(a, again, "same seed, same mask");
    assert_ne!(a, other, "another seed, another mask");
    let zeros = a.iter().filter(|&&v| v == 0.0).count() as f64 / n as f64;
    assert!((zeros - 0.3).abs() < 0.01, "dropped fraction {zeros}");
    let keep = 1.0 / 0.7f32;
    assert!(a.iter().all(|&v| v == 0.0 || (v - keep).abs() < 1e-6));
    let mean = a.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
    assert!((mean - 1.0).abs() < 0.02, "inverted dropout keeps the mean: {mean}");
    assert!(g.dropout(&ones, 1.0, 1).is_err());
}
