// In-place optimizer updates, one thread per parameter (Keras rules).
//   sgd:          w -= lr * g
//   sgd_momentum: v = momentum * v - lr * g; w += v (Nesterov: w += momentum * v - lr * g)
//   adam:         m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2; w -= lr_t m / (sqrt(v) + eps)
//                 with lr_t = lr sqrt(1 - b2^t) / (1 - b1^t) computed on the host.
//   rmsprop:      v = rho v + (1 - rho) g^2; w -= lr g / (sqrt(v) + eps), rho in `beta2`.
//   lion:         w -= lr sign(b1 m + (1 - b1) g); m = b2 m + (1 - b2) g.
//   lamb:         lamb_moments updates m and v (Keras' arithmetic, as the CPU's rules.rs) and
//                 writes the direction r = m_hat / (sqrt(v_hat) + eps); the host sums the
//                 squares of w and r on the device, and lamb_apply steps w by lr times the
//                 trust ratio ||w|| / ||r|| (1 when either is zero), read from `sums`.

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
    // lamb_moments: the second bias correction 1 - b2^t (the other values: see there).
    corr2: f32,
    _pad3: f32,
    _pad4: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read_write> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> m: array<f32>;
@group(0) @binding(4) var<storage, read_write> v: array<f32>;
// lamb: the direction r, and [sum of w^2, sum of r^2].
@group(0) @binding(5) var<storage, read_write> r: array<f32>;
@group(0) @binding(6) var<storage, read> sums: array<f32>;

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

@compute @workgroup_size(256)
fn lion(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i < p.n) {
        let gi = g[i];
        let mi = m[i];
        // WGSL's sign keeps 0 at 0, as Keras' ops.sign.
        w[i] -= p.lr * sign(mi * p.beta1 + gi * (1.0 - p.beta1));
        m[i] = mi * p.beta2 + gi * (1.0 - p.beta2);
    }
}

// LAMB's moments and direction: decays d1 in `momentum` and d2 in `lr`, bias corrections
// c1 in `beta1` and c2 in `corr2`, epsilon in `eps`.
@compute @workgroup_size(256)
fn lamb_moments(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i < p.n) {
        let gi = g[i];
        let mi = m[i] + (gi - m[i]) * p.momentum;
        let vi = v[i] + (gi * gi - v[i]) * p.lr;
        m[i] = mi;
        v[i] = vi;
        r[i] = (mi / p.beta1) / (sqrt(vi / p.corr2) + p.eps);
    }
}

// w -= lr * ratio * r; lr in `lr`.
@compute @workgroup_size(256)
fn lamb_apply(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i < p.n) {
        let w_norm = sqrt(sums[0]);
        let r_norm = sqrt(sums[1]);
        var ratio = 1.0;
        if (w_norm > 0.0 && r_norm > 0.0) {
            ratio = w_norm / r_norm;
        }
        w[i] -= ratio * p.lr * r[i];
    }
}
