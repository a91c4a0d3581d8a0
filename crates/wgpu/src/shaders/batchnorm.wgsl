// Batch normalization over every axis but the last of a [rows, cols] view (cols = channels,
// NHWC): per-channel statistics, the normalisation, the moving-statistics update and the
// backward pass.
//
// Column reductions run in two passes so a long batch is summed by many workgroups: the
// *_partial entry points sum row chunks (grid x = column block of 256, y = chunk; one thread
// per column, adjacent threads on adjacent columns) into [chunks, cols] partials, and the
// *_final ones add each column's chunk sums (one thread per column). The variance is taken
// around the finished mean (a second pass over x): no E[x^2] - E[x]^2 cancellation.
// Elementwise entry points (apply, backward_dx) use one thread per element of a 1-D grid
// linearised as (wid.y * num_workgroups.x + wid.x) * 256 + lid.

struct Params {
    rows: u32,
    cols: u32,
    // Rows per chunk (*_partial), and chunks (*_final).
    chunk: u32,
    chunks: u32,
    eps: f32,
    momentum: f32,
    // Bit 0: gamma is bound (else 1); bit 1: beta is bound (else 0); bit 2: the statistics are
    // the batch's own (backward_dx: training), else constants (inference).
    flags: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read> mean_in: array<f32>;
@group(0) @binding(5) var<storage, read> var_in: array<f32>;
@group(0) @binding(6) var<storage, read> dy: array<f32>;
@group(0) @binding(7) var<storage, read_write> part_a: array<f32>;
@group(0) @binding(8) var<storage, read_write> part_b: array<f32>;
@group(0) @binding(9) var<storage, read_write> out_a: array<f32>;
@group(0) @binding(10) var<storage, read_write> out_b: array<f32>;
@group(0) @binding(11) var<storage, read> dgamma_in: array<f32>;
@group(0) @binding(12) var<storage, read> dbeta_in: array<f32>;

const HAS_GAMMA: u32 = 1u;
const HAS_BETA: u32 = 2u;
const BATCH_STATS: u32 = 4u;

fn gamma_of(c: u32) -> f32 {
    if ((p.flags & HAS_GAMMA) != 0u) {
        return gamma[c];
    }
    return 1.0;
}

fn beta_of(c: u32) -> f32 {
    if ((p.flags & HAS_BETA) != 0u) {
        return beta[c];
    }
    return 0.0;
}

fn rstd_of(c: u32) -> f32 {
    return 1.0 / sqrt(var_in[c] + p.eps);
}

// part_a[chunk, c] = sum over the chunk's rows of x[r, c].
@compute @workgroup_size(256)
fn sum_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let c = wid.x * 256u + lid.x;
    if (c >= p.cols) {
        return;
    }
    let r0 = wid.y * p.chunk;
    let r1 = min(r0 + p.chunk, p.rows);
    var s = 0.0;
    for (var r = r0; r < r1; r++) {
        s += x[r * p.cols + c];
    }
    part_a[wid.y * p.cols + c] = s;
}

// part_a[chunk, c] = sum over the chunk's rows of (x[r, c] - mean[c])^2.
@compute @workgroup_size(256)
fn sq_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let c = wid.x * 256u + lid.x;
    if (c >= p.cols) {
        return;
    }
    let r0 = wid.y * p.chunk;
    let r1 = min(r0 + p.chunk, p.rows);
    let mu = mean_in[c];
    var s = 0.0;
    for (var r = r0; r < r1; r++) {
        let d = x[r * p.cols + c] - mu;
        s += d * d;
    }
    part_a[wid.y * p.cols + c] = s;
}

// out_a[c] = (sum over chunks of part_a[k, c]) / rows: the mean, or the biased variance.
@compute @workgroup_size(256)
fn mean_final(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let c = (wid.y * nwg.x + wid.x) * 256u + lid.x;
    if (c >= p.cols) {
        return;
    }
    var s = 0.0;
    for (var k = 0u; k < p.chunks; k++) {
        s += part_a[k * p.cols + c];
    }
    out_a[c] = s / f32(p.rows);
}

// In place: out_a (moving mean) and out_b (moving variance) become
// moving * momentum + batch * (1 - momentum).
@compute @workgroup_size(256)
fn update_moving(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let c = (wid.y * nwg.x + wid.x) * 256u + lid.x;
    if (c >= p.cols) {
        return;
    }
    let m = p.momentum;
    out_a[c] = out_a[c] * m + mean_in[c] * (1.0 - m);
    out_b[c] = out_b[c] * m + var_in[c] * (1.0 - m);
}

// out_a = y = x * a + shift with a = gamma / sqrt(var + eps), shift = beta - mean * a.
@compute @workgroup_size(256)
fn apply(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = (wid.y * nwg.x + wid.x) * 256u + lid.x;
    if (i >= p.rows * p.cols) {
        return;
    }
    let c = i % p.cols;
    let a = rstd_of(c) * gamma_of(c);
    let shift = beta_of(c) - mean_in[c] * a;
    out_a[i] = x[i] * a + shift;
}

// part_a[chunk, c] = sum over the chunk's rows of dy * xhat (dgamma), part_b of dy (dbeta),
// with xhat = (x - mean) / sqrt(var + eps).
@compute @workgroup_size(256)
fn grad_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let c = wid.x * 256u + lid.x;
    if (c >= p.cols) {
        return;
    }
    let r0 = wid.y * p.chunk;
    let r1 = min(r0 + p.chunk, p.rows);
    let mu = mean_in[c];
    let rs = rstd_of(c);
    var sg = 0.0;
    var sb = 0.0;
    for (var r = r0; r < r1; r++) {
        let g = dy[r * p.cols + c];
        sg += g * (x[r * p.cols + c] - mu) * rs;
        sb += g;
    }
    part_a[wid.y * p.cols + c] = sg;
    part_b[wid.y * p.cols + c] = sb;
}

// out_a[c] = sum over chunks of part_a[k, c] (dgamma), out_b[c] of part_b (dbeta).
@compute @workgroup_size(256)
fn grad_final(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let c = (wid.y * nwg.x + wid.x) * 256u + lid.x;
    if (c >= p.cols) {
        return;
    }
    var sg = 0.0;
    var sb = 0.0;
    for (var k = 0u; k < p.chunks; k++) {
        sg += part_a[k * p.cols + c];
        sb += part_b[k * p.cols + c];
    }
    out_a[c] = sg;
    out_b[c] = sb;
}

// out_a = dx. With batch statistics: a * (dy - dbeta / n - xhat * dgamma / n), a = gamma * rstd
// (the statistics depend on x); with constant ones: a * dy.
@compute @workgroup_size(256)
fn backward_dx(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = (wid.y * nwg.x + wid.x) * 256u + lid.x;
    if (i >= p.rows * p.cols) {
        return;
    }
    let c = i % p.cols;
    let rs = rstd_of(c);
    let a = gamma_of(c) * rs;
    if ((p.flags & BATCH_STATS) != 0u) {
        let n = f32(p.rows);
        let xhat = (x[i] - mean_in[c]) * rs;
        out_a[i] = a * (dy[i] - dbeta_in[c] / n - xhat * dgamma_in[c] / n);
    } else {
        out_a[i] = a * dy[i];
    }
}
