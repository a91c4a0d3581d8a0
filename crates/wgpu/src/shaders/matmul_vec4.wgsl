// Batched GEMM with vec4 loads and stores: C[b] = op(A[b]) * op(B[b]), op = optional transpose.
// Requires the contiguous (stored) row length of A and of B, N, and the batch strides to be
// multiples of 4 (the Rust side checks this and otherwise uses matmul.wgsl). Same 64x64x16
// tiling as matmul.wgsl; each thread accumulates rows ly + 16 i (i < 4) times the 4
// contiguous columns 4 lx .. 4 lx + 3, so C is written with vec4 stores.

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
@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> c: array<vec4<f32>>;

const TM: u32 = 64u;
const TK: u32 = 16u;

var<workgroup> a_tile: array<f32, 1024>; // [TK][TM]
var<workgroup> b_tile: array<vec4<f32>, 256>; // [TK][TN / 4]

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(workgroup_id) wid_local: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let wid = wid_local + vec3<u32>(p.off_x, p.off_y, p.off_z);
    let tid = lid.y * 16u + lid.x;
    let row0 = wid.y * TM;
    let col0 = wid.x * 64u;
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
    // Named accumulators, not an indexed array (which drivers may keep in memory; see
    // matmul.wgsl).
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var k0 = k_begin; k0 < k_end; k0 += TK) {
        // A tile: 16 k x 64 m = 256 vec4 loads, one per thread, along A's stored rows.
        if (p.trans_a == 0u) {
            // A stored m x k: vec4 over k.
            let r = tid / 4u;
            let kq = (tid % 4u) * 4u;
            var av = vec4<f32>(0.0);
            if (row0 + r < p.m && k0 + kq < p.k) {
                av = a[(base_a + (row0 + r) * p.k + k0 + kq) / 4u];
            }
            for (var i = 0u; i < 4u; i++) {
                a_tile[(kq + i) * TM + r] = av[i];
            }
        } else {
            // A stored k x m: vec4 over m.
            let kr = tid / 16u;
            let mq = (tid % 16u) * 4u;
            var av = vec4<f32>(0.0);
            if (k0 + kr < p.k && row0 + mq < p.m) {
                av = a[(base_a + (k0 + kr) * p.m + row0 + mq) / 4u];
            }
            for (var i = 0u; i < 4u; i++) {
                a_tile[kr * TM + mq + i] = av[i];
            }
        }
        // B tile: 16 k x 64 n = 256 vec4 loads.
        if (p.trans_b == 0u) {
            // B stored k x n: vec4 over n.
            let kr = tid / 16u;
            let nq = tid % 16u;
            var bv = vec4<f32>(0.0);
            if (k0 + kr < p.k && col0 + nq * 4u < p.n) {
                bv = b[(base_b + (k0 + kr) * p.n + col0 + nq * 4u) / 4u];
            }
            b_tile[kr * 16u + nq] = bv;
        } else {
            // B stored n x k: vec4 over k, scattered into the n-vectors of the tile.
            let cn = tid / 4u;
            let kq = (tid % 4u) * 4u;
            var bv = vec4<f32>(0.0);
            if (col0 + cn < p.n && k0 + kq < p.k) {
                bv = b[(base_b + (col0 + cn) * p.k + k0 + kq) / 4u];
            }
            for (var i = 0u; i < 4u; i++) {
                b_tile[(kq + i) * 16u + cn / 4u][cn % 4u] = bv[i];
            }
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            let bvec = b_tile[kk * 16u + lid.x];
            let ta = kk * TM + lid.y;
            acc0 = fma(vec4<f32>(a_tile[ta]), bvec, acc0);
            acc1 = fma(vec4<f32>(a_tile[ta + 16u]), bvec, acc1);
            acc2 = fma(vec4<f32>(a_tile[ta + 32u]), bvec, acc2);
            acc3 = fma(vec4<f32>(a_tile[ta + 48u]), bvec, acc3);
        }
        workgroupBarrier();
    }
    let cn = col0 + lid.x * 4u;
    store4(base_c, row0 + lid.y, cn, acc0);
    store4(base_c, row0 + lid.y + 16u, cn, acc1);
    store4(base_c, row0 + lid.y + 32u, cn, acc2);
    store4(base_c, row0 + lid.y + 48u, cn, acc3);
}

fn store4(base_c: u32, r: u32, cn: u32, v: vec4<f32>) {
    if (r < p.m && cn < p.n) {
        c[(base_c + r * p.n + cn) / 4u] = v;
    }
}
