// Zero padding and nearest-neighbour upsampling of NHWC images, forward and backward. Every
// entry point is a gather with one thread per element it writes (no atomics, deterministic).
// `h, w` are the small image's (the unpadded input / the input before upsampling), `oh, ow`
// the large one's; `a, b` are the top and left padding, or the row and column factors.

struct Params {
    h: u32,
    w: u32,
    c: u32,
    oh: u32,
    ow: u32,
    a: u32,
    b: u32,
    // Elements written.
    total: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

fn index(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * 256u + lid.x;
}

// Zero padding: dst is the padded image, src the input.
@compute @workgroup_size(256)
fn pad_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
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
    var v = 0.0;
    if (oy >= p.a && oy < p.a + p.h && ox >= p.b && ox < p.b + p.w) {
        v = src[((nb * p.h + oy - p.a) * p.w + ox - p.b) * p.c + ch];
    }
    dst[i] = v;
}

// Gradient of zero padding (a crop): dst is the input's gradient, src the padded one's.
@compute @workgroup_size(256)
fn pad_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i >= p.total) {
        return;
    }
    let ch = i % p.c;
    let t = i / p.c;
    let ix = t % p.w;
    let t2 = t / p.w;
    let iy = t2 % p.h;
    let nb = t2 / p.h;
    dst[i] = src[((nb * p.oh + iy + p.a) * p.ow + ix + p.b) * p.c + ch];
}

// Nearest upsampling: output pixel (oy, ox) is input pixel (oy / a, ox / b).
@compute @workgroup_size(256)
fn upsample_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
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
    dst[i] = src[((nb * p.h + oy / p.a) * p.w + ox / p.b) * p.c + ch];
}

// Gradient of nearest upsampling: each input pixel sums its a x b block of output gradients.
@compute @workgroup_size(256)
fn upsample_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i >= p.total) {
        return;
    }
    let ch = i % p.c;
    let t = i / p.c;
    let ix = t % p.w;
    let t2 = t / p.w;
    let iy = t2 % p.h;
    let nb = t2 / p.h;
    var g = 0.0;
    for (var ky = 0u; ky < p.a; ky++) {
        let row = (nb * p.oh + iy * p.a + ky) * p.ow + ix * p.b;
        for (var kx = 0u; kx < p.b; kx++) {
            g += src[(row + kx) * p.c + ch];
        }
    }
    dst[i] = g;
}
