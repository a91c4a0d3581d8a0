//! Per-kernel timings of the Keras MNIST convnet's conv and pool layers at batch 128, for
//! profiling (the side-by-side comparisons live in benches/):
//! `cargo run --release -p cortex-core --example conv_layers`.

use cortex_core::cpu::conv::{
    conv2d_backward_bias, conv2d_backward_filter, conv2d_backward_filter_bias, conv2d_backward_input, conv2d_forward,
    Conv2dGeometry, Padding,
};
use cortex_core::cpu::pool::{
    avg_pool2d_backward, avg_pool2d_forward, max_pool2d_backward, max_pool2d_forward, Pool2dGeometry,
};

fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn main() {
    use std::time::Instant;
    // Min and median of single calls: the minimum is the robust number on a shared machine.
    fn time(label: &str, reps: usize, mut f: impl FnMut()) {
        for _ in 0..3 {
            f();
        }
        let mut t: Vec<f64> = (0..reps)
            .map(|_| {
                let s = Instant::now();
                f();
                s.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        t.sort_by(|a, b| a.total_cmp(b));
        println!("{label:<40} min {:7.3} ms  median {:7.3} ms", t[0], t[reps / 2]);
    }
    let b = 128;
    for (h, ci, co) in [(28, 1, 32), (13, 32, 64)] {
        let g = Conv2dGeometry::new(&[b, h, h, ci], &[3, 3, ci, co], [1, 1], [1, 1], Padding::Valid).unwrap();
        let x = rand_vec(b * h * h * ci, 1);
        let k = rand_vec(9 * ci * co, 2);
        let bias = rand_vec(co, 3);
        let dy = rand_vec(g.output_shape().iter().product(), 4);
        let l = format!("conv {h}x{h}x{ci}->{co}");
        time(&format!("{l} forward"), 50, || {
            drop(conv2d_forward(&x, &k, Some(&bias), &g))
        });
        time(&format!("{l} backward input"), 50, || {
            drop(conv2d_backward_input(&dy, &k, &g))
        });
        time(&format!("{l} backward filter"), 50, || {
            drop(conv2d_backward_filter(&x, &dy, &g))
        });
        time(&format!("{l} backward bias"), 50, || {
            drop(conv2d_backward_bias(&dy, &g))
        });
        time(&format!("{l} backward filter+bias fused"), 50, || {
            drop(conv2d_backward_filter_bias(&x, &dy, &g))
        });
    }
    for (h, c) in [(26, 32), (11, 64)] {
        let g = Pool2dGeometry::new(&[b, h, h, c], [2, 2], [2, 2], Padding::Valid).unwrap();
        let x = rand_vec(b * h * h * c, 5);
        let (y, arg) = max_pool2d_forward(&x, &g);
        let l = format!("maxpool {h}x{h}x{c}");
        time(&format!("{l} forward"), 50, || drop(max_pool2d_forward(&x, &g)));
        time(&format!("{l} backward"), 50, || drop(max_pool2d_backward(&y, &arg, &g)));
        time(&format!("avg{l} forward"), 50, || drop(avg_pool2d_forward(&x, &g)));
        time(&format!("avg{l} backward"), 50, || drop(avg_pool2d_backward(&y, &g)));
    }
}
