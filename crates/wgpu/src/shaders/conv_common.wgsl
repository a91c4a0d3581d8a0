// NHWC conv2d as implicit GEMM (no im2col buffer): the A operand is gathered from the image
// on the fly. Kernel layout [kh, kw, cin, cout] (Keras). This file holds the parameters and
// the gathers; source.rs appends a tiling core: conv.wgsl (64x64x16 tiles, 4x4 register
// blocks, as matmul.wgsl) or conv_t128.wgsl (128x128 tiles, 8x8 blocks, as
// matmul_t128.wgsl). The three passes as GEMMs (out[gm, gn] = sum_k A B):
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
    // forward_small only (conv.wgsl): add bias[co] to every output.
    has_bias: u32,
    gm: u32,
    gn: u32,
    gk: u32,
    // Split-K: workgroup z sums k in [z * k_chunk, (z + 1) * k_chunk) (a multiple of 16, so no k-slab straddles two chunks) and
    // writes its partial result to out[z * gm * gn ..]; the host then sums the partials.
    k_chunk: u32,
    // Workgroup offset of this dispatch: grids larger than the per-dimension limit are
    // recorded as several dispatches, each covering a slice of the tiles.
    off_x: u32,
    off_y: u32,
    off_z: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src_a: array<f32>;
@group(0) @binding(2) var<storage, read> src_b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

const FORWARD: u32 = 0u;
const BACKWARD_INPUT: u32 = 1u;
const BACKWARD_FILTER: u32 = 2u;


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
