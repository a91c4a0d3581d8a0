//! Layer family `recurrent`: SimpleRNN, LSTM, GRU (Keras 3, `resetAfter` only), EIRNN (a
//! SimpleRNN obeying Dale's law, see [`super::dale`]) and the Bidirectional wrapper. Each layer runs its whole sequence in one fused kernel
//! ([`crate::cpu::rnn`]) recorded as a single custom op, forward and backward through time.
//!
//! Weights use Keras names and layouts: `{layer}/kernel [in, G*u]`, `{layer}/recurrent_kernel
//! [u, G*u]`, `{layer}/bias` (`[G*u]`; GRU `[2, 3u]`), gates in the order LSTM i,f,c,o and GRU
//! z,r,h. A Bidirectional layer named `bi` wrapping an LSTM named `lstm` owns
//! `bi/forward_lstm/kernel`, ... then `bi/backward_lstm/kernel`, ...
//!
//! Inputs: `[x]` or `[x, initial states...]` (LSTM `h0, c0`; others `h0`; Bidirectional the
//! forward layer's states then the backward layer's), `x` being `[batch, time, features]`. An
//! input mask `[batch, time]` makes masked steps keep the previous state (Keras semantics).

use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use super::dale::{self, Dale};
use super::dense::init_option;
use super::{Common, ForwardCtx, Layer};
use crate::backprop::CustomOp;
use crate::cpu::elementwise::Activation;
use crate::cpu::rnn::{self, Cell, RnnInputs, RnnSpec, RnnTape, RnnWanted};
use crate::nn::init::Initializer;
use crate::nn::options::Options;
use crate::nn::param::Param;
use crate::nn::quantize::{Packed as QuantizedPack, Precision, QuantizedWeights};
use crate::ops::gpu_rnn;
use crate::rng::Rng;
use crate::{ops, Error, Result, Tensor};

mod bidirectional;
mod embedded;
mod init;
use bidirectional::Bidirectional;
pub(crate) use bidirectional::Merge as BidirectionalMerge;
use init::RecurrentInit;

/// (class name, Keras base name) of every layer in this family.
pub(super) const CLASSES: &[(&str, &str)] = &[
    ("SimpleRNN", "simple_rnn"),
    ("LSTM", "lstm"),
    ("GRU", "gru"),
    ("Bidirectional", "bidirectional"),
    ("EIRNN", "ei_rnn"),
];

/// Creates a layer of this family, or `None` for other class names.
pub(super) fn create(class_name: &str, o: &mut Options, common: &Common) -> Option<Result<Box<dyn Layer>>> {
    Some(match class_name {
        "Bidirectional" => Bidirectional::from_options(o, common).map(|l| Box::new(l) as Box<dyn Layer>),
        "EIRNN" => Rnn::from_options(Cell::SimpleRnn, o, common, true).map(|l| Box::new(l) as Box<dyn Layer>),
        other => {
            let cell = cell_of(other)?;
            Rnn::from_options(cell, o, common, false).map(|l| Box::new(l) as Box<dyn Layer>)
        }
    })
}

fn cell_of(class_name: &str) -> Option<Cell> {
    match class_name {
        "SimpleRNN" => Some(Cell::SimpleRnn),
        "LSTM" => Some(Cell::Lstm),
        "GRU" => Some(Cell::Gru),
        _ => None,
    }
}

fn class_of(cell: Cell) -> &'static str {
    match cell {
        Cell::SimpleRnn => "SimpleRNN",
        Cell::Lstm => "LSTM",
        Cell::Gru => "GRU",
    }
}

/// Number of state tensors a cell carries (LSTM: h and c).
fn n_states(cell: Cell) -> usize {
    if cell == Cell::Lstm {
        2
    } else {
        1
    }
}

// ---------------------------------------------------------------------------------------------
// The fused op

/// One recorded recurrent pass: inputs, options and the saved activations for BPTT.
struct RnnOp {
    spec: RnnSpec,
    x: Tensor,
    kernel: Tensor,
    recurrent: Tensor,
    bias: Option<Tensor>,
    h0: Option<Tensor>,
    c0: Option<Tensor>,
    mask: Option<Tensor>,
    tape: RnnTape,
    /// Whether the packed output carries the final states after the output.
    with_states: bool,
}

