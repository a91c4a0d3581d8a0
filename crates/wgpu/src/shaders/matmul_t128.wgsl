// High-throughput batched GEMM, C[b] = op(A[b]) * op(B[b]), for "vec4 shapes" only: the stored
// row length of A and of B, N and the batch strides are multiples of 4 (MatmulDesc::uses_vec4;
// other shapes use matmul.wgsl). source.rs prepends `const BK: u32 = 8u;` or `16u;`.
//
// The classic SGEMM recipe: one workgroup of 256 threads computes a 128x128 tile of C; each
// thread keeps an 8x8 block in 16 vec4 registers (rows 4 ty .. 4 ty + 3 and 64 + 4 ty ..,
// columns 4 tx .. 4 tx + 3 and 64 + 4 tx ..). Both operands are staged in workgroup memory
// as [BK][128] (A transposed on the way in), so every inner step is 4 vec4 reads from
// workgroup memory feeding 64 FMAs: adjacent threads read adjacent vec4s of B (no bank
// conflicts) and threads of a row group read the same vec4 of A (broadcast). Workgroup memory
// is double-buffered and the next k-slab's global loads are issued before the FMAs on the
// current one, so one barrier per slab suffices and load latency hides behind the math.
// Bounds are only checked at global loads/stores (a handful per slab), never in the FMA
// loop, so ragged edges cost nothing in the interior.

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
    // (a multiple of 16, so a BK slab never straddles two chunks) and writes its partial C
    // at z * stride_c; the host sums the partials.
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

const TILE: u32 = 128u;
// vec4s per 128-wide row of a staged slab.
const TV: u32 = 32u;
// vec4s per operand per buffer: BK rows of 128.
const STAGE: u32 = BK * TV;
// Global vec4 loads per thread per operand per slab: BK * 128 / 4 / 256.
const LOADS: u32 = BK / 8u;
// Tile rows per raster group: consecutive workgroups sweep GROUP_M row tiles before moving
// to the next column tile, so the B columns they share stay in L2 on large problems.
const GROUP_M: u32 = 8u;

var<workgroup> a_s: array<vec4<f32>, 2u * STAGE>; // [buffer][BK][128 m / 4]
var<workgroup> b_s: array<vec4<f32>, 2u * STAGE>; // [buffer][BK][128 n / 4]

// Element e (< 32 BK) of the A slab at (row0, k0); zero outside A.
fn load_a(base: u32, row0: u32, k0: u32, e: u32) -> vec4<f32> {
    if (p.trans_a == 0u) {
        // A stored m x k: vec4 along k, BK / 4 per row.
        let r = row0 + e / (BK / 4u);
        let kk = k0 + (e % (BK / 4u)) * 4u;
        if (r < p.m && kk < p.k) {
            return a[(base + r * p.k + kk) / 4u];
        }
    } else {
        // A stored k x m: vec4 along m, already in slab order.
        let kk = k0 + e / TV;
        let r = row0 + (e % TV) * 4u;
        if (kk < p.k && r < p.m) {
            return a[(base + kk * p.m + r) / 4u];
        }
    }
    return vec4<f32>(0.0);
}

fn load_b(base: u32, col0: u32, k0: u32, e: u32) -> vec4<f32> {
    if (p.trans_b == 0u) {
        // B stored k x n: vec4 along n, already in slab order.
        let kk = k0 + e / TV;
        let cn = col0 + (e % TV) * 4u;
        if (kk < p.k && cn < p.n) {
            return b[(base + kk * p.n + cn) / 4u];
        }
    } else {
        // B stored n x k: vec4 along k.
        let cn = col0 + e / (BK / 4u);
        let kk = k0 + (e % (BK / 4u)) * 4u;
        if (cn < p.n && kk < p.k) {
            return b[(base + cn * p.k + kk) / 4u];
        }
    }
    return vec4<f32>(0.0);
}

