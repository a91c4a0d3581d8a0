// Keras losses against dense targets: per-element (or per-row) loss terms and the gradient of
// the mean loss, which the host side then reduces with reduce.wgsl's sums.
//
// Elementwise entry points take one thread per element (i = (wid.y * num_workgroups.x +
// wid.x) * 256 + lid.x); cce_logits takes one 256-thread workgroup per row (row = wid.y *
// num_workgroups.x + wid.x, uniform across the workgroup) and reduces it with a prepended
// wg_reduce_*.wgsl (see source.rs).
//
//   bce_probs:  c = clip(x, eps, 1 - eps); loss = -(t log c + (1 - t) log(1 - c));
//               grad = scale (c - t) / (c (1 - c)) where x is inside the clip range, else 0
//   bce_logits: loss = max(x, 0) - x t + log1p(exp(-|x|)); grad = scale (sigmoid(x) - t)
//   mae:        loss = |x - t|; grad = scale sign(x - t)
//   cce_probs:  loss = -t log(clip(x, eps, 1 - eps)) (0 where t = 0);
//               grad = -scale t / x where t != 0 and x is inside the clip range, else 0
//   cce_logits: row loss = -sum_c t_c (x_c - logsumexp(x));
//               grad = scale (softmax(x) sum_c t_c - t)

struct Params {
    // Elements of x (and t).
    n: u32,
    rows: u32,
    cols: u32,
    _pad: u32,
    // Gradient scale: 1 / n or 1 / rows for a mean loss.
    grad_scale: f32,
    // Probability clip (Keras epsilon, 1e-7).
    eps: f32,
    _pad1: f32,
    _pad2: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> t: array<f32>;
@group(0) @binding(3) var<storage, read_write> grad: array<f32>;
@group(0) @binding(4) var<storage, read_write> loss: array<f32>;

const WG: u32 = 256u;

fn element(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * 256u + lid.x;
}

// log(1 + u) without losing a small u to the rounding of 1 + u.
fn log1p_small(u: f32) -> f32 {
    let w = 1.0 + u;
    if (w == 1.0) {
        return u;
    }
    return log(w) * u / (w - 1.0);
}

fn sigmoid_stable(v: f32) -> f32 {
    if (v >= 0.0) {
        return 1.0 / (1.0 + exp(-v));
    }
    let e = exp(v);
    return e / (1.0 + e);
}

@compute @workgroup_size(256)
fn bce_probs(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = element(wid, nwg, lid);
    if (i >= p.n) {
        return;
    }
    let v = x[i];
    let y = t[i];
    let c = clamp(v, p.eps, 1.0 - p.eps);
    // 1 - c, exact where x is inside the clip range, and eps (not the f32 rounding of
    // 1 - (1 - eps), 1.19e-7) where x is clipped at the top, as in the f64 CPU loss.
    let omc = clamp(1.0 - v, p.eps, 1.0 - p.eps);
    loss[i] = -(y * log(c) + (1.0 - y) * log(omc));
    var g = 0.0;
    if (v == c) {
        g = p.grad_scale * (c - y) / (c * omc);
    }
    grad[i] = g;
}

@compute @workgroup_size(256)
fn bce_logits(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = element(wid, nwg, lid);
    if (i >= p.n) {
        return;
    }
    let v = x[i];
    let y = t[i];
    loss[i] = max(v, 0.0) - v * y + log1p_small(exp(-abs(v)));
    grad[i] = p.grad_scale * (sigmoid_stable(v) - y);
}

@compute @workgroup_size(256)
fn mae(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = element(wid, nwg, lid);
    if (i >= p.n) {
        return;
    }
    let d = x[i] - t[i];
    loss[i] = abs(d);
    grad[i] = p.grad_scale * sign(d);
}

@compute @workgroup_size(256)
fn cce_probs(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = element(wid, nwg, lid);
    if (i >= p.n) {
        return;
    }
    let v = x[i];
    let y = t[i];
    var l = 0.0;
    var g = 0.0;
    if (y != 0.0) {
        let c = clamp(v, p.eps, 1.0 - p.eps);
        l = -y * log(c);
        if (v == c) {
            g = -p.grad_scale * y / c;
        }
    }
    loss[i] = l;
    grad[i] = g;
}

// One row per workgroup; `loss` holds one value per row.
@compute @workgroup_size(256)
fn cce_logits(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, ids: WgIds) {
    let row = wid.y * nwg.x + wid.x;
    if (row >= p.rows) {
        return;
    }
    let base = row * p.cols;
    var m = -3.4028235e38;
    for (var j = ids.lid; j < p.cols; j += WG) {
        m = max(m, x[base + j]);
    }
    m = wg_max(ids, m);
    var s = 0.0;
    var ts = 0.0;
    for (var j = ids.lid; j < p.cols; j += WG) {
        s += exp(x[base + j] - m);
        ts += t[base + j];
    }
    let sums = wg_sum2(ids, vec2<f32>(s, ts));
    s = sums.x;
    ts = sums.y;
    let lse = m + log(s);
    var l = 0.0;
    for (var j = ids.lid; j < p.cols; j += WG) {
        let shifted = x[base + j] - lse;
        let y = t[base + j];
        l -= y * shifted;
        grad[base + j] = p.grad_scale * (exp(shifted) * ts - y);
    }
    l = wg_sum(ids, l);
    if (ids.lid == 0u) {
        loss[row] = l;
    }
}
