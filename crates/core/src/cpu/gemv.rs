//! `c = a · b` for a handful of rows of `a` against a `b` packed once into column panels, for
//! products repeated many times against the same `b` (the recurrent kernel of an RNN, once per
//! time step).
//!
//! [`sgemm`](super::matmul::sgemm)'s small-row path reads `b` in place: each register tile of
//! columns walks down `k` rows `n` floats apart. For an LSTM's `[128, 512]` recurrent kernel
//! (256 KB, in L2) one step took 3.0 µs that way and 2.4 µs from panels where each tile's
//! `k x width` block is contiguous (benchmarked alone on the Zen 4 bench machine): the strided
//! walk keeps the prefetchers from streaming. Packing costs one copy of `b`, so it pays off
//! from a few products on.

#[cfg(target_arch = "x86_64")]
use super::simd::{isa, Isa};

// Elsewhere there is no kernel: `Packed::new` says so and callers keep to `sgemm`.
#[cfg(not(target_arch = "x86_64"))]
#[allow(dead_code)]
#[derive(Clone, Copy, PartialEq, Eq)]
enum Isa {
    Avx512,
    Avx2,
}
#[cfg(not(target_arch = "x86_64"))]
fn isa() -> Option<Isa> {
    None
}

/// `b [k, n]` in panels of `width` columns (the last panel zero-padded), each panel `k x width`
/// row-major, with the ISA its `width` was chosen for.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub struct Packed {
    data: Vec<f32>,
    k: usize,
    n: usize,
    width: usize,
    isa: Isa,
}

/// Vectors of accumulators per panel row (as `matmul`'s `ROW_TILE`).
const VECS: usize = 8;

impl Packed {
    /// Packs `b [k, n]`; `None` when the CPU has no AVX2/AVX-512 kernel (callers then use
    /// `sgemm`).
    pub fn new(k: usize, n: usize, b: &[f32]) -> Option<Packed> {
        assert!(b.len() >= k * n, "gemv: b too short");
        let isa = isa()?;
        let width = VECS * if isa == Isa::Avx512 { 16 } else { 8 };
        let panels = n.div_ceil(width);
        let mut data = vec![0.0; panels * k * width];
        for (p, panel) in data.chunks_exact_mut(k * width).enumerate() {
            let (j0, w) = (p * width, width.min(n - p * width));
            for (kk, row) in panel.chunks_exact_mut(width).enumerate() {
                row[..w].copy_from_slice(&b[kk * n + j0..kk * n + j0 + w]);
            }
        }
        Some(Packed { data, k, n, width, isa })
    }

    /// `c[m, n] = a[m, k] · b`.
    pub fn matmul(&self, m: usize, a: &[f32], c: &mut [f32]) {
        assert!(
            a.len() >= m * self.k && c.len() >= m * self.n,
            "gemv: operand too short"
        );
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `new` chose `isa` from the CPU's detected features; the asserts bound `a` and
        // `c`, and `data` holds every panel in full.
        unsafe {
            match self.isa {
                Isa::Avx512 => rows_avx512(self, m, a, c),
                Isa::Avx2 => rows_avx2(self, m, a, c),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (m, a, c);
    }
}

/// One row of `a` against one panel: `VECS` vectors of accumulators over `k`, then the first
/// `w` columns stored.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn panel_row<V: super::simd::Lanes>(a: *const f32, panel: *const f32, k: usize, c: *mut f32, w: usize) {
    // SAFETY: the caller passes a row of `k` floats, a full `k x VECS*L` panel and room for
    // `w <= VECS*L` outputs; masked stores write only those.
    unsafe {
        let mut acc = [V::zero(); VECS];
        for kk in 0..k {
            let x = V::splat(a.add(kk));
            let row = panel.add(kk * VECS * V::L);
            for (v, y) in acc.iter_mut().enumerate() {
                *y = V::mul_add(x, V::load(row.add(v * V::L)), *y);
            }
        }
        for (v, y) in acc.iter().enumerate() {
            let start = v * V::L;
            if start < w {
                y.store_first(c.add(start), (w - start).min(V::L));
            }
        }
    }
}

macro_rules! packed_rows {
    ($name:ident, $feat:literal, $v:ty) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $feat)]
        unsafe fn $name(p: &Packed, m: usize, a: &[f32], c: &mut [f32]) {
            let (k, n, width) = (p.k, p.n, p.width);
            for (pi, panel) in p.data.chunks_exact(k * width).enumerate() {
                let (j0, w) = (pi * width, width.min(n - pi * width));
                for i in 0..m {
                    // SAFETY: as for `panel_row`; `matmul` asserted the operand lengths.
                    unsafe {
                        panel_row::<$v>(
                            a.as_ptr().add(i * k),
                            panel.as_ptr(),
                            k,
                            c.as_mut_ptr().add(i * n + j0),
                            w,
                        )
                    };
                }
            }
        }
    };
}

packed_rows!(rows_avx512, "avx512f", std::arch::x86_64::__m512);
packed_rows!(rows_avx2, "avx2,fma", std::arch::x86_64::__m256);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_product_matches_naive() {
        for (m, n, k) in [(1, 512, 128), (3, 200, 17), (4, 7, 5), (2, 129, 64), (1, 1, 1)] {
            let a: Vec<f32> = (0..m * k).map(|i| ((i * 7 % 13) as f32 - 6.0) / 5.0).collect();
            let b: Vec<f32> = (0..k * n).map(|i| ((i * 5 % 11) as f32 - 5.0) / 4.0).collect();
            let Some(p) = Packed::new(k, n, &b) else { return };
            let mut c = vec![f32::NAN; m * n];
            p.matmul(m, &a, &mut c);
            for i in 0..m {
                for j in 0..n {
                    let want: f32 = (0..k).map(|l| a[i * k + l] * b[l * n + j]).sum();
                    let got = c[i * n + j];
                    assert!((got - want).abs() < 1e-3, "({m},{n},{k}) [{i},{j}]: {got} vs {want}");
                }
            }
        }
    }
}