// Writes loaded element e into buffer s0 of the A slab, transposing when A runs along k.
fn store_a(s0: u32, e: u32, v: vec4<f32>) {
    if (p.trans_a == 0u) {
        let r = e / (BK / 4u);
        let idx = s0 + (e % (BK / 4u)) * 4u * TV + r / 4u;
        let lane = r % 4u;
        a_s[idx][lane] = v.x;
        a_s[idx + TV][lane] = v.y;
        a_s[idx + 2u * TV][lane] = v.z;
        a_s[idx + 3u * TV][lane] = v.w;
    } else {
        a_s[s0 + e] = v;
    }
}

fn store_b(s0: u32, e: u32, v: vec4<f32>) {
    if (p.trans_b == 0u) {
        b_s[s0 + e] = v;
    } else {
        let cn = e / (BK / 4u);
        let idx = s0 + (e % (BK / 4u)) * 4u * TV + cn / 4u;
        let lane = cn % 4u;
        b_s[idx][lane] = v.x;
        b_s[idx + TV][lane] = v.y;
        b_s[idx + 2u * TV][lane] = v.z;
        b_s[idx + 3u * TV][lane] = v.w;
    }
}

// One row of the thread's 8x8 block: two vec4s at columns c0 and c0 + 64.
fn store_row(base_c: u32, r: u32, c0: u32, v0: vec4<f32>, v1: vec4<f32>) {
    if (r < p.m) {
        let rb = base_c + r * p.n;
        if (c0 < p.n) {
            c[(rb + c0) / 4u] = v0;
        }
        if (c0 + 64u < p.n) {
            c[(rb + c0 + 64u) / 4u] = v1;
        }
    }
}

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wid_local: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let wid = wid_local + vec3<u32>(p.off_x, p.off_y, p.off_z);
    // Grouped rasterization: remap the (column tile, row tile) grid, a bijection.
    let gx = (p.n + TILE - 1u) / TILE;
    let gy = (p.m + TILE - 1u) / TILE;
    let lin = wid.y * gx + wid.x;
    let first_m = (lin / (GROUP_M * gx)) * GROUP_M;
    let gsize = min(gy - first_m, GROUP_M);
    let local = lin % (GROUP_M * gx);
    let row0 = (first_m + local % gsize) * TILE;
    let col0 = (local / gsize) * TILE;
    let tx = tid % 16u;
    let ty = tid / 16u;
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

    var ra: array<vec4<f32>, LOADS>;
    var rb: array<vec4<f32>, LOADS>;
    for (var l = 0u; l < LOADS; l++) {
        let e = tid + l * 256u;
        store_a(0u, e, load_a(base_a, row0, k_begin, e));
        store_b(0u, e, load_b(base_b, col0, k_begin, e));
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
        // Issue the next slab's global loads now; they land while the FMAs below run.
        if (more) {
            for (var l = 0u; l < LOADS; l++) {
                let e = tid + l * 256u;
                ra[l] = load_a(base_a, row0, k1, e);
                rb[l] = load_b(base_b, col0, k1, e);
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
                store_a(s1, e, ra[l]);
                store_b(s1, e, rb[l]);
            }
        }
        workgroupBarrier();
        s0 = s1;
    }

    store_row(base_c, row0 + ty * 4u + 0u, col0 + tx * 4u, c00, c01);
    store_row(base_c, row0 + ty * 4u + 1u, col0 + tx * 4u, c10, c11);
    store_row(base_c, row0 + ty * 4u + 2u, col0 + tx * 4u, c20, c21);
    store_row(base_c, row0 + ty * 4u + 3u, col0 + tx * 4u, c30, c31);
    store_row(base_c, row0 + 64u + ty * 4u + 0u, col0 + tx * 4u, c40, c41);
    store_row(base_c, row0 + 64u + ty * 4u + 1u, col0 + tx * 4u, c50, c51);
    store_row(base_c, row0 + 64u + ty * 4u + 2u, col0 + tx * 4u, c60, c61);
    store_row(base_c, row0 + 64u + ty * 4u + 3u, col0 + tx * 4u, c70, c71);
}
