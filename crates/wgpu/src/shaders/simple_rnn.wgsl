// SimpleRNN recurrence forward and backward (BPTT): h_t = act(x_proj_t + h_{t-1}·U) (act:
// Keras `activation`, tanh by default), where
// x_proj = x·W + b is one GEMM for all timesteps done before these kernels.
//
// Same scheme as rnn.wgsl (the LSTM): WGSL has no grid-wide barrier, so one workgroup owns
// whole sequences (p.seqs of them, all their hidden units) and loops over time with
// workgroupBarrier() between steps; h lives in workgroup memory, U is read from global memory
// (it stays in L2/L1). Invocation q of a group handles pairs (sequence q / u, unit q % u),
// q += 256, so consecutive invocations read consecutive columns of U (coalesced). The host
// guarantees p.seqs * p.units <= 1024.
//
// Layouts (row = b * steps + t): x_proj, pre, h_seq, h_prev and d_pre [B, T, u] (pre: the
// pre-activation x_proj + h·U, which the backward pass takes the activation's derivative
// from; h_seq / h_prev: h after / before step t; d_pre: gradient wrt pre), U [u, u].
//
// Masking (Keras) as in rnn.wgsl: with p.has_mask, a step whose mask [B, T] entry is 0 keeps
// h, outputs the previous h (zeros with p.zero_masked), and passes its gradient straight to
// the previous state (zero pre-activation gradient).

struct Params {
    batch: u32,
    steps: u32,
    units: u32,
    // Sequences per workgroup.
    seqs: u32,
    // Backward: whether dh_seq / dh_last are bound with real data.
    has_dh_seq: u32,
    has_dh_last: u32,
    // Whether `mask` holds a real mask; whether masked steps output zeros.
    has_mask: u32,
    zero_masked: u32,
    // Keras `activation` and `recurrentActivation`: codes of `act` in activation_math.wgsl,
    // and their alphas. (SimpleRNN has no gates: rec_act is unused.)
    act: u32,
    rec_act: u32,
    act_alpha: f32,
    rec_alpha: f32,
}

const WG: u32 = 256u;
// Half of hbuf: h of step t is read from one half while step t+1's h goes to the other,
// so one barrier per step suffices.
const HALF: u32 = 1024u;

@group(0) @binding(0) var<uniform> p: Params;
// Forward.
@group(0) @binding(1) var<storage, read> x_proj: array<f32>;
// U [u, u] in the forward pass, Uᵀ in the backward pass (coalesced either way).
@group(0) @binding(2) var<storage, read> wrec: array<f32>;
@group(0) @binding(4) var<storage, read> h0: array<f32>;
// Written by the forward pass, read by the backward pass.
@group(0) @binding(5) var<storage, read_write> pre: array<f32>;
@group(0) @binding(6) var<storage, read_write> h_seq: array<f32>;
@group(0) @binding(7) var<storage, read_write> h_prev: array<f32>;
@group(0) @binding(8) var<storage, read_write> h_last: array<f32>;
// Backward (also uses wrec and pre).
@group(0) @binding(9) var<storage, read> dh_seq: array<f32>;
@group(0) @binding(10) var<storage, read> dh_last: array<f32>;
@group(0) @binding(11) var<storage, read_write> d_pre: array<f32>;
@group(0) @binding(13) var<storage, read_write> dh0: array<f32>;
// Forward and backward: the Keras mask [B, T] (a stand-in, never read, without p.has_mask).
@group(0) @binding(14) var<storage, read> mask: array<f32>;

var<workgroup> hbuf: array<f32, 2048>;
// Pre-activation gradients of the step just processed, [seqs, u] (1024 max).
var<workgroup> dgs: array<f32, 1024>;

// Whether step t of sequence b is masked out.
fn is_masked(b: u32, t: u32) -> bool {
    return p.has_mask != 0u && mask[b * p.steps + t] == 0.0;
}

