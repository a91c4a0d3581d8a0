// Head-dim-64 half of the attention shader (src/source.rs prepends it to attention.wgsl).
// A row of HD floats is a struct of mat4x4 values, so every per-row operation below is
// straight-line code on named values: nothing is an array indexed at run time, which would
// put it in local memory (naga's loop bounding keeps drivers from unrolling such loops).

const HD: u32 = 64u;

struct Row { a: mat4x4<f32>, b: mat4x4<f32>, c: mat4x4<f32>, d: mat4x4<f32> }

fn row_zero() -> Row {
    return Row(mat4x4<f32>(), mat4x4<f32>(), mat4x4<f32>(), mat4x4<f32>());
}

fn row_dot(x: Row, y: Row) -> f32 {
    return mdot(x.a, y.a) + mdot(x.b, y.b) + mdot(x.c, y.c) + mdot(x.d, y.d);
}

// s * x + y
fn row_axpy(s: f32, x: Row, y: Row) -> Row {
    return Row(x.a * s + y.a, x.b * s + y.b, x.c * s + y.c, x.d * s + y.d);
}

fn row_scale(x: Row, s: f32) -> Row {
    return Row(x.a * s, x.b * s, x.c * s, x.d * s);
}

fn row_pack(v: array<vec4<f32>, HD4>) -> Row {
    return Row(mat4x4<f32>(v[0], v[1], v[2], v[3]), mat4x4<f32>(v[4], v[5], v[6], v[7]), mat4x4<f32>(v[8], v[9], v[10], v[11]), mat4x4<f32>(v[12], v[13], v[14], v[15]));
}

fn row_unpack(x: Row) -> array<vec4<f32>, HD4> {
    return array<vec4<f32>, HD4>(x.a[0], x.a[1], x.a[2], x.a[3], x.b[0], x.b[1], x.b[2], x.b[3], x.c[0], x.c[1], x.c[2], x.c[3], x.d[0], x.d[1], x.d[2], x.d[3]);
}

fn tile_a_row(r: u32) -> Row {
    let o = r * HD4;
    return Row(mat4x4<f32>(tile_a[o + 0u], tile_a[o + 1u], tile_a[o + 2u], tile_a[o + 3u]), mat4x4<f32>(tile_a[o + 4u], tile_a[o + 5u], tile_a[o + 6u], tile_a[o + 7u]), mat4x4<f32>(tile_a[o + 8u], tile_a[o + 9u], tile_a[o + 10u], tile_a[o + 11u]), mat4x4<f32>(tile_a[o + 12u], tile_a[o + 13u], tile_a[o + 14u], tile_a[o + 15u]));
}

fn tile_b_row(r: u32) -> Row {
    let o = r * HD4;
    return Row(mat4x4<f32>(tile_b[o + 0u], tile_b[o + 1u], tile_b[o + 2u], tile_b[o + 3u]), mat4x4<f32>(tile_b[o + 4u], tile_b[o + 5u], tile_b[o + 6u], tile_b[o + 7u]), mat4x4<f32>(tile_b[o + 8u], tile_b[o + 9u], tile_b[o + 10u], tile_b[o + 11u]), mat4x4<f32>(tile_b[o + 12u], tile_b[o + 13u], tile_b[o + 14u], tile_b[o + 15u]));
}
