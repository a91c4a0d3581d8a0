//! Backpropagation through time for the fused recurrent kernels (see the parent module): the
//! steps are walked in reverse per batch chunk, storing each step's gate gradients, then three
//! large GEMMs give the kernel, recurrent-kernel and input gradients.

use super::cells::{gru_step_back, lstm_step_back};
use super::*;

/// One chunk's view of every backward buffer (`None`: a buffer the cell does not use).
struct BwdChunk<'a> {
    x: &'a [f32],
    dx: &'a mut [f32],
    dpre: &'a mut [f32],
    drec: &'a mut [f32],
    dh: &'a mut [f32],
    dc: &'a mut [f32],
    gates: &'a [f32],
    pre: Option<&'a [f32]>,
    hprev: &'a [f32],
    cprev: &'a [f32],
    cnew: Option<&'a [f32]>,
    tc: &'a [f32],
    rh: &'a [f32],
    g_seq: Option<&'a [f32]>,
    mask: Option<&'a [f32]>,
}

/// A chunk's share of the weight gradients (empty where not computed by the chunk).
struct ChunkGrads {
    bias: Vec<f32>,
    kernel: Vec<f32>,
    recurrent: Vec<f32>,
}

/// Backpropagation through time: gradients of `sum(seq*g_seq) + sum(h*g_h) + sum(c*g_c)`.
pub fn rnn_backward(
    spec: &RnnSpec,
    inp: &RnnInputs,
    tape: &RnnTape,
    g_seq: Option<&[f32]>,
    g_h: Option<&[f32]>,
    g_c: Option<&[f32]>,
    want: RnnWanted,
) -> RnnGrads {
    let (b, t, u, g, f) = (spec.batch, spec.time, spec.units, spec.g(), spec.input);
    let (lstm, gru) = (spec.cell == Cell::Lstm, spec.cell == Cell::Gru);
    // Gate gradients of every step (only masked steps leave rows unwritten, which must be zero).
    // GRU's recurrent side differs from the input side (the reset gate scales the recurrent
    // candidate term); the other cells share one buffer.
    let masked = inp.mask.is_some();
    let mut dpre = take(b * t * g, masked);
    let mut drec = if gru { take(b * t * g, masked) } else { Vec::new() };
    let mut dx = if want.x { vec![0.0; b * t * f] } else { Vec::new() };
    let mut dh = g_h.map_or_else(|| vec![0.0; b * u], <[f32]>::to_vec);
    let mut dc = if lstm {
        g_c.map_or_else(|| vec![0.0; b * u], <[f32]>::to_vec)
    } else {
        Vec::new()
    };
    // The per-step GEMM multiplies by U^T; gemm is several times slower on a transposed
    // right-hand side at these sizes, so transpose U once here.
    let mut rec_t = take(g * u, false);
    for (i, row) in inp.recurrent.chunks_exact(g).enumerate() {
        for (j, &v) in row.iter().enumerate() {
            rec_t[j * u + i] = v;
        }
    }
    let (rows, n, per_chunk) = chunking(b);
    let mut chunks: Vec<BwdChunk> = Vec::with_capacity(n);
    {
        let mut x = split(Some(inp.x), t * f, rows, n);
        let mut dxs = split_mut(&mut dx, t * f, rows, n);
        let mut dpres = split_mut(&mut dpre, t * g, rows, n);
        let mut drecs = split_mut(&mut drec, t * g, rows, n);
        let mut dhs = split_mut(&mut dh, u, rows, n);
        let mut dcs = split_mut(&mut dc, u, rows, n);
        let mut gates = split(Some(&tape.gates), t * g, rows, n);
        let mut pre = split(Some(&tape.pre), t * g, rows, n);
        let mut hprev = split(Some(&tape.hprev), t * u, rows, n);
        let mut cprev = split(Some(&tape.cprev), t * u, rows, n);
        let mut cnew = split(Some(&tape.cnew), t * u, rows, n);
        let mut tc = split(Some(&tape.tc), t * u, rows, n);
        let mut rh = split(Some(&tape.rh), t * u, rows, n);
        let mut gs = split(g_seq, t * u, rows, n);
        let mut masks = split(inp.mask, t, rows, n);
        let e = "every buffer splits into n chunks";
        for _ in 0..n {
            chunks.push(BwdChunk {
                x: x.next().expect(e).unwrap_or_default(),
                dx: dxs.next().expect(e),
                dpre: dpres.next().expect(e),
                drec: drecs.next().expect(e),
                dh: dhs.next().expect(e),
                dc: dcs.next().expect(e),
                gates: gates.next().expect(e).unwrap_or_default(),
                pre: pre.next().expect(e),
                hprev: hprev.next().expect(e).unwrap_or_default(),
                cprev: cprev.next().expect(e).unwrap_or_default(),
                cnew: cnew.next().expect(e),
                tc: tc.next().expect(e).unwrap_or_default(),
                rh: rh.next().expect(e).unwrap_or_default(),
                g_seq: gs.next().expect(e),
                mask: masks.next().expect(e),
            });
        }
    }
    let parts: Vec<ChunkGrads> = chunks
        .into_par_iter()
        .map(|ch| backward_chunk(spec, inp, &rec_t, want, per_chunk, ch))
        .collect();
    let sum_parts = |pick: fn(&ChunkGrads) -> &Vec<f32>, len: usize| {
        let mut acc = vec![0.0; len];
        for p in &parts {
            acc.iter_mut().zip(pick(p)).for_each(|(a, v)| *a += v);
        }
        acc
    };
    let dr: &[f32] = if gru { &drec } else { &dpre };
    let mut kernel = want.kernel.then(|| sum_parts(|p| &p.kernel, f * g));
    let mut recurrent = want.recurrent.then(|| sum_parts(|p| &p.recurrent, u * g));
    if !per_chunk {
        if let Some(dw) = kernel.as_mut() {
            sgemm(f, g, b * t, inp.x, true, &dpre, false, dw, false, true);
        }
        if let Some(du) = recurrent.as_mut() {
            sgemm(u, g, b * t, &tape.hprev, true, dr, false, du, false, true);
        }
        if want.x {
            sgemm(b * t, f, g, &dpre, false, inp.kernel, true, &mut dx, false, true);
        }
    }
    let bias = want.bias.then(|| sum_parts(|p| &p.bias, spec.cell.bias_len(u)));
    for buf in [dpre, drec, rec_t] {
        recycle(buf);
    }
    RnnGrads {
        x: want.x.then_some(dx),
        kernel,
        recurrent,
        bias,
        h0: dh,
        c0: dc,
    }
}

