// Data movement along an axis: a block of columns copied between row-major matrices (the
// pieces of a concatenation along the last axis, and their gradients), and a time reversal of
// [batch, time, features] sequences (goBackwards). One thread per element written.

struct Params {
    // Row lengths of the source and destination, and the width of the copied block.
    src_cols: u32,
    dst_cols: u32,
    width: u32,
    // First copied column in the source and its place in the destination.
    src_off: u32,
    dst_off: u32,
    // reverse_time: sequence length.
    time: u32,
    // Elements written.
    total: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

fn index(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * 256u + lid.x;
}

// dst[r, dst_off + c] = src[r, src_off + c] for c < width; other dst columns are untouched.
@compute @workgroup_size(256)
fn copy_columns(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i >= p.total) {
        return;
    }
    let c = i % p.width;
    let r = i / p.width;
    dst[r * p.dst_cols + p.dst_off + c] = src[r * p.src_cols + p.src_off + c];
}

// dst[b, t, f] = src[b, time - 1 - t, f], rows = batch * time, src_cols = features.
@compute @workgroup_size(256)
fn reverse_time(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i >= p.total) {
        return;
    }
    let f = i % p.src_cols;
    let row = i / p.src_cols;
    let t = row % p.time;
    let b = row / p.time;
    dst[i] = src[(b * p.time + p.time - 1u - t) * p.src_cols + f];
}

// dst[a, j, i, f] = src[a, i, j, f] for src [outer, time, width, src_cols]: axes 1 and 2 swap
// (the head split and merge of attention composed from matmuls).
@compute @workgroup_size(256)
fn swap_axes12(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i >= p.total) {
        return;
    }
    let f = i % p.src_cols;
    let r = i / p.src_cols;
    let ti = r % p.time;
    let r2 = r / p.time;
    let wj = r2 % p.width;
    let a = r2 / p.width;
    dst[i] = src[((a * p.time + ti) * p.width + wj) * p.src_cols + f];
}
