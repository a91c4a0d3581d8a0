//! Per-row cell math of the fused recurrent kernels (see the parent module): fast activations
//! and, for each cell, one step forward and one step backward over the units of one batch row.
//! Everything is `#[inline(always)]` so it is compiled inside the parent's AVX-512 / AVX2
//! multiversioned chunk loops, where the unit loops vectorise.

// Fast activations. Gate math is dominated by exp; these branch-free forms vectorise, and their
// error (a few ulp) is far below what training or the float64 conformance tolerances notice.

/// `a * b + c`: fused where the caller's code is compiled with FMA (`FMA`; the AVX2 and AVX-512
/// builds of the chunk loops), else two instructions (a fused multiply-add without the
/// hardware instruction is a slow libm call). Fusing drops half the instructions of the
/// polynomials below, which dominate the gate math of LSTM inference.
#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

#[inline(always)]
fn exp_fast<const FMA: bool>(x: f32) -> f32 {
    // Cephes expf: e^x = 2^n * e^r with |r| <= ln2/2; the clamp keeps 2^n a normal float.
    let x = x.clamp(-87.3, 88.3);
    // Adding 1.5 * 2^23 rounds to an integer n held in the low mantissa bits, so 2^n is built
    // with integer ops (a float-to-int `as` cast saturates and does not vectorise).
    let t = madd::<FMA>(x, std::f32::consts::LOG2_E, 12_582_912.0);
    let n = t - 12_582_912.0;
    let scale = f32::from_bits(t.to_bits().wrapping_sub(0x4B40_0000 - 127) << 23);
    let r = madd::<FMA>(n, 2.121_944_4e-4, madd::<FMA>(n, -0.693_359_4, x));
    let mut p = 1.987_569_1e-4;
    for c in [1.398_2e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5] {
        p = madd::<FMA>(p, r, c);
    }
    madd::<FMA>(p, r * r, r + 1.0) * scale
}

#[inline(always)]
pub(super) fn sigmoid_fast<const FMA: bool>(x: f32) -> f32 {
    1.0 / (1.0 + exp_fast::<FMA>(-x))
}

#[inline(always)]
pub(super) fn tanh_fast<const FMA: bool>(x: f32) -> f32 {
    // Small |x|: odd polynomial (Cephes tanhf) keeps relative precision; else via exp.
    let z = x * x;
    let mut p = -5.704_988_7e-3;
    for c in [2.063_909e-2, -5.373_971_5e-2, 0.133_314_42, -0.333_332_8] {
        p = madd::<FMA>(p, z, c);
    }
    let small = madd::<FMA>(p * z, x, x);
    let e = exp_fast::<FMA>(-2.0 * x.abs());
    let large = ((1.0 - e) / (1.0 + e)).copysign(x);
    if x.abs() < 0.625 {
        small
    } else {
        large
    }
}

// The cell steps below work on one batch row in one pass over the units: `gates` holds the
// input projection on entry and the activated gates on exit, `r` is `h·U`, and with `KEEP` the
// pre-activations go to `pre` (and the LSTM cell state to `cnew`).

#[inline(always)]
pub(super) fn simple_step<const KEEP: bool>(
    u: usize,
    gates: &mut [f32],
    pre: &mut [f32],
    r: &[f32],
    h: &mut [f32],
    act: impl Fn(f32) -> f32,
) {
    let (gates, r, h) = (&mut gates[..u], &r[..u], &mut h[..u]);
    for k in 0..u {
        let a = gates[k] + r[k];
        if KEEP {
            pre[k] = a;
        }
        gates[k] = act(a);
        h[k] = gates[k];
    }
}

#[inline(always)]
pub(super) fn lstm_step<const KEEP: bool>(
    u: usize,
    gates: &mut [f32],
    pre: &mut [f32],
    r: &[f32],
    h: &mut [f32],
    c: &mut [f32],
    cnew: &mut [f32],
    tc: &mut [f32],
    act: impl Fn(f32) -> f32,
    rec: impl Fn(f32) -> f32,
) {
    let (gi, rest) = gates.split_at_mut(u);
    let (gf, rest) = rest.split_at_mut(u);
    let (gc, go) = rest.split_at_mut(u);
    let (ri, rf, rc, ro) = (&r[..u], &r[u..2 * u], &r[2 * u..3 * u], &r[3 * u..4 * u]);
    let (go, h, c, tc) = (&mut go[..u], &mut h[..u], &mut c[..u], &mut tc[..u]);
    for k in 0..u {
        let a = [gi[k] + ri[k], gf[k] + rf[k], gc[k] + rc[k], go[k] + ro[k]];
        if KEEP {
            (0..4).for_each(|q| pre[q * u + k] = a[q]);
        }
        let (i, f, cc, o) = (rec(a[0]), rec(a[1]), act(a[2]), rec(a[3]));
        let cn = f * c[k] + i * cc;
        if KEEP {
            cnew[k] = cn;
        }
        let tk = act(cn);
        (gi[k], gf[k], gc[k], go[k]) = (i, f, cc, o);
        (c[k], tc[k], h[k]) = (cn, tk, o * tk);
    }
}

