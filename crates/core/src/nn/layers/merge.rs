//! Merge layers: `add`, `multiply` (elementwise over equal shapes) and `concatenate` (along an
//! axis). They take two or more inputs, so they only appear in functional models.

use serde_json::{json, Value};

use super::{Common, ForwardCtx, Layer};
use crate::backprop::CustomOp;
use crate::nn::options::Options;
use crate::rng::Rng;
use crate::{ops, Error, Result, Tensor};

/// (class name, Keras base name) of every layer in this family.
pub(super) const CLASSES: &[(&str, &str)] = &[("Add", "add"), ("Multiply", "multiply"), ("Concatenate", "concatenate")];

/// Creates a layer of this family, or `None` for other class names.
pub(super) fn create(class_name: &str, o: &mut Options, common: &Common) -> Option<Result<Box<dyn Layer>>> {
    let kind = match class_name {
        "Add" => Kind::Add,
        "Multiply" => Kind::Multiply,
        "Concatenate" => match o.value("axis").map(|v| v.as_i64()) {
            None => Kind::Concatenate(-1),
            Some(Some(a)) => Kind::Concatenate(a),
            Some(None) => {
                return Some(Err(Error::Invalid(
                    "Concatenate: option 'axis' must be an integer".into(),
                )))
            }
        },
        _ => return None,
    };
    Some(Ok(Box::new(Merge {
        common: common.clone(),
        kind,
    })))
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Add,
    Multiply,
    /// Axis counted with the batch axis, negative from the end (Keras).
    Concatenate(i64),
}

/// A merge layer.
pub struct Merge {
    common: Common,
    kind: Kind,
}

impl Merge {
    /// The concatenation axis as an index into sample shapes (no batch axis).
    fn sample_axis(&self, rank: usize, axis: i64) -> Result<usize> {
        let full = rank as i64 + 1;
        let a = if axis < 0 { full + axis } else { axis };
        if a <= 0 || a >= full {
            return Err(Error::Invalid(format!(
                "Concatenate '{}': axis {axis} is out of range for inputs of rank {full} (the batch axis cannot be joined)",
                self.common.name
            )));
        }
        Ok(a as usize - 1)
    }
}

impl Layer for Merge {
    fn class_name(&self) -> &'static str {
        match self.kind {
            Kind::Add => "Add",
            Kind::Multiply => "Multiply",
            Kind::Concatenate(_) => "Concatenate",
        }
    }
    fn name(&self) -> &str {
        &self.common.name
    }
    fn build(&mut self, input_shape: &[usize], _rng: &mut Rng) -> Result<Vec<usize>> {
        Err(Error::shape(
            &format!("{} '{}'", self.class_name(), self.common.name),
            "two or more inputs",
            input_shape,
        ))
    }
    fn build_many(&mut self, shapes: &[Vec<usize>], _rng: &mut Rng) -> Result<Vec<Vec<usize>>> {
        let what = format!("{} '{}'", self.class_name(), self.common.name);
        if shapes.len() < 2 {
            return Err(Error::shape(&what, "two or more inputs", shapes.len()));
        }
        match self.kind {
            Kind::Add | Kind::Multiply => {
                if let Some(bad) = shapes.iter().find(|s| *s != &shapes[0]) {
                    return Err(Error::shape(&what, &shapes[0], bad));
                }
                Ok(vec![shapes[0].clone()])
            }
            Kind::Concatenate(axis) => {
                let a = self.sample_axis(shapes[0].len(), axis)?;
                let mut out = shapes[0].clone();
                for s in &shapes[1..] {
                    let same_rest =
                        s.len() == out.len() && s.iter().zip(&out).enumerate().all(|(i, (x, y))| i == a || x == y);
                    if !same_rest {
                        return Err(Error::shape(
                            &what,
                            format!("shapes equal except on axis {axis}, like {:?}", shapes[0]),
                            s,
                        ));
                    }
                    out[a] += s[a];
                }
                Ok(vec![out])
            }
        }
    }
    fn forward(&self, x: &Tensor, _ctx: &mut ForwardCtx) -> Result<Tensor> {
        Err(Error::shape(
            &format!("{} '{}'", self.class_name(), self.common.name),
            "two or more inputs",
            x.shape(),
        ))
    }
    fn call(&self, inputs: &[Tensor], _ctx: &mut ForwardCtx) -> Result<Vec<Tensor>> {
        let shapes: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape()[1..].to_vec()).collect();
        let mut scratch = Merge {
            common: self.common.clone(),
            kind: self.kind,
        };
        scratch.build_many(&shapes, &mut Rng::new(0))?;
        let out = match self.kind {
            Kind::Add => inputs[1..]
                .iter()
                .try_fold(inputs[0].clone(), |acc, t| ops::add(&acc, t))?,
            Kind::Multiply => inputs[1..]
                .iter()
                .try_fold(inputs[0].clone(), |acc, t| ops::mul(&acc, t))?,
            Kind::Concatenate(axis) => concatenate(inputs, self.sample_axis(shapes[0].len(), axis)? + 1)?,
        };
        Ok(vec![out])
    }
    fn config(&self) -> Value {
        match self.kind {
            Kind::Concatenate(axis) => self.common.write(json!({ "axis": axis })),
            _ => self.common.write(json!({})),
        }
    }
}

