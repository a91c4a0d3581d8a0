//! Grids past the per-dimension workgroup limit (65,535 on most devices) are split into
//! several dispatches: once for real on cheap shapes (1x1 convs with one channel, skinny
//! GEMMs), and on every kernel with a small artificial limit on a second device.

use std::sync::OnceLock;

use super::common::{assert_close, gpu, rand_vec};
use super::matmul::reference;
use cortex_wgpu::{Conv2dSpec, Gpu, MatmulDesc, MatmulKernel};

/// A second device whose tiled dispatches split at 2 workgroups per dimension.
fn tiny_limit_gpu() -> Option<&'static Gpu> {
    static GPU: OnceLock<Option<Gpu>> = OnceLock::new();
    gpu()?;
    GPU.get_or_init(|| {
        let g = Gpu::new().expect("second device");
        g.set_workgroup_limit_override(Some(2));
        Some(g)
    })
    .as_ref()
}

/// Every `stride`-th element plus the last few, against `want(i)`.
fn check_sample(what: &str, got: &[f32], want: impl Fn(usize) -> f64, stride: usize) {
    let idx: Vec<usize> = (0..got.len()).step_by(stride).chain(got.len() - 7..got.len()).collect();
    let g: Vec<f32> = idx.iter().map(|&i| got[i]).collect();
    let w: Vec<f64> = idx.iter().map(|&i| want(i)).collect();
    assert_close(what, &g, &w, 1e-5);
}

#[test]
fn conv_1x1_past_the_row_tile_limit() {
    let Some(g) = gpu() else { return };
    let lim = g.max_workgroups_per_dimension() as usize;
    // Implicit-GEMM m = h * w rows in 64-row tiles: just over the limit in dispatch y.
    let (h, w) = (2048, (lim * 64).div_ceil(2048) + 1);
    assert!(h * w > lim * 64);
    let x = rand_vec(h * w, 3);
    let gx = g.upload(&x, &[1, h, w, 1]).unwrap();
    let gk = g.upload(&[0.75], &[1, 1, 1, 1]).unwrap();
    let spec = Conv2dSpec::default();
    let y = g.download(&g.conv2d(&gx, &gk, &spec).unwrap()).unwrap();
    check_sample("conv2d forward past limit", &y, |i| x[i] as f64 * 0.75, 997);
    let dx = g.conv2d_backward_input(&gx, &gk, [1, h, w, 1], &spec).unwrap();
    let dx = g.download(&dx).unwrap();
    check_sample("conv2d backward_input past limit", &dx, |i| x[i] as f64 * 0.75, 991);
}

#[test]
fn skinny_matmul_past_the_row_tile_limit() {
    let Some(g) = gpu() else { return };
    let lim = g.max_workgroups_per_dimension() as usize;
    // 64-row tiles: m just over lim * 64 with n = k = 4 (vec4) and n = 3, k = 2 (scalar).
    let m = lim * 64 + 100;
    for (n, k) in [(4, 4), (3, 2)] {
        let d = MatmulDesc {
            m,
            n,
            k,
            batch: 1,
            trans_a: false,
            trans_b: false,
            stride_a: m * k,
            stride_b: k * n,
        };
        assert_eq!(g.matmul_kernel_for(&d, MatmulKernel::Auto), MatmulKernel::Tile64);
        let a = rand_vec(m * k, 11);
        let b = rand_vec(k * n, 12);
        let ga = g.upload(&a, &[m, k]).unwrap();
        let gb = g.upload(&b, &[k, n]).unwrap();
        let c = g.download(&g.matmul(&ga, &gb, false, false).unwrap()).unwrap();
        let want = |i: usize| {
            let (r, col) = (i / n, i % n);
            (0..k).map(|l| a[r * k + l] as f64 * b[l * n + col] as f64).sum()
        };
        check_sample(&format!("matmul m {m} n {n} k {k}"), &c, want, 1009);
    }
}

#[test]
fn every_matmul_kernel_with_a_tiny_limit() {
    let Some(g) = tiny_limit_gpu() else { return };
    assert_eq!(g.max_workgroups_per_dimension(), 2);
    for kernel in MatmulKernel::CONCRETE {
        // Grids of 3-5 tiles in x and y, batch 5 in z; then split-K splits in z.
        for (m, n, k, batch, ta, tb) in [
            (520, 388, 12, 5, false, false),
            (388, 520, 8, 3, true, true),
            (300, 260, 20, 5, true, false),
            (264, 136, 1536, 1, false, true),
        ] {
            let d = MatmulDesc {
                m,
                n,
                k,
                batch,
                trans_a: ta,
                trans_b: tb,
                stride_a: m * k,
                stride_b: k * n,
            };
            let a = rand_vec(batch * m * k, 21);
            let b = rand_vec(batch * k * n, 22);
            let ga = g.upload(&a, &[a.len()]).unwrap();
            let gb = g.upload(&b, &[b.len()]).unwrap();
            let c = g.matmul_with_kernel(&ga, &gb, &d, kernel).unwrap();
            let what = format!("{} {d:?} with limit 2", kernel.name());
            assert_close(&what, &g.download(&c).unwrap(), &reference(&a, &b, &d), 1e-4);
        }
    }
}

#[test]
fn conv_passes_with_a_tiny_limit_match_the_default() {
    let (Some(g), Some(t)) = (gpu(), tiny_limit_gpu()) else {
        return;
    };
    // m = 2 * 17 * 17 = 578 rows (10 tiles), cout 200 (4 tiles); backward_filter splits k.
    // With 32 filters the forward is the direct kernel: 578 * 8 threads, 19 workgroups.
    let (xs, ks) = ([2, 19, 19, 3], [3, 3, 3, 200]);
    let spec = Conv2dSpec::default();
    let x = rand_vec(xs.iter().product(), 31);
    let w = rand_vec(ks.iter().product(), 32);
    let w_small = rand_vec(3 * 3 * 3 * 32, 36);
    let dy = rand_vec(2 * 17 * 17 * 200, 33);
    let big = rand_vec(64 * 19 * 19 * 3, 34);
    let big_dy = rand_vec(64 * 17 * 17 * 200, 35);
    let run = |g: &Gpu| -> Vec<Vec<f32>> {
        let gx = g.upload(&x, &xs).unwrap();
        let gw = g.upload(&w, &ks).unwrap();
        let gdy = g.upload(&dy, &[2, 17, 17, 200]).unwrap();
        let gbig = g.upload(&big, &[64, 19, 19, 3]).unwrap();
        let gbig_dy = g.upload(&big_dy, &[64, 17, 17, 200]).unwrap();
        let gw_small = g.upload(&w_small, &[3, 3, 3, 32]).unwrap();
        let outs = [
            g.conv2d(&gx, &gw_small, &spec).unwrap(),
            g.conv2d(&gx, &gw, &spec).unwrap(),
            g.conv2d_backward_input(&gdy, &gw, xs, &spec).unwrap(),
            g.conv2d_backward_filter(&gbig, &gbig_dy, (3, 3), &spec).unwrap(),
        ];
        outs.iter().map(|o| g.download(o).unwrap()).collect()
    };
    // Same kernels, same summation order: the split dispatches must agree bit for bit.
    for (i, (a, b)) in run(g).iter().zip(run(t)).enumerate() {
        assert!(a == &b, "conv pass {i} differs under a workgroup limit of 2");
    }
}
