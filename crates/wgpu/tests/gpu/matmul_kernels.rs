//! Every concrete GEMM kernel ([`MatmulKernel::CONCRETE`]) against the f64 reference, with
//! every transpose combination, ragged edges, k = 1, batches, broadcast and split-K.

use super::common::{assert_close, gpu, rand_vec};
use super::matmul::reference;
use cortex_wgpu::{MatmulDesc, MatmulKernel};

/// Runs `d` on `kernel` over random operands (A and B sized for the strides) and checks it.
fn check(d: MatmulDesc, kernel: MatmulKernel) {
    let Some(g) = gpu() else { return };
    let len = |stride: usize, size: usize| (d.batch - 1) * stride + size;
    let a = rand_vec(len(d.stride_a, d.m * d.k), (d.m * 131 + d.k) as u64);
    let b = rand_vec(len(d.stride_b, d.k * d.n), (d.n * 71 + d.k) as u64);
    let ga = g.upload(&a, &[a.len()]).unwrap();
    let gb = g.upload(&b, &[b.len()]).unwrap();
    let ran = g.matmul_kernel_for(&d, kernel);
    if d.uses_vec4() {
        assert_eq!(ran, kernel, "vec4 shape {d:?} must run the requested kernel");
    } else {
        assert_eq!(ran, MatmulKernel::Tile64, "non-vec4 shape {d:?} falls back");
    }
    let c = g.matmul_with_kernel(&ga, &gb, &d, kernel).unwrap();
    assert_eq!(c.shape(), &[d.batch, d.m, d.n]);
    let what = format!("{} {d:?}", kernel.name());
    assert_close(&what, &g.download(&c).unwrap(), &reference(&a, &b, &d), 1e-4);
}

fn desc(m: usize, n: usize, k: usize, batch: usize, ta: bool, tb: bool) -> MatmulDesc {
    MatmulDesc {
        m,
        n,
        k,
        batch,
        trans_a: ta,
        trans_b: tb,
        stride_a: m * k,
        stride_b: k * n,
    }
}

const TRANSPOSES: [(bool, bool); 4] = [(false, false), (true, false), (false, true), (true, true)];

#[test]
fn full_and_ragged_tiles_all_transposes() {
    for kernel in MatmulKernel::CONCRETE {
        for (ta, tb) in TRANSPOSES {
            // Exact 128 tiles, ragged m / n / k (multiples of 4 but not of 128 or BK), tiny.
            for (m, n, k) in [(128, 256, 64), (260, 196, 44), (132, 4, 12), (4, 132, 4)] {
                check(desc(m, n, k, 1, ta, tb), kernel);
            }
        }
    }
}

#[test]
fn k_one_and_odd_shapes() {
    for kernel in MatmulKernel::CONCRETE {
        // k = 1 is a vec4 shape only when k is no stored row length (A transposed, B not).
        check(desc(136, 140, 1, 1, true, false), kernel);
        check(desc(136, 140, 1, 1, false, false), kernel);
        // Odd sizes always fall back to the scalar 64-tile kernel.
        check(desc(131, 133, 37, 1, false, true), kernel);
    }
}

#[test]
fn batched_and_broadcast() {
    for kernel in MatmulKernel::CONCRETE {
        for (ta, tb) in TRANSPOSES {
            check(desc(132, 136, 20, 3, ta, tb), kernel);
            // One B for every A (stride 0), and one A for every B.
            check(
                MatmulDesc {
                    stride_b: 0,
                    ..desc(140, 132, 24, 2, ta, tb)
                },
                kernel,
            );
            check(
                MatmulDesc {
                    stride_a: 0,
                    ..desc(132, 128, 28, 2, ta, tb)
                },
                kernel,
            );
        }
    }
}

#[test]
fn split_k_on_every_kernel() {
    // One or two 128 tiles with a long k: split over workgroups, partials summed.
    for kernel in MatmulKernel::CONCRETE {
        for (m, n, k, ta, tb) in [(128, 128, 2048, false, false), (136, 68, 1540, true, true)] {
            assert!(cortex_wgpu::kernels::conv::split_k_chunk_for_tile(m, n, k, 128) < k);
            check(desc(m, n, k, 1, ta, tb), kernel);
        }
    }
}

#[test]
fn env_names_round_trip() {
    for k in MatmulKernel::ALL {
        assert_eq!(MatmulKernel::from_name(k.name()), Some(k));
    }
    assert_eq!(MatmulKernel::from_name("TILE128_BK8"), Some(MatmulKernel::Tile128Bk8));
    assert_eq!(MatmulKernel::from_name("nope"), None);
}

/// ‖got − want‖₂ / ‖want‖₂: the mixed-precision kernel's accuracy measure (elementwise
/// relative error is meaningless for entries that cancel to near zero).
fn norm_rel_err(got: &[f32], want: &[f64]) -> f64 {
    let num: f64 = got.iter().zip(want).map(|(&g, &w)| (g as f64 - w).powi(2)).sum();
    let den: f64 = want.iter().map(|w| w * w).sum();
    (num / den.max(1e-300)).sqrt()
}

