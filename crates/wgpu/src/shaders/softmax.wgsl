// Softmax over the last axis and sparse categorical cross-entropy, one 256-thread workgroup
// per row (row = wid.y * num_workgroups.x + wid.x, uniform across the workgroup). The row
// reductions (wg_max, wg_sum) come from a prepended wg_reduce_*.wgsl (see source.rs).

struct Params {
    rows: u32,
    cols: u32,
    // Bit pattern of a quiet NaN, written as the loss of a row whose label is out of range.
    nan_bits: u32,
    _pad: u32,
    // Gradient scale: 1 / batch for a mean loss.
    grad_scale: f32,
    // Probability clip for sce_probs (Keras epsilon, 1e-7).
    eps: f32,
    _pad1: f32,
    _pad2: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read_write> row_loss: array<f32>;

const WG: u32 = 256u;

// Row max and sum of exp(x - max) of `row`, computed by the whole workgroup.
fn row_stats(row: u32, ids: WgIds) -> vec2<f32> {
    let base = row * p.cols;
    var m = -3.4028235e38;
    for (var j = ids.lid; j < p.cols; j += WG) {
        m = max(m, x[base + j]);
    }
    m = wg_max(ids, m);
    var s = 0.0;
    for (var j = ids.lid; j < p.cols; j += WG) {
        s += exp(x[base + j] - m);
    }
    s = wg_sum(ids, s);
    return vec2<f32>(m, s);
}

// out = softmax(x) along the last axis.
@compute @workgroup_size(256)
fn softmax(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, ids: WgIds) {
    let row = wid.y * nwg.x + wid.x;
    if (row >= p.rows) {
        return;
    }
    let st = row_stats(row, ids);
    let inv = 1.0 / st.y;
    let base = row * p.cols;
    for (var j = ids.lid; j < p.cols; j += WG) {
        out[base + j] = exp(x[base + j] - st.x) * inv;
    }
}

// out = log_softmax(x) = x - max - ln(sum exp(x - max)) along the last axis.
@compute @workgroup_size(256)
fn log_softmax(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, ids: WgIds) {
    let row = wid.y * nwg.x + wid.x;
    if (row >= p.rows) {
        return;
    }
    let st = row_stats(row, ids);
    let shift = st.x + log(st.y);
    let base = row * p.cols;
    for (var j = ids.lid; j < p.cols; j += WG) {
        out[base + j] = x[base + j] - shift;
    }
}

// Softmax's backward: out = y * (dy - sum_j dy_j y_j), with the softmax output y in `x` and
// the upstream gradient dy in `labels` (the second input binding).
@compute @workgroup_size(256)
fn softmax_grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, ids: WgIds) {
    let row = wid.y * nwg.x + wid.x;
    if (row >= p.rows) {
        return;
    }
    let base = row * p.cols;
    var d = 0.0;
    for (var j = ids.lid; j < p.cols; j += WG) {
        d += x[base + j] * labels[base + j];
    }
    d = wg_sum(ids, d);
    for (var j = ids.lid; j < p.cols; j += WG) {
        out[base + j] = x[base + j] * (labels[base + j] - d);
    }
}

// Log-softmax's backward: out = dy - exp(y) * sum_j dy_j, with the log-softmax output y in
// `x` and dy in `labels`.
@compute @workgroup_size(256)
fn log_softmax_grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, ids: WgIds) {
    let row = wid.y * nwg.x + wid.x;
    if (row >= p.rows) {
        return;
    }
    let base = row * p.cols;
    var s = 0.0;
    for (var j = ids.lid; j < p.cols; j += WG) {
        s += labels[base + j];
    }
    s = wg_sum(ids, s);
    for (var j = ids.lid; j < p.cols; j += WG) {
        out[base + j] = labels[base + j] - exp(x[base + j]) * s;
    }
}

// From logits: row_loss = logsumexp(x) - x[label]; out = grad_scale * (softmax(x) - onehot(label)).
@compute @workgroup_size(256)
fn sce_logits(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, ids: WgIds) {
    let row = wid.y * nwg.x + wid.x;
    if (row >= p.rows) {
        return;
    }
    let st = row_stats(row, ids);
    let inv = 1.0 / st.y;
    let base = row * p.cols;
    let label = u32(max(labels[row], 0.0));
    let valid = labels[row] >= 0.0 && label < p.cols;
    for (var j = ids.lid; j < p.cols; j += WG) {
        let prob = exp(x[base + j] - st.x) * inv;
        out[base + j] = p.grad_scale * (prob - select(0.0, 1.0, j == label));
    }
    if (ids.lid == 0u) {
        if (valid) {
            row_loss[row] = st.x + log(st.y) - x[base + label];
        } else {
            row_loss[row] = bitcast<f32>(p.nan_bits);
        }
    }
}

// From probabilities: row_loss = -log(clip(x[label], eps, 1 - eps));
// out = -grad_scale / x[label] at the label where x[label] is inside the clip range, else 0.
@compute @workgroup_size(256)
fn sce_probs(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, ids: WgIds) {
    let row = wid.y * nwg.x + wid.x;
    if (row >= p.rows) {
        return;
    }
    let base = row * p.cols;
    let label = u32(max(labels[row], 0.0));
    let valid = labels[row] >= 0.0 && label < p.cols;
    for (var j = ids.lid; j < p.cols; j += WG) {
        var g = 0.0;
        if (j == label) {
            let v = x[base + j];
            if (v > p.eps && v < 1.0 - p.eps) {
                g = -p.grad_scale / v;
            }
        }
        out[base + j] = g;
    }
    if (ids.lid == 0u) {
        if (valid) {
            row_loss[row] = -log(clamp(x[base + label], p.eps, 1.0 - p.eps));
        } else {
            row_loss[row] = bitcast<f32>(p.nan_bits);
        }
    }
}
