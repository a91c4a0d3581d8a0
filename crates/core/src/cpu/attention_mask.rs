//! Which (query, key) pairs attention may use, and dropout on its probabilities: the masks of
//! one [`super::attention::attention`] call and how they apply to a tile of scores.

use super::attention::Dims;
use crate::{Error, Result};

/// Which (query, key) pairs may attend; every mask holds 1 (keep) or 0 (masked), `> 0.5` keeps.
#[derive(Clone, Debug, Default)]
pub struct AttnMask {
    /// `[b, tq]`: a masked query attends to nothing (its probabilities are all zero).
    pub query: Option<Vec<f32>>,
    /// `[b, tv]`: masked keys/values are never attended to (value and key masks AND-ed).
    pub value: Option<Vec<f32>>,
    /// `[b, tq, tv]`: an explicit attention mask.
    pub explicit: Option<Vec<f32>>,
    /// Query `i` attends only to keys `j <= i`.
    pub causal: bool,
}

/// Dropout on the attention probabilities (training only).
#[derive(Clone, Copy, Debug)]
pub struct AttnDropout {
    /// Probability of dropping one entry, in `[0, 1)`.
    pub rate: f32,
    /// Seed of the keep mask.
    pub seed: u64,
}

impl AttnMask {
    pub(crate) fn is_empty(&self) -> bool {
        self.query.is_none() && self.value.is_none() && self.explicit.is_none() && !self.causal
    }

    /// Sets the masked entries of the score tile (query rows `i0..`, key columns `j0..j0+cols`) to -inf.
    pub(super) fn apply(&self, d: &Dims, b: usize, i0: usize, j0: usize, cols: usize, s: &mut [f32]) {
        if self.is_empty() {
            return;
        }
        for (r, row) in s.chunks_exact_mut(cols).enumerate() {
            let i = i0 + r;
            if self.query.as_ref().is_some_and(|m| m[b * d.tq + i] <= 0.5) {
                row.fill(f32::NEG_INFINITY);
                continue;
            }
            if let Some(m) = &self.value {
                mask_row(row, &m[b * d.tv + j0..][..cols]);
            }
            if let Some(m) = &self.explicit {
                mask_row(row, &m[(b * d.tq + i) * d.tv + j0..][..cols]);
            }
            if self.causal && j0 + cols > i + 1 {
                row[(i + 1).saturating_sub(j0)..].fill(f32::NEG_INFINITY);
            }
        }
    }

    /// 1 where query `i` may attend to key `j`, 0 where not, as `[b, heads, tq, tv]` (the same
    /// rule as [`AttnMask::apply`], for kernels that take the mask as a tensor).
    pub(crate) fn allowed(&self, d: &Dims) -> Vec<f32> {
        let block = d.tq * d.tv;
        let mut out = Vec::with_capacity(d.b * d.h * block);
        let mut scores = vec![0.0; block];
        for b in 0..d.b {
            scores.fill(0.0);
            self.apply(d, b, 0, 0, d.tv, &mut scores);
            for _ in 0..d.h {
                out.extend(scores.iter().map(|&s| if s == f32::NEG_INFINITY { 0.0 } else { 1.0 }));
            }
        }
        out
    }

    /// An Error when a mask's length does not match `[b, tq]`, `[b, tv]` or `[b, tq, tv]`.
    pub(super) fn check(&self, b: usize, tq: usize, tv: usize) -> Result<()> {
        let check = |what: &str, mask: &Option<Vec<f32>>, shape: Vec<usize>| match mask {
            Some(x) if x.len() != shape.iter().product::<usize>() => Err(Error::shape(
                &format!("attention {what} mask"),
                &shape,
                format!("{} values", x.len()),
            )),
            _ => Ok(()),
        };
        check("query", &self.query, vec![b, tq])?;
        check("value", &self.value, vec![b, tv])?;
        check("explicit", &self.explicit, vec![b, tq, tv])
    }

    /// Whether causality masks the whole key tile starting at `j0` for query rows `..i1`.
    pub(super) fn skips(&self, i1: usize, j0: usize) -> bool {
        self.causal && j0 >= i1
    }
}

fn mask_row(row: &mut [f32], keep: &[f32]) {
    for (x, &m) in row.iter_mut().zip(keep) {
        if m <= 0.5 {
            *x = f32::NEG_INFINITY;
        }
    }
}

impl AttnDropout {
    /// Fills `keep` with 0 or `1/(1-rate)` for query rows `i0..` and key columns `j0..j0+cols` of head `bh`.
    pub(crate) fn fill(&self, bh: usize, i0: usize, j0: usize, cols: usize, keep: &mut [f32]) {
        let scale = 1.0 / (1.0 - self.rate);
        let base = self.seed ^ (bh as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93);
        for (r, row) in keep.chunks_exact_mut(cols).enumerate() {
            let row_key = base.wrapping_add(((i0 + r) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            for (c, k) in row.iter_mut().enumerate() {
                let mut z = row_key.wrapping_add(((j0 + c) as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9));
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^= z >> 31;
                let u = (z >> 40) as f32 * (1.0 / (1u64 << 24) as f32);
                *k = if u < self.rate { 0.0 } else { scale };
            }
        }
    }
}
