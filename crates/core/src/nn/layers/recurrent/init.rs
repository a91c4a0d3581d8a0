//! The recurrent kernel's initializer: Keras' default `orthogonal` (with its gain), or any
//! common initializer.

use serde_json::{json, Value};

use crate::alloc::{self, WeightFill};
use crate::nn::init::Initializer;
use crate::nn::options::Options;
use crate::rng::Rng;
use crate::Result;

/// The recurrent-kernel initializer: Keras' default `orthogonal`, or any common initializer.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum RecurrentInit {
    Orthogonal { gain: f32 },
    Other(Initializer),
}

impl RecurrentInit {
    pub(super) fn read(o: &mut Options) -> Result<RecurrentInit> {
        let Some(v) = o.value("recurrentInitializer") else {
            return Ok(RecurrentInit::Orthogonal { gain: 1.0 });
        };
        let name = match &v {
            Value::String(s) => Some(s.as_str()),
            Value::Object(m) => m.get("name").and_then(Value::as_str),
            _ => None,
        };
        if name != Some("orthogonal") {
            return Initializer::parse(&v).map(RecurrentInit::Other);
        }
        let mut rest = v.clone();
        if let Some(m) = rest.as_object_mut() {
            m.remove("name");
        }
        let mut io = Options::new(
            "initializer 'orthogonal'",
            if rest.is_object() { &rest } else { &Value::Null },
        )?;
        let gain = io.f32("gain")?.unwrap_or(1.0);
        io.finish()?;
        Ok(RecurrentInit::Orthogonal { gain })
    }

    pub(super) fn sample(&self, shape: &[usize; 2], rng: &mut Rng) -> Result<Vec<f32>> {
        match self {
            RecurrentInit::Orthogonal { gain } => match alloc::charge_weight(shape)? {
                // Weights about to be overwritten from a file skip the O(n^3) orthogonalisation.
                (n, WeightFill::Overwrite) => alloc::try_filled("a recurrent kernel", n, 0.0),
                _ => Ok(orthogonal(shape[0], shape[1], *gain, rng)),
            },
            RecurrentInit::Other(init) => init.sample(shape, rng),
        }
    }

    pub(super) fn to_json(&self) -> Value {
        match self {
            RecurrentInit::Orthogonal { gain } if *gain == 1.0 => json!("orthogonal"),
            RecurrentInit::Orthogonal { gain } => json!({"name": "orthogonal", "gain": gain}),
            RecurrentInit::Other(init) => init.to_json(),
        }
    }
}

/// A `rows x cols` matrix with orthonormal rows (rows <= cols) or columns, times `gain`: the
/// Q factor of a standard normal matrix, computed by twice-repeated modified Gram-Schmidt in
/// f64 (which yields Keras' sign convention, a positive diagonal of R, by construction).
fn orthogonal(rows: usize, cols: usize, gain: f32, rng: &mut Rng) -> Vec<f32> {
    let (long, short) = (rows.max(cols), rows.min(cols));
    let mut q: Vec<Vec<f64>> = Vec::with_capacity(short);
    while q.len() < short {
        let mut v: Vec<f64> = (0..long).map(|_| rng.normal() as f64).collect();
        for _ in 0..2 {
            for p in &q {
                let d: f64 = v.iter().zip(p).map(|(a, b)| a * b).sum();
                v.iter_mut().zip(p).for_each(|(a, b)| *a -= d * b);
            }
        }
        let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt();
        // A (measure-zero) dependent draw is simply redrawn.
        if norm > 1e-8 {
            v.iter_mut().for_each(|a| *a /= norm);
            q.push(v);
        }
    }
    let mut out = vec![0.0f32; rows * cols];
    for i in 0..rows {
        for j in 0..cols {
            let v = if rows >= cols { q[j][i] } else { q[i][j] };
            out[i * cols + j] = gain * v as f32;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orthogonal_rows_are_orthonormal() {
        let mut rng = Rng::new(5);
        for (r, c) in [(4, 16), (16, 4), (8, 8)] {
            let w = orthogonal(r, c, 1.0, &mut rng);
            // W W^T = I for wide matrices, W^T W = I for tall ones.
            let (n, m, tall) = if r <= c { (r, c, false) } else { (c, r, true) };
            for i in 0..n {
                for j in 0..n {
                    let d: f32 = (0..m)
                        .map(|k| {
                            if tall {
                                w[k * c + i] * w[k * c + j]
                            } else {
                                w[i * c + k] * w[j * c + k]
                            }
                        })
                        .sum();
                    let want = if i == j { 1.0 } else { 0.0 };
                    assert!((d - want).abs() < 1e-5, "{r}x{c} ({i},{j}): {d}");
                }
            }
        }
    }
}
