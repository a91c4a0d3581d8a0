// 128x128 tiling core of the implicit-GEMM conv (appended to conv_common.wgsl; source.rs
// prepends `const BK: u32 = 8u;` or `16u;`). Same scheme as matmul_t128.wgsl: 256 threads,
// 8x8 outputs each in 16 vec4 registers, both operands staged as [BK][128] in double-buffered
// workgroup memory, the next slab's gathers issued before the FMAs on the current one. The
// gathers are scalar (implicit GEMM), BK / 2 per operand per thread per slab.

const TILE: u32 = 128u;
// vec4s per 128-wide row of a staged slab.
const TV: u32 = 32u;
// vec4s per operand per buffer.
const STAGE: u32 = BK * TV;
// Scalar gathers per thread per operand per slab: BK * 128 / 256.
const LOADS: u32 = BK / 2u;
// Tile rows per raster group (see matmul_t128.wgsl).
const GROUP_M: u32 = 8u;

var<workgroup> a_s: array<vec4<f32>, 2u * STAGE>; // [buffer][BK][128 m / 4]
var<workgroup> b_s: array<vec4<f32>, 2u * STAGE>; // [buffer][BK][128 n / 4]

// (tile row, slab k) of A element e: adjacent threads walk the dimension contiguous in memory.
fn a_pos(mode: u32, e: u32) -> vec2<u32> {
    if (mode == BACKWARD_FILTER) {
        return vec2<u32>(e % TILE, e / TILE);
    }
    return vec2<u32>(e / BK, e % BK);
}

// (tile column, slab k) of B element e.
fn b_pos(mode: u32, e: u32) -> vec2<u32> {
    if (mode == BACKWARD_INPUT) {
        return vec2<u32>(e / BK, e % BK);
    }
    return vec2<u32>(e % TILE, e / TILE);
}

fn put_a(s0: u32, pos: vec2<u32>, v: f32) {
    a_s[s0 + pos.y * TV + pos.x / 4u][pos.x % 4u] = v;
}

fn put_b(s0: u32, pos: vec2<u32>, v: f32) {
    b_s[s0 + pos.y * TV + pos.x / 4u][pos.x % 4u] = v;
}

// One row of the thread's 8x8 block: columns c0 .. c0 + 3 and c0 + 64 .. c0 + 67 (gn need
// not be a multiple of 4, so scalar stores).
fn store_row(base: u32, r: u32, c0: u32, v0: vec4<f32>, v1: vec4<f32>) {
    if (r >= p.gm) {
        return;
    }
    let rb = base + r * p.gn;
    for (var j = 0u; j < 4u; j++) {
        if (c0 + j < p.gn) {
            out[rb + c0 + j] = v0[j];
        }
        if (c0 + 64u + j < p.gn) {
            out[rb + c0 + 64u + j] = v1[j];
        }
    }
}

