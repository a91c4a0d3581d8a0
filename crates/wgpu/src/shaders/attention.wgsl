// Fused (flash) scaled dot-product attention, forward and backward, f32.
//
// This file is not complete WGSL on its own: the shader registry (src/source.rs) prepends
// attention_d32.wgsl or attention_d64.wgsl (the head-dim bound HD and the `Row` type holding
// one row of HD floats in registers, with its straight-line arithmetic) and registers the
// results as `attention_d32` / `attention_d64`. Head dims below HD are zero padded on load
// (zeros change no dot product) and masked on store.
//
// Layout: q, out, dout are [batch, seq_q, heads, d]; k, v, dk, dv are [batch, seq_k, heads, d]
// (the natural output of a projection GEMM on [batch, seq, heads * d], so no head-splitting
// transpose is needed). lse and delta are [batch, heads, seq_q].
// Scores are kept in the log2 domain (q pre-multiplied by scale * log2(e)) so the softmax
// uses exp2; lse is stored in natural-log units: lse = log(sum_j exp(scale * q.k_j)).
// Causal masking is top-left aligned: query i sees keys j <= i.
//
// Grid: x = row tile (64 query rows for forward / backward_dq, 64 key rows for
// backward_dkdv), y = batch * heads. One thread owns one row; the other operand is streamed
// through workgroup memory in tiles of KT rows, so the seq_q x seq_k score matrix never exists.

const HD4: u32 = HD / 4u;
// Rows per staged tile: two tiles of KT x HD floats take 16 KiB of workgroup memory.
const KT: u32 = 2048u / HD;
// Rows per workgroup (one per thread).
const BR: u32 = 64u;
const LOG2E: f32 = 1.4426950408889634;
const LN2: f32 = 0.6931471805599453;
// Score of a masked key: far below any real score and below the initial running max, so
// exp2(MASKED - max) is exactly 0 and never NaN.
const MASKED: f32 = -3.0e38;
const INIT_MAX: f32 = -1.0e30;

