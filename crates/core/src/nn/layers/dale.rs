//! Dale's law for `EIRNN` (and the inputs of `EIDense`, see [`super::dann`]): every unit is
//! excitatory (E) or inhibitory (I), and all of a unit's outgoing weights share its sign. A
//! kernel's row `i` holds the weights leaving presynaptic unit `i`, so the constraint is one
//! sign per row ([`Param::with_row_signs`]), kept by every optimizer step. Populations are ordered E first: of `n` units, the first
//! `round(fraction * n)` are excitatory.

use serde_json::{Map, Value};

use crate::nn::options::Options;
use crate::nn::param::Param;
use crate::{Error, Result};

/// The E/I split of a layer's own units and of its inputs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Dale {
    /// Fraction of this layer's units that are excitatory (their signs in the next layer).
    pub excitatory: f64,
    /// Fraction of the inputs that are excitatory (1: raw inputs, non-negative weights).
    pub input_excitatory: f64,
}

impl Dale {
    /// Reads `excitatoryFraction` (default 0.8) and `inputExcitatoryFraction` (default 1).
    pub fn read(o: &mut Options, what: &str) -> Result<Dale> {
        Ok(Dale {
            excitatory: fraction(o, what, "excitatoryFraction", 0.8)?,
            input_excitatory: fraction(o, what, "inputExcitatoryFraction", 1.0)?,
        })
    }

    /// Adds the two options to a layer config.
    pub fn write(&self, config: &mut Map<String, Value>) {
        config.insert("excitatoryFraction".into(), self.excitatory.into());
        config.insert("inputExcitatoryFraction".into(), self.input_excitatory.into());
    }
}

/// Reads a fraction option in [0, 1] with a default.
pub(super) fn fraction(o: &mut Options, what: &str, key: &'static str, default: f64) -> Result<f64> {
    let f = o.f64(key)?.unwrap_or(default);
    if (0.0..=1.0).contains(&f) {
        Ok(f)
    } else {
        Err(Error::Invalid(format!(
            "{what}: option '{key}' must be a fraction in [0, 1], got {f}"
        )))
    }
}

/// `+1` for the first `round(fraction * n)` units, `-1` for the rest.
pub(super) fn signs(n: usize, fraction: f64) -> Vec<f32> {
    let excitatory = (fraction * n as f64).round() as usize;
    (0..n).map(|i| if i < excitatory { 1.0 } else { -1.0 }).collect()
}

/// A sampled kernel `[rows, ...]` made to obey row signs: magnitudes `|w|`, with the inhibitory
/// rows scaled by `sqrt(nE / nI)` and the excitatory ones by `sqrt(nI / nE)`. The expected
/// E and I input to a unit then cancel (for equal presynaptic activity), and the variance is
/// the initializer's; with one population only, the magnitudes are left as they are.
pub(super) fn signed_param(
    name: String,
    data: Vec<f32>,
    shape: &[usize],
    trainable: bool,
    signs: Vec<f32>,
) -> Result<Param> {
    let n_e = signs.iter().filter(|&&s| s > 0.0).count() as f32;
    let n_i = signs.len() as f32 - n_e;
    let (scale_e, scale_i) = if n_e > 0.0 && n_i > 0.0 {
        ((n_i / n_e).sqrt(), (n_e / n_i).sqrt())
    } else {
        (1.0, 1.0)
    };
    let cols = data.len() / signs.len().max(1);
    let mut data = data;
    for (row, &s) in data.chunks_exact_mut(cols.max(1)).zip(&signs) {
        let k = if s > 0.0 { scale_e } else { -scale_i };
        row.iter_mut().for_each(|w| *w = k * w.abs());
    }
    Param::new(name, data, shape, trainable)?.with_row_signs(signs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn populations_are_excitatory_first() {
        assert_eq!(signs(5, 0.8), [1.0, 1.0, 1.0, 1.0, -1.0]);
        assert_eq!(signs(3, 0.0), [-1.0; 3]);
        assert_eq!(signs(3, 1.0), [1.0; 3]);
    }

    #[test]
    fn initial_weights_balance_e_and_i() {
        let data = vec![0.5, -0.5, 0.25, -0.25, 1.0, -1.0];
        let p = signed_param("w".into(), data, &[3, 2], true, signs(3, 0.67)).unwrap();
        let w = p.get().to_vec();
        // Two E rows scaled by sqrt(1/2), one I row by -sqrt(2).
        let r = std::f32::consts::FRAC_1_SQRT_2;
        let want = [0.5 * r, 0.5 * r, 0.25 * r, 0.25 * r, -2f32.sqrt(), -2f32.sqrt()];
        for (a, b) in w.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{w:?}");
        }
    }
}