impl RnnOp {
    fn operands(&self) -> RnnInputs<'_> {
        RnnInputs {
            x: self.x.data(),
            kernel: self.kernel.data(),
            recurrent: self.recurrent.data(),
            bias: self.bias.as_ref().map(Tensor::data),
            h0: self.h0.as_ref().map(Tensor::data),
            c0: self.c0.as_ref().map(Tensor::data),
            mask: self.mask.as_ref().map(Tensor::data),
            recurrent_int8: None,
            embedded: None,
        }
    }
}

impl CustomOp for RnnOp {
    fn name(&self) -> &'static str {
        class_of(self.spec.cell)
    }

    fn inputs(&self) -> Vec<&Tensor> {
        let mut v = vec![&self.x, &self.kernel, &self.recurrent];
        v.extend(self.bias.iter().chain(self.h0.iter()).chain(self.c0.iter()));
        v
    }

    fn vjp(&self, _out: &Tensor, g: &[f32]) -> Result<Vec<(Tensor, Vec<f32>)>> {
        let s = &self.spec;
        let bu = s.batch * s.units;
        let out_len = if s.return_sequences { bu * s.time } else { bu };
        let (g_out, rest) = g.split_at(out_len);
        let (g_h, g_c) = match (self.with_states, s.cell) {
            (false, _) => (None, None),
            (true, Cell::Lstm) => (Some(&rest[..bu]), Some(&rest[bu..2 * bu])),
            (true, _) => (Some(&rest[..bu]), None),
        };
        // Without sequences the output is the final hidden state, so their gradients add.
        let summed;
        let (g_seq, g_h) = if s.return_sequences {
            (Some(g_out), g_h)
        } else {
            summed = match g_h {
                Some(gh) => g_out.iter().zip(gh).map(|(a, b)| a + b).collect(),
                None => g_out.to_vec(),
            };
            (None, Some(summed.as_slice()))
        };
        let want = RnnWanted {
            x: self.x.tracks(),
            kernel: self.kernel.tracks(),
            recurrent: self.recurrent.tracks(),
            bias: self.bias.as_ref().is_some_and(Tensor::tracks),
        };
        let grads = rnn::rnn_backward(s, &self.operands(), &self.tape, g_seq, g_h, g_c, want);
        let mut out = Vec::with_capacity(6);
        out.extend(grads.x.map(|d| (self.x.clone(), d)));
        out.extend(grads.kernel.map(|d| (self.kernel.clone(), d)));
        out.extend(grads.recurrent.map(|d| (self.recurrent.clone(), d)));
        if let (Some(b), Some(d)) = (&self.bias, grads.bias) {
            out.push((b.clone(), d));
        }
        if let Some(h0) = &self.h0 {
            out.push((h0.clone(), grads.h0));
        }
        if let Some(c0) = &self.c0 {
            out.push((c0.clone(), grads.c0));
        }
        Ok(out)
    }
}

/// Concatenation of two tensors along the last axis (Bidirectional `concat`).
struct ConcatLastOp {
    a: Tensor,
    b: Tensor,
}

impl CustomOp for ConcatLastOp {
    fn name(&self) -> &'static str {
        "concat"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.a, &self.b]
    }
    fn vjp(&self, _out: &Tensor, g: &[f32]) -> Result<Vec<(Tensor, Vec<f32>)>> {
        let (da, db) = (last(&self.a), last(&self.b));
        let mut ga = Vec::with_capacity(self.a.len());
        let mut gb = Vec::with_capacity(self.b.len());
        for row in g.chunks_exact(da + db) {
            ga.extend_from_slice(&row[..da]);
            gb.extend_from_slice(&row[da..]);
        }
        Ok(vec![(self.a.clone(), ga), (self.b.clone(), gb)])
    }
}

fn last(t: &Tensor) -> usize {
    t.shape().last().copied().unwrap_or(1)
}

fn concat_last(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (da, db) = (last(a), last(b));
    let mut shape = a.shape().to_vec();
    *shape.last_mut().expect("rank >= 2") = da + db;
    if ops::on_gpu("bidirectional concat", &[a, b])? {
        let rows = a.len() / da.max(1);
        return ops::gpu_layout::concatenate(&[a.clone(), b.clone()], rows, &[da, db], shape);
    }
    let mut data = Vec::with_capacity(a.len() + b.len());
    for (ra, rb) in a.data().chunks_exact(da).zip(b.data().chunks_exact(db)) {
        data.extend_from_slice(ra);
        data.extend_from_slice(rb);
    }
    ops::custom(
        data,
        shape,
        || {
            Box::new(ConcatLastOp {
                a: a.clone(),
                b: b.clone(),
            })
        },
        &[a, b],
    )
}