struct Params {
    batch: u32,
    heads: u32,
    seq_q: u32,
    seq_k: u32,
    // Actual head dim (<= HD).
    d: u32,
    causal: u32,
    _pad0: u32,
    _pad1: u32,
    // softmax scale * log2(e).
    scale_log2: f32,
    // softmax scale (1 / sqrt(d) by default).
    scale: f32,
    _pad2: f32,
    _pad3: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<storage, read_write> lse: array<f32>;
@group(0) @binding(6) var<storage, read> out_in: array<f32>;
@group(0) @binding(7) var<storage, read> dout: array<f32>;
@group(0) @binding(8) var<storage, read> lse_in: array<f32>;
@group(0) @binding(9) var<storage, read_write> delta: array<f32>;
@group(0) @binding(10) var<storage, read_write> dq: array<f32>;
@group(0) @binding(11) var<storage, read> delta_in: array<f32>;
@group(0) @binding(12) var<storage, read_write> dk: array<f32>;
@group(0) @binding(13) var<storage, read_write> dv: array<f32>;

// Staged tiles: K and V (forward, backward_dq) or scaled Q and dO (backward_dkdv).
var<workgroup> tile_a: array<vec4<f32>, KT * HD4>;
var<workgroup> tile_b: array<vec4<f32>, KT * HD4>;
// Per staged query row (backward_dkdv): lse * log2(e) and delta.
var<workgroup> row_lse: array<f32, KT>;
var<workgroup> row_delta: array<f32, KT>;

// Element offset of row `s` of head `bh` (= b * heads + h) in a [batch, seq, heads, d] tensor.
fn row_base(bh: u32, s: u32, seq: u32) -> u32 {
    let b = bh / p.heads;
    let h = bh % p.heads;
    return ((b * seq + s) * p.heads + h) * p.d;
}

// Zero-padded 4-float loads of columns c..c+4 of a row (one function per buffer: WGSL
// cannot pass storage arrays by pointer without an extension).
fn ld_q(base: u32, c: u32) -> vec4<f32> {
    var r = vec4<f32>(0.0);
    for (var e = 0u; e < 4u; e++) {
        if (c + e < p.d) {
            r[e] = q[base + c + e];
        }
    }
    return r;
}

fn ld_k(base: u32, c: u32) -> vec4<f32> {
    var r = vec4<f32>(0.0);
    for (var e = 0u; e < 4u; e++) {
        if (c + e < p.d) {
            r[e] = k[base + c + e];
        }
    }
    return r;
}

fn ld_v(base: u32, c: u32) -> vec4<f32> {
    var r = vec4<f32>(0.0);
    for (var e = 0u; e < 4u; e++) {
        if (c + e < p.d) {
            r[e] = v[base + c + e];
        }
    }
    return r;
}

fn ld_out(base: u32, c: u32) -> vec4<f32> {
    var r = vec4<f32>(0.0);
    for (var e = 0u; e < 4u; e++) {
        if (c + e < p.d) {
            r[e] = out_in[base + c + e];
        }
    }
    return r;
}

fn ld_dout(base: u32, c: u32) -> vec4<f32> {
    var r = vec4<f32>(0.0);
    for (var e = 0u; e < 4u; e++) {
        if (c + e < p.d) {
            r[e] = dout[base + c + e];
        }
    }
    return r;
}

fn dot4(a: vec4<f32>) -> f32 {
    return a.x + a.y + a.z + a.w;
}

// Sum of the elementwise products of two 4x4 blocks.
fn mdot(x: mat4x4<f32>, y: mat4x4<f32>) -> f32 {
    return dot(x[0], y[0]) + dot(x[1], y[1]) + dot(x[2], y[2]) + dot(x[3], y[3]);
}

// Row loads (zero padded past d); the temporary array is touched once per row, outside the
// hot loops.
fn load_q(base: u32) -> Row {
    var t: array<vec4<f32>, HD4>;
    for (var c = 0u; c < HD4; c++) {
        t[c] = ld_q(base, c * 4u);
    }
    return row_pack(t);
}

fn load_k(base: u32) -> Row {
    var t: array<vec4<f32>, HD4>;
    for (var c = 0u; c < HD4; c++) {
        t[c] = ld_k(base, c * 4u);
    }
    return row_pack(t);
}

fn load_v(base: u32) -> Row {
    var t: array<vec4<f32>, HD4>;
    for (var c = 0u; c < HD4; c++) {
        t[c] = ld_v(base, c * 4u);
    }
    return row_pack(t);
}

fn load_dout(base: u32) -> Row {
    var t: array<vec4<f32>, HD4>;
    for (var c = 0u; c < HD4; c++) {
        t[c] = ld_dout(base, c * 4u);
    }
    return row_pack(t);
}

fn load_out(base: u32) -> Row {
    var t: array<vec4<f32>, HD4>;
    for (var c = 0u; c < HD4; c++) {
        t[c] = ld_out(base, c * 4u);
    }
    return row_pack(t);
}

// Stages K and V rows j0..j0+KT of head bh into tile_a / tile_b (zeros past seq_k).
fn stage_kv(bh: u32, j0: u32, lid: u32) {
    for (var g = lid; g < KT * HD4; g += BR) {
        let j = j0 + g / HD4;
        let c = (g % HD4) * 4u;
        var kk = vec4<f32>(0.0);
        var vv = vec4<f32>(0.0);
        if (j < p.seq_k) {
            let base = row_base(bh, j, p.seq_k);
            kk = ld_k(base, c);
            vv = ld_v(base, c);
        }
        tile_a[g] = kk;
        tile_b[g] = vv;
    }
}

// Keys the query tile starting at q0 needs: all of them, or (causal) up to its last query.
fn key_end(q0: u32) -> u32 {
    if (p.causal != 0u) {
        return min(p.seq_k, min(q0 + BR, p.seq_q));
    }
    return p.seq_k;
}

fn key_visible(i: u32, j: u32) -> bool {
    return j < p.seq_k && (p.causal == 0u || j <= i);
}

// out = softmax(scale * q k^T) v, lse = row logsumexp of the scaled scores.
@compute @workgroup_size(64)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let bh = wid.y;
    let q0 = wid.x * BR;
    let i = q0 + lid.x;
    let qr = row_scale(load_q(row_base(bh, min(i, p.seq_q - 1u), p.seq_q)), p.scale_log2);
    var acc = row_zero();
    var m = INIT_MAX;
    var l = 0.0;
    let kend = key_end(q0);
    for (var j0 = 0u; j0 < kend; j0 += KT) {
        // The previous tile must be consumed before it is overwritten.
        workgroupBarrier();
        stage_kv(bh, j0, lid.x);
        workgroupBarrier();
        // Online softmax four keys at a time: one rescale of the accumulator per four keys.
        for (var r = 0u; r < KT; r += 4u) {
            let j = j0 + r;
            let raw = vec4<f32>(
                row_dot(qr, tile_a_row(r)),
                row_dot(qr, tile_a_row(r + 1u)),
                row_dot(qr, tile_a_row(r + 2u)),
                row_dot(qr, tile_a_row(r + 3u)),
            );
            let vis = vec4<bool>(key_visible(i, j), key_visible(i, j + 1u), key_visible(i, j + 2u), key_visible(i, j + 3u));
            let s = select(vec4<f32>(MASKED), raw, vis);
            let mt = max(m, max(max(s.x, s.y), max(s.z, s.w)));
            let corr = exp2(m - mt);
            let pv = exp2(s - vec4<f32>(mt));
            l = l * corr + dot4(pv);
            acc = row_scale(acc, corr);
            acc = row_axpy(pv.x, tile_b_row(r), acc);
            acc = row_axpy(pv.y, tile_b_row(r + 1u), acc);
            acc = row_axpy(pv.z, tile_b_row(r + 2u), acc);
            acc = row_axpy(pv.w, tile_b_row(r + 3u), acc);
            m = mt;
        }
    }
    if (i < p.seq_q) {
        let base = row_base(bh, i, p.seq_q);
        var a = row_unpack(row_scale(acc, 1.0 / l));
        for (var c = 0u; c < HD4; c++) {
            for (var e = 0u; e < 4u; e++) {
                if (c * 4u + e < p.d) {
                    out[base + c * 4u + e] = a[c][e];
                }
            }
        }
        lse[bh * p.seq_q + i] = (m + log2(l)) * LN2;
    }
}

