// Embedding lookup (gather) and its gradient (scatter-add), one invocation per output element.
// Ids are f32 holding exact integers (like the crate's labels); an id outside 0..vocab
// gathers zeros and contributes no gradient.

struct Params {
    // Number of ids.
    rows: u32,
    // Embedding width.
    dim: u32,
    vocab: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> table: array<f32>;
@group(0) @binding(2) var<storage, read> ids: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read> d_out: array<f32>;
// f32 bit patterns: WGSL has no f32 atomics, so the scatter adds with a compare-exchange loop.
@group(0) @binding(5) var<storage, read_write> d_table: array<atomic<u32>>;

fn row_of(r: u32) -> i32 {
    let id = ids[r];
    if (id >= 0.0 && id < f32(p.vocab) && floor(id) == id) {
        return i32(id);
    }
    return -1;
}

@compute @workgroup_size(256)
fn gather(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let idx = gid.y * nwg.x * 256u + gid.x;
    if (idx >= p.rows * p.dim) {
        return;
    }
    let v = row_of(idx / p.dim);
    var x = 0.0;
    if (v >= 0) {
        x = table[u32(v) * p.dim + idx % p.dim];
    }
    out[idx] = x;
}

// d_table must be zeroed first. Random token ids rarely collide on one address at the same
// time, so the compare-exchange loop almost always succeeds on the first try.
@compute @workgroup_size(256)
fn scatter_add(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let idx = gid.y * nwg.x * 256u + gid.x;
    if (idx >= p.rows * p.dim) {
        return;
    }
    let v = row_of(idx / p.dim);
    if (v < 0) {
        return;
    }
    let g = d_out[idx];
    let a = u32(v) * p.dim + idx % p.dim;
    var old = atomicLoad(&d_table[a]);
    loop {
        let r = atomicCompareExchangeWeak(&d_table[a], old, bitcast<u32>(bitcast<f32>(old) + g));
        if (r.exchanged) {
            break;
        }
        old = r.old_value;
    }
}
