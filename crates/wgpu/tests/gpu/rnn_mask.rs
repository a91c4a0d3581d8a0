//! Keras masking in the LSTM, GRU and SimpleRNN sequence kernels against an f64 reference:
//! forward outputs and states, and the backward gradients against f64 central differences of
//! that reference (masks with leading, trailing and interior zeros and a fully masked row).

use cortex_wgpu::{Gpu, GpuTensor, RnnMask};

use super::common::{assert_close, gpu, rand_vec};

const TOL: f64 = 1e-4;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Lstm,
    Gru,
    Simple,
}

impl Kind {
    fn gates(self) -> usize {
        match self {
            Kind::Lstm => 4,
            Kind::Gru => 3,
            Kind::Simple => 1,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Case {
    kind: Kind,
    batch: usize,
    steps: usize,
    units: usize,
    zero_outputs: bool,
    /// Finite-difference checks per gradient (0: every entry).
    samples: usize,
}

/// The kernels' operands in f64: x_proj `[b, t, G*u]`, U `[u, G*u]`, the GRU's recurrent bias
/// `[3u]`, h0 and (LSTM) c0 `[b, u]`.
#[derive(Clone)]
struct Operands {
    xp: Vec<f64>,
    uk: Vec<f64>,
    brec: Vec<f64>,
    h0: Vec<f64>,
    c0: Vec<f64>,
}

fn sig(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Row `b`'s mask: interior zeros, trailing zeros, leading zeros, all zeros, or all kept
/// (one step kept with 0.5: any nonzero value keeps).
fn mask_of(batch: usize, steps: usize) -> Vec<f32> {
    let mut m = vec![1.0; batch * steps];
    for b in 0..batch {
        for t in 0..steps {
            let keep = match b % 5 {
                0 => t % 3 != 1,
                1 => t <= steps / 2,
                2 => t >= 2,
                3 => false,
                _ => true,
            };
            m[b * steps + t] = if !keep {
                0.0
            } else if b % 5 == 4 && t == 1 {
                0.5
            } else {
                1.0
            };
        }
    }
    m
}

/// Forward in f64 with Keras masking: (output sequence `[b, t, u]`, final h `[b, u]`).
fn reference(cs: &Case, p: &Operands, mask: &[f32]) -> (Vec<f64>, Vec<f64>) {
    let (bn, tn, u) = (cs.batch, cs.steps, cs.units);
    let g = cs.kind.gates() * u;
    let mut seq = vec![0.0; bn * tn * u];
    let mut last = vec![0.0; bn * u];
    for b in 0..bn {
        let mut h = p.h0[b * u..(b + 1) * u].to_vec();
        let mut c = p.c0[b * u..(b + 1) * u].to_vec();
        for t in 0..tn {
            let row = b * tn + t;
            let keep = mask[row] != 0.0;
            if keep {
                // r = h·U
                let mut r = vec![0.0; g];
                for (j, rj) in r.iter_mut().enumerate() {
                    for m in 0..u {
                        *rj += h[m] * p.uk[m * g + j];
                    }
                }
                let x = &p.xp[row * g..(row + 1) * g];
                if cs.kind == Kind::Lstm {
                    for k in 0..u {
                        let a = |q: usize| x[q * u + k] + r[q * u + k];
                        c[k] = sig(a(1)) * c[k] + sig(a(0)) * a(2).tanh();
                    }
                }
                let hn: Vec<f64> = (0..u)
                    .map(|k| match cs.kind {
                        Kind::Lstm => sig(x[3 * u + k] + r[3 * u + k]) * c[k].tanh(),
                        Kind::Gru => {
                            let rp = |q: usize| r[q * u + k] + p.brec[q * u + k];
                            let z = sig(x[k] + rp(0));
                            let rr = sig(x[u + k] + rp(1));
                            let hh = (x[2 * u + k] + rr * rp(2)).tanh();
                            z * h[k] + (1.0 - z) * hh
                        }
                        Kind::Simple => (x[k] + r[k]).tanh(),
                    })
                    .collect();
                h = hn;
            }
            for k in 0..u {
                seq[row * u + k] = if keep || !cs.zero_outputs { h[k] } else { 0.0 };
            }
        }
        last[b * u..(b + 1) * u].copy_from_slice(&h);
    }
    (seq, last)
}

/// L = Σ dseq·seq + Σ dlast·h_last.
fn loss(cs: &Case, p: &Operands, mask: &[f32], dseq: &[f64], dlast: &[f64]) -> f64 {
    let (seq, last) = reference(cs, p, mask);
    let a: f64 = seq.iter().zip(dseq).map(|(a, b)| a * b).sum();
    a + last.iter().zip(dlast).map(|(a, b)| a * b).sum::<f64>()
}

/// Central differences of the loss wrt `field` at `idx`.
fn fd(
    cs: &Case,
    p: &Operands,
    field: fn(&mut Operands) -> &mut Vec<f64>,
    idx: &[usize],
    mask: &[f32],
    dseq: &[f64],
    dlast: &[f64],
) -> Vec<f64> {
    let eps = 1e-6;
    idx.iter()
        .map(|&i| {
            let mut q = p.clone();
            field(&mut q)[i] += eps;
            let up = loss(cs, &q, mask, dseq, dlast);
            field(&mut q)[i] -= 2.0 * eps;
            let down = loss(cs, &q, mask, dseq, dlast);
            (up - down) / (2.0 * eps)
        })
        .collect()
}

/// Indices checked for a gradient of `n` entries: all, or `samples` spread over them.
fn picks(cs: &Case, n: usize) -> Vec<usize> {
    if cs.samples == 0 || cs.samples >= n {
        (0..n).collect()
    } else {
        (0..cs.samples).map(|i| (i * 7919 + 13) % n).collect()
    }
}

fn up(g: &Gpu, v: &[f64], shape: &[usize]) -> GpuTensor {
    let f: Vec<f32> = v.iter().map(|&x| x as f32).collect();
    g.upload(&f, shape).unwrap()
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// GPU results: h_seq, h_last, d x_proj, dh0, dc0 (LSTM), dU, d b_rec (GRU).
struct GpuOut {
    h_seq: Vec<f32>,
    h_last: Vec<f32>,
    dxp: Vec<f32>,
    dh0: Vec<f32>,
    dc0: Vec<f32>,
    du: Vec<f32>,
    dbrec: Vec<f32>,
}

fn run_gpu(g: &Gpu, cs: &Case, p: &Operands, mask: Option<&[f32]>, dseq: &[f64], dlast: &[f64]) -> GpuOut {
    let (b, t, u) = (cs.batch, cs.steps, cs.units);
    let gc = cs.kind.gates() * u;
    let xp = up(g, &p.xp, &[b, t, gc]);
    let uk = up(g, &p.uk, &[u, gc]);
    let h0 = up(g, &p.h0, &[b, u]);
    let c0 = up(g, &p.c0, &[b, u]);
    let mask = mask.map(|m| RnnMask {
        mask: g.upload(m, &[b, t]).unwrap(),
        zero_outputs: cs.zero_outputs,
    });
    let dseq = up(g, dseq, &[b, t, u]);
    let dlast = up(g, dlast, &[b, u]);
    // The weight-gradient GEMMs only need some x and W of the right shapes here (dU is checked).
    let x = g.upload(&rand_vec(b * t, 9), &[b, t, 1]).unwrap();
    let w = g.upload(&rand_vec(gc, 10), &[1, gc]).unwrap();
    let d = |t: &GpuTensor| g.download(t).unwrap();
    match cs.kind {
        Kind::Lstm => {
            let f = g
                .lstm_forward_masked(&xp, &uk, Some(&h0), Some(&c0), mask.as_ref())
                .unwrap();
            let bw = g.lstm_backward(&f.saved, &uk, Some(&dseq), Some(&dlast)).unwrap();
            let gr = g.lstm_weight_grads(&x, &w, &f.saved, &bw.d_gates).unwrap();
            GpuOut {
                h_seq: d(&f.h_seq),
                h_last: d(&f.h_last),
                dxp: d(&bw.d_gates),
                dh0: d(&bw.dh0),
                dc0: d(&bw.dc0),
                du: d(&gr.du),
                dbrec: Vec::new(),
            }
        }
        Kind::Gru => {
            let brec = up(g, &p.brec, &[gc]);
            let f = g.gru_forward_masked(&xp, &uk, &brec, Some(&h0), mask.as_ref()).unwrap();
            let bw = g.gru_backward(&f.saved, &uk, Some(&dseq), Some(&dlast)).unwrap();
            let gr = g.gru_weight_grads(&x, &w, &f.saved, &bw.d_proj, &bw.d_rec).unwrap();
            GpuOut {
                h_seq: d(&f.h_seq),
                h_last: d(&f.h_last),
                dxp: d(&bw.d_proj),
                dh0: d(&bw.dh0),
                dc0: Vec::new(),
                du: d(&gr.du),
                dbrec: d(&gr.dbias)[gc..].to_vec(),
            }
        }
        Kind::Simple => {
            let f = g.simple_rnn_forward_masked(&xp, &uk, Some(&h0), mask.as_ref()).unwrap();
            let bw = g.simple_rnn_backward(&f.saved, &uk, Some(&dseq), Some(&dlast)).unwrap();
            let gr = g.simple_rnn_weight_grads(&x, &w, &f.saved, &bw.d_pre).unwrap();
            GpuOut {
                h_seq: d(&f.h_seq),
                h_last: d(&f.h_last),
                dxp: d(&bw.d_pre),
                dh0: d(&bw.dh0),
                dc0: Vec::new(),
                du: d(&gr.du),
                dbrec: Vec::new(),
            }
        }
    }
}

fn operands(cs: &Case, seed: u64) -> Operands {
    let (b, t, u) = (cs.batch, cs.steps, cs.units);
    let gc = cs.kind.gates() * u;
    let scale = |v: Vec<f32>, s: f64| v.into_iter().map(|x| x as f64 * s).collect::<Vec<_>>();
    Operands {
        xp: scale(rand_vec(b * t * gc, seed), 1.0),
        uk: scale(rand_vec(u * gc, seed + 1), 1.0 / (u as f64).sqrt()),
        brec: scale(rand_vec(gc, seed + 2), 0.5),
        h0: scale(rand_vec(b * u, seed + 3), 0.5),
        c0: scale(rand_vec(b * u, seed + 4), 0.5),
    }
}

fn check(cs: Case, seed: u64) {
    let Some(g) = gpu() else { return };
    let what = format!("{cs:?}");
    let (b, t, u) = (cs.batch, cs.steps, cs.units);
    let p = operands(&cs, seed);
    let mask = mask_of(b, t);
    let dseq = f64s(&rand_vec(b * t * u, seed + 5));
    let dlast = f64s(&rand_vec(b * u, seed + 6));
    let out = run_gpu(g, &cs, &p, Some(&mask), &dseq, &dlast);
    let (seq, last) = reference(&cs, &p, &mask);
    assert_close(&format!("{what} h_seq"), &out.h_seq, &seq, TOL);
    assert_close(&format!("{what} h_last"), &out.h_last, &last, TOL);
    // A fully masked row keeps h0.
    let full = 3 * t..4 * t;
    if b > 3 {
        assert!(mask[full].iter().all(|&m| m == 0.0));
        assert_close(
            &format!("{what} masked row"),
            &out.h_last[3 * u..4 * u],
            &p.h0[3 * u..4 * u],
            1e-6,
        );
    }
    let grad = |name: &str, got: &[f32], field: fn(&mut Operands) -> &mut Vec<f64>, n: usize| {
        let idx = picks(&cs, n);
        let want = fd(&cs, &p, field, &idx, &mask, &dseq, &dlast);
        let got: Vec<f32> = idx.iter().map(|&i| got[i]).collect();
        assert_close(&format!("{what} {name}"), &got, &want, TOL);
    };
    let gc = cs.kind.gates() * u;
    grad("d x_proj", &out.dxp, |o| &mut o.xp, b * t * gc);
    grad("dh0", &out.dh0, |o| &mut o.h0, b * u);
    grad("dU", &out.du, |o| &mut o.uk, u * gc);
    match cs.kind {
        Kind::Lstm => grad("dc0", &out.dc0, |o| &mut o.c0, b * u),
        Kind::Gru => grad("d recurrent bias", &out.dbrec, |o| &mut o.brec, gc),
        Kind::Simple => {}
    }
    // Masked steps give their weights nothing: their x_proj gradient is exactly zero.
    for (row, &m) in mask.iter().enumerate() {
        if m == 0.0 {
            assert!(
                out.dxp[row * gc..(row + 1) * gc].iter().all(|&v| v == 0.0),
                "{what}: masked step {row} has a nonzero gate gradient"
            );
        }
    }
}

fn all_cases(kind: Kind) {
    for zero_outputs in [false, true] {
        // Every sequence in one workgroup.
        let small = Case {
            kind,
            batch: 5,
            steps: 7,
            units: 5,
            zero_outputs,
            samples: 0,
        };
        check(small, 11);
        // Several workgroups of three sequences.
        let mid = Case {
            kind,
            batch: 7,
            steps: 6,
            units: 70,
            zero_outputs,
            samples: 40,
        };
        check(mid, 21);
    }
    // One sequence per workgroup, two (sequence, unit) pairs per thread.
    let wide = Case {
        kind,
        batch: 5,
        steps: 4,
        units: 300,
        zero_outputs: false,
        samples: 12,
    };
    check(wide, 31);
}

#[test]
fn lstm_masked_matches_reference() {
    all_cases(Kind::Lstm);
}

#[test]
fn gru_masked_matches_reference() {
    all_cases(Kind::Gru);
}

#[test]
fn simple_rnn_masked_matches_reference() {
    all_cases(Kind::Simple);
}

/// An all-ones mask gives exactly the unmasked results, and a wrongly shaped mask is refused.
#[test]
fn all_ones_mask_equals_no_mask() {
    let Some(g) = gpu() else { return };
    for kind in [Kind::Lstm, Kind::Gru, Kind::Simple] {
        let cs = Case {
            kind,
            batch: 3,
            steps: 5,
            units: 6,
            zero_outputs: true,
            samples: 0,
        };
        let p = operands(&cs, 41);
        let ones = vec![1.0; cs.batch * cs.steps];
        let dseq = f64s(&rand_vec(cs.batch * cs.steps * cs.units, 42));
        let dlast = f64s(&rand_vec(cs.batch * cs.units, 43));
        let a = run_gpu(g, &cs, &p, Some(&ones), &dseq, &dlast);
        let b = run_gpu(g, &cs, &p, None, &dseq, &dlast);
        assert_eq!(a.h_seq, b.h_seq, "{kind:?} h_seq");
        assert_eq!(a.dxp, b.dxp, "{kind:?} d x_proj");
        assert_eq!(a.dh0, b.dh0, "{kind:?} dh0");
        assert_eq!(a.du, b.du, "{kind:?} dU");
    }
    // Batch 2, 3 steps, 2 units: a [3, 2] mask is refused by every cell, naming both shapes.
    let bad = RnnMask {
        mask: g.zeros(&[3, 2]).unwrap(),
        zero_outputs: false,
    };
    let zeros = |shape: &[usize]| g.zeros(shape).unwrap();
    let errors = [
        g.lstm_forward_masked(&zeros(&[2, 3, 8]), &zeros(&[2, 8]), None, None, Some(&bad))
            .err(),
        g.gru_forward_masked(&zeros(&[2, 3, 6]), &zeros(&[2, 6]), &zeros(&[6]), None, Some(&bad))
            .err(),
        g.simple_rnn_forward_masked(&zeros(&[2, 3, 2]), &zeros(&[2, 2]), None, Some(&bad))
            .err(),
    ];
    for (cell, err) in ["lstm", "gru", "simple_rnn"].iter().zip(errors) {
        let err = err
            .unwrap_or_else(|| panic!("{cell}: a [3, 2] mask was accepted"))
            .to_string();
        assert!(err.contains("mask [2, 3]") && err.contains("[3, 2]"), "{cell}: {err}");
    }
}

#[test]
fn nonzero_mask_of_token_ids() {
    let Some(g) = gpu() else { return };
    let ids = g.upload(&[0.0, 3.0, 0.0, 1.0, 7.0, 0.0], &[2, 3]).unwrap();
    let m = g.nonzero_mask(&ids).unwrap();
    assert_eq!(m.shape(), &[2, 3]);
    assert_eq!(g.download(&m).unwrap(), vec![0.0, 1.0, 0.0, 1.0, 1.0, 0.0]);
}
