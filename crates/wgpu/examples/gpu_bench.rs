//! GPU kernel benchmark: prints one JSON line with the adapter, GEMM GFLOP/s and conv2d timing.
//!
//! `cargo run -p cortex-wgpu --release --example gpu_bench` measures GEMM 1024^3, 4096^3 and
//! 8192^3 (default kernel choice, and 1024^3 with B transposed) and the MNIST convnet's
//! second conv layer at batch 1024 ([1024, 13, 13, 32] * [3, 3, 32, 64], valid padding).
//! `gemm_kernels` times every concrete [`MatmulKernel`] at each size (`nn`) and, at the
//! middle size, the transposed forms backward passes use (`tn` = Aᵀ·B, `nt` = A·Bᵀ), so one
//! run shows which kernel to make the default; `gemm_auto_kernel` names the one `Auto` picks.
//! `conv2d_kernels` likewise times the conv layer on every tiling (`runs` names the kernel
//! that actually ran).
//! `SIZES=small` shrinks everything (GEMM 128^3 / 256^3 / 512^3, batch 8) for software adapters such
//! as lavapipe. Each figure is the median of several runs after warm-up, timing
//! submit + wait for the device (no readback).

use std::time::Instant;

use cortex_wgpu::{Activation, Conv2dSpec, Gpu, GpuTensor, MatmulDesc, MatmulKernel, Result, ShaderChecks};

