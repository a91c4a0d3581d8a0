// Shared part of the 128x128-tile GEMM kernels (matmul_t128.wgsl: f32; matmul_t128_f16.wgsl:
// mixed precision): parameters, bindings, staging and the tile mapping. source.rs prepends
// `const BK` and `alias ST` (the workgroup-memory element type) before this file.
//
// High-throughput batched GEMM, C[b] = op(A[b]) * op(B[b]), for "vec4 shapes" only: the stored
// row length of A and of B, N and the batch strides are multiples of 4 (MatmulDesc::uses_vec4;
// other shapes use matmul.wgsl).
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

// Staged in the element type ST: f32, or f16 for the mixed-precision kernel.
var<workgroup> a_s: array<vec4<ST>, 2u * STAGE>; // [buffer][BK][128 m / 4]
var<workgroup> b_s: array<vec4<ST>, 2u * STAGE>; // [buffer][BK][128 n / 4]

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
        a_s[idx][lane] = ST(v.x);
        a_s[idx + TV][lane] = ST(v.y);
        a_s[idx + 2u * TV][lane] = ST(v.z);
        a_s[idx + 3u * TV][lane] = ST(v.w);
    } else {
        a_s[s0 + e] = vec4<ST>(v);
    }
}

fn store_b(s0: u32, e: u32, v: vec4<f32>) {
    if (p.trans_b == 0u) {
        b_s[s0 + e] = vec4<ST>(v);
    } else {
        let cn = e / (BK / 4u);
        let idx = s0 + (e % (BK / 4u)) * 4u * TV + cn / 4u;
        let lane = cn % 4u;
        b_s[idx][lane] = ST(v.x);
        b_s[idx + TV][lane] = ST(v.y);
        b_s[idx + 2u * TV][lane] = ST(v.z);
        b_s[idx + 3u * TV][lane] = ST(v.w);
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


// Where one workgroup works: its C tile, k range and matrix offsets.
struct Tile {
    row0: u32,
    col0: u32,
    k_begin: u32,
    k_end: u32,
    base_a: u32,
    base_b: u32,
    base_c: u32,
}

fn tile_of(wid_local: vec3<u32>) -> Tile {
    let wid = wid_local + vec3<u32>(p.off_x, p.off_y, p.off_z);
    // Grouped rasterization: remap the (column tile, row tile) grid, a bijection.
    let gx = (p.n + TILE - 1u) / TILE;
    let gy = (p.m + TILE - 1u) / TILE;
    let lin = wid.y * gx + wid.x;
    let first_m = (lin / (GROUP_M * gx)) * GROUP_M;
    let gsize = min(gy - first_m, GROUP_M);
    let local = lin % (GROUP_M * gx);
    var t: Tile;
    t.row0 = (first_m + local % gsize) * TILE;
    t.col0 = (local / gsize) * TILE;
    var bz = wid.z;
    t.k_begin = 0u;
    t.k_end = p.k;
    if (p.k_chunk > 0u) {
        bz = 0u;
        t.k_begin = wid.z * p.k_chunk;
        t.k_end = min(t.k_begin + p.k_chunk, p.k);
    }
    t.base_a = bz * p.stride_a;
    t.base_b = bz * p.stride_b;
    t.base_c = wid.z * p.stride_c;
    return t;
}
