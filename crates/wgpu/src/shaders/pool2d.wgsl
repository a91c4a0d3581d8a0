// 2-D max and average pooling, NHWC. Forward: one thread per output element; max writes the
// max and the flat input index of the (first) maximum, average the mean over the window's
// in-bounds elements. Windows are clipped to the input (padding never wins a max and is not
// counted in an average). Backward: one thread per input element gathering dy from every
// window that holds it (for max, whose argmax is that element): no atomics, deterministic.

struct Params {
    n: u32,
    h: u32,
    w: u32,
    c: u32,
    oh: u32,
    ow: u32,
    ph: u32,
    pw: u32,
    sh: u32,
    sw: u32,
    pad_top: u32,
    pad_left: u32,
    // Elements of the output (forward) or of the input (backward).
    total: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> argmax: array<u32>;
@group(0) @binding(4) var<storage, read> dy: array<f32>;
@group(0) @binding(5) var<storage, read> argmax_in: array<u32>;
@group(0) @binding(6) var<storage, read_write> dx: array<f32>;

const NONE: u32 = 0xffffffffu;

// Output windows (oy0, oy1, ox0, ox1) holding input pixel (iy, ix): the oy with
// oy * sh - pt <= iy < oy * sh - pt + ph, likewise ox.
fn windows_of(iy: u32, ix: u32) -> vec4<u32> {
    let ylo_num = i32(iy + p.pad_top) - i32(p.ph) + 1;
    let xlo_num = i32(ix + p.pad_left) - i32(p.pw) + 1;
    var oy0 = 0u;
    if (ylo_num > 0) {
        oy0 = (u32(ylo_num) + p.sh - 1u) / p.sh;
    }
    var ox0 = 0u;
    if (xlo_num > 0) {
        ox0 = (u32(xlo_num) + p.sw - 1u) / p.sw;
    }
    let oy1 = min((iy + p.pad_top) / p.sh + 1u, p.oh);
    let ox1 = min((ix + p.pad_left) / p.sw + 1u, p.ow);
    return vec4<u32>(oy0, oy1, ox0, ox1);
}

// Number of in-bounds input pixels of output window (oy, ox).
fn window_count(oy: u32, ox: u32) -> f32 {
    let y0 = max(i32(oy * p.sh) - i32(p.pad_top), 0);
    let y1 = min(i32(oy * p.sh + p.ph) - i32(p.pad_top), i32(p.h));
    let x0 = max(i32(ox * p.sw) - i32(p.pad_left), 0);
    let x1 = min(i32(ox * p.sw + p.pw) - i32(p.pad_left), i32(p.w));
    return f32(max(y1 - y0, 0) * max(x1 - x0, 0));
}

fn index(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * 256u + lid.x;
}

@compute @workgroup_size(256)
fn max_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i >= p.total) {
        return;
    }
    let ch = i % p.c;
    let t = i / p.c;
    let ox = t % p.ow;
    let t2 = t / p.ow;
    let oy = t2 % p.oh;
    let nb = t2 / p.oh;
    var best = -3.4028235e38;
    var best_i = NONE;
    for (var ky = 0u; ky < p.ph; ky++) {
        let iy = i32(oy * p.sh + ky) - i32(p.pad_top);
        if (iy < 0 || iy >= i32(p.h)) {
            continue;
        }
        for (var kx = 0u; kx < p.pw; kx++) {
            let ix = i32(ox * p.sw + kx) - i32(p.pad_left);
            if (ix < 0 || ix >= i32(p.w)) {
                continue;
            }
            let src = ((nb * p.h + u32(iy)) * p.w + u32(ix)) * p.c + ch;
            let v = x[src];
            if (best_i == NONE || v > best) {
                best = v;
                best_i = src;
            }
        }
    }
    if (best_i == NONE) {
        best = 0.0;
    }
    y[i] = best;
    argmax[i] = best_i;
}

@compute @workgroup_size(256)
fn max_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i >= p.total) {
        return;
    }
    let t = i / p.c;
    let ix = t % p.w;
    let t2 = t / p.w;
    let iy = t2 % p.h;
    let nb = t2 / p.h;
    let ch = i % p.c;
    let r = windows_of(iy, ix);
    var g = 0.0;
    for (var oy = r.x; oy < r.y; oy++) {
        for (var ox = r.z; ox < r.w; ox++) {
            let o = ((nb * p.oh + oy) * p.ow + ox) * p.c + ch;
            if (argmax_in[o] == i) {
                g += dy[o];
            }
        }
    }
    dx[i] = g;
}

@compute @workgroup_size(256)
fn avg_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i >= p.total) {
        return;
    }
    let ch = i % p.c;
    let t = i / p.c;
    let ox = t % p.ow;
    let t2 = t / p.ow;
    let oy = t2 % p.oh;
    let nb = t2 / p.oh;
    var sum = 0.0;
    for (var ky = 0u; ky < p.ph; ky++) {
        let iy = i32(oy * p.sh + ky) - i32(p.pad_top);
        if (iy < 0 || iy >= i32(p.h)) {
            continue;
        }
        for (var kx = 0u; kx < p.pw; kx++) {
            let ix = i32(ox * p.sw + kx) - i32(p.pad_left);
            if (ix < 0 || ix >= i32(p.w)) {
                continue;
            }
            sum += x[((nb * p.h + u32(iy)) * p.w + u32(ix)) * p.c + ch];
        }
    }
    let count = window_count(oy, ox);
    var v = 0.0;
    if (count > 0.0) {
        v = sum / count;
    }
    y[i] = v;
}

@compute @workgroup_size(256)
fn avg_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i >= p.total) {
        return;
    }
    let t = i / p.c;
    let ix = t % p.w;
    let t2 = t / p.w;
    let iy = t2 % p.h;
    let nb = t2 / p.h;
    let ch = i % p.c;
    let r = windows_of(iy, ix);
    var g = 0.0;
    for (var oy = r.x; oy < r.y; oy++) {
        for (var ox = r.z; ox < r.w; ox++) {
            // The window holds (iy, ix), so its count is at least 1.
            g += dy[((nb * p.oh + oy) * p.ow + ox) * p.c + ch] / window_count(oy, ox);
        }
    }
    dx[i] = g;
}
