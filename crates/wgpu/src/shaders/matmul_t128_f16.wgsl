// The mixed-precision 128x128-tile GEMM core (device feature SHADER_F16): the f32 operands are
// rounded to f16 as they are staged in workgroup memory (half the bytes per slab), multiplied
// in f16 and summed in f32 per slab; C is f32. matmul_t128_common.wgsl (prepended, with
// ST = f16 and BK = 16) has the recipe, the loads and the stores. Operand magnitudes must fit
// f16 (|x| < 65504); results differ from the f32 kernels by about 1e-3 relative.

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
        // Products accumulate in f16 for one slab only (BK = 16 terms), then fold into the
        // f32 accumulators: packed f16 FMAs where the hardware has them, with a rounding
        // error that does not grow with k.
        var h00 = vec4<f16>(0.0h);
        var h01 = vec4<f16>(0.0h);
        var h10 = vec4<f16>(0.0h);
        var h11 = vec4<f16>(0.0h);
        var h20 = vec4<f16>(0.0h);
        var h21 = vec4<f16>(0.0h);
        var h30 = vec4<f16>(0.0h);
        var h31 = vec4<f16>(0.0h);
        var h40 = vec4<f16>(0.0h);
        var h41 = vec4<f16>(0.0h);
        var h50 = vec4<f16>(0.0h);
        var h51 = vec4<f16>(0.0h);
        var h60 = vec4<f16>(0.0h);
        var h61 = vec4<f16>(0.0h);
        var h70 = vec4<f16>(0.0h);
        var h71 = vec4<f16>(0.0h);
        for (var kk = 0u; kk < BK; kk++) {
            let ka = s0 + kk * TV;
            let a0 = a_s[ka + ty];
            let a1 = a_s[ka + 16u + ty];
            let b0 = b_s[ka + tx];
            let b1 = b_s[ka + 16u + tx];
            h00 = fma(vec4<f16>(a0.x), b0, h00);
            h01 = fma(vec4<f16>(a0.x), b1, h01);
            h10 = fma(vec4<f16>(a0.y), b0, h10);
            h11 = fma(vec4<f16>(a0.y), b1, h11);
            h20 = fma(vec4<f16>(a0.z), b0, h20);
            h21 = fma(vec4<f16>(a0.z), b1, h21);
            h30 = fma(vec4<f16>(a0.w), b0, h30);
            h31 = fma(vec4<f16>(a0.w), b1, h31);
            h40 = fma(vec4<f16>(a1.x), b0, h40);
            h41 = fma(vec4<f16>(a1.x), b1, h41);
            h50 = fma(vec4<f16>(a1.y), b0, h50);
            h51 = fma(vec4<f16>(a1.y), b1, h51);
            h60 = fma(vec4<f16>(a1.z), b0, h60);
            h61 = fma(vec4<f16>(a1.z), b1, h61);
            h70 = fma(vec4<f16>(a1.w), b0, h70);
            h71 = fma(vec4<f16>(a1.w), b1, h71);
        }
        c00 += vec4<f32>(h00);
        c01 += vec4<f32>(h01);
        c10 += vec4<f32>(h10);
        c11 += vec4<f32>(h11);
        c20 += vec4<f32>(h20);
        c21 += vec4<f32>(h21);
        c30 += vec4<f32>(h30);
        c31 += vec4<f32>(h31);
        c40 += vec4<f32>(h40);
        c41 += vec4<f32>(h41);
        c50 += vec4<f32>(h50);
        c51 += vec4<f32>(h51);
        c60 += vec4<f32>(h60);
        c61 += vec4<f32>(h61);
        c70 += vec4<f32>(h70);
        c71 += vec4<f32>(h71);
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
