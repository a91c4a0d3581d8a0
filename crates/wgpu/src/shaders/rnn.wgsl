// LSTM recurrence forward and backward (BPTT), plus a small transpose for Uᵀ.
//
// The input projection x·W + b of every timestep is one GEMM done before these kernels, so
// the recurrence only adds h·U. WGSL has no grid-wide barrier, so one workgroup owns whole
// sequences (p.seqs of them, all their hidden units) and loops over time internally with
// workgroupBarrier() between steps; h lives in workgroup memory, U is read from global
// memory (it stays in L2/L1). Invocation q of a group handles pairs (sequence q / u, unit
// q % u), q += 256, so consecutive invocations read consecutive columns of U (coalesced).
// The host guarantees p.seqs * p.units <= 1024.
//
// Layouts (row = b * steps + t): x_proj [B, T, 4u] (gate order i, f, c, o), U [u, 4u],
// saved [B, T, 5u] = gate pre-activations i, f, c, o then the cell state c_t (the backward
// pass re-applies the activations: every activation's derivative follows from its input, not
// every one's from its output, e.g. gelu and swish), h_seq / h_prev
// [B, T, u] (h after / before step t).
//
// Masking (Keras): with p.has_mask, mask [B, T] (nonzero = keep) is read once per step and
// sequence; a masked step carries h and c over unchanged, outputs the previous h (or zeros
// with p.zero_masked), and in the backward pass passes its gradient straight to the previous
// state (its gate gradients are zero). Without a mask another buffer stands in for it,
// never read.

struct Params {
    batch: u32,
    steps: u32,
    units: u32,
    // Sequences per workgroup.
    seqs: u32,
    // Backward: whether dh_seq / dh_last are bound with real data.
    has_dh_seq: u32,
    has_dh_last: u32,
    // Transpose: input is rows x cols.
    rows: u32,
    cols: u32,
    // Forward and backward: whether `mask` holds a real mask, and whether masked steps
    // output zeros instead of the previous state.
    has_mask: u32,
    zero_masked: u32,
    // Backward: whether dc_last is bound with real data.
    has_dc_last: u32,
    // Keras `activation` (candidate and cell output) and `recurrentActivation` (gates): codes
    // of `act` in activation_math.wgsl, and their alphas.
    act: u32,
    rec_act: u32,
    act_alpha: f32,
    rec_alpha: f32,
    pad0: u32,
}

const WG: u32 = 256u;
// Half of hbuf: h of step t is read from one half while step t+1's h goes to the other,
// so one barrier per step suffices.
const HALF: u32 = 1024u;

@group(0) @binding(0) var<uniform> p: Params;
// Forward.
@group(0) @binding(1) var<storage, read> x_proj: array<f32>;
// U [u, 4u] in the forward pass, Uᵀ [4u, u] in the backward pass (coalesced either way).
@group(0) @binding(2) var<storage, read> wrec: array<f32>;
@group(0) @binding(3) var<storage, read> h0: array<f32>;
@group(0) @binding(4) var<storage, read> c0: array<f32>;
@group(0) @binding(5) var<storage, read_write> saved: array<f32>;
@group(0) @binding(6) var<storage, read_write> h_seq: array<f32>;
@group(0) @binding(7) var<storage, read_write> h_prev: array<f32>;
@group(0) @binding(8) var<storage, read_write> h_last: array<f32>;
// Backward (also uses wrec, c0 and saved).
@group(0) @binding(9) var<storage, read> dh_seq: array<f32>;
@group(0) @binding(10) var<storage, read> dh_last: array<f32>;
@group(0) @binding(11) var<storage, read_write> d_gates: array<f32>;
@group(0) @binding(12) var<storage, read_write> dh0: array<f32>;
@group(0) @binding(13) var<storage, read_write> dc0: array<f32>;
// Transpose.
@group(0) @binding(14) var<storage, read> t_in: array<f32>;
@group(0) @binding(15) var<storage, read_write> t_out: array<f32>;
// Forward and backward: the Keras mask [B, T] (a stand-in, never read, without p.has_mask).
@group(0) @binding(16) var<storage, read> mask: array<f32>;
// Backward: the gradient wrt the final cell state [B, u] (returnState), the carry's start.
@group(0) @binding(17) var<storage, read> dc_last: array<f32>;

var<workgroup> hbuf: array<f32, 2048>;
// Pre-activation gate gradients of the step just processed, [seqs, 4u] (4 * 1024 max).
var<workgroup> dgs: array<f32, 4096>;

// Whether step t of sequence b is masked out.
fn is_masked(b: u32, t: u32) -> bool {
    return p.has_mask != 0u && mask[b * p.steps + t] == 0.0;
}

