// The f32 128x128-tile GEMM core; matmul_t128_common.wgsl (prepended, with ST = f32) has the
// recipe, the loads and the stores.

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wid_local: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let t = tile_of(wid_local);
    let row0 = t.row0;
    let col0 = t.col0;
    let k_begin = t.k_begin;
    let k_end = t.k_end;
    let base_a = t.base_a;
    let base_b = t.base_b;
    let base_c = t.base_c;
    let tx = tid % 16u;
    let ty = tid / 16u;

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
