//! The recurrent layers' inference fold of an Embedding: see [`Rnn::run_embedded`].

use std::sync::Arc;

use super::{QuantizedPack, Rnn};
use crate::cpu::rnn::{self, Embedded, RnnInputs, RnnSpec};
use crate::nn::layers::{EmbeddingLookup, ForwardCtx, Layer};
use crate::nn::param::Param;
use crate::{Result, Tensor};

/// What a projection table was computed from: the embeddings' parameter address and version,
/// the kernel's version and the bias's version.
pub(super) type TableKey = [u64; 4];

/// The largest projection table [`Rnn::run_embedded`] keeps: 64 MB (a 32k-token vocabulary
/// for LSTM(128)); larger vocabularies project each call's embedded sequence.
const MAX_PROJECTION_TABLE_FLOATS: usize = 16 << 20;

impl Rnn {
    /// Inference on the ids of an Embedding that feeds this layer, without the embedded
    /// sequence: the input projection `x·W + b` of a token is a row of `embeddings·W + b`,
    /// computed once per weight version and looked up at each step. That skips the projection
    /// GEMM of every call (a fifth of an embedding -> LSTM(128) predict) and its `[b, t, 4u]`
    /// buffer. A `maskZero` mask applies as on the embedded sequence. `None` when the call
    /// records gradients, runs off the CPU, returns states or a masked sequence, or the table
    /// would be too large. `bidirectional`: this layer is a direction of a `Bidirectional`
    /// (see [`Rnn::spec`]).
    pub(super) fn run_embedded(
        &self,
        lookup: &EmbeddingLookup,
        bidirectional: bool,
        ctx: &ForwardCtx,
    ) -> Result<Option<Tensor>> {
        let (Some(kernel), Some(recurrent), Some(features)) = (&self.kernel, &self.recurrent, self.features) else {
            return Ok(None);
        };
        let (&[b, t], &[vocabulary, dim]) = (lookup.shape.as_slice(), lookup.table.shape()) else {
            return Ok(None);
        };
        let spec = RnnSpec {
            keep_tape: false,
            ..self.spec(b, t, features, bidirectional)
        };
        let (kernel_value, recurrent_value) = (kernel.get(), recurrent.get());
        let bias = self.bias.as_ref().map(Param::get);
        let mut operands = vec![&lookup.table, &kernel_value, &recurrent_value];
        operands.extend(bias.iter());
        // A masked sequence output carries its mask to the next layer, which the fold (one
        // value for the pair of layers) does not hand on.
        if ctx.training
            || self.return_state
            || (lookup.mask.is_some() && self.return_sequences)
            || t == 0
            || dim != features
            || vocabulary.saturating_mul(spec.g()) > MAX_PROJECTION_TABLE_FLOATS
            || Tensor::records(&operands)
            || operands.iter().any(|o| o.device() != crate::Device::Cpu)
        {
            return Ok(None);
        }
        let key = [
            lookup.key.0 as u64,
            lookup.key.1,
            kernel.version(),
            self.bias.as_ref().map_or(0, Param::version),
        ];
        let cached = {
            let slot = self.projection_table.lock().unwrap_or_else(|e| e.into_inner());
            slot.as_ref().filter(|(k, _)| *k == key).map(|(_, table)| table.clone())
        };
        // Computed without the lock held: the product runs on the pool, and a pool thread
        // waiting in it may pick up another chunk of this predict, which would then wait on
        // a lock its own thread holds.
        let table = match cached {
            Some(table) => table,
            None => {
                let bias = bias.as_ref().map(Tensor::data);
                let table = Arc::new(rnn::projection_table(
                    &spec,
                    lookup.table.data(),
                    kernel_value.data(),
                    bias,
                ));
                *self.projection_table.lock().unwrap_or_else(|e| e.into_inner()) = Some((key, table.clone()));
                table
            }
        };
        let int8 =
            match self
                .quantized
                .for_call(recurrent, &recurrent_value, &lookup.table, ctx, self.units, spec.g())?
            {
                Some(QuantizedPack::Int8(q)) => Some(q),
                _ => None,
            };
        let fwd = rnn::rnn_forward(
            &spec,
            &RnnInputs {
                x: &[],
                kernel: kernel_value.data(),
                recurrent: recurrent_value.data(),
                bias: bias.as_ref().map(Tensor::data),
                h0: None,
                c0: None,
                mask: lookup.mask.as_deref(),
                recurrent_int8: int8.as_deref(),
                embedded: Some(Embedded {
                    ids: &lookup.ids,
                    table: &table,
                }),
            },
        );
        Ok(Some(if self.return_sequences {
            Tensor::new(fwd.seq, &[b, t, self.units])?
        } else {
            Tensor::new(fwd.h, &[b, self.units])?
        }))
    }
}

/// The lookup of `embedding` (the layer before, fed `x`) when a recurrent layer may fold it
/// into this call: inference, no input mask (the embedding's own `maskZero` mask is fine), no
/// returned states.
pub(super) fn foldable_lookup(
    embedding: &dyn Layer,
    x: &Tensor,
    return_state: bool,
    ctx: &ForwardCtx,
) -> Result<Option<EmbeddingLookup>> {
    if ctx.training || return_state || ctx.mask(0).is_some() {
        return Ok(None);
    }
    embedding.embedding_lookup(x)
}
