// NHWC conv2d as implicit GEMM (no im2col buffer): the A operand is gathered from the image
// on the fly. Kernel layout [kh, kw, cin, cout] (Keras). Same 64x64x16 tiling and 4x4
// register blocks as matmul.wgsl. The three passes as GEMMs (out[gm, gn] = sum_k A B):
//   forward:         m = (n, oy, ox), k = (ky, kx, ci), n = co; A = x gathered,  B = w
//   backward_input:  m = (n, iy, ix), k = (ky, kx, co), n = ci; A = dy gathered, B = w (ci/co swapped)
//   backward_filter: m = (ky, kx, ci), k = (n, oy, ox), n = co; A = x gathered,  B = dy
// Input position of output (oy, ox) and tap (ky, kx): iy = oy * sh + ky * dh - pad_top.
// backward_filter has a small output and a long k (n * oh * ow), so it splits k over
// workgroup z (split-K) to fill the GPU; see k_chunk.

struct Params {
    n: u32,
    h: u32,
    w: u32,
    cin: u32,
    oh: u32,
    ow: u32,
    cout: u32,
    kh: u32,
    kw: u32,
    sh: u32,
    sw: u32,
    dh: u32,
    dw: u32,
    pad_top: u32,
    pad_left: u32,
    _pad: u32,
    gm: u32,
    gn: u32,
    gk: u32,
    // Split-K: workgroup z sums k in [z * k_chunk, (z + 1) * k_chunk) (a multiple of TK) and
    // writes its partial result to out[z * gm * gn ..]; the host then sums the partials.
    k_chunk: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src_a: array<f32>;
@group(0) @binding(2) var<storage, read> src_b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

const TM: u32 = 64u;
const TN: u32 = 64u;
const TK: u32 = 16u;
const FORWARD: u32 = 0u;
const BACKWARD_INPUT: u32 = 1u;
const BACKWARD_FILTER: u32 = 2u;

var<workgroup> a_tile: array<f32, 1024>; // [TK][TM]
var<workgroup> b_tile: array<f32, 1024>; // [TK][TN]

// x[nb, oy * sh + ky * dh - pt, ox * sw + kx * dw - pl, ci], 0 in the padding.
fn gather_x(nb: u32, oy: u32, ox: u32, ky: u32, kx: u32, ci: u32) -> f32 {
    let iy = i32(oy * p.sh + ky * p.dh) - i32(p.pad_top);
    let ix = i32(ox * p.sw + kx * p.dw) - i32(p.pad_left);
    if (iy < 0 || ix < 0 || iy >= i32(p.h) || ix >= i32(p.w)) {
        return 0.0;
    }
    return src_a[((nb * p.h + u32(iy)) * p.w + u32(ix)) * p.cin + ci];
}

fn load_a(mode: u32, m: u32, k: u32) -> f32 {
    if (m >= p.gm || k >= p.gk) {
        return 0.0;
    }
    if (mode == FORWARD) {
        let ci = k % p.cin;
        let t = k / p.cin;
        let ox = m % p.ow;
        let t2 = m / p.ow;
        return gather_x(t2 / p.oh, t2 % p.oh, ox, t / p.kw, t % p.kw, ci);
    }
    if (mode == BACKWARD_INPUT) {
        // dy[nb, oy, ox, co] where iy = oy * sh + ky * dh - pt, if that oy is integral and in range.
        let co = k % p.cout;
        let t = k / p.cout;
        let kx = t % p.kw;
        let ky = t / p.kw;
        let ix = m % p.w;
        let t2 = m / p.w;
        let iy = t2 % p.h;
        let nb = t2 / p.h;
        let ny = i32(iy + p.pad_top) - i32(ky * p.dh);
        let nx = i32(ix + p.pad_left) - i32(kx * p.dw);
        if (ny < 0 || nx < 0) {
            return 0.0;
        }
        if (u32(ny) % p.sh != 0u || u32(nx) % p.sw != 0u) {
            return 0.0;
        }
        let oy = u32(ny) / p.sh;
        let ox = u32(nx) / p.sw;
        if (oy >= p.oh || ox >= p.ow) {
            return 0.0;
        }
        return src_a[((nb * p.oh + oy) * p.ow + ox) * p.cout + co];
    }
    // BACKWARD_FILTER
    let ci = m % p.cin;
    let t = m / p.cin;
    let ox = k % p.ow;
    let t2 = k / p.ow;
    return gather_x(t2 / p.oh, t2 % p.oh, ox, t / p.kw, t % p.kw, ci);
}

fn load_b(mode: u32, k: u32, n: u32) -> f32 {
    if (k >= p.gk || n >= p.gn) {
        return 0.0;
    }
    if (mode == BACKWARD_INPUT) {
        // w[ky, kx, ci = n, co] with k = (ky, kx, co).
        let co = k % p.cout;
        let tap = k / p.cout;
        return src_b[(tap * p.cin + n) * p.cout + co];
    }
    // FORWARD: w as [kh * kw * cin, cout]; BACKWARD_FILTER: dy as [n * oh * ow, cout].
    return src_b[k * p.gn + n];
}

fn gemm(mode: u32, wid: vec3<u32>, lid: vec3<u32>) {
    let tid = lid.y * 16u + lid.x;
    let row0 = wid.y * TM;
    let col0 = wid.x * TN;
    var acc: array<f32, 16>;
    for (var i = 0u; i < 16u; i++) {
        acc[i] = 0.0;
    }
    let k_begin = wid.z * p.k_chunk;
    let k_end = min(k_begin + p.k_chunk, p.gk);
    for (var k0 = k_begin; k0 < k_end; k0 += TK) {
        for (var l = 0u; l < 4u; l++) {
            let e = tid + l * 256u;
            // Walk the dimension that is contiguous in memory with adjacent threads.
            var r = e / TK;
            var ka = e % TK;
            if (mode == BACKWARD_FILTER) {
                r = e % TM;
                ka = e / TM;
            }
            a_tile[ka * TM + r] = load_a(mode, row0 + r, k0 + ka);
            var cn = e % TN;
            var kb = e / TN;
            if (mode == BACKWARD_INPUT) {
                cn = e / TK;
                kb = e % TK;
            }
            b_tile[kb * TN + cn] = load_b(mode, k0 + kb, col0 + cn);
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            var av: array<f32, 4>;
            var bv: array<f32, 4>;
            for (var i = 0u; i < 4u; i++) {
                av[i] = a_tile[kk * TM + lid.y + 16u * i];
                bv[i] = b_tile[kk * TN + lid.x + 16u * i];
            }
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) {
                    acc[i * 4u + j] = fma(av[i], bv[j], acc[i * 4u + j]);
                }
            }
        }
        workgroupBarrier();
    }
    let base = wid.z * p.gm * p.gn;
    for (var i = 0u; i < 4u; i++) {
        let r = row0 + lid.y + 16u * i;
        for (var j = 0u; j < 4u; j++) {
            let cc = col0 + lid.x + 16u * j;
            if (r < p.gm && cc < p.gn) {
                out[base + r * p.gn + cc] = acc[i * 4u + j];
            }
        }
    }
}

@compute @workgroup_size(16, 16, 1)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    gemm(FORWARD, wid, lid);
}

@compute @workgroup_size(16, 16, 1)
fn backward_input(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    gemm(BACKWARD_INPUT, wid, lid);
}

@compute @workgroup_size(16, 16, 1)
fn backward_filter(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    gemm(BACKWARD_FILTER, wid, lid);
}
