//! Lookup-table layers: `Embedding` (token index -> learned vector, optional Keras `maskZero`)
//! and `PositionalEmbedding` (adds a learned per-position vector, like keras_hub's
//! `PositionEmbedding` followed by the addition `TokenAndPositionEmbedding` does).

use serde_json::{json, Value};

use super::dense::init_option;
use super::{Common, ForwardCtx, Layer};
use crate::backprop::CustomOp;
use crate::cpu::spatial as sp;
use crate::nn::init::Initializer;
use crate::nn::options::Options;
use crate::nn::param::Param;
use crate::rng::Rng;
use crate::{ops, Error, Result, Tensor};

/// (class name, Keras base name) of every layer in this family.
pub(super) const CLASSES: &[(&str, &str)] = &[
    ("Embedding", "embedding"),
    ("PositionalEmbedding", "positional_embedding"),
];

/// Creates a layer of this family, or `None` for other class names.
pub(super) fn create(class_name: &str, o: &mut Options, common: &Common) -> Option<Result<Box<dyn Layer>>> {
    fn boxed<L: Layer + 'static>(l: Result<L>) -> Result<Box<dyn Layer>> {
        l.map(|l| Box::new(l) as Box<dyn Layer>)
    }
    Some(match class_name {
        "Embedding" => boxed(Embedding::from_options(o, common)),
        "PositionalEmbedding" => boxed(PositionalEmbedding::from_options(o, common)),
        _ => return None,
    })
}

fn not_built(name: &str) -> Error {
    Error::Invalid(format!(
        "layer '{name}' is used before it was built; call build(inputShape) first"
    ))
}

/// Gradient of a row gather: scatter-add into the table. The indices get no gradient.
struct GatherOp {
    table: Tensor,
    idx: Vec<u32>,
}

impl CustomOp for GatherOp {
    fn name(&self) -> &'static str {
        "embedding"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.table]
    }
    fn vjp(&self, _out: &Tensor, g: &[f32]) -> Result<Vec<(Tensor, Vec<f32>)>> {
        let (rows, dim) = (self.table.shape()[0], self.table.shape()[1]);
        Ok(vec![(
            self.table.clone(),
            sp::scatter_add_rows(g, dim, &self.idx, rows),
        )])
    }
}

/// An Embedding's lookup, handed to the layer it feeds ([`Layer::embedding_lookup`]).
pub struct EmbeddingLookup {
    /// Row of the table for each id, in the ids' order.
    pub ids: Vec<u32>,
    /// With `maskZero`: the output mask (1 where the id is not 0), in the ids' shape.
    pub mask: Option<Vec<f32>>,
    /// Shape of the ids.
    pub shape: Vec<usize>,
    /// The table `[inputDim, outputDim]`.
    pub table: Tensor,
    /// Names the table's current value (its parameter's address and version), for caches of
    /// values derived from it.
    pub key: (usize, u64),
}

/// `Embedding`: float indices of any shape `[b, ...]` -> `[b, ..., outputDim]`.
pub struct Embedding {
    common: Common,
    input_dim: usize,
    output_dim: usize,
    init: Initializer,
    mask_zero: bool,
    embeddings: Option<Param>,
}

impl Embedding {
    fn from_options(o: &mut Options, common: &Common) -> Result<Self> {
        Ok(Embedding {
            common: common.clone(),
            input_dim: o.required_positive("inputDim")?,
            output_dim: o.required_positive("outputDim")?,
            // Keras' default: uniform(-0.05, 0.05).
            init: init_option(
                o,
                "embeddingsInitializer",
                Initializer::RandomUniform { min: -0.05, max: 0.05 },
            )?,
            mask_zero: o.bool("maskZero")?.unwrap_or(false),
            embeddings: None,
        })
    }
}

