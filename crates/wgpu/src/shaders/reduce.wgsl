// Reductions: column sums of a [rows, cols] matrix (bias gradients) and a two-pass full sum
// (sum_partial: one partial sum per workgroup; sum_final: one workgroup sums the partials
// and multiplies by `scale`, 1 for a sum and 1/n for a mean). wg_sum comes from a prepended
// wg_reduce_*.wgsl (see source.rs).

struct Params {
    rows: u32,
    cols: u32,
    // Elements to reduce (sum_partial, sum_final).
    n: u32,
    _pad: u32,
    scale: f32,
    _pad1: f32,
    _pad2: f32,
    _pad3: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

const WG: u32 = 256u;

// out[c] = sum_r x[r, c]; one thread per column (adjacent threads read adjacent columns).
@compute @workgroup_size(256)
fn sum_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let c = (wid.y * nwg.x + wid.x) * 256u + lid.x;
    if (c >= p.cols) {
        return;
    }
    // Kahan-compensated so a long batch does not lose low-order bits.
    var s = 0.0;
    var comp = 0.0;
    for (var r = 0u; r < p.rows; r++) {
        let v = x[r * p.cols + c] - comp;
        let t = s + v;
        comp = (t - s) - v;
        s = t;
    }
    out[c] = s;
}

// out[w] = sum of the elements this workgroup strides over (grid-stride loop).
@compute @workgroup_size(256)
fn sum_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, ids: WgIds) {
    var s = 0.0;
    for (var i = wid.x * WG + ids.lid; i < p.n; i += nwg.x * WG) {
        s += x[i];
    }
    s = wg_sum(ids, s);
    if (ids.lid == 0u) {
        out[wid.x] = s;
    }
}

// out[0] = scale * sum(x[0..n]) in a single workgroup.
@compute @workgroup_size(256)
fn sum_final(ids: WgIds) {
    var s = 0.0;
    for (var i = ids.lid; i < p.n; i += WG) {
        s += x[i];
    }
    s = wg_sum(ids, s);
    if (ids.lid == 0u) {
        out[0] = s * p.scale;
    }
}