// ---------------------------------------------------------------------------------------------
// SimpleRNN / LSTM / GRU

/// A recurrent layer (SimpleRNN, LSTM or GRU).
pub struct Rnn {
    common: Common,
    cell: Cell,
    units: usize,
    activation: (String, Activation),
    recurrent_activation: (String, Activation),
    use_bias: bool,
    return_sequences: bool,
    return_state: bool,
    go_backwards: bool,
    unit_forget_bias: bool,
    kernel_init: Initializer,
    recurrent_init: RecurrentInit,
    bias_init: Initializer,
    /// `EIRNN`: the E/I populations of its inputs and units (SimpleRNN cell only).
    dale: Option<Dale>,
    features: Option<usize>,
    kernel: Option<Param>,
    recurrent: Option<Param>,
    bias: Option<Param>,
    /// The recurrent kernel's int8 form (`model.quantize({ mode: 'int8' })`).
    quantized: QuantizedWeights,
    /// `embeddings·W + b` of the Embedding feeding this layer ([`Rnn::run_embedded`]), with
    /// the table's key and the kernel and bias versions it was computed from.
    projection_table: Mutex<Option<(embedded::TableKey, Arc<Vec<f32>>)>>,
}

fn read_activation(o: &mut Options, key: &'static str, default: &str) -> Result<(String, Activation)> {
    let name = o.string(key)?.unwrap_or_else(|| default.to_string());
    let act = Activation::parse(&name).ok_or_else(|| {
        Error::Invalid(format!(
            "option '{key}': unknown activation '{name}'; expected one of: tanh, sigmoid, relu, linear, gelu, \
             geluTanh, elu, selu, leakyRelu, swish, softplus"
        ))
    })?;
    Ok((name, act))
}

impl Rnn {
    /// A recurrent layer of `cell` from its options; with `ei` (SimpleRNN only) an `EIRNN`.
    fn from_options(cell: Cell, o: &mut Options, common: &Common, ei: bool) -> Result<Rnn> {
        let what = if ei { "EIRNN" } else { class_of(cell) };
        let units = o.required_positive("units")?;
        let activation = read_activation(o, "activation", if ei { "relu" } else { "tanh" })?;
        let dale = if ei {
            Some(Dale::read(o, &format!("{what} '{}'", common.name))?)
        } else {
            None
        };
        let recurrent_activation = if cell == Cell::SimpleRnn {
            ("sigmoid".to_string(), Activation::Sigmoid)
        } else {
            read_activation(o, "recurrentActivation", "sigmoid")?
        };
        let unit_forget_bias = if cell == Cell::Lstm {
            o.bool("unitForgetBias")?.unwrap_or(true)
        } else {
            false
        };
        if cell == Cell::Gru && o.bool("resetAfter")? == Some(false) {
            return Err(Error::Invalid(format!(
                "{what}: resetAfter=false is not supported; expected resetAfter=true (the Keras 3 default, \
                 recurrent bias [2, 3*units] applied before the reset gate)"
            )));
        }
        Ok(Rnn {
            common: common.clone(),
            cell,
            units,
            activation,
            recurrent_activation,
            use_bias: o.bool("useBias")?.unwrap_or(true),
            return_sequences: o.bool("returnSequences")?.unwrap_or(false),
            return_state: o.bool("returnState")?.unwrap_or(false),
            go_backwards: o.bool("goBackwards")?.unwrap_or(false),
            unit_forget_bias,
            kernel_init: init_option(o, "kernelInitializer", Initializer::GlorotUniform)?,
            recurrent_init: RecurrentInit::read(o)?,
            bias_init: init_option(o, "biasInitializer", Initializer::Zeros)?,
            dale,
            features: None,
            kernel: None,
            recurrent: None,
            bias: None,
            quantized: QuantizedWeights::default(),
            projection_table: Mutex::new(None),
        })
    }

    fn what(&self) -> String {
        format!("{} '{}'", self.class_name(), self.common.name)
    }

    fn output_shape(&self, time: usize) -> Vec<usize> {
        if self.return_sequences {
            vec![time, self.units]
        } else {
            vec![self.units]
        }
    }

    fn n_outputs(&self) -> usize {
        if self.return_state {
            1 + n_states(self.cell)
        } else {
            1
        }
    }

