// Activation math shared by the elementwise and recurrent shaders; source.rs prepends this
// file to each of them.

// tanh accurate to ~1e-6 relative in f32 and finite everywhere. The builtin tanh may be a fast
// approximation (about 5e-4 relative error on NVIDIA's Vulkan driver, which failed our 1e-4
// checks there) or overflow through exp(2x), so: an odd Taylor polynomial near 0, where
// 1 - 2 / (e^2x + 1) would cancel, and that form (exp is accurate) elsewhere, clamped at 15
// (tanh(15) rounds to 1 in f32).
fn tanh_c(x: f32) -> f32 {
    let a = abs(x);
    var r: f32;
    if (a < 0.5) {
        let s = a * a;
        r = a * (1.0 + s * (-0.33333334 + s * (0.13333334 + s * (-0.053968254 + s * (0.021869488 + s * -0.0088632355)))));
    } else {
        r = 1.0 - 2.0 / (exp(2.0 * min(a, 15.0)) + 1.0);
    }
    return select(-r, r, x >= 0.0);
}

fn sigmoid(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-x));
}

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

// The activation `code` (Activation::code in kernels/elementwise.rs) at v; alpha is the
// leaky-relu slope, the ELU alpha or the log clip.
fn act(code: u32, alpha: f32, v: f32) -> f32 {
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
            return select(alpha * v, v, v > 0.0);
        }
        case GELU: {
            return 0.5 * v * (1.0 + tanh_c(GELU_C * (v + GELU_A * v * v * v)));
        }
        case GELU_ERF: {
            return 0.5 * v * (1.0 + erf_approx(v * SQRT1_2));
        }
        case ELU: {
            return select(alpha * expm1_c(v), v, v > 0.0);
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
            return log(clamp(v, alpha, 1.0 - alpha));
        }
        default: {
            return v;
        }
    }
}

// d act / d v at the input v.
fn act_grad(code: u32, alpha: f32, v: f32) -> f32 {
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
            return select(alpha, 1.0, v > 0.0);
        }
        case GELU: {
            let t = tanh_c(GELU_C * (v + GELU_A * v * v * v));
            return 0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * GELU_C * (1.0 + 3.0 * GELU_A * v * v);
        }
        case GELU_ERF: {
            return 0.5 * (1.0 + erf_approx(v * SQRT1_2)) + v * INV_SQRT_2PI * exp(-0.5 * v * v);
        }
        case ELU: {
            return select(alpha * exp(v), 1.0, v > 0.0);
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
            return select(0.0, 1.0 / v, v >= alpha && v <= 1.0 - alpha);
        }
        default: {
            return 1.0;
        }
    }
}