// dq = scale * sum_j ds_ij k_j with ds_ij = p_ij (dout_i . v_j - delta_i), p recomputed from
// the saved lse; also writes delta_i = dout_i . out_i for backward_dkdv.
@compute @workgroup_size(64)
fn backward_dq(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let bh = wid.y;
    let q0 = wid.x * BR;
    let i = q0 + lid.x;
    let ic = min(i, p.seq_q - 1u);
    let base = row_base(bh, ic, p.seq_q);
    let qr = row_scale(load_q(base), p.scale_log2);
    let dor = load_dout(base);
    let dl = row_dot(dor, load_out(base));
    let lse2 = lse_in[bh * p.seq_q + ic] * LOG2E;
    if (i < p.seq_q) {
        delta[bh * p.seq_q + i] = dl;
    }
    var acc = row_zero();
    let kend = key_end(q0);
    for (var j0 = 0u; j0 < kend; j0 += KT) {
        workgroupBarrier();
        stage_kv(bh, j0, lid.x);
        workgroupBarrier();
        for (var r = 0u; r < KT; r++) {
            let kr = tile_a_row(r);
            let pr = select(0.0, exp2(row_dot(qr, kr) - lse2), key_visible(i, j0 + r));
            let ds = pr * (row_dot(dor, tile_b_row(r)) - dl);
            acc = row_axpy(ds, kr, acc);
        }
    }
    if (i < p.seq_q) {
        var a = row_unpack(row_scale(acc, p.scale));
        for (var c = 0u; c < HD4; c++) {
            for (var e = 0u; e < 4u; e++) {
                if (c * 4u + e < p.d) {
                    dq[base + c * 4u + e] = a[c][e];
                }
            }
        }
    }
}

// dv_j = sum_i p_ij dout_i and dk_j = scale * sum_i ds_ij q_i, one key row per thread with
// query rows (scaled q, dout, lse, delta) streamed through workgroup memory.
@compute @workgroup_size(64)
fn backward_dkdv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let bh = wid.y;
    let k0 = wid.x * BR;
    let j = k0 + lid.x;
    let base = row_base(bh, min(j, p.seq_k - 1u), p.seq_k);
    let kr = load_k(base);
    let vr = load_v(base);
    var dka = row_zero();
    var dva = row_zero();
    // Causal: queries before the tile's first key see none of its keys.
    var istart = 0u;
    if (p.causal != 0u) {
        istart = k0;
    }
    for (var i0 = istart; i0 < p.seq_q; i0 += KT) {
        workgroupBarrier();
        for (var g = lid.x; g < KT * HD4; g += BR) {
            let i = i0 + g / HD4;
            let c = (g % HD4) * 4u;
            var qq = vec4<f32>(0.0);
            var dd = vec4<f32>(0.0);
            if (i < p.seq_q) {
                let qb = row_base(bh, i, p.seq_q);
                qq = ld_q(qb, c) * p.scale_log2;
                dd = ld_dout(qb, c);
            }
            tile_a[g] = qq;
            tile_b[g] = dd;
        }
        for (var r = lid.x; r < KT; r += BR) {
            let i = min(i0 + r, p.seq_q - 1u);
            row_lse[r] = lse_in[bh * p.seq_q + i] * LOG2E;
            row_delta[r] = delta_in[bh * p.seq_q + i];
        }
        workgroupBarrier();
        for (var r = 0u; r < KT; r++) {
            let i = i0 + r;
            let qr = tile_a_row(r);
            let dr = tile_b_row(r);
            let visible = i < p.seq_q && (p.causal == 0u || j <= i);
            let pr = select(0.0, exp2(row_dot(kr, qr) - row_lse[r]), visible);
            let ds = pr * (row_dot(vr, dr) - row_delta[r]);
            dva = row_axpy(pr, dr, dva);
            dka = row_axpy(ds, qr, dka);
        }
    }
    if (j < p.seq_k) {
        // tile_a held q * scale * log2(e); dk needs q * scale.
        var a = row_unpack(row_scale(dka, LN2));
        var b = row_unpack(dva);
        for (var c = 0u; c < HD4; c++) {
            for (var e = 0u; e < 4u; e++) {
                if (c * 4u + e < p.d) {
                    dk[base + c * 4u + e] = a[c][e];
                    dv[base + c * 4u + e] = b[c][e];
                }
            }
        }
    }
}