@compute @workgroup_size(256)
fn simple_rnn_forward(
    @builtin(local_invocation_id) lid3: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let lid = lid3.x;
    let u = p.units;
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
            if (b < p.batch && is_masked(b, t)) {
                // The state passes through.
                let row = b * p.steps + t;
                let hp = hbuf[cur + s * u + k];
                // Never read (the step's gradient bypasses it): written for determinism.
                pre[row * u + k] = 0.0;
                h_seq[row * u + k] = select(hp, 0.0, p.zero_masked != 0u);
                h_prev[row * u + k] = hp;
                hbuf[nxt + s * u + k] = hp;
                if (t + 1u == p.steps) {
                    h_last[b * u + k] = hp;
                }
            } else if (b < p.batch) {
                let row = b * p.steps + t;
                let hb = cur + s * u;
                // Four accumulators keep the U loads independent (the step is bound by L2
                // latency, not arithmetic).
                var acc = vec4<f32>(0.0);
                var m = 0u;
                for (; m + 4u <= u; m += 4u) {
                    let hv = vec4<f32>(hbuf[hb + m], hbuf[hb + m + 1u], hbuf[hb + m + 2u], hbuf[hb + m + 3u]);
                    let w = m * u + k;
                    acc += hv * vec4<f32>(wrec[w], wrec[w + u], wrec[w + 2u * u], wrec[w + 3u * u]);
                }
                var a = x_proj[row * u + k] + (acc.x + acc.y) + (acc.z + acc.w);
                for (; m < u; m++) {
                    a += hbuf[hb + m] * wrec[m * u + k];
                }
                let h = act(p.act, p.act_alpha, a);
                pre[row * u + k] = a;
                h_seq[row * u + k] = h;
                h_prev[row * u + k] = hbuf[hb + k];
                hbuf[nxt + s * u + k] = h;
                if (t + 1u == p.steps) {
                    h_last[b * u + k] = h;
                }
            }
        }
        workgroupBarrier();
    }
}

// Σ_j dgs[gb + j] · Uᵀ[j, k]; four accumulators keep the loads independent instead of one
// serial FMA chain (scalar tail for u not a multiple of 4).
fn dg_dot_ut(gb: u32, k: u32) -> f32 {
    let u = p.units;
    var acc = vec4<f32>(0.0);
    var j = 0u;
    for (; j + 4u <= u; j += 4u) {
        let dg = vec4<f32>(dgs[gb + j], dgs[gb + j + 1u], dgs[gb + j + 2u], dgs[gb + j + 3u]);
        let w = j * u + k;
        acc += dg * vec4<f32>(wrec[w], wrec[w + u], wrec[w + 2u * u], wrec[w + 3u * u]);
    }
    var sum = acc.x + acc.y + acc.z + acc.w;
    for (; j < u; j++) {
        sum += dgs[gb + j] * wrec[j * u + k];
    }
    return sum;
}

@compute @workgroup_size(256)
fn simple_rnn_backward(
    @builtin(local_invocation_id) lid3: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let lid = lid3.x;
    let u = p.units;
    let n = p.seqs * u;
    let first = (wid.y * nwg.x + wid.x) * p.seqs;
    // dh of the current step per owned pair (at most 1024 / 256 = 4), kept across the
    // barrier that protects dgs, and the gradient a masked step passed straight through to
    // the step before it.
    var dh: array<f32, 4>;
    var hc: array<f32, 4>;
    for (var i = 0u; i < 4u; i++) {
        hc[i] = 0.0;
    }
    for (var tt = 0u; tt < p.steps; tt++) {
        let t = p.steps - 1u - tt;
        // Phase 1: dh_t = external gradient + dA_{t+1} · Uᵀ (dA_{t+1} is in dgs).
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
                    d += dg_dot_ut(s * u, k);
                }
            }
            dh[i] = d;
            i++;
        }
        workgroupBarrier();
        // Phase 2: pre-activation gradient of step t, to d_pre and to dgs for step t-1.
        i = 0u;
        for (var q = lid; q < n; q += WG) {
            let s = q / u;
            let k = q % u;
            let b = first + s;
            if (b < p.batch && is_masked(b, t)) {
                // The state passed through unchanged: so does its gradient.
                d_pre[(b * p.steps + t) * u + k] = 0.0;
                dgs[s * u + k] = 0.0;
                hc[i] = dh[i];
            } else if (b < p.batch) {
                hc[i] = 0.0;
                let row = b * p.steps + t;
                let da = dh[i] * act_grad(p.act, p.act_alpha, pre[row * u + k]);
                d_pre[row * u + k] = da;
                dgs[s * u + k] = da;
            }
            i++;
        }
        workgroupBarrier();
    }
    // Gradient wrt the initial state: dA_0 · Uᵀ plus what masked steps passed through.
    var i = 0u;
    for (var q = lid; q < n; q += WG) {
        let s = q / u;
        let b = first + s;
        if (b < p.batch) {
            var d = hc[i];
            if (p.steps > 0u) {
                d += dg_dot_ut(s * u, q % u);
            }
            dh0[b * u + q % u] = d;
        }
        i++;
    }
}
