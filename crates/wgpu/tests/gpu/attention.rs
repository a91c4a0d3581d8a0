//! Fused attention and layer normalization, forward and backward, against f64 references.

use super::common::{assert_close, gpu, rand_vec};

/// Sizes of one attention case; tensors are `[b, s, h, d]`.
#[derive(Debug, Clone, Copy)]
struct Case {
    b: usize,
    sq: usize,
    sk: usize,
    h: usize,
    d: usize,
    causal: bool,
}

/// Forward and backward of plain softmax attention in f64 (the full score matrix).
struct Reference {
    out: Vec<f64>,
    lse: Vec<f64>,
    dq: Vec<f64>,
    dk: Vec<f64>,
    dv: Vec<f64>,
}

fn reference(c: Case, q: &[f32], k: &[f32], v: &[f32], dout: &[f32]) -> Reference {
    let Case {
        b,
        sq,
        sk,
        h,
        d,
        causal,
    } = c;
    let qi = |bb: usize, i: usize, hh: usize| ((bb * sq + i) * h + hh) * d;
    let ki = |bb: usize, j: usize, hh: usize| ((bb * sk + j) * h + hh) * d;
    let scale = 1.0 / (d as f64).sqrt();
    let mut r = Reference {
        out: vec![0.0; q.len()],
        lse: vec![0.0; b * h * sq],
        dq: vec![0.0; q.len()],
        dk: vec![0.0; k.len()],
        dv: vec![0.0; v.len()],
    };
    for bb in 0..b {
        for hh in 0..h {
            for i in 0..sq {
                let (qo, visible) = (qi(bb, i, hh), if causal { (i + 1).min(sk) } else { sk });
                let s: Vec<f64> = (0..visible)
                    .map(|j| {
                        (0..d)
                            .map(|x| q[qo + x] as f64 * k[ki(bb, j, hh) + x] as f64)
                            .sum::<f64>()
                            * scale
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::MIN, f64::max);
                let z: f64 = s.iter().map(|v| (v - m).exp()).sum();
                r.lse[(bb * h + hh) * sq + i] = m + z.ln();
                let p: Vec<f64> = s.iter().map(|v| (v - m).exp() / z).collect();
                for (j, pj) in p.iter().enumerate() {
                    for x in 0..d {
                        r.out[qo + x] += pj * v[ki(bb, j, hh) + x] as f64;
                    }
                }
                // dp_j = dout . v_j; ds_j = p_j (dp_j - sum_l p_l dp_l).
                let dp: Vec<f64> = (0..visible)
                    .map(|j| (0..d).map(|x| dout[qo + x] as f64 * v[ki(bb, j, hh) + x] as f64).sum())
                    .collect();
                let delta: f64 = p.iter().zip(&dp).map(|(a, b)| a * b).sum();
                for j in 0..visible {
                    let ds = p[j] * (dp[j] - delta) * scale;
                    let ko = ki(bb, j, hh);
                    for x in 0..d {
                        r.dq[qo + x] += ds * k[ko + x] as f64;
                        r.dk[ko + x] += ds * q[qo + x] as f64;
                        r.dv[ko + x] += p[j] * dout[qo + x] as f64;
                    }
                }
            }
        }
    }
    r
}

fn check_case(c: Case, seed: u64) {
    let Some(g) = gpu() else { return };
    let qs = [c.b, c.sq, c.h, c.d];
    let ks = [c.b, c.sk, c.h, c.d];
    // Spread of 2 makes the softmax far from uniform, so masking and scaling errors show.
    let spread = |v: Vec<f32>| v.into_iter().map(|x| x * 2.0).collect::<Vec<f32>>();
    let q = spread(rand_vec(qs.iter().product(), seed));
    let k = spread(rand_vec(ks.iter().product(), seed + 1));
    let v = rand_vec(ks.iter().product(), seed + 2);
    let dout = rand_vec(qs.iter().product(), seed + 3);
    let want = reference(c, &q, &k, &v, &dout);
    let (gq, gk, gv) = (
        g.upload(&q, &qs).unwrap(),
        g.upload(&k, &ks).unwrap(),
        g.upload(&v, &ks).unwrap(),
    );
    let fwd = g.attention_forward(&gq, &gk, &gv, c.causal).unwrap();
    assert_eq!(fwd.out.shape(), &qs);
    assert_eq!(fwd.lse.shape(), &[c.b, c.h, c.sq]);
    assert_close(
        &format!("attention out {c:?}"),
        &g.download(&fwd.out).unwrap(),
        &want.out,
        1e-4,
    );
    assert_close(
        &format!("attention lse {c:?}"),
        &g.download(&fwd.lse).unwrap(),
        &want.lse,
        1e-4,
    );
    let gd = g.upload(&dout, &qs).unwrap();
    let grads = g
        .attention_backward(&gq, &gk, &gv, &fwd.out, &fwd.lse, &gd, c.causal)
        .unwrap();
    assert_close(
        &format!("attention dq {c:?}"),
        &g.download(&grads.dq).unwrap(),
        &want.dq,
        1e-4,
    );
    assert_close(
        &format!("attention dk {c:?}"),
        &g.download(&grads.dk).unwrap(),
        &want.dk,
        1e-4,
    );
    assert_close(
        &format!("attention dv {c:?}"),
        &g.download(&grads.dv).unwrap(),
        &want.dv,
        1e-4,
    );
}

#[test]
fn attention_self_not_a_tile_multiple() {
    // seq 70: a full 64-row tile plus a partial one; d 32 fills the d32 variant exactly.
    for causal in [false, true] {
        check_case(
            Case {
                b: 2,
                sq: 70,
                sk: 70,
                h: 3,
                d: 32,
                causal,
            },
            11,
        );
    }
}

#[test]
fn attention_cross_lengths() {
    // seq_q != seq_k both ways, d 16 (zero-padded in the d32 variant).
    for (sq, sk, causal) in [(37, 100, false), (100, 37, true), (37, 100, true)] {
        check_case(
            Case {
                b: 1,
                sq,
                sk,
                h: 2,
                d: 16,
                causal,
            },
            23 + sq as u64,
        );
    }
}

#[test]
fn attention_head_dim_64_and_unaligned() {
    // d 64 fills the d64 variant; d 5 and 40 exercise the masked partial vec4 loads/stores.
    for (d, causal) in [(64, false), (64, true), (40, true), (5, false)] {
        check_case(
            Case {
                b: 2,
                sq: 65,
                sk: 33,
                h: 1,
                d,
                causal,
            },
            40 + d as u64,
        );
    }
}

#[test]
fn attention_rejects_bad_shapes() {
    let Some(g) = gpu() else { return };
    let z = |s: &[usize]| g.zeros(s).unwrap();
    let q = z(&[1, 4, 2, 8]);
    assert!(g
        .attention_forward(&q, &z(&[1, 4, 2, 4]), &z(&[1, 4, 2, 4]), false)
        .is_err());
    assert!(g
        .attention_forward(&q, &z(&[1, 4, 3, 8]), &z(&[1, 4, 3, 8]), false)
        .is_err());
    assert!(g
        .attention_forward(&q, &z(&[1, 5, 2, 8]), &z(&[1, 4, 2, 8]), false)
        .is_err());
    assert!(g
        .attention_forward(&q, &z(&[1, 0, 2, 8]), &z(&[1, 0, 2, 8]), false)
        .is_err());
    let big = z(&[1, 2, 1, 65]);
    assert!(g.attention_forward(&big, &big, &big, false).is_err());
    let fwd = g.attention_forward(&q, &q, &q, false).unwrap();
    let bad_lse = z(&[1, 2, 3]);
    assert!(g.attention_backward(&q, &q, &q, &fwd.out, &bad_lse, &q, false).is_err());
}

fn layer_norm_ref(x: &[f32], gamma: &[f32], beta: &[f32], dy: &[f32], cols: usize, eps: f64) -> [Vec<f64>; 4] {
    let rows = x.len() / cols;
    let (mut y, mut dx) = (vec![0.0; x.len()], vec![0.0; x.len()]);
    let (mut dg, mut db) = (vec![0.0; cols], vec![0.0; cols]);
    for r in 0..rows {
        let row = &x[r * cols..(r + 1) * cols];
        let mu = row.iter().map(|&v| v as f64).sum::<f64>() / cols as f64;
        let var = row.iter().map(|&v| (v as f64 - mu).powi(2)).sum::<f64>() / cols as f64;
        let rs = 1.0 / (var + eps).sqrt();
        let xh: Vec<f64> = row.iter().map(|&v| (v as f64 - mu) * rs).collect();
        let gv: Vec<f64> = (0..cols).map(|c| dy[r * cols + c] as f64 * gamma[c] as f64).collect();
        let mg = gv.iter().sum::<f64>() / cols as f64;
        let mgx = gv.iter().zip(&xh).map(|(a, b)| a * b).sum::<f64>() / cols as f64;
        for c in 0..cols {
            y[r * cols + c] = xh[c] * gamma[c] as f64 + beta[c] as f64;
            dx[r * cols + c] = rs * (gv[c] - mg - xh[c] * mgx);
            dg[c] += dy[r * cols + c] as f64 * xh[c];
            db[c] += dy[r * cols + c] as f64;
        }
    }
    [y, dx, dg, db]
}

#[test]
fn layer_norm_forward_backward() {
    for (path, g) in super::common::reduction_paths() {
        // cols 300: several columns per thread; 2000 rows: many column-sum chunks.
        for (rows, cols) in [(37, 300), (5, 7), (2000, 33), (3, 256)] {
            let seed = (rows * 31 + cols) as u64;
            // An offset and a scale per row, so mean subtraction and rstd both matter.
            let x: Vec<f32> = rand_vec(rows * cols, seed)
                .iter()
                .enumerate()
                .map(|(i, v)| v * (1.0 + (i / cols % 5) as f32) + 3.0)
                .collect();
            let gamma: Vec<f32> = rand_vec(cols, seed + 1).iter().map(|v| v + 1.5).collect();
            let beta = rand_vec(cols, seed + 2);
            let dy = rand_vec(rows * cols, seed + 3);
            let [y, dx, dg, db] = layer_norm_ref(&x, &gamma, &beta, &dy, cols, 1e-5);
            let gx = g.upload(&x, &[rows, cols]).unwrap();
            let gg = g.upload(&gamma, &[cols]).unwrap();
            let fwd = g
                .layer_norm(&gx, &gg, &g.upload(&beta, &[cols]).unwrap(), 1e-5)
                .unwrap();
            assert_close(
                &format!("{path}: layer_norm y {rows}x{cols}"),
                &g.download(&fwd.y).unwrap(),
                &y,
                1e-4,
            );
            let grads = g
                .layer_norm_backward(&gx, &gg, &fwd.mean, &fwd.rstd, &g.upload(&dy, &[rows, cols]).unwrap())
                .unwrap();
            let what = format!("{path}: {rows}x{cols}");
            assert_close(
                &format!("layer_norm dx {what}"),
                &g.download(&grads.dx).unwrap(),
                &dx,
                1e-4,
            );
            assert_close(
                &format!("layer_norm dgamma {what}"),
                &g.download(&grads.dgamma).unwrap(),
                &dg,
                1e-4,
            );
            assert_close(
                &format!("layer_norm dbeta {what}"),
                &g.download(&grads.dbeta).unwrap(),
                &db,
                1e-4,
            );
        }
    }
}

#[test]
fn layer_norm_rejects_bad_shapes() {
    let Some(g) = gpu() else { return };
    let x = g.zeros(&[4, 6]).unwrap();
    let (c6, c5) = (g.zeros(&[6]).unwrap(), g.zeros(&[5]).unwrap());
    assert!(g.layer_norm(&x, &c5, &c6, 1e-5).is_err());
    assert!(g.layer_norm(&x, &c6, &c6, -1.0).is_err());
    let fwd = g.layer_norm(&x, &c6, &c6, 1e-5).unwrap();
    assert!(g
        .layer_norm_backward(&x, &c6, &fwd.mean, &fwd.rstd, &g.zeros(&[4, 5]).unwrap())
        .is_err());
}

#[test]
fn sum_rows_split_matches_column_sums() {
    let Some(g) = gpu() else { return };
    for (r, c) in [(1000, 257), (3, 5), (16384, 4)] {
        let x = rand_vec(r * c, (r + c) as u64);
        let out = g
            .download(&g.sum_rows_split(&g.upload(&x, &[r, c]).unwrap()).unwrap())
            .unwrap();
        let want: Vec<f64> = (0..c).map(|j| (0..r).map(|i| x[i * c + j] as f64).sum()).collect();
        assert_close(&format!("sum_rows_split {r}x{c}"), &out, &want, 1e-4);
    }
}