#[inline(always)]
pub(super) fn gru_step<const KEEP: bool>(
    u: usize,
    gates: &mut [f32],
    pre: &mut [f32],
    r: &[f32],
    b_rec: &[f32],
    h: &mut [f32],
    rh: &mut [f32],
    act: impl Fn(f32) -> f32,
    rec: impl Fn(f32) -> f32,
) {
    let (gz, rest) = gates.split_at_mut(u);
    let (gr, gh) = rest.split_at_mut(u);
    let (gh, h, rh) = (&mut gh[..u], &mut h[..u], &mut rh[..u]);
    for k in 0..u {
        let (az, ar) = (gz[k] + r[k] + b_rec[k], gr[k] + r[u + k] + b_rec[u + k]);
        let (z, reset) = (rec(az), rec(ar));
        // reset_after: the reset gate scales the recurrent term including its bias.
        let rhk = r[2 * u + k] + b_rec[2 * u + k];
        let ah = gh[k] + reset * rhk;
        if KEEP {
            (pre[k], pre[u + k], pre[2 * u + k]) = (az, ar, ah);
        }
        let hh = act(ah);
        (gz[k], gr[k], gh[k], rh[k]) = (z, reset, hh, rhk);
        h[k] = z * h[k] + (1.0 - z) * hh;
    }
}

/// LSTM step backward for one row: `dh` and the carried `dc` become gate gradients and the
/// carry for the previous step.
#[inline(always)]
pub(super) fn lstm_step_back(
    u: usize,
    pre: &[f32],
    gates: &[f32],
    cprev: &[f32],
    cnew: &[f32],
    tc: &[f32],
    dh: &[f32],
    dc: &mut [f32],
    dpre: &mut [f32],
    dact: impl Fn(f32, f32) -> f32,
    drec: impl Fn(f32, f32) -> f32,
) {
    let (i, f, cc, o) = (
        &gates[..u],
        &gates[u..2 * u],
        &gates[2 * u..3 * u],
        &gates[3 * u..4 * u],
    );
    let (pi, pf, pc, po) = (&pre[..u], &pre[u..2 * u], &pre[2 * u..3 * u], &pre[3 * u..4 * u]);
    let (di, rest) = dpre.split_at_mut(u);
    let (df, rest) = rest.split_at_mut(u);
    let (dcc, d_o) = rest.split_at_mut(u);
    let (d_o, cprev, cnew, tc, dh, dc) = (&mut d_o[..u], &cprev[..u], &cnew[..u], &tc[..u], &dh[..u], &mut dc[..u]);
    for k in 0..u {
        let dct = dc[k] + dh[k] * o[k] * dact(cnew[k], tc[k]);
        di[k] = dct * cc[k] * drec(pi[k], i[k]);
        df[k] = dct * cprev[k] * drec(pf[k], f[k]);
        dcc[k] = dct * i[k] * dact(pc[k], cc[k]);
        d_o[k] = dh[k] * tc[k] * drec(po[k], o[k]);
        dc[k] = dct * f[k];
    }
}

/// GRU step backward for one row: input-side gate gradients into `dpre`, recurrent-side into
/// `drec_out`, and the direct path `dh * z` into `next`.
#[inline(always)]
pub(super) fn gru_step_back(
    u: usize,
    pre: &[f32],
    gates: &[f32],
    hprev: &[f32],
    rh: &[f32],
    dh: &[f32],
    dpre: &mut [f32],
    drec_out: &mut [f32],
    next: &mut [f32],
    dact: impl Fn(f32, f32) -> f32,
    drec: impl Fn(f32, f32) -> f32,
) {
    let (z, r, hh) = (&gates[..u], &gates[u..2 * u], &gates[2 * u..3 * u]);
    let (pz, pr, ph) = (&pre[..u], &pre[u..2 * u], &pre[2 * u..3 * u]);
    let (hprev, rh, dh, next) = (&hprev[..u], &rh[..u], &dh[..u], &mut next[..u]);
    for k in 0..u {
        let da_h = dh[k] * (1.0 - z[k]) * dact(ph[k], hh[k]);
        let da_z = dh[k] * (hprev[k] - hh[k]) * drec(pz[k], z[k]);
        let da_r = da_h * rh[k] * drec(pr[k], r[k]);
        (dpre[k], dpre[u + k], dpre[2 * u + k]) = (da_z, da_r, da_h);
        (drec_out[k], drec_out[u + k], drec_out[2 * u + k]) = (da_z, da_r, da_h * r[k]);
        next[k] = dh[k] * z[k];
    }
}