/// Runs `d` on the f16 kernel; returns its norm-wise error against the f64 reference and the
/// f32 kernel's, for the same operands.
fn mixed_errors(d: MatmulDesc) -> (f64, f64) {
    let g = gpu().unwrap();
    let len = |stride: usize, size: usize| (d.batch - 1) * stride + size;
    let a = rand_vec(len(d.stride_a, d.m * d.k), (d.m * 31 + d.k) as u64);
    let b = rand_vec(len(d.stride_b, d.k * d.n), (d.n * 17 + d.k) as u64);
    let (ga, gb) = (g.upload(&a, &[a.len()]).unwrap(), g.upload(&b, &[b.len()]).unwrap());
    let want = reference(&a, &b, &d);
    let run = |k| g.download(&g.matmul_with_kernel(&ga, &gb, &d, k).unwrap()).unwrap();
    (
        norm_rel_err(&run(MatmulKernel::Tile128F16), &want),
        norm_rel_err(&run(MatmulKernel::Tile128Bk8), &want),
    )
}

#[test]
fn mixed_precision_kernel_where_the_device_has_f16() {
    let Some(g) = gpu() else { return };
    let probe = desc(256, 256, 64, 1, false, false);
    if !g.features().contains(wgpu::Features::SHADER_F16) {
        assert_eq!(
            g.matmul_kernel_for(&probe, MatmulKernel::Tile128F16),
            MatmulKernel::Tile128Bk8
        );
        return;
    }
    assert_eq!(
        g.matmul_kernel_for(&probe, MatmulKernel::Tile128F16),
        MatmulKernel::Tile128F16
    );
    let mut shapes = Vec::new();
    for (ta, tb) in TRANSPOSES {
        shapes.push(desc(260, 196, 44, 1, ta, tb));
        shapes.push(desc(132, 136, 20, 3, ta, tb));
    }
    // Split-K, and a long k: per-slab f32 folding keeps the error from growing with k.
    shapes.push(desc(128, 128, 2048, 1, false, false));
    shapes.push(desc(256, 256, 8192, 1, false, true));
    for d in shapes {
        let (f16, f32) = mixed_errors(d);
        eprintln!("f16 {d:?}: {f16:.2e} (f32 kernel {f32:.2e})");
        // f16 rounding of the operands alone gives ~2^-11 / sqrt(3) ≈ 3e-4 norm-wise.
        assert!(f16 < 2e-3, "f16 kernel error {f16:e} for {d:?}");
        // And the f16 path really ran: it is far less exact than f32.
        assert!(f16 > 10.0 * f32, "f16 {f16:e} vs f32 {f32:e}: did the f16 kernel run?");
    }
}

/// Every `ShaderChecks` mode compiles the GEMM and conv kernels and gets the reference
/// results (on a device of its own, so the shared one keeps its mode for parallel tests).
#[test]
fn every_shader_checks_mode_computes_the_same() {
    use cortex_wgpu::{Conv2dSpec, Gpu, ShaderChecks};
    if super::common::gpu().is_none() {
        return;
    }
    let g = Gpu::new().expect("device");
    let d = desc(132, 196, 44, 1, false, true);
    let a = rand_vec(d.m * d.k, 5);
    let b = rand_vec(d.k * d.n, 6);
    let x = rand_vec(2 * 9 * 9 * 8, 7);
    let k = rand_vec(3 * 3 * 8 * 12, 8);
    let mut convs = Vec::new();
    for mode in [ShaderChecks::Full, ShaderChecks::Bounds, ShaderChecks::None] {
        g.set_shader_checks(mode);
        assert_eq!(g.shader_checks(), mode);
        let before = g.pipeline_count();
        let ga = g.upload(&a, &[a.len()]).unwrap();
        let gb = g.upload(&b, &[b.len()]).unwrap();
        for kernel in MatmulKernel::CONCRETE {
            let c = g.matmul_with_kernel(&ga, &gb, &d, kernel).unwrap();
            let what = format!("{} under {mode:?}", kernel.name());
            assert_close(&what, &g.download(&c).unwrap(), &reference(&a, &b, &d), 1e-4);
        }
        let gx = g.upload(&x, &[2, 9, 9, 8]).unwrap();
        let gk = g.upload(&k, &[3, 3, 8, 12]).unwrap();
        let y = g.conv2d(&gx, &gk, &Conv2dSpec::default()).unwrap();
        convs.push(g.download(&y).unwrap());
        // Short k (3 * 3 * 2 = 18): the direct conv kernel.
        let gx2 = g.upload(&x[..2 * 9 * 9 * 2], &[2, 9, 9, 2]).unwrap();
        let gk2 = g.upload(&k[..3 * 3 * 2 * 12], &[3, 3, 2, 12]).unwrap();
        let y2 = g.conv2d(&gx2, &gk2, &Conv2dSpec::default()).unwrap();
        convs.push(g.download(&y2).unwrap());
        // Each mode compiles its own pipelines.
        assert!(g.pipeline_count() > before, "{mode:?} reused another mode's pipelines");
    }
    // The checks change no arithmetic: the three modes agree exactly.
    // convs: [gemm, direct] per mode.
    for mode in 1..3 {
        assert_eq!(convs[0], convs[2 * mode]);
        assert_eq!(convs[1], convs[2 * mode + 1]);
    }
    assert_eq!(ShaderChecks::parse("none"), Some(ShaderChecks::None));
    assert_eq!(ShaderChecks::parse("bogus"), None);
}