impl Embedding {
    /// The table rows of the ids `x` and, with `maskZero`, the output mask (1 where the id is
    /// not 0). Ids are checked on the host (a GPU input is read back): hostile ids are an Error.
    fn checked_ids(&self, x: &Tensor) -> Result<(Vec<u32>, Option<Vec<f32>>)> {
        let what = format!("Embedding '{}'", self.common.name);
        if x.rank() == 0 {
            return Err(Error::shape(&what, "indices of rank >= 1 [batch, ...]", x.shape()));
        }
        let ids = sp::indices(&what, x.host_values()?, self.input_dim)?;
        let mask = self
            .mask_zero
            .then(|| ids.iter().map(|&i| if i != 0 { 1.0 } else { 0.0 }).collect());
        Ok((ids, mask))
    }
}

impl Layer for Embedding {
    fn class_name(&self) -> &'static str {
        "Embedding"
    }
    fn name(&self) -> &str {
        &self.common.name
    }
    fn build(&mut self, input_shape: &[usize], rng: &mut Rng) -> Result<Vec<usize>> {
        let shape = [self.input_dim, self.output_dim];
        let name = &self.common.name;
        let data = self.init.sample(&shape, rng)?;
        self.embeddings = Some(Param::new(
            format!("{name}/embeddings"),
            data,
            &shape,
            self.common.trainable,
        )?);
        let mut out = input_shape.to_vec();
        out.push(self.output_dim);
        Ok(out)
    }
    fn forward(&self, x: &Tensor, ctx: &mut ForwardCtx) -> Result<Tensor> {
        let table = self
            .embeddings
            .as_ref()
            .ok_or_else(|| not_built(&self.common.name))?
            .get();
        let (idx, mask) = self.checked_ids(x)?;
        if let Some(mask) = mask {
            ctx.output_masks = Some(vec![Some(Tensor::new(mask, x.shape())?.to(table.device())?)]);
        }
        if crate::ops::gpu::on_gpu("embedding", &[&table])? {
            return crate::ops::gpu_layout::embedding(&table, &idx, x.shape());
        }
        let y = sp::gather_rows(table.data(), self.output_dim, &idx);
        let mut shape = x.shape().to_vec();
        shape.push(self.output_dim);
        ops::custom(
            y,
            shape,
            || {
                Box::new(GatherOp {
                    table: table.clone(),
                    idx,
                })
            },
            &[&table],
        )
    }
    fn embedding_lookup(&self, x: &Tensor) -> Result<Option<EmbeddingLookup>> {
        let Some(param) = self.embeddings.as_ref() else {
            return Ok(None);
        };
        let (ids, mask) = self.checked_ids(x)?;
        Ok(Some(EmbeddingLookup {
            ids,
            mask,
            shape: x.shape().to_vec(),
            table: param.get(),
            key: (std::ptr::from_ref(param) as usize, param.version()),
        }))
    }
    fn params(&self) -> Vec<&Param> {
        self.embeddings.iter().collect()
    }
    fn config(&self) -> Value {
        self.common.write(json!({
            "inputDim": self.input_dim,
            "outputDim": self.output_dim,
            "embeddingsInitializer": self.init.to_json(),
            "maskZero": self.mask_zero,
        }))
    }
}

/// Gradient of adding the first `t` rows of a position table to every sample.
struct AddPositionsOp {
    x: Tensor,
    table: Tensor,
    t: usize,
}

impl CustomOp for AddPositionsOp {
    fn name(&self) -> &'static str {
        "positionalEmbedding"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.x, &self.table]
    }
    fn vjp(&self, _out: &Tensor, g: &[f32]) -> Result<Vec<(Tensor, Vec<f32>)>> {
        let (rows, dim) = (self.table.shape()[0], self.table.shape()[1]);
        let mut v = Vec::with_capacity(2);
        if self.x.tracks() {
            v.push((self.x.clone(), g.to_vec()));
        }
        if self.table.tracks() {
            v.push((
                self.table.clone(),
                sp::add_positions_backward_table(g, rows, self.t, dim),
            ));
        }
        Ok(v)
    }
}

