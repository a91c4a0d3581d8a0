// Batched GEMM, scalar loads: C[b] = op(A[b]) * op(B[b]), op = optional transpose.
// A is M x K (stored K x M when trans_a), B is K x N (stored N x K when trans_b), C is M x N.
// 64x64 output tile per workgroup of 16x16 threads, K in steps of 16 through workgroup
// memory; each thread accumulates a 4x4 block (rows ly + 16 i, columns lx + 16 j).

struct Params {
    m: u32,
    n: u32,
    k: u32,
    batch: u32,
    trans_a: u32,
    trans_b: u32,
    stride_a: u32,
    stride_b: u32,
    stride_c: u32,
    // Split-K (batch 1 only): when > 0, workgroup z sums k in [z * k_chunk, (z + 1) * k_chunk)
    // (a multiple of 16) and writes its partial C at z * stride_c; the host sums the partials.
    k_chunk: u32,
    // Workgroup offset of this dispatch: grids larger than the per-dimension limit are
    // recorded as several dispatches, each covering a slice of the tiles.
    off_x: u32,
    off_y: u32,
    off_z: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

const TM: u32 = 64u;
const TN: u32 = 64u;
const TK: u32 = 16u;

var<workgroup> a_tile: array<f32, 1024>; // [TK][TM]
var<workgroup> b_tile: array<f32, 1024>; // [TK][TN]

fn load_a(base: u32, row: u32, kk: u32) -> f32 {
    if (row >= p.m || kk >= p.k) {
        return 0.0;
    }
    if (p.trans_a == 0u) {
        return a[base + row * p.k + kk];
    }
    return a[base + kk * p.m + row];
}

fn load_b(base: u32, kk: u32, col: u32) -> f32 {
    if (kk >= p.k || col >= p.n) {
        return 0.0;
    }
    if (p.trans_b == 0u) {
        return b[base + kk * p.n + col];
    }
    return b[base + col * p.k + kk];
}

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(workgroup_id) wid_local: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let wid = wid_local + vec3<u32>(p.off_x, p.off_y, p.off_z);
    let tid = lid.y * 16u + lid.x;
    let row0 = wid.y * TM;
    let col0 = wid.x * TN;
    var bz = wid.z;
    var k_begin = 0u;
    var k_end = p.k;
    if (p.k_chunk > 0u) {
        bz = 0u;
        k_begin = wid.z * p.k_chunk;
        k_end = min(k_begin + p.k_chunk, p.k);
    }
    let base_a = bz * p.stride_a;
    let base_b = bz * p.stride_b;
    let base_c = wid.z * p.stride_c;
    // Four named vec4 accumulators (row i, columns j = 0..3), never an indexed array: drivers
    // put a dynamically indexed local array in memory, which made this kernel ~100x slower
    // than its arithmetic on an H200 (5 ms for [8192, 1600] x [1600, 10]).
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var k0 = k_begin; k0 < k_end; k0 += TK) {
        for (var l = 0u; l < 4u; l++) {
            let e = tid + l * 256u;
            // Coalesce along whichever dimension is contiguous in memory.
            var r: u32;
            var ka: u32;
            if (p.trans_a == 0u) {
                r = e / TK;
                ka = e % TK;
            } else {
                r = e % TM;
                ka = e / TM;
            }
            a_tile[ka * TM + r] = load_a(base_a, row0 + r, k0 + ka);
            var cn: u32;
            var kb: u32;
            if (p.trans_b == 0u) {
                cn = e % TN;
                kb = e / TN;
            } else {
                cn = e / TK;
                kb = e % TK;
            }
            b_tile[kb * TN + cn] = load_b(base_b, k0 + kb, col0 + cn);
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
    store_row(base_c, row0 + lid.y, col0 + lid.x, acc0);
    store_row(base_c, row0 + lid.y + 16u, col0 + lid.x, acc1);
    store_row(base_c, row0 + lid.y + 32u, col0 + lid.x, acc2);
    store_row(base_c, row0 + lid.y + 48u, col0 + lid.x, acc3);
}

// Writes a thread's four results of row r: columns c0, c0 + 16, c0 + 32, c0 + 48.
fn store_row(base_c: u32, r: u32, c0: u32, v: vec4<f32>) {
    if (r >= p.m) {
        return;
    }
    let o = base_c + r * p.n;
    if (c0 < p.n) {
        c[o + c0] = v.x;
    }
    if (c0 + 16u < p.n) {
        c[o + c0 + 16u] = v.y;
    }
    if (c0 + 32u < p.n) {
        c[o + c0 + 32u] = v.z;
    }
    if (c0 + 48u < p.n) {
        c[o + c0 + 48u] = v.w;
    }
}
