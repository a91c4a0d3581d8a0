// GRU recurrence forward and backward (BPTT), Keras 3 with reset_after = true.
//
// Same scheme as rnn.wgsl (the LSTM): the input projection x·W + b_in of every timestep is one
// GEMM done before these kernels, so the recurrence only adds h·U + b_rec. WGSL has no
// grid-wide barrier, so one workgroup owns whole sequences (p.seqs of them, all their hidden
// units) and loops over time with workgroupBarrier() between steps; h lives in workgroup
// memory, U is read from global memory (it stays in L2/L1). Invocation q of a group handles
// pairs (sequence q / u, unit q % u), q += 256, so consecutive invocations read consecutive
// columns of U (coalesced). The host guarantees p.seqs * p.units <= 1024.
//
// Math per step (gate order z, r, h; σ = recurrentActivation, tanh = activation, by default
// sigmoid / tanh):
//   rp = h_prev·U + b_rec                       (recurrent pre-activation, [3u])
//   z = σ(xp_z + rp_z), r = σ(xp_r + rp_r), hh = tanh(xp_h + r * rp_h)
//   h = z * h_prev + (1 - z) * hh
//
// Layouts (row = b * steps + t): x_proj [B, T, 3u], U [u, 3u], b_rec [3u], saved [B, T, 4u] =
// the pre-activations of z, r and hh, and rp_h (the backward pass re-applies the activations:
// every activation's derivative follows from its input, not every one's from its output); h_seq / h_prev [B, T, u] (h after / before step t). The backward pass
// writes d_proj (gradient wrt x_proj) and d_rec (wrt rp; equal to d_proj except the h third,
// which is scaled by r) [B, T, 3u].
//
// Masking (Keras) as in rnn.wgsl: with p.has_mask, a step whose mask [B, T] entry is 0 keeps
// h, outputs the previous h (zeros with p.zero_masked), and passes its gradient straight to
// the previous state (zero pre-activation gradients).

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
    // and their alphas.
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
// U [u, 3u] in the forward pass, Uᵀ [3u, u] in the backward pass (coalesced either way).
@group(0) @binding(2) var<storage, read> wrec: array<f32>;
@group(0) @binding(3) var<storage, read> brec: array<f32>;
@group(0) @binding(4) var<storage, read> h0: array<f32>;
@group(0) @binding(5) var<storage, read_write> saved: array<f32>;
@group(0) @binding(6) var<storage, read_write> h_seq: array<f32>;
@group(0) @binding(7) var<storage, read_write> h_prev: array<f32>;
@group(0) @binding(8) var<storage, read_write> h_last: array<f32>;
// Backward (also uses wrec, saved and h_prev).
@group(0) @binding(9) var<storage, read> dh_seq: array<f32>;
@group(0) @binding(10) var<storage, read> dh_last: array<f32>;
@group(0) @binding(11) var<storage, read_write> d_proj: array<f32>;
@group(0) @binding(12) var<storage, read_write> d_rec: array<f32>;
@group(0) @binding(13) var<storage, read_write> dh0: array<f32>;
// Forward and backward: the Keras mask [B, T] (a stand-in, never read, without p.has_mask).
@group(0) @binding(14) var<storage, read> mask: array<f32>;

var<workgroup> hbuf: array<f32, 2048>;
// Recurrent pre-activation gradients of the step just processed, [seqs, 3u] (3 * 1024 max).
var<workgroup> dgs: array<f32, 3072>;

// Whether step t of sequence b is masked out.
fn is_masked(b: u32, t: u32) -> bool {
    return p.has_mask != 0u && mask[b * p.steps + t] == 0.0;
}