multiversion!(backward_chunk => backward_chunk_impl(spec: &RnnSpec, inp: &RnnInputs, rec_t: &[f32], want: RnnWanted,
                                                     per_chunk: bool, ch: BwdChunk) -> ChunkGrads);

/// BPTT for one chunk of rows (`rec_t` is the transposed recurrent kernel `[G*u, u]`), then,
/// when `per_chunk`, the chunk's input gradient and its share of the weight gradients.
#[inline(always)]
fn backward_chunk_impl<const FMA: bool>(
    spec: &RnnSpec,
    inp: &RnnInputs,
    rec_t: &[f32],
    want: RnnWanted,
    per_chunk: bool,
    mut ch: BwdChunk,
) -> ChunkGrads {
    let (t, u, g, f) = (spec.time, spec.units, spec.g(), spec.input);
    let rows = ch.dh.len() / u;
    let mut out = ChunkGrads {
        bias: Vec::new(),
        kernel: Vec::new(),
        recurrent: Vec::new(),
    };
    if want.bias {
        out.bias = vec![0.0; spec.cell.bias_len(u)];
    }
    with_activations!(spec, FMA, |_act, _rec, dact, drec| backward_steps(
        spec,
        rec_t,
        &mut ch,
        &mut out.bias,
        dact,
        drec
    ));
    if per_chunk {
        let m = rows * t;
        let dr: &[f32] = if spec.cell == Cell::Gru { ch.drec } else { ch.dpre };
        if want.kernel {
            out.kernel = vec![0.0; f * g];
            sgemm(f, g, m, ch.x, true, ch.dpre, false, &mut out.kernel, false, false);
        }
        if want.recurrent {
            out.recurrent = vec![0.0; u * g];
            sgemm(u, g, m, ch.hprev, true, dr, false, &mut out.recurrent, false, false);
        }
        if want.x {
            sgemm(m, f, g, ch.dpre, false, inp.kernel, true, ch.dx, false, false);
        }
    }
    out
}

