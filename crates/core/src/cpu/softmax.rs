//! Softmax and log-softmax over the last axis, rows in parallel.

use rayon::prelude::*;

fn rows_par_min(cols: usize) -> usize {
    (1 << 14) / cols.max(1)
}

/// Softmax of each `cols`-long row.
pub fn softmax_forward(x: &[f32], cols: usize) -> Vec<f32> {
    let mut y = x.to_vec();
    let row = |r: &mut [f32]| {
        let max = r.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let mut sum = 0.0;
        for v in r.iter_mut() {
            *v = (*v - max).exp();
            sum += *v;
        }
        let inv = 1.0 / sum;
        r.iter_mut().for_each(|v| *v *= inv);
    };
    if x.len() / cols.max(1) >= rows_par_min(cols) {
        y.par_chunks_mut(cols).for_each(row);
    } else {
        y.chunks_mut(cols).for_each(row);
    }
    y
}

/// dx = y * (dy - sum(dy * y)) per row.
pub fn softmax_backward(y: &[f32], dy: &[f32], cols: usize) -> Vec<f32> {
    let mut dx = vec![0.0; y.len()];
    dx.par_chunks_mut(cols)
        .zip(y.par_chunks(cols).zip(dy.par_chunks(cols)))
        .for_each(|(dx, (y, dy))| {
            let dot: f32 = y.iter().zip(dy).map(|(a, b)| a * b).sum();
            for i in 0..dx.len() {
                dx[i] = y[i] * (dy[i] - dot);
            }
        });
    dx
}

/// log(softmax(x)) per row, computed stably.
pub fn log_softmax_forward(x: &[f32], cols: usize) -> Vec<f32> {
    let mut y = x.to_vec();
    y.par_chunks_mut(cols).for_each(|r| {
        let max = r.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let lse = max + r.iter().map(|&v| (v - max).exp()).sum::<f32>().ln();
        r.iter_mut().for_each(|v| *v -= lse);
    });
    y
}

/// dx = dy - softmax(x) * sum(dy) per row, with y = log_softmax(x).
pub fn log_softmax_backward(y: &[f32], dy: &[f32], cols: usize) -> Vec<f32> {
    let mut dx = vec![0.0; y.len()];
    dx.par_chunks_mut(cols)
        .zip(y.par_chunks(cols).zip(dy.par_chunks(cols)))
        .for_each(|(dx, (y, dy))| {
            let total: f32 = dy.iter().sum();
            for i in 0..dx.len() {
                dx[i] = dy[i] - y[i].exp() * total;
            }
        });
    dx
}