    fn build_weights(&mut self, input_shape: &[usize], rng: &mut Rng) -> Result<()> {
        if input_shape.len() != 2 || input_shape[1] == 0 {
            return Err(Error::shape(
                &self.what(),
                "input [time, features] (without the batch axis)",
                input_shape,
            ));
        }
        let (f, u, g) = (input_shape[1], self.units, self.cell.gates() * self.units);
        let (name, trainable) = (&self.common.name, self.common.trainable);
        let kernel = self.kernel_init.sample(&[f, g], rng)?;
        let recurrent = self.recurrent_init.sample(&[u, g], rng)?;
        let (kernel_name, recurrent_name) = (format!("{name}/kernel"), format!("{name}/recurrent_kernel"));
        let (kernel, recurrent) = match &self.dale {
            None => (
                Param::new(kernel_name, kernel, &[f, g], trainable)?,
                Param::new(recurrent_name, recurrent, &[u, g], trainable)?,
            ),
            Some(d) => (
                dale::signed_param(
                    kernel_name,
                    kernel,
                    &[f, g],
                    trainable,
                    dale::signs(f, d.input_excitatory),
                )?,
                dale::signed_param(
                    recurrent_name,
                    recurrent,
                    &[u, g],
                    trainable,
                    dale::signs(u, d.excitatory),
                )?,
            ),
        };
        self.kernel = Some(kernel);
        self.recurrent = Some(recurrent);
        self.bias = if self.use_bias {
            let (data, shape) = match self.cell {
                Cell::Gru => (self.bias_init.sample(&[2, g], rng)?, vec![2, g]),
                Cell::Lstm if self.unit_forget_bias => {
                    // Keras: init(u), ones(u), init(2u) — the forget gate starts open.
                    let mut b = self.bias_init.sample(&[u], rng)?;
                    b.extend(std::iter::repeat_n(1.0, u));
                    b.extend(self.bias_init.sample(&[2 * u], rng)?);
                    (b, vec![g])
                }
                _ => (self.bias_init.sample(&[g], rng)?, vec![g]),
            };
            Some(Param::new(format!("{name}/bias"), data, &shape, trainable)?)
        } else {
            None
        };
        self.features = Some(f);
        Ok(())
    }

    /// Runs the layer: `[output, states...]` when `returnState`, else `[output]`.
    fn run(
        &self,
        x: &Tensor,
        states: &[Tensor],
        mask: Option<&Tensor>,
        bidirectional: bool,
        ctx: &ForwardCtx,
    ) -> Result<Vec<Tensor>> {
        let what = self.what();
        let (Some(kernel), Some(recurrent), Some(features)) = (&self.kernel, &self.recurrent, self.features) else {
            return Err(Error::Invalid(format!(
                "{what} is used before it was built; call build(inputShape) first"
            )));
        };
        if x.rank() != 3 || x.shape()[2] != features || x.shape()[1] == 0 {
            return Err(Error::shape(
                &what,
                format!("input [batch, time >= 1, {features}]"),
                x.shape(),
            ));
        }
        let (b, t, u) = (x.shape()[0], x.shape()[1], self.units);
        if !states.is_empty() && states.len() != n_states(self.cell) {
            return Err(Error::Invalid(format!(
                "{what}: expected {} initial state tensor(s) after the input, got {}",
                n_states(self.cell),
                states.len()
            )));
        }
        for s in states {
            if s.shape() != [b, u] {
                return Err(Error::shape(&format!("{what} initial state"), [b, u], s.shape()));
            }
        }
        if let Some(m) = mask {
            if m.len() != b * t {
                return Err(Error::shape(&format!("{what} mask"), [b, t], m.shape()));
            }
        }
        if let Some(outputs) = self.run_on_gpu(x, states, mask, bidirectional)? {
            return Ok(outputs);
        }
        let spec = self.spec(b, t, features, bidirectional);
        let recurrent_param = recurrent;
        let (kernel, recurrent) = (kernel.get(), recurrent.get());
        let bias = self.bias.as_ref().map(Param::get);
        let (h0, c0) = (states.first().cloned(), states.get(1).cloned());
        let mut inputs = vec![x, &kernel, &recurrent];
        inputs.extend(bias.iter().chain(h0.iter()).chain(c0.iter()));
        // Inference (nothing to differentiate) needs no tape.
        let spec = RnnSpec {
            keep_tape: Tensor::records(&inputs),
            ..spec
        };
        // int8 inference (quantized, nothing recorded): h·U per step in int8.
        let int8 = if spec.keep_tape {
            None
        } else {
            match self
                .quantized
                .for_call(recurrent_param, &recurrent, x, ctx, u, self.cell.gates() * u)?
            {
                Some(QuantizedPack::Int8(q)) => Some(q),
                _ => None,
            }
        };
        let fwd = rnn::rnn_forward(
            &spec,
            &RnnInputs {
                x: x.data(),
                kernel: kernel.data(),
                recurrent: recurrent.data(),
                bias: bias.as_ref().map(Tensor::data),
                h0: h0.as_ref().map(Tensor::data),
                c0: c0.as_ref().map(Tensor::data),
                mask: mask.map(Tensor::data),
                recurrent_int8: int8.as_deref(),
                embedded: None,
            },
        );
        let out_shape = if self.return_sequences {
            vec![b, t, u]
        } else {
            vec![b, u]
        };
        let mut shapes = vec![out_shape];
        let mut packed = if self.return_sequences { fwd.seq } else { fwd.h.clone() };
        if self.return_state {
            packed.extend_from_slice(&fwd.h);
            packed.extend_from_slice(&fwd.c);
            shapes.extend(std::iter::repeat_n(vec![b, u], n_states(self.cell)));
        }
        let total_shape = if shapes.len() == 1 {
            shapes[0].clone()
        } else {
            vec![packed.len()]
        };
        let tape = fwd.tape;
        let op = || -> Box<dyn CustomOp> {
            Box::new(RnnOp {
                spec,
                x: x.clone(),
                kernel: kernel.clone(),
                recurrent: recurrent.clone(),
                bias: bias.clone(),
                h0: h0.clone(),
                c0: c0.clone(),
                mask: mask.cloned(),
                tape,
                with_states: self.return_state,
            })
        };
        let packed = ops::custom(packed, total_shape, op, &inputs)?;
        if shapes.len() == 1 {
            Ok(vec![packed])
        } else {
            ops::split(&packed, &shapes)
        }
    }