@compute @workgroup_size(256)
fn gru_forward(
    @builtin(local_invocation_id) lid3: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let lid = lid3.x;
    let u = p.units;
    let g3 = 3u * u;
    let g4 = 4u * u;
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
                // The state passes through; the gates are unused (written for determinism).
                let row = b * p.steps + t;
                let hp = hbuf[cur + s * u + k];
                let sb = row * g4 + k;
                for (var j = 0u; j < 4u; j++) {
                    saved[sb + j * u] = 0.0;
                }
                h_seq[row * u + k] = select(hp, 0.0, p.zero_masked != 0u);
                h_prev[row * u + k] = hp;
                hbuf[nxt + s * u + k] = hp;
                if (t + 1u == p.steps) {
                    h_last[b * u + k] = hp;
                }
            } else if (b < p.batch) {
                let row = b * p.steps + t;
                var rz = brec[k];
                var rr = brec[u + k];
                var rh = brec[2u * u + k];
                let hb = cur + s * u;
                // Unrolled by 4 so 12 independent U loads are in flight (the step is bound
                // by L2 latency, not arithmetic).
                var m = 0u;
                for (; m + 4u <= u; m += 4u) {
                    let hv = vec4<f32>(hbuf[hb + m], hbuf[hb + m + 1u], hbuf[hb + m + 2u], hbuf[hb + m + 3u]);
                    let w = m * g3 + k;
                    rz += dot(hv, vec4<f32>(wrec[w], wrec[w + g3], wrec[w + 2u * g3], wrec[w + 3u * g3]));
                    let wr = w + u;
                    rr += dot(hv, vec4<f32>(wrec[wr], wrec[wr + g3], wrec[wr + 2u * g3], wrec[wr + 3u * g3]));
                    let wh = w + 2u * u;
                    rh += dot(hv, vec4<f32>(wrec[wh], wrec[wh + g3], wrec[wh + 2u * g3], wrec[wh + 3u * g3]));
                }
                for (; m < u; m++) {
                    let hv = hbuf[hb + m];
                    let w = m * g3 + k;
                    rz += hv * wrec[w];
                    rr += hv * wrec[w + u];
                    rh += hv * wrec[w + 2u * u];
                }
                let xb = row * g3 + k;
                let az = x_proj[xb] + rz;
                let ar = x_proj[xb + u] + rr;
                let z = act(p.rec_act, p.rec_alpha, az);
                let r = act(p.rec_act, p.rec_alpha, ar);
                // reset_after: the reset gate scales the recurrent term including its bias.
                let ah = x_proj[xb + 2u * u] + r * rh;
                let hh = act(p.act, p.act_alpha, ah);
                let hp = hbuf[hb + k];
                let h = z * hp + (1.0 - z) * hh;
                let sb = row * g4 + k;
                saved[sb] = az;
                saved[sb + u] = ar;
                saved[sb + 2u * u] = ah;
                saved[sb + 3u * u] = rh;
                h_seq[row * u + k] = h;
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

// Σ_j dgs[gb + j] · Uᵀ[j, k] over the 3u gate columns; four accumulators keep the loads
// independent instead of one serial FMA chain (3u need not be a multiple of 4: scalar tail).
fn dg_dot_ut(gb: u32, k: u32) -> f32 {
    let u = p.units;
    let g3 = 3u * u;
    var acc = vec4<f32>(0.0);
    var j = 0u;
    for (; j + 4u <= g3; j += 4u) {
        let dg = vec4<f32>(dgs[gb + j], dgs[gb + j + 1u], dgs[gb + j + 2u], dgs[gb + j + 3u]);
        let w = j * u + k;
        acc += dg * vec4<f32>(wrec[w], wrec[w + u], wrec[w + 2u * u], wrec[w + 3u * u]);
    }
    var sum = acc.x + acc.y + acc.z + acc.w;
    for (; j < g3; j++) {
        sum += dgs[gb + j] * wrec[j * u + k];
    }
    return sum;
}

@compute @workgroup_size(256)
fn gru_backward(
    @builtin(local_invocation_id) lid3: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let lid = lid3.x;
    let u = p.units;
    let g3 = 3u * u;
    let g4 = 4u * u;
    let n = p.seqs * u;
    let first = (wid.y * nwg.x + wid.x) * p.seqs;
    // Per owned pair (at most 1024 / 256 = 4): the direct-path gradient dh_{t+1} * z_{t+1}
    // into h_t, and dh of the current step (kept across the barrier that protects dgs).
    var carry: array<f32, 4>;
    var dh: array<f32, 4>;
    for (var i = 0u; i < 4u; i++) {
        carry[i] = 0.0;
    }
    for (var tt = 0u; tt < p.steps; tt++) {
        let t = p.steps - 1u - tt;
        // Phase 1: dh_t = external gradient + carry + dRec_{t+1} · Uᵀ (dRec_{t+1} is in dgs).
        var i = 0u;
        for (var q = lid; q < n; q += WG) {
            let s = q / u;
            let k = q % u;
            let b = first + s;
            var d = carry[i];
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
                    d += dg_dot_ut(s * g3, k);
                }
            }
            dh[i] = d;
            i++;
        }
        workgroupBarrier();
        // Phase 2: pre-activation gradients of step t, to d_proj / d_rec and to dgs for t-1.
        i = 0u;
        for (var q = lid; q < n; q += WG) {
            let s = q / u;
            let k = q % u;
            let b = first + s;
            if (b < p.batch && is_masked(b, t)) {
                // The state passed through unchanged: so does its gradient.
                let gb = (b * p.steps + t) * g3 + k;
                let lb = s * g3 + k;
                for (var j = 0u; j < 3u; j++) {
                    d_proj[gb + j * u] = 0.0;
                    d_rec[gb + j * u] = 0.0;
                    dgs[lb + j * u] = 0.0;
                }
                carry[i] = dh[i];
            } else if (b < p.batch) {
                let row = b * p.steps + t;
                let sb = row * g4 + k;
                let az = saved[sb];
                let ar = saved[sb + u];
                let ah = saved[sb + 2u * u];
                let rh = saved[sb + 3u * u];
                let z = act(p.rec_act, p.rec_alpha, az);
                let r = act(p.rec_act, p.rec_alpha, ar);
                let hh = act(p.act, p.act_alpha, ah);
                let hp = h_prev[row * u + k];
                let d = dh[i];
                let da_h = d * (1.0 - z) * act_grad(p.act, p.act_alpha, ah);
                let da_z = d * (hp - hh) * act_grad(p.rec_act, p.rec_alpha, az);
                let da_r = da_h * rh * act_grad(p.rec_act, p.rec_alpha, ar);
                let dr_h = da_h * r;
                carry[i] = d * z;
                let gb = row * g3 + k;
                d_proj[gb] = da_z;
                d_proj[gb + u] = da_r;
                d_proj[gb + 2u * u] = da_h;
                d_rec[gb] = da_z;
                d_rec[gb + u] = da_r;
                d_rec[gb + 2u * u] = dr_h;
                let lb = s * g3 + k;
                dgs[lb] = da_z;
                dgs[lb + u] = da_r;
                dgs[lb + 2u * u] = dr_h;
            }
            i++;
        }
        workgroupBarrier();
    }
    // Gradient wrt the initial state: the direct path plus dRec_0 · Uᵀ.
    var i = 0u;
    for (var q = lid; q < n; q += WG) {
        let s = q / u;
        let k = q % u;
        let b = first + s;
        if (b < p.batch) {
            var d = carry[i];
            if (p.steps > 0u) {
                d += dg_dot_ut(s * g3, k);
            }
            dh0[b * u + k] = d;
        }
        i++;
    }
}
