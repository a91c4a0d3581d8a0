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
