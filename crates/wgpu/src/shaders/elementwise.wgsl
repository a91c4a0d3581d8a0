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

const LINEAR: u32 = 0u;
const RELU: u32 = 1u;
const SIGMOID: u32 = 2u;
const TANH: u32 = 3u;
const LEAKY_RELU: u32 = 4u;
const GELU: u32 = 5u;
const GELU_ERF: u32 = 6u;
const ELU: u32 = 7u;
const SELU: u32 = 8u;
const SWISH: u32 = 9u;
const SOFTPLUS: u32 = 10u;
// ln(clamp(v, alpha, 1 - alpha)): the log of a probability in the cross-entropies (Keras'
// epsilon clip); its gradient is 1 / v inside the clip and 0 outside, as on the CPU.
const LOG_CLIPPED: u32 = 11u;

// SELU's self-normalising constants (Klambauer et al. 2017, as in Keras).
const SELU_ALPHA: f32 = 1.6732632423543772;
const SELU_SCALE: f32 = 1.0507009873554805;

// sqrt(2 / pi) of the tanh-approximated GELU.
const GELU_C: f32 = 0.7978845608028654;
const GELU_A: f32 = 0.044715;

// 1 / sqrt(2) and 1 / sqrt(2 pi) of the exact (erf) GELU.
const SQRT1_2: f32 = 0.7071067811865476;
const INV_SQRT_2PI: f32 = 0.3989422804014327;

// erf by Abramowitz & Stegun 7.1.26 (absolute error < 1.5e-7; WGSL has no erf builtin).
fn erf_approx(v: f32) -> f32 {
    let a = abs(v);
    let t = 1.0 / (1.0 + 0.3275911 * a);
    let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
    let r = 1.0 - poly * exp(-a * a);
    return select(-r, r, v >= 0.0);
}

// e^v - 1 without the cancellation of exp(v) - 1 near 0 (WGSL has no expm1): a Taylor
// polynomial below |v| = 0.01, where its truncation error is under 1e-10 relative.
fn expm1_c(v: f32) -> f32 {
    if (abs(v) < 0.01) {
        return v * (1.0 + v * (0.5 + v * (0.16666667 + v * 0.041666668)));
    }
    return exp(v) - 1.0;
}

// ln(1 + e^v) = max(v, 0) + ln(1 + e^-|v|); WGSL has no log1p, so a small e^-|v| (where
// 1 + e would round it away) takes the series e - e^2/2.
fn softplus_c(v: f32) -> f32 {
    let e = exp(-abs(v));
    var l = log(1.0 + e);
    if (e < 1e-4) {
        l = e * (1.0 - 0.5 * e);
    }
    return max(v, 0.0) + l;
}

fn index(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * 256u + lid.x;
}

fn act(code: u32, v: f32) -> f32 {
    switch code {
        case RELU: {
            return max(v, 0.0);
        }
        case SIGMOID: {
            return sigmoid(v);
        }
        case TANH: {
            return tanh_c(v);
        }
        case LEAKY_RELU: {
            return select(p.alpha * v, v, v > 0.0);
        }
        case GELU: {
            return 0.5 * v * (1.0 + tanh_c(GELU_C * (v + GELU_A * v * v * v)));
        }
        case GELU_ERF: {
            return 0.5 * v * (1.0 + erf_approx(v * SQRT1_2));
        }
        case ELU: {
            return select(p.alpha * expm1_c(v), v, v > 0.0);
        }
        case SELU: {
            return SELU_SCALE * select(SELU_ALPHA * expm1_c(v), v, v > 0.0);
        }
        case SWISH: {
            return v * sigmoid(v);
        }
        case SOFTPLUS: {
            return softplus_c(v);
        }
        case LOG_CLIPPED: {
            return log(clamp(v, p.alpha, 1.0 - p.alpha));
        }
        default: {
            return v;
        }
    }
}

// d act / d v at the input v.
fn act_grad(code: u32, v: f32) -> f32 {
    switch code {
        case RELU: {
            return select(0.0, 1.0, v > 0.0);
        }
        case SIGMOID: {
            let s = sigmoid(v);
            return s * (1.0 - s);
        }
        case TANH: {
            let t = tanh_c(v);
            return 1.0 - t * t;
        }
        case LEAKY_RELU: {
            return select(p.alpha, 1.0, v > 0.0);
        }
        case GELU: {
            let t = tanh_c(GELU_C * (v + GELU_A * v * v * v));
            return 0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * GELU_C * (1.0 + 3.0 * GELU_A * v * v);
        }
        case GELU_ERF: {
            return 0.5 * (1.0 + erf_approx(v * SQRT1_2)) + v * INV_SQRT_2PI * exp(-0.5 * v * v);
        }
        case ELU: {
            return select(p.alpha * exp(v), 1.0, v > 0.0);
        }
        case SELU: {
            return SELU_SCALE * select(SELU_ALPHA * exp(v), 1.0, v > 0.0);
        }
        case SWISH: {
            let s = sigmoid(v);
            return s + v * s * (1.0 - s);
        }
        case SOFTPLUS: {
            return sigmoid(v);
        }
        case LOG_CLIPPED: {
            return select(0.0, 1.0 / v, v >= p.alpha && v <= 1.0 - p.alpha);
        }
        default: {
            return 1.0;
        }
    }
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
        out[i] = act(p.code, x[i]);
    }
}

// out = dy * act'(x), with x at binding 1 and dy at binding 2.
@compute @workgroup_size(256)
fn activation_grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i < p.n) {
        out[i] = y[i] * act_grad(p.code, x[i]);
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
