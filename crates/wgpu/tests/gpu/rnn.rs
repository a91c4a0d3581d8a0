//! LSTM forward / BPTT and embedding kernels against plain f64 references.

use cortex_wgpu::kernels::rnn::lstm_seqs_per_group;

use super::common::{assert_close, gpu, rand_vec};

const TOL: f64 = 1e-4;

struct Case {
    batch: usize,
    steps: usize,
    input: usize,
    units: usize,
    with_state: bool,
}

fn sig(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// Keras LSTM forward in f64; returns (h after each step [b, t, u], per-step caches).
struct RefFwd {
    h_seq: Vec<f64>,
    /// [b, t, 4u] activated gates, [b, t, u] cell state after the step.
    gates: Vec<f64>,
    c: Vec<f64>,
}

#[allow(clippy::too_many_arguments)]
fn ref_forward(cs: &Case, x: &[f64], w: &[f64], uk: &[f64], bias: &[f64], h0: &[f64], c0: &[f64]) -> RefFwd {
    let (b_n, t_n, i_n, u) = (cs.batch, cs.steps, cs.input, cs.units);
    let g = 4 * u;
    let mut out = RefFwd {
        h_seq: vec![0.0; b_n * t_n * u],
        gates: vec![0.0; b_n * t_n * g],
        c: vec![0.0; b_n * t_n * u],
    };
    for b in 0..b_n {
        let mut h = h0[b * u..(b + 1) * u].to_vec();
        let mut c = c0[b * u..(b + 1) * u].to_vec();
        for t in 0..t_n {
            let row = b * t_n + t;
            let mut a = bias.to_vec();
            for (j, aj) in a.iter_mut().enumerate() {
                for i in 0..i_n {
                    *aj += x[row * i_n + i] * w[i * g + j];
                }
                for m in 0..u {
                    *aj += h[m] * uk[m * g + j];
                }
            }
            for k in 0..u {
                let (ig, fg, cg, og) = (sig(a[k]), sig(a[u + k]), a[2 * u + k].tanh(), sig(a[3 * u + k]));
                c[k] = fg * c[k] + ig * cg;
                h[k] = og * c[k].tanh();
                for (q, v) in [ig, fg, cg, og].into_iter().enumerate() {
                    out.gates[row * g + q * u + k] = v;
                }
                out.c[row * u + k] = c[k];
                out.h_seq[row * u + k] = h[k];
            }
        }
    }
    out
}

/// Gradients of L = Σ dh_seq·h_seq + Σ dh_last·h_last: (dx, dW, dU, dbias, dh0, dc0).
#[allow(clippy::too_many_arguments)]
fn ref_backward(
    cs: &Case,
    x: &[f64],
    uk: &[f64],
    h0: &[f64],
    c0: &[f64],
    f: &RefFwd,
    w: &[f64],
    dh_seq: &[f64],
    dh_last: &[f64],
) -> [Vec<f64>; 6] {
    let (b_n, t_n, i_n, u) = (cs.batch, cs.steps, cs.input, cs.units);
    let g = 4 * u;
    let mut dx = vec![0.0; b_n * t_n * i_n];
    let mut dw = vec![0.0; i_n * g];
    let mut du = vec![0.0; u * g];
    let mut db = vec![0.0; g];
    let mut dh0 = vec![0.0; b_n * u];
    let mut dc0 = vec![0.0; b_n * u];
    for b in 0..b_n {
        let mut dh_next = vec![0.0; u];
        let mut dc = vec![0.0; u];
        for t in (0..t_n).rev() {
            let row = b * t_n + t;
            let mut dh: Vec<f64> = (0..u).map(|k| dh_seq[row * u + k] + dh_next[k]).collect();
            if t + 1 == t_n {
                (0..u).for_each(|k| dh[k] += dh_last[b * u + k]);
            }
            let gt = &f.gates[row * g..(row + 1) * g];
            let hp: Vec<f64> = if t == 0 {
                h0[b * u..(b + 1) * u].to_vec()
            } else {
                f.h_seq[(row - 1) * u..row * u].to_vec()
            };
            let cp: Vec<f64> = if t == 0 {
                c0[b * u..(b + 1) * u].to_vec()
            } else {
                f.c[(row - 1) * u..row * u].to_vec()
            };
            let mut da = vec![0.0; g];
            for k in 0..u {
                let (ig, fg, cg, og) = (gt[k], gt[u + k], gt[2 * u + k], gt[3 * u + k]);
                let tc = f.c[row * u + k].tanh();
                let dct = dc[k] + dh[k] * og * (1.0 - tc * tc);
                da[k] = dct * cg * ig * (1.0 - ig);
                da[u + k] = dct * cp[k] * fg * (1.0 - fg);
                da[2 * u + k] = dct * ig * (1.0 - cg * cg);
                da[3 * u + k] = dh[k] * tc * og * (1.0 - og);
                dc[k] = dct * fg;
            }
            for (j, &d) in da.iter().enumerate() {
                db[j] += d;
                for i in 0..i_n {
                    dw[i * g + j] += x[row * i_n + i] * d;
                    dx[row * i_n + i] += w[i * g + j] * d;
                }
                for m in 0..u {
                    du[m * g + j] += hp[m] * d;
                }
            }
            for (m, dn) in dh_next.iter_mut().enumerate() {
                *dn = (0..g).map(|j| uk[m * g + j] * da[j]).sum();
            }
        }
        dh0[b * u..(b + 1) * u].copy_from_slice(&dh_next);
        dc0[b * u..(b + 1) * u].copy_from_slice(&dc);
    }
    [dx, dw, du, db, dh0, dc0]
}

fn run_case(cs: &Case, return_sequences: bool, seed: u64) {
    let Some(gpu) = gpu() else { return };
    let (b_n, t_n, i_n, u) = (cs.batch, cs.steps, cs.input, cs.units);
    let g = 4 * u;
    let x = rand_vec(b_n * t_n * i_n, seed);
    let w: Vec<f32> = rand_vec(i_n * g, seed + 1).iter().map(|v| v * 0.6).collect();
    let uk: Vec<f32> = rand_vec(u * g, seed + 2).iter().map(|v| v * 0.5).collect();
    let bias = rand_vec(g, seed + 3);
    let (h0, c0) = if cs.with_state {
        (rand_vec(b_n * u, seed + 4), rand_vec(b_n * u, seed + 5))
    } else {
        (vec![0.0; b_n * u], vec![0.0; b_n * u])
    };
    let dh_seq = if return_sequences {
        rand_vec(b_n * t_n * u, seed + 6)
    } else {
        vec![0.0; b_n * t_n * u]
    };
    let dh_last = if return_sequences {
        vec![0.0; b_n * u]
    } else {
        rand_vec(b_n * u, seed + 7)
    };

    let xg = gpu.upload(&x, &[b_n, t_n, i_n]).unwrap();
    let wg = gpu.upload(&w, &[i_n, g]).unwrap();
    let ug = gpu.upload(&uk, &[u, g]).unwrap();
    let bg = gpu.upload(&bias, &[g]).unwrap();
    let h0g = gpu.upload(&h0, &[b_n, u]).unwrap();
    let c0g = gpu.upload(&c0, &[b_n, u]).unwrap();
    let xp = gpu.lstm_input_projection(&xg, &wg, &bg).unwrap();
    let fwd = if cs.with_state {
        gpu.lstm_forward(&xp, &ug, Some(&h0g), Some(&c0g)).unwrap()
    } else {
        gpu.lstm_forward(&xp, &ug, None, None).unwrap()
    };
    let dseq_g = gpu.upload(&dh_seq, &[b_n, t_n, u]).unwrap();
    let dlast_g = gpu.upload(&dh_last, &[b_n, u]).unwrap();
    let bwd = if return_sequences {
        gpu.lstm_backward(&fwd.saved, &ug, Some(&dseq_g), None).unwrap()
    } else {
        gpu.lstm_backward(&fwd.saved, &ug, None, Some(&dlast_g)).unwrap()
    };
    let grads = gpu.lstm_weight_grads(&xg, &wg, &fwd.saved, &bwd.d_gates).unwrap();

    let (xd, wd, ud, bd, h0d, c0d) = (f64s(&x), f64s(&w), f64s(&uk), f64s(&bias), f64s(&h0), f64s(&c0));
    let rf = ref_forward(cs, &xd, &wd, &ud, &bd, &h0d, &c0d);
    let h_last_ref: Vec<f64> = (0..b_n)
        .flat_map(|b| rf.h_seq[((b + 1) * t_n - 1) * u..(b + 1) * t_n * u].to_vec())
        .collect();
    let tag = format!("b{b_n} t{t_n} i{i_n} u{u} seq={return_sequences}");
    assert_close(
        &format!("{tag} h_seq"),
        &gpu.download(&fwd.h_seq).unwrap(),
        &rf.h_seq,
        TOL,
    );
    assert_close(
        &format!("{tag} h_last"),
        &gpu.download(&fwd.h_last).unwrap(),
        &h_last_ref,
        TOL,
    );
    let want = ref_backward(cs, &xd, &ud, &h0d, &c0d, &rf, &wd, &f64s(&dh_seq), &f64s(&dh_last));
    let got = [&grads.dx, &grads.dw, &grads.du, &grads.dbias, &bwd.dh0, &bwd.dc0];
    for ((name, g), w) in ["dx", "dW", "dU", "dbias", "dh0", "dc0"].iter().zip(got).zip(&want) {
        assert_close(&format!("{tag} {name}"), &gpu.download(g).unwrap(), w, TOL);
    }
}

#[test]
fn lstm_small_batch_in_one_group() {
    // u = 10: 8 sequences per workgroup, batch 5 leaves 3 idle.
    let cs = Case {
        batch: 5,
        steps: 7,
        input: 3,
        units: 10,
        with_state: false,
    };
    run_case(&cs, true, 11);
    run_case(&cs, false, 12);
}

#[test]
fn lstm_batch_not_divisible_with_initial_state() {
    // u = 37 (not a multiple of 4): 6 sequences per workgroup, batch 19 spans 4 groups.
    assert_eq!(lstm_seqs_per_group(37).unwrap(), 6);
    let cs = Case {
        batch: 19,
        steps: 5,
        input: 6,
        units: 37,
        with_state: true,
    };
    run_case(&cs, true, 21);
    run_case(&cs, false, 22);
}

#[test]
fn lstm_units_above_workgroup_size() {
    // u = 130 > 256 / 2: one sequence per workgroup and threads loop over units.
    let cs = Case {
        batch: 3,
        steps: 4,
        input: 5,
        units: 130,
        with_state: true,
    };
    run_case(&cs, false, 31);
}

#[test]
fn lstm_reference_matches_finite_differences() {
    // Checks the f64 reference backward itself (no GPU), so the GPU tests compare against
    // correct gradients.
    let cs = Case {
        batch: 2,
        steps: 3,
        input: 2,
        units: 3,
        with_state: true,
    };
    let g = 4 * cs.units;
    let x = f64s(&rand_vec(cs.batch * cs.steps * cs.input, 41));
    let w = f64s(&rand_vec(cs.input * g, 42));
    let uk = f64s(&rand_vec(cs.units * g, 43));
    let bias = f64s(&rand_vec(g, 44));
    let h0 = f64s(&rand_vec(cs.batch * cs.units, 45));
    let c0 = f64s(&rand_vec(cs.batch * cs.units, 46));
    let dseq = f64s(&rand_vec(cs.batch * cs.steps * cs.units, 47));
    let dlast = f64s(&rand_vec(cs.batch * cs.units, 48));
    let loss = |x: &[f64], w: &[f64], uk: &[f64], bias: &[f64], h0: &[f64], c0: &[f64]| {
        let f = ref_forward(&cs, x, w, uk, bias, h0, c0);
        let mut l: f64 = f.h_seq.iter().zip(&dseq).map(|(a, b)| a * b).sum();
        for b in 0..cs.batch {
            for k in 0..cs.units {
                l += f.h_seq[((b + 1) * cs.steps - 1) * cs.units + k] * dlast[b * cs.units + k];
            }
        }
        l
    };
    let f = ref_forward(&cs, &x, &w, &uk, &bias, &h0, &c0);
    let grads = ref_backward(&cs, &x, &uk, &h0, &c0, &f, &w, &dseq, &dlast);
    let params = [&x, &w, &uk, &bias, &h0, &c0];
    for (pi, grad) in grads.iter().enumerate() {
        for e in 0..grad.len() {
            let eps = 1e-6;
            let mut plus: Vec<Vec<f64>> = params.iter().map(|v| v.to_vec()).collect();
            let mut minus = plus.clone();
            plus[pi][e] += eps;
            minus[pi][e] -= eps;
            let l = |v: &Vec<Vec<f64>>| loss(&v[0], &v[1], &v[2], &v[3], &v[4], &v[5]);
            let fd = (l(&plus) - l(&minus)) / (2.0 * eps);
            assert!(
                (fd - grad[e]).abs() < 1e-6,
                "param {pi} elem {e}: fd {fd} vs {}",
                grad[e]
            );
        }
    }
}

#[test]
fn lstm_rejects_bad_shapes() {
    let Some(gpu) = gpu() else { return };
    let ug = gpu.zeros(&[4, 16]).unwrap();
    let bad_xp = gpu.zeros(&[2, 3, 12]).unwrap();
    assert!(gpu.lstm_forward(&bad_xp, &ug, None, None).is_err());
    let bad_u = gpu.zeros(&[4, 12]).unwrap();
    let xp = gpu.zeros(&[2, 3, 16]).unwrap();
    assert!(gpu.lstm_forward(&xp, &bad_u, None, None).is_err());
    let h0 = gpu.zeros(&[3, 4]).unwrap();
    assert!(gpu.lstm_forward(&xp, &ug, Some(&h0), None).is_err());
    let fwd = gpu.lstm_forward(&xp, &ug, None, None).unwrap();
    assert!(gpu.lstm_backward(&fwd.saved, &ug, None, None).is_err());
    let bad_dh = gpu.zeros(&[2, 5]).unwrap();
    assert!(gpu.lstm_backward(&fwd.saved, &ug, None, Some(&bad_dh)).is_err());
    let huge = gpu.zeros(&[1025, 4100]).unwrap();
    assert!(gpu.lstm_forward(&xp, &huge, None, None).is_err());
}

#[test]
fn embedding_gather_and_scatter() {
    let Some(gpu) = gpu() else { return };
    let (vocab, dim) = (7, 5);
    let table = rand_vec(vocab * dim, 51);
    // Repeated ids (2, 6) exercise the atomic accumulation; 9 and -1 are out of range.
    let ids = [2.0f32, 0.0, 6.0, 2.0, 9.0, 6.0, -1.0, 2.0];
    let tg = gpu.upload(&table, &[vocab, dim]).unwrap();
    let ig = gpu.upload(&ids, &[2, 4]).unwrap();
    let out = gpu.embedding(&tg, &ig).unwrap();
    assert_eq!(out.shape(), &[2, 4, dim]);
    let table_ref = &table;
    let want: Vec<f64> = ids
        .iter()
        .flat_map(|&id| {
            (0..dim).map(move |d| {
                if (0.0..vocab as f32).contains(&id) {
                    table_ref[id as usize * dim + d] as f64
                } else {
                    0.0
                }
            })
        })
        .collect();
    assert_close("embedding", &gpu.download(&out).unwrap(), &want, 1e-6);
    let dout = rand_vec(ids.len() * dim, 52);
    let dg = gpu.upload(&dout, &[2, 4, dim]).unwrap();
    let dt = gpu.embedding_backward(&ig, &dg, vocab).unwrap();
    let mut want = vec![0.0f64; vocab * dim];
    for (r, &id) in ids.iter().enumerate() {
        if (0.0..vocab as f32).contains(&id) {
            for d in 0..dim {
                want[id as usize * dim + d] += dout[r * dim + d] as f64;
            }
        }
    }
    assert_close("embedding grad", &gpu.download(&dt).unwrap(), &want, 1e-5);
    let bad = gpu.zeros(&[2, 3, dim]).unwrap();
    assert!(gpu.embedding_backward(&ig, &bad, vocab).is_err());
}
