//! GPU kernel benchmark: prints one JSON line with the adapter, GEMM GFLOP/s and conv2d timing.
//!
//! `cargo run -p cortex-wgpu --release --example gpu_bench` measures GEMM 1024^3, 4096^3 and
//! 8192^3 (vec4 path, and 1024^3 with B transposed for the scalar path) and the MNIST convnet's
//! second conv layer at batch 1024 ([1024, 13, 13, 32] * [3, 3, 32, 64], valid padding).
//! `SIZES=small` shrinks everything (GEMM 128^3 / 256^3 / 512^3, batch 8) for software adapters such
//! as lavapipe. Each figure is the median of several runs after warm-up, timing
//! submit + wait for the device (no readback).

use std::time::Instant;

use cortex_wgpu::{Conv2dSpec, Gpu, GpuTensor, Result};

fn median_secs(reps: usize, mut f: impl FnMut() -> Result<GpuTensor>, gpu: &Gpu) -> Result<f64> {
    for _ in 0..2 {
        drop(f()?);
        gpu.wait()?;
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
    let (g1, g2, g3, batch, reps) = if small { (128, 256, 512, 8, 3) } else { (1024, 4096, 8192, 1024, 7) };
    let gpu = Gpu::new()?;
    let s = gpu.adapter_summary().clone();
    let gemm1 = gemm_gflops(&gpu, g1, false, reps)?;
    let gemm1_nt = gemm_gflops(&gpu, g1, true, reps)?;
    let gemm2 = gemm_gflops(&gpu, g2, false, reps)?;
    let gemm3 = gemm_gflops(&gpu, g3, false, reps)?;
    let x = gpu.upload(&fill(batch * 13 * 13 * 32), &[batch, 13, 13, 32])?;
    let k = gpu.upload(&fill(3 * 3 * 32 * 64), &[3, 3, 32, 64])?;
    let spec = Conv2dSpec::default();
    let conv_s = median_secs(reps, || gpu.conv2d(&x, &k, &spec), &gpu)?;
    let conv_flops = 2.0 * (batch * 11 * 11 * 64 * 3 * 3 * 32) as f64;
    let dy = gpu.upload(&fill(batch * 11 * 11 * 64), &[batch, 11, 11, 64])?;
    let bwd_in_s = median_secs(
        reps,
        || gpu.conv2d_backward_input(&dy, &k, [batch, 13, 13, 32], &spec),
        &gpu,
    )?;
    let bwd_w_s = median_secs(reps, || gpu.conv2d_backward_filter(&x, &dy, (3, 3), &spec), &gpu)?;
    println!(
        "{{\"adapter\":{},\"backend\":{},\"device_type\":{},\"sizes\":{},\"gemm_{g1}_gflops\":{gemm1:.2},\"gemm_{g1}_nt_gflops\":{gemm1_nt:.2},\"gemm_{g2}_gflops\":{gemm2:.2},\"gemm_{g3}_gflops\":{gemm3:.2},\"conv2d_b{batch}_13x13x32_to_64_3x3\":{{\"forward_ms\":{:.3},\"forward_gflops\":{:.2},\"backward_input_ms\":{:.3},\"backward_filter_ms\":{:.3}}}}}",
        json_str(&s.name),
        json_str(&s.backend),
        json_str(&s.device_type),
        json_str(if small { "small" } else { "full" }),
        conv_s * 1e3,
        conv_flops / conv_s / 1e9,
        bwd_in_s * 1e3,
        bwd_w_s * 1e3,
    );
    Ok(())
}