/// Joins tensors along `axis` (an index into the full shape, batch included).
pub fn concatenate(inputs: &[Tensor], axis: usize) -> Result<Tensor> {
    let outer: usize = inputs[0].shape()[..axis].iter().product();
    let widths: Vec<usize> = inputs.iter().map(|t| t.shape()[axis..].iter().product()).collect();
    let total: usize = widths.iter().sum();
    let mut shape = inputs[0].shape().to_vec();
    shape[axis] = inputs.iter().map(|t| t.shape()[axis]).sum();
    let refs: Vec<&Tensor> = inputs.iter().collect();
    if crate::ops::gpu::on_gpu("concatenate", &refs)? {
        return crate::ops::gpu_layout::concatenate(inputs, outer, &widths, shape);
    }
    let mut data = vec![0.0; outer * total];
    let mut offset = 0;
    for (t, &w) in inputs.iter().zip(&widths) {
        for o in 0..outer {
            data[o * total + offset..o * total + offset + w].copy_from_slice(&t.data()[o * w..(o + 1) * w]);
        }
        offset += w;
    }
    ops::custom(
        data,
        shape,
        || {
            Box::new(ConcatOp {
                inputs: inputs.to_vec(),
                outer,
                widths,
            })
        },
        &refs,
    )
}

struct ConcatOp {
    inputs: Vec<Tensor>,
    outer: usize,
    widths: Vec<usize>,
}

impl CustomOp for ConcatOp {
    fn name(&self) -> &'static str {
        "concatenate"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        self.inputs.iter().collect()
    }
    fn vjp(&self, _out: &Tensor, g: &[f32]) -> Result<Vec<(Tensor, Vec<f32>)>> {
        let total: usize = self.widths.iter().sum();
        let mut offset = 0;
        let mut grads = Vec::with_capacity(self.inputs.len());
        for (t, &w) in self.inputs.iter().zip(&self.widths) {
            if t.tracks() {
                let mut gi = Vec::with_capacity(self.outer * w);
                for o in 0..self.outer {
                    gi.extend_from_slice(&g[o * total + offset..o * total + offset + w]);
                }
                grads.push((t.clone(), gi));
            }
            offset += w;
        }
        Ok(grads)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backprop::backward_with_seed;

    #[test]
    fn concatenate_routes_gradients_back_to_each_input() {
        let a = Tensor::variable((0..6).map(|v| v as f32).collect(), &[2, 3]).unwrap();
        let b = Tensor::variable((0..4).map(|v| 10.0 + v as f32).collect(), &[2, 2]).unwrap();
        let y = concatenate(&[a.clone(), b.clone()], 1).unwrap();
        assert_eq!(y.shape(), &[2, 5]);
        assert_eq!(y.data(), &[0.0, 1.0, 2.0, 10.0, 11.0, 3.0, 4.0, 5.0, 12.0, 13.0]);
        let seed: Vec<f32> = (0..10).map(|v| v as f32).collect();
        let g = backward_with_seed(&y, seed).unwrap();
        assert_eq!(g.get(&a).unwrap(), &[0.0, 1.0, 2.0, 5.0, 6.0, 7.0]);
        assert_eq!(g.get(&b).unwrap(), &[3.0, 4.0, 8.0, 9.0]);
    }
}
