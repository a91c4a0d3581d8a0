// In-place optimizer updates, one thread per parameter (Keras rules).
//   sgd:          w -= lr * g
//   sgd_momentum: v = momentum * v - lr * g; w += v (Nesterov: w += momentum * v - lr * g)
//   adam:         m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2; w -= lr_t m / (sqrt(v) + eps)
//                 with lr_t = lr sqrt(1 - b2^t) / (1 - b1^t) computed on the host.
//   rmsprop:      v = rho v + (1 - rho) g^2; w -= lr g / (sqrt(v) + eps), rho in `beta2`.

struct Params {
    n: u32,
    nesterov: u32,
    _pad0: u32,
    _pad1: u32,
    lr: f32,
    momentum: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    _pad2: f32,
    _pad3: f32,
    _pad4: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read_write> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> m: array<f32>;
@group(0) @binding(4) var<storage, read_write> v: array<f32>;

fn index(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * 256u + lid.x;
}

@compute @workgroup_size(256)
fn sgd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i < p.n) {
        w[i] -= p.lr * g[i];
    }
}

// Velocity in `m`.
@compute @workgroup_size(256)
fn sgd_momentum(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i < p.n) {
        let gi = g[i];
        let vel = p.momentum * m[i] - p.lr * gi;
        m[i] = vel;
        if (p.nesterov != 0u) {
            w[i] += p.momentum * vel - p.lr * gi;
        } else {
            w[i] += vel;
        }
    }
}

@compute @workgroup_size(256)
fn adam(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i < p.n) {
        let gi = g[i];
        let mi = p.beta1 * m[i] + (1.0 - p.beta1) * gi;
        let vi = p.beta2 * v[i] + (1.0 - p.beta2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        w[i] -= p.lr * mi / (sqrt(vi) + p.eps);
    }
}

// Mean square in `v`; rho in `beta2`.
@compute @workgroup_size(256)
fn rmsprop(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i < p.n) {
        let gi = g[i];
        let vi = p.beta2 * v[i] + (1.0 - p.beta2) * gi * gi;
        v[i] = vi;
        w[i] -= p.lr * gi / (sqrt(vi) + p.eps);
    }
}
