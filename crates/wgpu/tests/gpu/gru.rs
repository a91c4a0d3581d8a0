//! GRU (Keras 3, reset_after) and SimpleRNN forward / BPTT kernels against plain f64 references.

use cortex_wgpu::kernels::rnn::lstm_seqs_per_group;
use cortex_wgpu::GpuTensor;

use super::common::{assert_close, gpu, rand_vec};

const TOL: f64 = 1e-4;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Cell {
    Gru,
    Simple,
}

struct Case {
    cell: Cell,
    batch: usize,
    steps: usize,
    input: usize,
    units: usize,
    with_state: bool,
}

impl Case {
    /// Columns of the kernels: 3u for the GRU (z, r, h), u for SimpleRNN.
    fn g(&self) -> usize {
        match self.cell {
            Cell::Gru => 3 * self.units,
            Cell::Simple => self.units,
        }
    }

    /// Bias elements: Keras GRU `[2, 3u]` (input row, recurrent row), SimpleRNN `[u]`.
    fn bias_len(&self) -> usize {
        match self.cell {
            Cell::Gru => 2 * self.g(),
            Cell::Simple => self.units,
        }
    }
}

fn sig(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// Layer inputs and parameters in f64.
struct Inputs {
    x: Vec<f64>,
    w: Vec<f64>,
    uk: Vec<f64>,
    bias: Vec<f64>,
    h0: Vec<f64>,
}

/// The reference forward: hidden states and per-step caches.
struct RefFwd {
    /// [b, t, u] h after each step.
    h_seq: Vec<f64>,
    /// GRU: [b, t, 4u] = z, r, hh, (h·U + b_rec)_h; SimpleRNN: unused.
    cache: Vec<f64>,
}

fn ref_forward(cs: &Case, p: &Inputs) -> RefFwd {
    let (b_n, t_n, i_n, u, g) = (cs.batch, cs.steps, cs.input, cs.units, cs.g());
    let mut out = RefFwd {
        h_seq: vec![0.0; b_n * t_n * u],
        cache: vec![0.0; b_n * t_n * 4 * u],
    };
    let (b_in, b_rec) = match cs.cell {
        Cell::Gru => (&p.bias[..g], p.bias[g..].to_vec()),
        Cell::Simple => (&p.bias[..], vec![0.0; g]),
    };
    for b in 0..b_n {
        let mut h = p.h0[b * u..(b + 1) * u].to_vec();
        for t in 0..t_n {
            let row = b * t_n + t;
            let mut xp = b_in.to_vec();
            let mut rp = b_rec.clone();
            for j in 0..g {
                for i in 0..i_n {
                    xp[j] += p.x[row * i_n + i] * p.w[i * g + j];
                }
                for (m, hm) in h.iter().enumerate() {
                    rp[j] += hm * p.uk[m * g + j];
                }
            }
            for k in 0..u {
                match cs.cell {
                    Cell::Gru => {
                        let z = sig(xp[k] + rp[k]);
                        let r = sig(xp[u + k] + rp[u + k]);
                        let hh = (xp[2 * u + k] + r * rp[2 * u + k]).tanh();
                        h[k] = z * h[k] + (1.0 - z) * hh;
                        for (q, v) in [z, r, hh, rp[2 * u + k]].into_iter().enumerate() {
                            out.cache[row * 4 * u + q * u + k] = v;
                        }
                    }
                    Cell::Simple => h[k] = (xp[k] + rp[k]).tanh(),
                }
                out.h_seq[row * u + k] = h[k];
            }
        }
    }
    out
}

/// Gradients of L = Σ dh_seq·h_seq + Σ dh_last·h_last: (dx, dW, dU, dbias, dh0).
fn ref_backward(cs: &Case, p: &Inputs, f: &RefFwd, dh_seq: &[f64], dh_last: &[f64]) -> [Vec<f64>; 5] {
    let (b_n, t_n, i_n, u, g) = (cs.batch, cs.steps, cs.input, cs.units, cs.g());
    let mut dx = vec![0.0; b_n * t_n * i_n];
    let mut dw = vec![0.0; i_n * g];
    let mut du = vec![0.0; u * g];
    let mut db = vec![0.0; cs.bias_len()];
    let mut dh0 = vec![0.0; b_n * u];
    for b in 0..b_n {
        let mut dh_next = vec![0.0; u];
        for t in (0..t_n).rev() {
            let row = b * t_n + t;
            let mut dh: Vec<f64> = (0..u).map(|k| dh_seq[row * u + k] + dh_next[k]).collect();
            if t + 1 == t_n {
                (0..u).for_each(|k| dh[k] += dh_last[b * u + k]);
            }
            let hp: Vec<f64> = if t == 0 {
                p.h0[b * u..(b + 1) * u].to_vec()
            } else {
                f.h_seq[(row - 1) * u..row * u].to_vec()
            };
            // Gradients wrt x·W + b_in and wrt h·U + b_rec, and the direct path into h_{t-1}.
            let mut d_proj = vec![0.0; g];
            let mut d_rec = vec![0.0; g];
            let mut direct = vec![0.0; u];
            for k in 0..u {
                match cs.cell {
                    Cell::Gru => {
                        let c = &f.cache[row * 4 * u..(row + 1) * 4 * u];
                        let (z, r, hh, rh) = (c[k], c[u + k], c[2 * u + k], c[3 * u + k]);
                        let da_h = dh[k] * (1.0 - z) * (1.0 - hh * hh);
                        let da_z = dh[k] * (hp[k] - hh) * z * (1.0 - z);
                        let da_r = da_h * rh * r * (1.0 - r);
                        (d_proj[k], d_proj[u + k], d_proj[2 * u + k]) = (da_z, da_r, da_h);
                        (d_rec[k], d_rec[u + k], d_rec[2 * u + k]) = (da_z, da_r, da_h * r);
                        direct[k] = dh[k] * z;
                    }
                    Cell::Simple => {
                        let h = f.h_seq[row * u + k];
                        d_proj[k] = dh[k] * (1.0 - h * h);
                        d_rec[k] = d_proj[k];
                    }
                }
            }
            for j in 0..g {
                db[j] += d_proj[j];
                if cs.cell == Cell::Gru {
                    db[g + j] += d_rec[j];
                }
                for i in 0..i_n {
                    dw[i * g + j] += p.x[row * i_n + i] * d_proj[j];
                    dx[row * i_n + i] += p.w[i * g + j] * d_proj[j];
                }
                for m in 0..u {
                    du[m * g + j] += hp[m] * d_rec[j];
                }
            }
            for (m, dn) in dh_next.iter_mut().enumerate() {
                *dn = direct[m] + (0..g).map(|j| p.uk[m * g + j] * d_rec[j]).sum::<f64>();
            }
        }
        dh0[b * u..(b + 1) * u].copy_from_slice(&dh_next);
    }
    [dx, dw, du, db, dh0]
}

/// Random inputs for a case (f32, as uploaded).
fn random_inputs(cs: &Case, seed: u64) -> [Vec<f32>; 5] {
    let (b_n, t_n, i_n, u, g) = (cs.batch, cs.steps, cs.input, cs.units, cs.g());
    let x = rand_vec(b_n * t_n * i_n, seed);
    let w: Vec<f32> = rand_vec(i_n * g, seed + 1).iter().map(|v| v * 0.6).collect();
    let uk: Vec<f32> = rand_vec(u * g, seed + 2).iter().map(|v| v * 0.5).collect();
    let bias = rand_vec(cs.bias_len(), seed + 3);
    let h0 = if cs.with_state {
        rand_vec(b_n * u, seed + 4)
    } else {
        vec![0.0; b_n * u]
    };
    [x, w, uk, bias, h0]
}

/// GPU results: h_seq, h_last, then dx, dW, dU, dbias, dh0.
fn run_gpu(cs: &Case, inp: &[Vec<f32>; 5], dh_seq: Option<&[f32]>, dh_last: Option<&[f32]>) -> Vec<Vec<f32>> {
    let gpu = gpu().unwrap();
    let (b_n, t_n, i_n, u, g) = (cs.batch, cs.steps, cs.input, cs.units, cs.g());
    let [x, w, uk, bias, h0] = inp;
    let xg = gpu.upload(x, &[b_n, t_n, i_n]).unwrap();
    let wg = gpu.upload(w, &[i_n, g]).unwrap();
    let ug = gpu.upload(uk, &[u, g]).unwrap();
    let h0g = gpu.upload(h0, &[b_n, u]).unwrap();
    let h0 = cs.with_state.then_some(&h0g);
    let dseq = dh_seq.map(|d| gpu.upload(d, &[b_n, t_n, u]).unwrap());
    let dlast = dh_last.map(|d| gpu.upload(d, &[b_n, u]).unwrap());
    let out: Vec<GpuTensor> = match cs.cell {
        Cell::Gru => {
            let bg = gpu.upload(bias, &[2, g]).unwrap();
            let (b_in, b_rec) = gpu.gru_bias_rows(&bg).unwrap();
            let xp = gpu.rnn_input_projection(&xg, &wg, &b_in).unwrap();
            let fwd = gpu.gru_forward(&xp, &ug, &b_rec, h0).unwrap();
            let bwd = gpu
                .gru_backward(&fwd.saved, &ug, dseq.as_ref(), dlast.as_ref())
                .unwrap();
            let gr = gpu
                .gru_weight_grads(&xg, &wg, &fwd.saved, &bwd.d_proj, &bwd.d_rec)
                .unwrap();
            assert_eq!(gr.dbias.shape(), &[2, g]);
            vec![fwd.h_seq, fwd.h_last, gr.dx, gr.dw, gr.du, gr.dbias, bwd.dh0]
        }
        Cell::Simple => {
            let bg = gpu.upload(bias, &[u]).unwrap();
            let xp = gpu.rnn_input_projection(&xg, &wg, &bg).unwrap();
            let fwd = gpu.simple_rnn_forward(&xp, &ug, h0).unwrap();
            let bwd = gpu
                .simple_rnn_backward(&fwd.saved, &ug, dseq.as_ref(), dlast.as_ref())
                .unwrap();
            let gr = gpu.simple_rnn_weight_grads(&xg, &wg, &fwd.saved, &bwd.d_pre).unwrap();
            vec![fwd.h_seq, fwd.h_last, gr.dx, gr.dw, gr.du, gr.dbias, bwd.dh0]
        }
    };
    out.iter().map(|t| gpu.download(t).unwrap()).collect()
}

fn run_case(cs: &Case, return_sequences: bool, seed: u64) {
    if gpu().is_none() {
        return;
    }
    let (b_n, t_n, u) = (cs.batch, cs.steps, cs.units);
    let inp = random_inputs(cs, seed);
    let (dh_seq, dh_last) = if return_sequences {
        (rand_vec(b_n * t_n * u, seed + 6), vec![0.0; b_n * u])
    } else {
        (vec![0.0; b_n * t_n * u], rand_vec(b_n * u, seed + 7))
    };
    let got = if return_sequences {
        run_gpu(cs, &inp, Some(&dh_seq), None)
    } else {
        run_gpu(cs, &inp, None, Some(&dh_last))
    };
    let [x, w, uk, bias, h0] = &inp;
    let p = Inputs {
        x: f64s(x),
        w: f64s(w),
        uk: f64s(uk),
        bias: f64s(bias),
        h0: f64s(h0),
    };
    let rf = ref_forward(cs, &p);
    let h_last: Vec<f64> = (0..b_n)
        .flat_map(|b| rf.h_seq[((b + 1) * t_n - 1) * u..(b + 1) * t_n * u].to_vec())
        .collect();
    let grads = ref_backward(cs, &p, &rf, &f64s(&dh_seq), &f64s(&dh_last));
    let mut want = vec![rf.h_seq.clone(), h_last];
    want.extend(grads);
    let tag = format!("{:?} b{b_n} t{t_n} i{} u{u} seq={return_sequences}", cs.cell, cs.input);
    let names = ["h_seq", "h_last", "dx", "dW", "dU", "dbias", "dh0"];
    // Past 128 units the f32 pre-activation sums (u + in terms per step, carried through the
    // recurrence) drift further from the f64 reference: SimpleRNN at u=130 measured 1.5e-4 on
    // an H200 and 2.1e-4 on lavapipe. The PyTorch fixture cases hold 1e-4 (tests/gpu/fixtures.rs).
    let tol = if u > 128 { 5e-4 } else { TOL };
    for ((name, g), w) in names.iter().zip(&got).zip(&want) {
        assert_close(&format!("{tag} {name}"), g, w, tol);
    }
}

/// The three shapes of the LSTM tests, for `cell`.
fn shapes(cell: Cell) {
    // u = 10: 8 sequences per workgroup, batch 5 leaves 3 idle.
    let cs = Case {
        cell,
        batch: 5,
        steps: 7,
        input: 3,
        units: 10,
        with_state: false,
    };
    run_case(&cs, true, 11);
    run_case(&cs, false, 12);
    // u = 37 (not a multiple of 4, nor is 3u): 6 sequences per workgroup, batch 19 spans 4
    // groups, random h0.
    assert_eq!(lstm_seqs_per_group(37).unwrap(), 6);
    let cs = Case {
        cell,
        batch: 19,
        steps: 5,
        input: 6,
        units: 37,
        with_state: true,
    };
    run_case(&cs, true, 21);
    run_case(&cs, false, 22);
    // u = 130 > 256 / 2: one sequence per workgroup and threads loop over units.
    let cs = Case {
        cell,
        batch: 3,
        steps: 4,
        input: 5,
        units: 130,
        with_state: true,
    };
    run_case(&cs, false, 31);
}

#[test]
fn gru_matches_reference() {
    shapes(Cell::Gru);
}

#[test]
fn simple_rnn_matches_reference() {
    shapes(Cell::Simple);
}

#[test]
fn gru_dh_seq_and_dh_last_add_up() {
    // Both cotangents at once (a returnSequences layer whose final state is also used).
    let cs = Case {
        cell: Cell::Gru,
        batch: 4,
        steps: 3,
        input: 2,
        units: 6,
        with_state: true,
    };
    if gpu().is_none() {
        return;
    }
    let inp = random_inputs(&cs, 61);
    let dseq = rand_vec(4 * 3 * 6, 62);
    let dlast = rand_vec(4 * 6, 63);
    let both = run_gpu(&cs, &inp, Some(&dseq), Some(&dlast));
    let only_seq = run_gpu(&cs, &inp, Some(&dseq), None);
    let only_last = run_gpu(&cs, &inp, None, Some(&dlast));
    for i in 2..7 {
        let sum: Vec<f64> = only_seq[i]
            .iter()
            .zip(&only_last[i])
            .map(|(a, b)| (a + b) as f64)
            .collect();
        assert_close(&format!("grad {i}"), &both[i], &sum, 1e-5);
    }
}

#[test]
fn gru_and_simple_rnn_references_match_finite_differences() {
    // Checks the f64 reference backward itself (no GPU), so the GPU tests compare against
    // correct gradients.
    for cell in [Cell::Gru, Cell::Simple] {
        let cs = Case {
            cell,
            batch: 2,
            steps: 3,
            input: 2,
            units: 3,
            with_state: true,
        };
        let inp = random_inputs(&cs, 41).map(|v| f64s(&v));
        let dseq = f64s(&rand_vec(cs.batch * cs.steps * cs.units, 47));
        let dlast = f64s(&rand_vec(cs.batch * cs.units, 48));
        let loss = |v: &[Vec<f64>]| {
            let p = Inputs {
                x: v[0].clone(),
                w: v[1].clone(),
                uk: v[2].clone(),
                bias: v[3].clone(),
                h0: v[4].clone(),
            };
            let f = ref_forward(&cs, &p);
            let mut l: f64 = f.h_seq.iter().zip(&dseq).map(|(a, b)| a * b).sum();
            for b in 0..cs.batch {
                for k in 0..cs.units {
                    l += f.h_seq[((b + 1) * cs.steps - 1) * cs.units + k] * dlast[b * cs.units + k];
                }
            }
            l
        };
        let p = Inputs {
            x: inp[0].clone(),
            w: inp[1].clone(),
            uk: inp[2].clone(),
            bias: inp[3].clone(),
            h0: inp[4].clone(),
        };
        let grads = ref_backward(&cs, &p, &ref_forward(&cs, &p), &dseq, &dlast);
        for (pi, grad) in grads.iter().enumerate() {
            assert_eq!(grad.len(), inp[pi].len());
            for e in 0..grad.len() {
                let eps = 1e-6;
                let mut plus = inp.to_vec();
                let mut minus = inp.to_vec();
                plus[pi][e] += eps;
                minus[pi][e] -= eps;
                let fd = (loss(&plus) - loss(&minus)) / (2.0 * eps);
                assert!(
                    (fd - grad[e]).abs() < 1e-6,
                    "{cell:?} param {pi} elem {e}: fd {fd} vs {}",
                    grad[e]
                );
            }
        }
    }
}

#[test]
fn gru_and_simple_rnn_reject_bad_shapes() {
    let Some(gpu) = gpu() else { return };
    let ug = gpu.zeros(&[4, 12]).unwrap();
    let brec = gpu.zeros(&[12]).unwrap();
    let xp = gpu.zeros(&[2, 3, 12]).unwrap();
    assert!(gpu
        .gru_forward(&gpu.zeros(&[2, 3, 16]).unwrap(), &ug, &brec, None)
        .is_err());
    assert!(gpu
        .gru_forward(&xp, &gpu.zeros(&[4, 16]).unwrap(), &brec, None)
        .is_err());
    assert!(gpu.gru_forward(&xp, &ug, &gpu.zeros(&[2, 12]).unwrap(), None).is_err());
    let h0 = gpu.zeros(&[3, 4]).unwrap();
    assert!(gpu.gru_forward(&xp, &ug, &brec, Some(&h0)).is_err());
    assert!(gpu.gru_bias_rows(&gpu.zeros(&[12]).unwrap()).is_err());
    let fwd = gpu.gru_forward(&xp, &ug, &brec, None).unwrap();
    assert!(gpu.gru_backward(&fwd.saved, &ug, None, None).is_err());
    assert!(gpu
        .gru_backward(&fwd.saved, &ug, None, Some(&gpu.zeros(&[2, 5]).unwrap()))
        .is_err());
    let x = gpu.zeros(&[2, 3, 5]).unwrap();
    let bwd = gpu
        .gru_backward(&fwd.saved, &ug, None, Some(&gpu.zeros(&[2, 4]).unwrap()))
        .unwrap();
    assert!(gpu
        .gru_weight_grads(&x, &gpu.zeros(&[4, 12]).unwrap(), &fwd.saved, &bwd.d_proj, &bwd.d_rec)
        .is_err());
    assert!(gpu
        .gru_weight_grads(&x, &gpu.zeros(&[5, 12]).unwrap(), &fwd.saved, &bwd.d_proj, &bwd.d_proj)
        .is_ok());
    let huge = gpu.zeros(&[1025, 3075]).unwrap();
    assert!(gpu
        .gru_forward(
            &gpu.zeros(&[2, 3, 3075]).unwrap(),
            &huge,
            &gpu.zeros(&[3075]).unwrap(),
            None
        )
        .is_err());

    let us = gpu.zeros(&[4, 4]).unwrap();
    let xs = gpu.zeros(&[2, 3, 4]).unwrap();
    assert!(gpu.simple_rnn_forward(&xp, &us, None).is_err());
    assert!(gpu.simple_rnn_forward(&xs, &ug, None).is_err());
    assert!(gpu.simple_rnn_forward(&xs, &us, Some(&h0)).is_err());
    let fwd = gpu.simple_rnn_forward(&xs, &us, None).unwrap();
    assert!(gpu.simple_rnn_backward(&fwd.saved, &us, None, None).is_err());
    assert!(gpu
        .simple_rnn_backward(&fwd.saved, &us, Some(&gpu.zeros(&[2, 4]).unwrap()), None)
        .is_err());
    let bwd = gpu.simple_rnn_backward(&fwd.saved, &us, Some(&xs), None).unwrap();
    assert!(gpu
        .simple_rnn_weight_grads(&x, &gpu.zeros(&[4, 4]).unwrap(), &fwd.saved, &bwd.d_pre)
        .is_err());
    assert!(gpu
        .simple_rnn_weight_grads(&x, &gpu.zeros(&[5, 4]).unwrap(), &fwd.saved, &bwd.d_pre)
        .is_ok());
}
