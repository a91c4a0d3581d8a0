//! The buffer pool: a steady loop of identical ops stops allocating device buffers.

use super::common::{rand_vec, skip};
use cortex_wgpu::{Activation, Conv2dSpec, Gpu, Pool2dSpec};

#[test]
fn steady_loop_allocates_nothing_new() {
    if skip() {
        return;
    }
    // A private device so other tests running in parallel do not touch its pool.
    let g = Gpu::new().unwrap_or_else(|e| panic!("Gpu::new() failed: {e}"));
    let x = g.upload(&rand_vec(4 * 8 * 8 * 3, 1), &[4, 8, 8, 3]).unwrap();
    let k = g.upload(&rand_vec(3 * 3 * 3 * 8, 2), &[3, 3, 3, 8]).unwrap();
    let b = g.upload(&rand_vec(8, 3), &[8]).unwrap();
    let spec = Conv2dSpec {
        padding: [1, 1, 1, 1],
        ..Default::default()
    };
    let pool = Pool2dSpec {
        pool: (2, 2),
        strides: (2, 2),
        padding: [0; 4],
    };
    let step = |g: &Gpu| {
        let y = g.conv2d(&x, &k, &spec).unwrap();
        let y = g.bias_add(&y, &b).unwrap();
        let y = g.activation(Activation::Relu, &y).unwrap();
        let p = g.max_pool2d(&y, &pool).unwrap();
        let flat = p.output.reshape(&[4, 4 * 4 * 8]).unwrap();
        let s = g.softmax(&flat).unwrap();
        let total = g.sum(&s).unwrap();
        g.download(&total).unwrap()[0]
    };
    let mut counts = Vec::new();
    for _ in 0..6 {
        let v = step(&g);
        assert!((v - 4.0).abs() < 1e-4, "softmax rows sum to 1: {v}");
        counts.push(g.pool_stats().allocations);
    }
    assert!(counts[1] > 0);
    assert_eq!(counts[2], counts[5], "pool kept allocating: {counts:?}");
    g.trim_pool();
    assert_eq!(g.pool_stats().free_buffers, 0);
}