/// The reverse recurrence of one chunk: gate gradients into `dpre` / `drec`, the gradients of
/// the initial states into `dh` / `dc`, bias gradients summed into `db` (when not empty).
#[inline(always)]
fn backward_steps(
    spec: &RnnSpec,
    rec_t: &[f32],
    ch: &mut BwdChunk,
    db: &mut [f32],
    dact: impl Fn(f32, f32) -> f32,
    drec: impl Fn(f32, f32) -> f32,
) {
    let (t, u, g) = (spec.time, spec.units, spec.g());
    let rows = ch.dh.len() / u;
    let gru = spec.cell == Cell::Gru;
    let mut dh = ch.dh.to_vec();
    let mut dh_next = vec![0.0; rows * u];
    for s in (0..t).rev() {
        let ti = spec.input_time(s);
        let o = spec.output_time(s);
        if s > 0 {
            let at = |len: usize| (0..rows).map(move |j| (j * t + spec.input_time(s - 1)) * len);
            prefetch(ch.gates, at(g), g);
            prefetch(ch.dpre, at(g), g);
            for buf in [ch.hprev, ch.cprev, ch.tc, ch.rh].into_iter().chain(ch.pre) {
                if !buf.is_empty() {
                    prefetch(buf, at(buf.len() / (rows * t)), buf.len() / (rows * t));
                }
            }
        }
        for j in 0..rows {
            let keep = ch.mask.is_none_or(|m| m[j * t + ti] != 0.0);
            let dhj = &mut dh[j * u..(j + 1) * u];
            if let Some(gs) = ch.g_seq {
                if keep || !spec.zero_masked_outputs {
                    let src = &gs[(j * t + o) * u..(j * t + o + 1) * u];
                    dhj.iter_mut().zip(src).for_each(|(d, s)| *d += s);
                }
            }
            let next = &mut dh_next[j * u..(j + 1) * u];
            if !keep {
                // The state passed through unchanged: so does its gradient.
                next.copy_from_slice(dhj);
                continue;
            }
            let at = (j * t + ti) * g;
            let su = (j * t + ti) * u..(j * t + ti + 1) * u;
            let gates = &ch.gates[at..at + g];
            // Without saved pre-activations derivatives are taken at x = y (see `keeps_pre`).
            let pre = ch.pre.map_or(gates, |p| &p[at..at + g]);
            let dpre = &mut ch.dpre[at..at + g];
            match spec.cell {
                Cell::SimpleRnn => {
                    (0..u).for_each(|k| dpre[k] = dhj[k] * dact(pre[k], gates[k]));
                    next.fill(0.0);
                }
                Cell::Lstm => {
                    let tc = &ch.tc[su.clone()];
                    let cnew = ch.cnew.map_or(tc, |c| &c[su.clone()]);
                    let dc = &mut ch.dc[j * u..(j + 1) * u];
                    lstm_step_back(u, pre, gates, &ch.cprev[su], cnew, tc, dhj, dc, dpre, &dact, &drec);
                    next.fill(0.0);
                }
                Cell::Gru => {
                    let dr = &mut ch.drec[at..at + g];
                    gru_step_back(
                        u,
                        pre,
                        gates,
                        &ch.hprev[su.clone()],
                        &ch.rh[su],
                        dhj,
                        dpre,
                        dr,
                        next,
                        &dact,
                        &drec,
                    );
                }
            }
            if !db.is_empty() {
                db[..g].iter_mut().zip(dpre.iter()).for_each(|(b, d)| *b += d);
                if gru {
                    db[g..].iter_mut().zip(&ch.drec[at..at + g]).for_each(|(b, d)| *b += d);
                }
            }
        }
        // dh_prev += dgates_rec · U^T for every row of the chunk at this step.
        let dr: &[f32] = if gru { ch.drec } else { ch.dpre };
        gemm_strided(
            rows,
            u,
            g,
            &dr[ti * g..],
            (t * g, 1),
            rec_t,
            (u, 1),
            &mut dh_next,
            u,
            true,
        );
        std::mem::swap(&mut dh, &mut dh_next);
    }
    ch.dh.copy_from_slice(&dh);
}