@compute @workgroup_size(256)
fn lstm_forward(
    @builtin(local_invocation_id) lid3: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let lid = lid3.x;
    let u = p.units;
    let g4 = 4u * u;
    let g5 = 5u * u;
    let n = p.seqs * u;
    let first = (wid.y * nwg.x + wid.x) * p.seqs;
    for (var q = lid; q < n; q += WG) {
        let b = first + q / u;
        var v = 0.0;
        if (b < p.batch) {
            v = h0[b * u + q % u];
        }
        hbuf[q] = v;
    }
    workgroupBarrier();
    for (var t = 0u; t < p.steps; t++) {
        let cur = (t & 1u) * HALF;
        let nxt = HALF - cur;
        for (var q = lid; q < n; q += WG) {
            let s = q / u;
            let k = q % u;
            let b = first + s;
            if (b < p.batch) {
                let row = b * p.steps + t;
                let hb = cur + s * u;
                let hp = hbuf[hb + k];
                // The previous cell state was written by this same invocation last step.
                var cp: f32;
                if (t == 0u) {
                    cp = c0[b * u + k];
                } else {
                    cp = saved[(row - 1u) * g5 + 4u * u + k];
                }
                let sb = row * g5 + k;
                var h = hp;
                var out = hp;
                if (is_masked(b, t)) {
                    // The state passes through; the gates are unused (written for determinism).
                    saved[sb] = 0.0;
                    saved[sb + u] = 0.0;
                    saved[sb + 2u * u] = 0.0;
                    saved[sb + 3u * u] = 0.0;
                    saved[sb + 4u * u] = cp;
                    if (p.zero_masked != 0u) {
                        out = 0.0;
                    }
                } else {
                    let xb = row * g4 + k;
                    var ai = x_proj[xb];
                    var af = x_proj[xb + u];
                    var ac = x_proj[xb + 2u * u];
                    var ao = x_proj[xb + 3u * u];
                    // Unrolled by 4 so 16 independent U loads are in flight (the step is bound
                    // by L2 latency, not arithmetic).
                    var m = 0u;
                    for (; m + 4u <= u; m += 4u) {
                        let hv = vec4<f32>(hbuf[hb + m], hbuf[hb + m + 1u], hbuf[hb + m + 2u], hbuf[hb + m + 3u]);
                        let w = m * g4 + k;
                        ai += dot(hv, vec4<f32>(wrec[w], wrec[w + g4], wrec[w + 2u * g4], wrec[w + 3u * g4]));
                        af += dot(hv, vec4<f32>(wrec[w + u], wrec[w + u + g4], wrec[w + u + 2u * g4], wrec[w + u + 3u * g4]));
                        let wc = w + 2u * u;
                        ac += dot(hv, vec4<f32>(wrec[wc], wrec[wc + g4], wrec[wc + 2u * g4], wrec[wc + 3u * g4]));
                        let wo = w + 3u * u;
                        ao += dot(hv, vec4<f32>(wrec[wo], wrec[wo + g4], wrec[wo + 2u * g4], wrec[wo + 3u * g4]));
                    }
                    for (; m < u; m++) {
                        let hv = hbuf[hb + m];
                        let w = m * g4 + k;
                        ai += hv * wrec[w];
                        af += hv * wrec[w + u];
                        ac += hv * wrec[w + 2u * u];
                        ao += hv * wrec[w + 3u * u];
                    }
                    let ig = act(p.rec_act, p.rec_alpha, ai);
                    let fg = act(p.rec_act, p.rec_alpha, af);
                    let cg = act(p.act, p.act_alpha, ac);
                    let og = act(p.rec_act, p.rec_alpha, ao);
                    let cn = fg * cp + ig * cg;
                    h = og * act(p.act, p.act_alpha, cn);
                    out = h;
                    saved[sb] = ai;
                    saved[sb + u] = af;
                    saved[sb + 2u * u] = ac;
                    saved[sb + 3u * u] = ao;
                    saved[sb + 4u * u] = cn;
                }
                h_seq[row * u + k] = out;
                h_prev[row * u + k] = hp;
                hbuf[nxt + s * u + k] = h;
                if (t + 1u == p.steps) {
                    h_last[b * u + k] = h;
                }
            }
        }
        workgroupBarrier();
    }
}

// Σ_j dgs[gb + j] · Uᵀ[j, k] over the 4u gate columns (4u is a multiple of 4); four
// accumulators keep the loads independent instead of one serial FMA chain.
fn dg_dot_ut(gb: u32, k: u32) -> f32 {
    let u = p.units;
    var acc = vec4<f32>(0.0);
    for (var j = 0u; j < 4u * u; j += 4u) {
        let dg = vec4<f32>(dgs[gb + j], dgs[gb + j + 1u], dgs[gb + j + 2u], dgs[gb + j + 3u]);
        let w = j * u + k;
        acc += dg * vec4<f32>(wrec[w], wrec[w + u], wrec[w + 2u * u], wrec[w + 3u * u]);
    }
    return acc.x + acc.y + acc.z + acc.w;
}