    /// The kernel's sizes and options for a `[b, t, features]` input (with a tape).
    fn spec(&self, b: usize, t: usize, features: usize, bidirectional: bool) -> RnnSpec {
        RnnSpec {
            cell: self.cell,
            batch: b,
            time: t,
            input: features,
            units: self.units,
            activation: self.activation.1,
            recurrent_activation: self.recurrent_activation.1,
            go_backwards: self.go_backwards,
            return_sequences: self.return_sequences,
            // Bidirectional reads the backward layer's sequence in input order, and (as Keras
            // does inside Bidirectional) wants zeros at masked steps.
            output_in_input_order: bidirectional,
            zero_masked_outputs: bidirectional && self.return_sequences,
            keep_tape: true,
        }
    }

    /// The layer's outputs (the sequence or last state, then any returned states) on the GPU
    /// when its weights and input are there; `None` on the CPU.
    fn run_on_gpu(
        &self,
        x: &Tensor,
        states: &[Tensor],
        mask: Option<&Tensor>,
        bidirectional: bool,
    ) -> Result<Option<Vec<Tensor>>> {
        let what = self.what();
        let (Some(kernel), Some(recurrent)) = (&self.kernel, &self.recurrent) else {
            return Ok(None);
        };
        let (kernel, recurrent) = (kernel.get(), recurrent.get());
        let bias = self.bias.as_ref().map(Param::get);
        let mut inputs = vec![x, &kernel, &recurrent];
        inputs.extend(bias.iter().chain(states));
        if !ops::on_gpu(&what, &inputs)? {
            return Ok(None);
        }
        let call = gpu_rnn::RnnCall {
            cell: self.cell,
            kernel: &kernel,
            recurrent: &recurrent,
            bias: bias.as_ref(),
            return_sequences: self.return_sequences,
            go_backwards: self.go_backwards,
            input_order: bidirectional,
            states,
            return_state: self.return_state,
            activation: self.activation.1,
            recurrent_activation: self.recurrent_activation.1,
        };
        let packed = gpu_rnn::run(&call, x, mask)?;
        if !self.return_state {
            return Ok(Some(vec![packed]));
        }
        let (b, u) = (x.shape()[0], self.units);
        let out_shape = if self.return_sequences {
            vec![b, x.shape()[1], u]
        } else {
            vec![b, u]
        };
        let mut shapes = vec![out_shape];
        shapes.extend(std::iter::repeat_n(vec![b, u], n_states(self.cell)));
        ops::split(&packed, &shapes).map(Some)
    }

    fn output_masks(&self, mask: Option<&Tensor>) -> Vec<Option<Tensor>> {
        let mut masks = vec![None; self.n_outputs()];
        if self.return_sequences {
            masks[0] = mask.cloned();
        }
        masks
    }

