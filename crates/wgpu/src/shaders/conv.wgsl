// 64x64x16 tiling core of the implicit-GEMM conv (appended to conv_common.wgsl): 16x16
// threads, each accumulating a 4x4 block (rows ly + 16 i, columns lx + 16 j).

const TM: u32 = 64u;
const TN: u32 = 64u;
const TK: u32 = 16u;

var<workgroup> a_tile: array<f32, 1024>; // [TK][TM]
var<workgroup> b_tile: array<f32, 1024>; // [TK][TN]

fn gemm(mode: u32, wid_local: vec3<u32>, lid: vec3<u32>) {
    let wid = wid_local + vec3<u32>(p.off_x, p.off_y, p.off_z);
    let tid = lid.y * 16u + lid.x;
    let row0 = wid.y * TM;
    let col0 = wid.x * TN;
    // Named accumulators, not an indexed array (which drivers may keep in memory; see
    // matmul.wgsl).
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    let k_begin = wid.z * p.k_chunk;
    let k_end = min(k_begin + p.k_chunk, p.gk);
    for (var k0 = k_begin; k0 < k_end; k0 += TK) {
        for (var l = 0u; l < 4u; l++) {
            let e = tid + l * 256u;
            // Walk the dimension that is contiguous in memory with adjacent threads.
            var r = e / TK;
            var ka = e % TK;
            if (mode == BACKWARD_FILTER) {
                r = e % TM;
                ka = e / TM;
            }
            a_tile[ka * TM + r] = load_a(mode, row0 + r, k0 + ka);
            var cn = e % TN;
            var kb = e / TN;
            if (mode == BACKWARD_INPUT) {
                cn = e / TK;
                kb = e % TK;
            }
            b_tile[kb * TN + cn] = load_b(mode, k0 + kb, col0 + cn);
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            let ta = kk * TM + lid.y;
            let tb = kk * TN + lid.x;
            let av = vec4<f32>(a_tile[ta], a_tile[ta + 16u], a_tile[ta + 32u], a_tile[ta + 48u]);
            let bv = vec4<f32>(b_tile[tb], b_tile[tb + 16u], b_tile[tb + 32u], b_tile[tb + 48u]);
            acc0 = fma(vec4<f32>(av.x), bv, acc0);
            acc1 = fma(vec4<f32>(av.y), bv, acc1);
            acc2 = fma(vec4<f32>(av.z), bv, acc2);
            acc3 = fma(vec4<f32>(av.w), bv, acc3);
        }
        workgroupBarrier();
    }
    let base = wid.z * p.gm * p.gn;
    store_row(base, row0 + lid.y, col0 + lid.x, acc0);
    store_row(base, row0 + lid.y + 16u, col0 + lid.x, acc1);
    store_row(base, row0 + lid.y + 32u, col0 + lid.x, acc2);
    store_row(base, row0 + lid.y + 48u, col0 + lid.x, acc3);
}

// Writes a thread's four results of row r: columns c0, c0 + 16, c0 + 32, c0 + 48.
fn store_row(base: u32, r: u32, c0: u32, v: vec4<f32>) {
    if (r >= p.gm) {
        return;
    }
    let o = base + r * p.gn;
    if (c0 < p.gn) {
        out[o + c0] = v.x;
    }
    if (c0 + 16u < p.gn) {
        out[o + c0 + 16u] = v.y;
    }
    if (c0 + 32u < p.gn) {
        out[o + c0 + 32u] = v.z;
    }
    if (c0 + 48u < p.gn) {
        out[o + c0 + 48u] = v.w;
    }
}

@compute @workgroup_size(16, 16, 1)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    gemm(FORWARD, wid, lid);
}

@compute @workgroup_size(16, 16, 1)
fn backward_input(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    gemm(BACKWARD_INPUT, wid, lid);
}

@compute @workgroup_size(16, 16, 1)
fn backward_filter(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    gemm(BACKWARD_FILTER, wid, lid);
}

// Backward-filter for small kernels (gm * gn <= 1024 outputs, e.g. a first layer's
// [3, 3, 1, 32]): a GEMM tile would be mostly padding (9 x 32 useful of 64 x 64), so each
// thread owns up to 4 outputs and walks workgroup z's k chunk (k_chunk long) directly; adjacent
// threads read adjacent dy columns. Partial sums go to out[z * gm * gn ..] as for split-K.
// Each output's tap (ky, kx, ci) is decoded once and the position k = (n, oy, ox) is stepped
// incrementally, so the loop does no integer division (the generic gathers do 8 per term).

// One output weight of this thread: its tap offsets, input channel and output channel.
struct Tap {
    valid: bool,
    // ky * dh - pad_top and kx * dw - pad_left.
    y_off: i32,
    x_off: i32,
    ci: u32,
    co: u32,
}