@compute @workgroup_size(256)
fn lstm_backward(
    @builtin(local_invocation_id) lid3: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let lid = lid3.x;
    let u = p.units;
    let g4 = 4u * u;
    let g5 = 5u * u;
    let n = p.seqs * u;
    let first = (wid.y * nwg.x + wid.x) * p.seqs;
    // Per owned pair (at most 1024 / 256 = 4): the carried cell-state gradient, dh of the
    // current step (kept across the barrier that protects dgs), and the hidden-state
    // gradient a masked step passed straight through to the step before it.
    var dc: array<f32, 4>;
    var dh: array<f32, 4>;
    var hc: array<f32, 4>;
    for (var i = 0u; i < 4u; i++) {
        dc[i] = 0.0;
        hc[i] = 0.0;
    }
    if (p.has_dc_last != 0u) {
        var i = 0u;
        for (var q = lid; q < n; q += WG) {
            let b = first + q / u;
            if (b < p.batch) {
                dc[i] = dc_last[b * u + q % u];
            }
            i++;
        }
    }
    for (var tt = 0u; tt < p.steps; tt++) {
        let t = p.steps - 1u - tt;
        // Phase 1: dh_t = external gradient + dG_{t+1} · Uᵀ (dG_{t+1} is in dgs; zero when
        // step t+1 was masked, whose gradient comes through hc instead).
        var i = 0u;
        for (var q = lid; q < n; q += WG) {
            let s = q / u;
            let k = q % u;
            let b = first + s;
            var d = hc[i];
            if (b < p.batch) {
                // A zeroed masked output does not depend on the state.
                if (p.has_dh_seq != 0u && !(p.zero_masked != 0u && is_masked(b, t))) {
                    d += dh_seq[(b * p.steps + t) * u + k];
                }
                if (t + 1u == p.steps) {
                    if (p.has_dh_last != 0u) {
                        d += dh_last[b * u + k];
                    }
                } else {
                    d += dg_dot_ut(s * g4, k);
                }
            }
            dh[i] = d;
            i++;
        }
        workgroupBarrier();
        // Phase 2: gate gradients of step t, written to d_gates and to dgs for step t-1.
        i = 0u;
        for (var q = lid; q < n; q += WG) {
            let s = q / u;
            let k = q % u;
            let b = first + s;
            if (b < p.batch && is_masked(b, t)) {
                // The state passed through unchanged: so does its gradient (dc stays).
                let gb = (b * p.steps + t) * g4 + k;
                let lb = s * g4 + k;
                for (var j = 0u; j < 4u; j++) {
                    d_gates[gb + j * u] = 0.0;
                    dgs[lb + j * u] = 0.0;
                }
                hc[i] = dh[i];
            } else if (b < p.batch) {
                hc[i] = 0.0;
                let row = b * p.steps + t;
                let sb = row * g5 + k;
                let ai = saved[sb];
                let af = saved[sb + u];
                let ac = saved[sb + 2u * u];
                let ao = saved[sb + 3u * u];
                let cn = saved[sb + 4u * u];
                let ig = act(p.rec_act, p.rec_alpha, ai);
                let fg = act(p.rec_act, p.rec_alpha, af);
                let cg = act(p.act, p.act_alpha, ac);
                let og = act(p.rec_act, p.rec_alpha, ao);
                let tc = act(p.act, p.act_alpha, cn);
                var cp: f32;
                if (t == 0u) {
                    cp = c0[b * u + k];
                } else {
                    cp = saved[sb - g5 + 4u * u];
                }
                let d = dh[i];
                let dct = dc[i] + d * og * act_grad(p.act, p.act_alpha, cn);
                let di = dct * cg * act_grad(p.rec_act, p.rec_alpha, ai);
                let df = dct * cp * act_grad(p.rec_act, p.rec_alpha, af);
                let dcc = dct * ig * act_grad(p.act, p.act_alpha, ac);
                let d_o = d * tc * act_grad(p.rec_act, p.rec_alpha, ao);
                dc[i] = dct * fg;
                let gb = row * g4 + k;
                d_gates[gb] = di;
                d_gates[gb + u] = df;
                d_gates[gb + 2u * u] = dcc;
                d_gates[gb + 3u * u] = d_o;
                let lb = s * g4 + k;
                dgs[lb] = di;
                dgs[lb + u] = df;
                dgs[lb + 2u * u] = dcc;
                dgs[lb + 3u * u] = d_o;
            }
            i++;
        }
        workgroupBarrier();
    }
    // Gradients wrt the initial state: dh0 = dG_0 · Uᵀ, dc0 = the carry past step 0.
    var i = 0u;
    for (var q = lid; q < n; q += WG) {
        let s = q / u;
        let k = q % u;
        let b = first + s;
        if (b < p.batch) {
            var d = hc[i];
            if (p.steps > 0u) {
                d += dg_dot_ut(s * g4, k);
            }
            dh0[b * u + k] = d;
            dc0[b * u + k] = dc[i];
        }
        i++;
    }
}

// t_out = t_inᵀ for a rows x cols input (used once per backward pass for Uᵀ).
@compute @workgroup_size(256)
fn transpose(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let idx = gid.y * nwg.x * WG + gid.x;
    if (idx >= p.rows * p.cols) {
        return;
    }
    let r = idx / p.cols;
    let c = idx % p.cols;
    t_out[c * p.rows + r] = t_in[idx];
}