fn gemm(mode: u32, wid_local: vec3<u32>, tid: u32) {
    let wid = wid_local + vec3<u32>(p.off_x, p.off_y, p.off_z);
    // Grouped rasterization: remap the (column tile, row tile) grid, a bijection.
    let gx = (p.gn + TILE - 1u) / TILE;
    let gy = (p.gm + TILE - 1u) / TILE;
    let lin = wid.y * gx + wid.x;
    let first_m = (lin / (GROUP_M * gx)) * GROUP_M;
    let gsize = min(gy - first_m, GROUP_M);
    let local = lin % (GROUP_M * gx);
    let row0 = (first_m + local % gsize) * TILE;
    let col0 = (local / gsize) * TILE;
    let tx = tid % 16u;
    let ty = tid / 16u;
    let k_begin = wid.z * p.k_chunk;
    let k_end = min(k_begin + p.k_chunk, p.gk);

    var ra: array<f32, LOADS>;
    var rb: array<f32, LOADS>;
    for (var l = 0u; l < LOADS; l++) {
        let e = tid + l * 256u;
        let pa = a_pos(mode, e);
        let pb = b_pos(mode, e);
        put_a(0u, pa, load_a(mode, row0 + pa.x, k_begin + pa.y));
        put_b(0u, pb, load_b(mode, k_begin + pb.y, col0 + pb.x));
    }
    workgroupBarrier();

    var c00 = vec4<f32>(0.0);
    var c01 = vec4<f32>(0.0);
    var c10 = vec4<f32>(0.0);
    var c11 = vec4<f32>(0.0);
    var c20 = vec4<f32>(0.0);
    var c21 = vec4<f32>(0.0);
    var c30 = vec4<f32>(0.0);
    var c31 = vec4<f32>(0.0);
    var c40 = vec4<f32>(0.0);
    var c41 = vec4<f32>(0.0);
    var c50 = vec4<f32>(0.0);
    var c51 = vec4<f32>(0.0);
    var c60 = vec4<f32>(0.0);
    var c61 = vec4<f32>(0.0);
    var c70 = vec4<f32>(0.0);
    var c71 = vec4<f32>(0.0);
    var s0 = 0u;
    for (var k0 = k_begin; k0 < k_end; k0 += BK) {
        let k1 = k0 + BK;
        let more = k1 < k_end;
        // Issue the next slab's gathers now; they land while the FMAs below run.
        if (more) {
            for (var l = 0u; l < LOADS; l++) {
                let e = tid + l * 256u;
                let pa = a_pos(mode, e);
                let pb = b_pos(mode, e);
                ra[l] = load_a(mode, row0 + pa.x, k1 + pa.y);
                rb[l] = load_b(mode, k1 + pb.y, col0 + pb.x);
            }
        }
        // Constant trip count: drivers unroll this fully.
        for (var kk = 0u; kk < BK; kk++) {
            let ka = s0 + kk * TV;
            let a0 = a_s[ka + ty];
            let a1 = a_s[ka + 16u + ty];
            let b0 = b_s[ka + tx];
            let b1 = b_s[ka + 16u + tx];
            c00 = fma(vec4<f32>(a0.x), b0, c00);
            c01 = fma(vec4<f32>(a0.x), b1, c01);
            c10 = fma(vec4<f32>(a0.y), b0, c10);
            c11 = fma(vec4<f32>(a0.y), b1, c11);
            c20 = fma(vec4<f32>(a0.z), b0, c20);
            c21 = fma(vec4<f32>(a0.z), b1, c21);
            c30 = fma(vec4<f32>(a0.w), b0, c30);
            c31 = fma(vec4<f32>(a0.w), b1, c31);
            c40 = fma(vec4<f32>(a1.x), b0, c40);
            c41 = fma(vec4<f32>(a1.x), b1, c41);
            c50 = fma(vec4<f32>(a1.y), b0, c50);
            c51 = fma(vec4<f32>(a1.y), b1, c51);
            c60 = fma(vec4<f32>(a1.z), b0, c60);
            c61 = fma(vec4<f32>(a1.z), b1, c61);
            c70 = fma(vec4<f32>(a1.w), b0, c70);
            c71 = fma(vec4<f32>(a1.w), b1, c71);
        }
        // The other buffer was last read before the previous barrier, so it is free.
        let s1 = STAGE - s0;
        if (more) {
            for (var l = 0u; l < LOADS; l++) {
                let e = tid + l * 256u;
                put_a(s1, a_pos(mode, e), ra[l]);
                put_b(s1, b_pos(mode, e), rb[l]);
            }
        }
        workgroupBarrier();
        s0 = s1;
    }

    let base = wid.z * p.gm * p.gn;
    store_row(base, row0 + ty * 4u + 0u, col0 + tx * 4u, c00, c01);
    store_row(base, row0 + ty * 4u + 1u, col0 + tx * 4u, c10, c11);
    store_row(base, row0 + ty * 4u + 2u, col0 + tx * 4u, c20, c21);
    store_row(base, row0 + ty * 4u + 3u, col0 + tx * 4u, c30, c31);
    store_row(base, row0 + 64u + ty * 4u + 0u, col0 + tx * 4u, c40, c41);
    store_row(base, row0 + 64u + ty * 4u + 1u, col0 + tx * 4u, c50, c51);
    store_row(base, row0 + 64u + ty * 4u + 2u, col0 + tx * 4u, c60, c61);
    store_row(base, row0 + 64u + ty * 4u + 3u, col0 + tx * 4u, c70, c71);
}

@compute @workgroup_size(256, 1, 1)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    gemm(FORWARD, wid, tid);
}

@compute @workgroup_size(256, 1, 1)
fn backward_input(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    gemm(BACKWARD_INPUT, wid, tid);
}

@compute @workgroup_size(256, 1, 1)
fn backward_filter(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    gemm(BACKWARD_FILTER, wid, tid);
}
