// Layer normalization over the last axis of a [rows, cols] matrix, with per-column gamma and
// beta, and the column reductions its backward pass needs.
//
// forward / backward: one 64-thread workgroup per row (row = wid.y * num_workgroups.x + wid.x);
// the row is re-read from global memory between passes (it is small and cache resident), which
// keeps the mean and variance two-pass (no E[x^2] - E[x]^2 cancellation). The row sums
// (wg_sum2) come from a prepended wg_reduce_*.wgsl (see source.rs).
// param_partial / col_partial: column sums split over row chunks (grid x = column block of
// 256, y = chunk), so a long batch is summed by many workgroups; the host then sums the
// [chunks, cols] partials with reduce::sum_rows.

struct Params {
    rows: u32,
    cols: u32,
    // Rows per chunk (param_partial, col_partial).
    chunk: u32,
    _pad: u32,
    eps: f32,
    _pad1: f32,
    _pad2: f32,
    _pad3: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read_write> mean: array<f32>;
@group(0) @binding(6) var<storage, read_write> rstd: array<f32>;
@group(0) @binding(7) var<storage, read> dy: array<f32>;
@group(0) @binding(8) var<storage, read> mean_in: array<f32>;
@group(0) @binding(9) var<storage, read> rstd_in: array<f32>;
@group(0) @binding(10) var<storage, read_write> dx: array<f32>;
@group(0) @binding(11) var<storage, read_write> part_g: array<f32>;
@group(0) @binding(12) var<storage, read_write> part_b: array<f32>;

const WG: u32 = 64u;

// y = (x - mean) * rstd * gamma + beta, rstd = 1 / sqrt(var + eps) (biased variance);
// saves mean and rstd per row.
@compute @workgroup_size(64)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, ids: WgIds) {
    let row = wid.y * nwg.x + wid.x;
    if (row >= p.rows) {
        return;
    }
    let base = row * p.cols;
    let n = f32(p.cols);
    var s = 0.0;
    for (var c = ids.lid; c < p.cols; c += WG) {
        s += x[base + c];
    }
    let mu = wg_sum(ids, s) / n;
    var sq = 0.0;
    for (var c = ids.lid; c < p.cols; c += WG) {
        let d = x[base + c] - mu;
        sq += d * d;
    }
    let r = inverseSqrt(wg_sum(ids, sq) / n + p.eps);
    for (var c = ids.lid; c < p.cols; c += WG) {
        y[base + c] = (x[base + c] - mu) * r * gamma[c] + beta[c];
    }
    if (ids.lid == 0u) {
        mean[row] = mu;
        rstd[row] = r;
    }
}

// dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = dy * gamma, xhat = (x - mean) * rstd.
@compute @workgroup_size(64)
fn backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, ids: WgIds) {
    let row = wid.y * nwg.x + wid.x;
    if (row >= p.rows) {
        return;
    }
    let base = row * p.cols;
    let mu = mean_in[row];
    let r = rstd_in[row];
    var acc = vec2<f32>(0.0);
    for (var c = ids.lid; c < p.cols; c += WG) {
        let g = dy[base + c] * gamma[c];
        let xh = (x[base + c] - mu) * r;
        acc += vec2<f32>(g, g * xh);
    }
    let m = wg_sum2(ids, acc) / f32(p.cols);
    for (var c = ids.lid; c < p.cols; c += WG) {
        let g = dy[base + c] * gamma[c];
        let xh = (x[base + c] - mu) * r;
        dx[base + c] = r * (g - m.x - xh * m.y);
    }
}

// part_g[chunk, c] = sum over the chunk's rows of dy * xhat (dgamma), part_b[chunk, c] = of dy
// (dbeta); one thread per column, adjacent threads on adjacent columns.
@compute @workgroup_size(256)
fn param_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let c = wid.x * 256u + lid.x;
    if (c >= p.cols) {
        return;
    }
    let r0 = wid.y * p.chunk;
    let r1 = min(r0 + p.chunk, p.rows);
    var sg = 0.0;
    var sb = 0.0;
    for (var r = r0; r < r1; r++) {
        let g = dy[r * p.cols + c];
        sg += g * (x[r * p.cols + c] - mean_in[r]) * rstd_in[r];
        sb += g;
    }
    part_g[wid.y * p.cols + c] = sg;
    part_b[wid.y * p.cols + c] = sb;
}

// part_b[chunk, c] = sum over the chunk's rows of x[r, c] (first pass of a column sum).
@compute @workgroup_size(256)
fn col_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
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
    part_b[wid.y * p.cols + c] = s;
}