fn tap_of(o: u32) -> Tap {
    var t: Tap;
    t.valid = o < p.gm * p.gn;
    let m = o / p.gn;
    t.co = o % p.gn;
    t.ci = m % p.cin;
    let kk = m / p.cin;
    t.y_off = i32((kk / p.kw) * p.dh) - i32(p.pad_top);
    t.x_off = i32((kk % p.kw) * p.dw) - i32(p.pad_left);
    return t;
}

// x at this tap for output position (nb, oy, ox), times dy[k, co]; 0 in the padding.
fn tap_term(t: Tap, nb: u32, oy: u32, ox: u32, dy_row: u32) -> f32 {
    if (!t.valid) {
        return 0.0;
    }
    let iy = i32(oy * p.sh) + t.y_off;
    let ix = i32(ox * p.sw) + t.x_off;
    if (iy < 0 || ix < 0 || iy >= i32(p.h) || ix >= i32(p.w)) {
        return 0.0;
    }
    return src_a[((nb * p.h + u32(iy)) * p.w + u32(ix)) * p.cin + t.ci] * src_b[dy_row + t.co];
}

@compute @workgroup_size(256)
fn backward_filter_small(@builtin(workgroup_id) wid_local: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let z = wid_local.z + p.off_z;
    let outs = p.gm * p.gn;
    let k_begin = z * p.k_chunk;
    let k_end = min(k_begin + p.k_chunk, p.gk);
    let t0 = tap_of(lid.x);
    let t1 = tap_of(lid.x + 256u);
    let t2 = tap_of(lid.x + 512u);
    let t3 = tap_of(lid.x + 768u);
    var acc0 = 0.0;
    var acc1 = 0.0;
    var acc2 = 0.0;
    var acc3 = 0.0;
    let plane = p.oh * p.ow;
    var nb = k_begin / plane;
    var oy = (k_begin % plane) / p.ow;
    var ox = k_begin % p.ow;
    for (var k = k_begin; k < k_end; k++) {
        let dy_row = k * p.gn;
        acc0 += tap_term(t0, nb, oy, ox, dy_row);
        acc1 += tap_term(t1, nb, oy, ox, dy_row);
        acc2 += tap_term(t2, nb, oy, ox, dy_row);
        acc3 += tap_term(t3, nb, oy, ox, dy_row);
        ox += 1u;
        if (ox == p.ow) {
            ox = 0u;
            oy += 1u;
            if (oy == p.oh) {
                oy = 0u;
                nb += 1u;
            }
        }
    }
    let base = z * outs;
    if (t0.valid) {
        out[base + lid.x] = acc0;
    }
    if (t1.valid) {
        out[base + lid.x + 256u] = acc1;
    }
    if (t2.valid) {
        out[base + lid.x + 512u] = acc2;
    }
    if (t3.valid) {
        out[base + lid.x + 768u] = acc3;
    }
}

// Forward for a short k (kh * kw * cin <= 64, the kernel at most SMALL_FORWARD_WEIGHTS
// weights: a first layer's [3, 3, 1, 32] or [3, 3, 3, 64]) as a direct convolution. A 64x64x16
// GEMM tile over k = 9 and 32 columns does a quarter of useful work, and the output (the
// layer's largest tensor) is then read twice more by bias_add. Here the kernel sits in
// workgroup memory, each thread owns 4 adjacent output channels of one pixel (adjacent
// threads write adjacent memory), and the bias is added before the single store.

@group(0) @binding(4) var<storage, read> bias: array<f32>;

// SMALL_FORWARD_WEIGHTS in kernels/conv.rs, plus 3 so the last group's vec4 read stays in
// bounds (lanes past cout are never stored).
var<workgroup> w_small: array<f32, 2051>;

@compute @workgroup_size(256)
fn forward_small(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    for (var i = lid.x; i < p.gk * p.gn; i += 256u) {
        w_small[i] = src_b[i];
    }
    workgroupBarrier();
    let groups = (p.gn + 3u) / 4u;
    let e = (wid.x + p.off_x) * 256u + lid.x;
    if (e >= p.gm * groups) {
        return;
    }
    let m = e / groups;
    let c = (e % groups) * 4u;
    let ox = m % p.ow;
    let t = m / p.ow;
    let oy = t % p.oh;
    let nb = t / p.oh;
    var acc = vec4<f32>(0.0);
    var k = 0u;
    for (var ky = 0u; ky < p.kh; ky++) {
        for (var kx = 0u; kx < p.kw; kx++) {
            for (var ci = 0u; ci < p.cin; ci++) {
                let xv = gather_x(nb, oy, ox, ky, kx, ci);
                let wi = k * p.gn + c;
                acc = fma(vec4<f32>(xv), vec4<f32>(w_small[wi], w_small[wi + 1u], w_small[wi + 2u], w_small[wi + 3u]), acc);
                k++;
            }
        }
    }
    let o = m * p.gn + c;
    for (var j = 0u; j < 4u; j++) {
        if (c + j < p.gn) {
            var v = acc[j];
            if (p.has_bias != 0u) {
                v += bias[c + j];
            }
            out[o + j] = v;
        }
    }
}