fn median_secs(reps: usize, mut f: impl FnMut() -> Result<GpuTensor>, gpu: &Gpu) -> Result<f64> {
    // Warm up for at least 2 calls and 250 ms: an idle GPU runs at lower clocks until it has
    // been busy a while, which skewed single figures of earlier runs by up to 3x.
    let warm = Instant::now();
    for i in 0.. {
        drop(f()?);
        gpu.wait()?;
        if i >= 1 && warm.elapsed().as_secs_f64() >= 0.25 {
            break;
        }
    }
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t0 = Instant::now();
        let out = f()?;
        gpu.wait()?;
        times.push(t0.elapsed().as_secs_f64());
        drop(out);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

fn fill(n: usize) -> Vec<f32> {
    (0..n).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect()
}

fn gemm_gflops(gpu: &Gpu, n: usize, trans_b: bool, reps: usize) -> Result<f64> {
    let a = gpu.upload(&fill(n * n), &[n, n])?;
    let b = gpu.upload(&fill(n * n), &[n, n])?;
    let t = median_secs(reps, || gpu.matmul(&a, &b, false, trans_b), gpu)?;
    Ok(2.0 * (n as f64).powi(3) / t / 1e9)
}

/// GFLOP/s of an `n^3` GEMM with the given transposes on `kernel`.
fn kernel_gflops(gpu: &Gpu, n: usize, ta: bool, tb: bool, kernel: MatmulKernel, reps: usize) -> Result<f64> {
    let a = gpu.upload(&fill(n * n), &[n, n])?;
    let b = gpu.upload(&fill(n * n), &[n, n])?;
    let d = MatmulDesc {
        m: n,
        n,
        k: n,
        batch: 1,
        trans_a: ta,
        trans_b: tb,
        stride_a: n * n,
        stride_b: n * n,
    };
    let t = median_secs(reps, || gpu.matmul_with_kernel(&a, &b, &d, kernel), gpu)?;
    Ok(2.0 * (n as f64).powi(3) / t / 1e9)
}

/// `{"tile64":{"nn_1024":..,..},..}` over every concrete kernel, mixed precision included.
fn kernels_json(gpu: &Gpu, sizes: [usize; 3], reps: usize) -> String {
    let mut parts = Vec::new();
    for kernel in MatmulKernel::CONCRETE.into_iter().chain([MatmulKernel::Tile128F16]) {
        // A kernel the device cannot run (e.g. too little workgroup memory) falls back; say so.
        let probe = MatmulDesc {
            m: sizes[1],
            n: sizes[1],
            k: sizes[1],
            batch: 1,
            trans_a: false,
            trans_b: false,
            stride_a: 0,
            stride_b: 0,
        };
        let ran = gpu.matmul_kernel_for(&probe, kernel);
        let mut fields = vec![format!("\"runs\":{}", json_str(ran.name()))];
        for n in sizes {
            fields.push(format!(
                "\"nn_{n}\":{}",
                num(kernel_gflops(gpu, n, false, false, kernel, reps))
            ));
        }
        let n = sizes[1];
        fields.push(format!(
            "\"tn_{n}\":{}",
            num(kernel_gflops(gpu, n, true, false, kernel, reps))
        ));
        fields.push(format!(
            "\"nt_{n}\":{}",
            num(kernel_gflops(gpu, n, false, true, kernel, reps))
        ));
        parts.push(format!("{}:{{{}}}", json_str(kernel.name()), fields.join(",")));
    }
    format!("{{{}}}", parts.join(","))
}

/// Seconds for the MNIST convnet's second conv layer at `batch`: forward, backward-input,
/// backward-filter, on the device's current conv kernel choice.
fn conv_secs(gpu: &Gpu, batch: usize, reps: usize) -> Result<[f64; 3]> {
    let x = gpu.upload(&fill(batch * 13 * 13 * 32), &[batch, 13, 13, 32])?;
    let k = gpu.upload(&fill(3 * 3 * 32 * 64), &[3, 3, 32, 64])?;
    let dy = gpu.upload(&fill(batch * 11 * 11 * 64), &[batch, 11, 11, 64])?;
    let spec = Conv2dSpec::default();
    Ok([
        median_secs(reps, || gpu.conv2d(&x, &k, &spec), gpu)?,
        median_secs(
            reps,
            || gpu.conv2d_backward_input(&dy, &k, [batch, 13, 13, 32], &spec),
            gpu,
        )?,
        median_secs(reps, || gpu.conv2d_backward_filter(&x, &dy, (3, 3), &spec), gpu)?,
    ])
}

/// A figure with 2 decimals, or the error as a JSON string: one kernel failing on a device
/// must not cost the figures of the others.
fn num<E: std::fmt::Display>(r: std::result::Result<f64, E>) -> String {
    match r {
        Ok(v) => format!("{v:.2}"),
        Err(e) => json_str(&format!("error: {e}")),
    }
}

/// `"forward_ms":..,"forward_gflops":..,"backward_input_ms":..,"backward_filter_ms":..`.
fn conv_fields(secs: Result<[f64; 3]>, flops: f64) -> String {
    let secs = secs.map_err(|e| e.to_string());
    let ms = |i: usize| num(secs.clone().map(|t| t[i] * 1e3));
    format!(
        "\"forward_ms\":{},\"forward_gflops\":{},\"backward_input_ms\":{},\"backward_filter_ms\":{}",
        ms(0),
        num(secs.clone().map(|t| flops / t[0] / 1e9)),
        ms(1),
        ms(2)
    )
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn main() -> Result<()> {
    let small = std::env::var("SIZES").is_ok_and(|v| v == "small");
    let (g1, g2, g3, batch, reps) = if small {
        (128, 256, 512, 8, 3)
    } else {
        (1024, 4096, 8192, 1024, 7)
    };
    let gpu = Gpu::new()?;
    let s = gpu.adapter_summary().clone();
    let gemm1 = num(gemm_gflops(&gpu, g1, false, reps));
    let gemm1_nt = num(gemm_gflops(&gpu, g1, true, reps));
    let gemm2 = num(gemm_gflops(&gpu, g2, false, reps));
    let gemm3 = num(gemm_gflops(&gpu, g3, false, reps));
    let kernels = kernels_json(&gpu, [g1, g2, g3], reps);
    let auto_probe = MatmulDesc {
        m: g2,
        n: g2,
        k: g2,
        batch: 1,
        trans_a: false,
        trans_b: false,
        stride_a: 0,
        stride_b: 0,
    };
    let auto_kernel = gpu.matmul_kernel_for(&auto_probe, MatmulKernel::Auto).name();
    let conv_flops = 2.0 * (batch * 11 * 11 * 64 * 3 * 3 * 32) as f64;
    let mut conv_kernels = Vec::new();
    for kernel in MatmulKernel::CONCRETE {
        gpu.set_conv_kernel(kernel);
        let secs = conv_secs(&gpu, batch, reps);
        conv_kernels.push(format!(
            "{}:{{\"runs\":{},{}}}",
            json_str(kernel.name()),
            json_str(gpu.conv_kernel_for(batch * 11 * 11, 64).name()),
            conv_fields(secs, conv_flops)
        ));
    }
    gpu.set_conv_kernel(MatmulKernel::Auto);
    let conv_kernels = format!("{{{}}}", conv_kernels.join(","));
    let conv_auto = conv_fields(conv_secs(&gpu, batch, reps), conv_flops);
    println!(
        "{{\"adapter\":{},\"checks\":{},\"backend\":{},\"device_type\":{},\"sizes\":{},\"gemm_{g1}_gflops\":{gemm1},\"gemm_{g1}_nt_gflops\":{gemm1_nt},\"gemm_{g2}_gflops\":{gemm2},\"gemm_{g3}_gflops\":{gemm3},\"gemm_auto_kernel\":{},\"gemm_kernels\":{kernels},\"conv2d_b{batch}_13x13x32_to_64_3x3\":{{{conv_auto}}},\"conv2d_kernels\":{conv_kernels}}}",
        json_str(&s.name),
        json_str(gpu.shader_checks().name()),
        json_str(&s.backend),
        json_str(&s.device_type),
        json_str(if small { "small" } else { "full" }),
        json_str(auto_kernel),
    );
    println!("{}", first_layer_json(&gpu, &s.name, batch, reps)?);
    println!("{}", checks_json(&gpu, &s.name, [g2, g3], batch, reps));
    Ok(())
}

/// The default GEMM and conv kernels under each [`ShaderChecks`] mode, side by side in one
/// process: what wgpu's run-time checks (clamped indices, hidden loop counters) cost.
fn checks_json(gpu: &Gpu, adapter: &str, sizes: [usize; 2], batch: usize, reps: usize) -> String {
    let before = gpu.shader_checks();
    let conv_flops = 2.0 * (batch * 11 * 11 * 64 * 3 * 3 * 32) as f64;
    let mut parts = Vec::new();
    for mode in [ShaderChecks::Full, ShaderChecks::Bounds, ShaderChecks::None] {
        gpu.set_shader_checks(mode);
        let mut fields = Vec::new();
        for n in sizes {
            fields.push(format!("\"gemm_{n}_gflops\":{}", num(gemm_gflops(gpu, n, false, reps))));
        }
        fields.push(format!(
            "\"gemm_{}_tile64_gflops\":{}",
            sizes[0],
            num(kernel_gflops(gpu, sizes[0], false, false, MatmulKernel::Tile64, reps))
        ));
        fields.push(conv_fields(conv_secs(gpu, batch, reps), conv_flops));
        fields.push(format!(
            "\"conv1_backward_filter_ms\":{}",
            num(conv1_filter_secs(gpu, batch, reps).map(|t| t * 1e3))
        ));
        parts.push(format!("{}:{{{}}}", json_str(mode.name()), fields.join(",")));
    }
    gpu.set_shader_checks(before);
    format!(
        "{{\"adapter\":{},\"default_checks\":{},\"checks\":{{{}}}}}",
        json_str(adapter),
        json_str(before.name()),
        parts.join(",")
    )
}

/// Seconds for the MNIST convnet's first layer's filter gradient at `batch`.
fn conv1_filter_secs(gpu: &Gpu, batch: usize, reps: usize) -> Result<f64> {
    let x = gpu.upload(&fill(batch * 28 * 28), &[batch, 28, 28, 1])?;
    let dy = gpu.upload(&fill(batch * 26 * 26 * 32), &[batch, 26, 26, 32])?;
    let spec = Conv2dSpec::default();
    median_secs(reps, || gpu.conv2d_backward_filter(&x, &dy, (3, 3), &spec), gpu)
}

/// The MNIST convnet's first layer ([n, 28, 28, 1] * [3, 3, 1, 32]) pass by pass, and its
/// dense head ([8n, 1600] x [1600, 10]): the shapes a profile of the model step flags.
fn first_layer_json(gpu: &Gpu, adapter: &str, batch: usize, reps: usize) -> Result<String> {
    let spec = Conv2dSpec::default();
    let x = gpu.upload(&fill(batch * 28 * 28), &[batch, 28, 28, 1])?;
    let k = gpu.upload(&fill(9 * 32), &[3, 3, 1, 32])?;
    let dy = gpu.upload(&fill(batch * 26 * 26 * 32), &[batch, 26, 26, 32])?;
    let fwd = median_secs(reps, || gpu.conv2d(&x, &k, &spec), gpu)?;
    // With the bias, at this batch and at 8x (the inference bench's batch): the direct
    // short-k kernel (the default) against the 64-tile implicit GEMM + bias_add.
    let b = gpu.upload(&fill(32), &[32])?;
    let big = 8 * batch;
    let x_big = gpu.upload(&fill(big * 28 * 28), &[big, 28, 28, 1])?;
    let mut with_bias = Vec::new();
    for kernel in [MatmulKernel::Auto, MatmulKernel::Tile64] {
        gpu.set_conv_kernel(kernel);
        for (n, x) in [(batch, &x), (big, &x_big)] {
            let t = median_secs(reps, || gpu.conv2d_bias(x, &k, Some(&b), &spec), gpu)?;
            let path = if kernel == MatmulKernel::Auto {
                "direct"
            } else {
                "gemm_tile64"
            };
            with_bias.push(format!("\"forward_bias_{path}_b{n}\":{:.3}", t * 1e3));
        }
    }
    gpu.set_conv_kernel(MatmulKernel::Auto);
    drop(x_big);
    let bwd_filter = median_secs(reps, || gpu.conv2d_backward_filter(&x, &dy, (3, 3), &spec), gpu)?;
    let flat = dy.clone().reshape(&[batch * 26 * 26, 32])?;
    let bias_grad = median_secs(reps, || gpu.sum_rows(&flat), gpu)?;
    let relu_bwd = median_secs(reps, || gpu.activation_backward(Activation::Relu, &dy, &dy), gpu)?;
    let dropout = median_secs(reps, || gpu.dropout(&dy, 0.5, 7), gpu)?;
    let rows = 8 * batch;
    let a = gpu.upload(&fill(rows * 1600), &[rows, 1600])?;
    let w = gpu.upload(&fill(1600 * 10), &[1600, 10])?;
    let dense = median_secs(reps, || gpu.matmul(&a, &w, false, false), gpu)?;
    // Host cost of one kernel call (its own command buffer and submit) on a tiny tensor.
    let tiny = gpu.upload(&fill(256), &[256])?;
    gpu.wait()?;
    let t0 = std::time::Instant::now();
    for _ in 0..200 {
        drop(gpu.scale(&tiny, 1.0, 0.0)?);
    }
    gpu.wait()?;
    let per_call_us = t0.elapsed().as_secs_f64() / 200.0 * 1e6;
    // The same calls collected into one submission (Gpu::record): what submits cost.
    let t0 = std::time::Instant::now();
    {
        let _scope = gpu.record();
        for _ in 0..200 {
            drop(gpu.scale(&tiny, 1.0, 0.0)?);
        }
    }
    gpu.wait()?;
    let per_call_recorded_us = t0.elapsed().as_secs_f64() / 200.0 * 1e6;
    let t0 = std::time::Instant::now();
    for _ in 0..50 {
        drop(gpu.scale(&tiny, 1.0, 0.0)?);
        gpu.wait()?;
    }
    let per_call_wait_us = t0.elapsed().as_secs_f64() / 50.0 * 1e6;
    let ms = |s: f64| format!("{:.3}", s * 1e3);
    Ok(format!(
        "{{\"adapter\":{},\"mnist_conv1_b{batch}_ms\":{{\"forward\":{},\"backward_filter\":{},\"bias_grad_sum_rows\":{},\"relu_backward\":{},\"dropout\":{},{}}},\"dense_{rows}x1600x10_ms\":{},\"tiny_kernel_call_us\":{per_call_us:.1},\"tiny_kernel_call_recorded_us\":{per_call_recorded_us:.1},\"tiny_kernel_call_and_wait_us\":{per_call_wait_us:.1}}}",
        json_str(adapter),
        ms(fwd),
        ms(bwd_filter),
        ms(bias_grad),
        ms(relu_bwd),
        ms(dropout),
        with_bias.join(","),
        ms(dense),
    ))
}
