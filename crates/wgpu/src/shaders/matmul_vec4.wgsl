// Batched GEMM with vec4 loads and stores: C[b] = A[b] * B[b], no transposes,
// requires K % 4 == 0, N % 4 == 0 and batch strides that are multiples of 4 (the Rust side
// checks this and otherwise uses matmul.wgsl). Same 64x64x16 tiling as matmul.wgsl; each
// thread accumulates rows ly + 16 i (i < 4) times the 4 contiguous columns 4 lx .. 4 lx + 3.

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
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
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
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let tid = lid.y * 16u + lid.x;
    let row0 = wid.y * TM;
    let col0 = wid.x * 64u;
    let base_a = wid.z * p.stride_a;
    let base_b = wid.z * p.stride_b;
    let base_c = wid.z * p.stride_c;
    var acc: array<vec4<f32>, 4>;
    for (var i = 0u; i < 4u; i++) {
        acc[i] = vec4<f32>(0.0);
    }
    // This thread's slots in the tile loads.
    let ar = tid / 4u;
    let aq = tid % 4u;
    let bk = tid / 16u;
    let bq = tid % 16u;
    for (var k0 = 0u; k0 < p.k; k0 += TK) {
        let ka = k0 + aq * 4u;
        var av = vec4<f32>(0.0);
        if (row0 + ar < p.m && ka < p.k) {
            av = a[(base_a + (row0 + ar) * p.k + ka) / 4u];
        }
        a_tile[(aq * 4u) * TM + ar] = av.x;
        a_tile[(aq * 4u + 1u) * TM + ar] = av.y;
        a_tile[(aq * 4u + 2u) * TM + ar] = av.z;
        a_tile[(aq * 4u + 3u) * TM + ar] = av.w;
        let nb = col0 + bq * 4u;
        var bv = vec4<f32>(0.0);
        if (k0 + bk < p.k && nb < p.n) {
            bv = b[(base_b + (k0 + bk) * p.n + nb) / 4u];
        }
        b_tile[bk * 16u + bq] = bv;
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            let bvec = b_tile[kk * 16u + lid.x];
            for (var i = 0u; i < 4u; i++) {
                acc[i] = fma(vec4<f32>(a_tile[kk * TM + lid.y + 16u * i]), bvec, acc[i]);
            }
        }
        workgroupBarrier();
    }
    let cn = col0 + lid.x * 4u;
    for (var i = 0u; i < 4u; i++) {
        let r = row0 + lid.y + 16u * i;
        if (r < p.m && cn < p.n) {
            c[(base_c + r * p.n + cn) / 4u] = acc[i];
        }
    }
}
