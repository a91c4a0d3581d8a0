// Elementwise kernels: bias add, activations forward / backward, binary ops, scale.
// One thread per element; 2-D grids linearise as (wid.y * num_workgroups.x + wid.x) * 256 + lid.x.

struct Params {
    n: u32,
    // bias_add: bias length (last axis); activation*: activation code; binary: op code.
    c: u32,
    code: u32,
    // dropout: the drop threshold (rate * 2^32); unused otherwise.
    threshold: u32,
    // leakyRelu slope, or scale's multiplier.
    alpha: f32,
    // scale's offset.
    beta: f32,
    _pad1: f32,
    _pad2: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

fn index(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * 256u + lid.x;
}

// out = x + y[i % c] (bias over the last axis).
@compute @workgroup_size(256)
fn bias_add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i < p.n) {
        out[i] = x[i] + y[i % p.c];
    }
}

// out = act(x).
@compute @workgroup_size(256)
fn activation(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i < p.n) {
        out[i] = act(p.code, p.alpha, x[i]);
    }
}

// out = dy * act'(x), with x at binding 1 and dy at binding 2.
@compute @workgroup_size(256)
fn activation_grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i < p.n) {
        out[i] = y[i] * act_grad(p.code, p.alpha, x[i]);
    }
}

// out = x op y; op 0 add, 1 sub, 2 mul.
@compute @workgroup_size(256)
fn binary(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i < p.n) {
        let a = x[i];
        let b = y[i];
        var r = a + b;
        if (p.code == 1u) {
            r = a - b;
        } else if (p.code == 2u) {
            r = a * b;
        }
        out[i] = r;
    }
}

// out = alpha * x + beta.
@compute @workgroup_size(256)
fn scale(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i < p.n) {
        out[i] = fma(p.alpha, x[i], p.beta);
    }
}

// Gradient clipping (Keras' clipvalue): out = x clamped to [-alpha, alpha]; NaN stays NaN.
@compute @workgroup_size(256)
fn clip_value(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i < p.n) {
        let v = x[i];
        out[i] = select(v, sign(v) * p.alpha, abs(v) > p.alpha);
    }
}

// Gradient clipping by norm (Keras' clipnorm, code 0, and globalClipnorm, code 1): out = x *
// alpha / norm when the norm sqrt(y[0]) exceeds alpha, x otherwise. A NaN norm (clipnorm) or
// a non-finite one (globalClipnorm) makes every value NaN, as Keras' arithmetic does.
@compute @workgroup_size(256)
fn clip_by_norm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i < p.n) {
        let norm = sqrt(y[0]);
        let nan = bitcast<f32>(0x7fc00000u);
        let not_finite = norm != norm || (p.code == 1u && norm > 3.4028235e38);
        var v = x[i];
        if (not_finite) {
            v = nan;
        } else if (norm > p.alpha) {
            v = v * p.alpha / norm;
        }
        out[i] = v;
    }
}

// out = 1 where x != 0, else 0 (a Keras maskZero mask from token ids).
@compute @workgroup_size(256)
fn nonzero(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i < p.n) {
        out[i] = select(0.0, 1.0, x[i] != 0.0);
    }
}

// PCG hash (O'Neill's permuted congruential step): well-mixed 32-bit values from a counter.
fn pcg_hash(v: u32) -> u32 {
    let s = v * 747796405u + 2891336453u;
    let w = ((s >> ((s >> 28u) + 4u)) ^ s) * 277803737u;
    return (w >> 22u) ^ w;
}

// Inverted dropout: out = x * (0 with probability rate, else 1 / (1 - rate)). The mask is a
// hash of (seed, index), so running this on dy with the same seed is the backward pass and no
// mask is stored. c and code hold the seed's low and high words, alpha the keep scale.
@compute @workgroup_size(256)
fn dropout(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i < p.n) {
        let r = pcg_hash(i ^ pcg_hash(p.c ^ pcg_hash(p.code)));
        out[i] = select(x[i] * p.alpha, 0.0, r < p.threshold);
    }
}