    fn config_value(&self) -> Value {
        let mut c = json!({
            "units": self.units,
            "activation": self.activation.0,
            "useBias": self.use_bias,
            "returnSequences": self.return_sequences,
            "returnState": self.return_state,
            "goBackwards": self.go_backwards,
            "kernelInitializer": self.kernel_init.to_json(),
            "recurrentInitializer": self.recurrent_init.to_json(),
            "biasInitializer": self.bias_init.to_json(),
        });
        let map = c.as_object_mut().expect("object");
        if self.cell != Cell::SimpleRnn {
            map.insert("recurrentActivation".into(), self.recurrent_activation.0.clone().into());
        }
        match self.cell {
            Cell::Lstm => {
                map.insert("unitForgetBias".into(), self.unit_forget_bias.into());
            }
            Cell::Gru => {
                map.insert("resetAfter".into(), true.into());
            }
            Cell::SimpleRnn => {}
        }
        if let Some(d) = &self.dale {
            d.write(map);
        }
        self.common.write(c)
    }
}

/// Checks the shapes of `[x, states...]` at build time.
fn check_state_shapes(what: &str, shapes: &[Vec<usize>], expected: usize, units: usize) -> Result<()> {
    if shapes.len() != 1 && shapes.len() != 1 + expected {
        return Err(Error::Invalid(format!(
            "{what}: expected the input alone or followed by {expected} initial state(s), got {} inputs",
            shapes.len()
        )));
    }
    for s in &shapes[1..] {
        if s.as_slice() != [units] {
            return Err(Error::shape(&format!("{what} initial state"), [units], s));
        }
    }
    Ok(())
}

impl Layer for Rnn {
    fn class_name(&self) -> &'static str {
        if self.dale.is_some() {
            "EIRNN"
        } else {
            class_of(self.cell)
        }
    }
    fn name(&self) -> &str {
        &self.common.name
    }
    fn build(&mut self, input_shape: &[usize], rng: &mut Rng) -> Result<Vec<usize>> {
        self.build_weights(input_shape, rng)?;
        Ok(self.output_shape(input_shape[0]))
    }
    fn build_many(&mut self, input_shapes: &[Vec<usize>], rng: &mut Rng) -> Result<Vec<Vec<usize>>> {
        let what = self.what();
        let Some(first) = input_shapes.first() else {
            return Err(Error::Invalid(format!("{what}: expected at least one input")));
        };
        check_state_shapes(&what, input_shapes, n_states(self.cell), self.units)?;
        let out = self.build(first, rng)?;
        let mut shapes = vec![out];
        shapes.extend(std::iter::repeat_n(vec![self.units], self.n_outputs() - 1));
        Ok(shapes)
    }
    fn forward(&self, x: &Tensor, ctx: &mut ForwardCtx) -> Result<Tensor> {
        let mask = ctx.mask(0).cloned();
        let mut outs = self.run(x, &[], mask.as_ref(), false, ctx)?;
        ctx.output_masks = Some(vec![self.output_masks(mask.as_ref()).swap_remove(0)]);
        Ok(outs.swap_remove(0))
    }
    fn call(&self, inputs: &[Tensor], ctx: &mut ForwardCtx) -> Result<Vec<Tensor>> {
        let Some((x, states)) = inputs.split_first() else {
            return Err(Error::Invalid(format!("{}: expected at least one input", self.what())));
        };
        let mask = ctx.mask(0).cloned();
        let outs = self.run(x, states, mask.as_ref(), false, ctx)?;
        ctx.output_masks = Some(self.output_masks(mask.as_ref()));
        Ok(outs)
    }
    fn forward_embedded(&self, embedding: &dyn Layer, x: &Tensor, ctx: &mut ForwardCtx) -> Result<Option<Tensor>> {
        match embedded::foldable_lookup(embedding, x, self.return_state, ctx)? {
            Some(lookup) => self.run_embedded(&lookup, false, ctx),
            None => Ok(None),
        }
    }
    fn set_precision(&self, precision: Precision) -> bool {
        // int8 only: bf16 has no recurrent kernel (the layer stays f32 and is not counted).
        let int8 = precision == Precision::Int8;
        self.quantized.set(if int8 { precision } else { Precision::Float32 });
        precision != Precision::Bf16
    }
    fn params(&self) -> Vec<&Param> {
        self.kernel
            .iter()
            .chain(self.recurrent.iter())
            .chain(self.bias.iter())
            .collect()
    }
    fn config(&self) -> Value {
        self.config_value()
    }
}