/// `PositionalEmbedding`: `y[b, s] = x[b, s] + table[s]` with a learned `[sequenceLength, dim]`
/// table, `dim` taken from the input's last axis; inputs may be shorter than `sequenceLength`.
pub struct PositionalEmbedding {
    common: Common,
    sequence_length: usize,
    init: Initializer,
    embeddings: Option<Param>,
}

impl PositionalEmbedding {
    fn from_options(o: &mut Options, common: &Common) -> Result<Self> {
        Ok(PositionalEmbedding {
            common: common.clone(),
            sequence_length: o.required_positive("sequenceLength")?,
            init: init_option(o, "initializer", Initializer::GlorotUniform)?,
            embeddings: None,
        })
    }

    fn check_steps(&self, t: usize) -> Result<()> {
        if t > self.sequence_length {
            return Err(Error::Invalid(format!(
                "PositionalEmbedding '{}': input has {t} steps but sequenceLength is {}; expected at most {} steps",
                self.common.name, self.sequence_length, self.sequence_length
            )));
        }
        Ok(())
    }
}

impl Layer for PositionalEmbedding {
    fn class_name(&self) -> &'static str {
        "PositionalEmbedding"
    }
    fn name(&self) -> &str {
        &self.common.name
    }
    fn build(&mut self, input_shape: &[usize], rng: &mut Rng) -> Result<Vec<usize>> {
        let &[t, dim] = input_shape else {
            let what = format!("PositionalEmbedding '{}'", self.common.name);
            return Err(Error::shape(&what, "input [steps, dim]", input_shape));
        };
        self.check_steps(t)?;
        let shape = [self.sequence_length, dim];
        let name = &self.common.name;
        let data = self.init.sample(&shape, rng)?;
        self.embeddings = Some(Param::new(
            format!("{name}/embeddings"),
            data,
            &shape,
            self.common.trainable,
        )?);
        Ok(input_shape.to_vec())
    }
    fn forward(&self, x: &Tensor, _ctx: &mut ForwardCtx) -> Result<Tensor> {
        let table = self
            .embeddings
            .as_ref()
            .ok_or_else(|| not_built(&self.common.name))?
            .get();
        let dim = table.shape()[1];
        let what = format!("PositionalEmbedding '{}'", self.common.name);
        let (b, t) = match *x.shape() {
            [b, t, d] if d == dim => (b, t),
            _ => return Err(Error::shape(&what, format!("input [batch, steps, {dim}]"), x.shape())),
        };
        self.check_steps(t)?;
        if ops::on_gpu(&what, &[x, &table])? {
            // As ops: x viewed as [b, t * dim] plus the table's first t rows as one bias vector
            // (a shorter sequence takes a leading slice; its gradient goes back into place).
            let rows = table.shape()[0];
            let flat = table.reshape(&[rows * dim])?;
            let positions = if rows == t {
                flat
            } else {
                let mut pieces = ops::split(&flat, &[vec![t * dim], vec![(rows - t) * dim]])?;
                pieces.swap_remove(0)
            };
            let y = ops::add_last_axis(&x.reshape(&[b, t * dim])?, &positions)?;
            return y.reshape(&[b, t, dim]);
        }
        let y = sp::add_positions(x.data(), table.data(), b, t, dim);
        let op = || {
            Box::new(AddPositionsOp {
                x: x.clone(),
                table: table.clone(),
                t,
            }) as Box<dyn CustomOp>
        };
        ops::custom(y, x.shape().to_vec(), op, &[x, &table])
    }
    fn params(&self) -> Vec<&Param> {
        self.embeddings.iter().collect()
    }
    fn config(&self) -> Value {
        self.common.write(json!({
            "sequenceLength": self.sequence_length,
            "initializer": self.init.to_json(),
        }))
    }
}
