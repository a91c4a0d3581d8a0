//! Layer family `attention`: Keras `MultiHeadAttention`.
//!
//! Projections are `ops::linear` on the Keras `[d, heads, dim]` kernels viewed as `[d, heads*dim]`
//! (so their gradients come from the existing ops); the attention core between them is the fused
//! kernel of [`crate::cpu::attention`].

use serde_json::{json, Value};

use super::dense::init_option;
use super::{Common, ForwardCtx, Layer};
use crate::cpu::attention::{self, AttnDropout, AttnMask, AttnOptions};
use crate::cpu::attention_fused::{self, Projection};
use crate::nn::init::Initializer;
use crate::nn::options::Options;
use crate::nn::param::Param;
use crate::rng::Rng;
use crate::{ops, Error, Result, Tensor};

/// (class name, Keras base name) of every layer in this family.
pub(super) const CLASSES: &[(&str, &str)] = &[("MultiHeadAttention", "multi_head_attention")];

/// Creates a layer of this family, or `None` for other class names.
pub(super) fn create(class_name: &str, o: &mut Options, common: &Common) -> Option<Result<Box<dyn Layer>>> {
    match class_name {
        "MultiHeadAttention" => {
            Some(MultiHeadAttention::from_options(o, common).map(|l| Box::new(l) as Box<dyn Layer>))
        }
        _ => None,
    }
}

/// A projection: kernel `[d, heads, dim]` (or `[heads, dim, d]` for the output) and bias.
struct Dense3 {
    kernel: Param,
    bias: Option<Param>,
}

impl Dense3 {
    /// `x [.., din] -> [.., dout]` with the kernel viewed as `[din, dout]`.
    fn apply(&self, x: &Tensor, din: usize, dout: usize) -> Result<Tensor> {
        let w = self.kernel.get().reshape(&[din, dout])?;
        let b = self.bias.as_ref().map(|b| b.get().reshape(&[dout])).transpose()?;
        ops::linear(x, &w, b.as_ref())
    }
}

impl Built {
    /// The heads' outputs by [`attention_fused`] (inference), or `None` when a tensor is not on
    /// the CPU.
    fn fused_attention(
        &self,
        inputs: [&Tensor; 3],
        [h, kd, vd]: [usize; 3],
        mask: &AttnMask,
    ) -> Result<Option<Tensor>> {
        let [query, key, value] = inputs;
        let weights = |d: &Dense3| (d.kernel.get(), d.bias.as_ref().map(Param::get));
        let (wq, wk, wv) = (weights(&self.query), weights(&self.key), weights(&self.value));
        let all = [query, key, value, &wq.0, &wk.0, &wv.0];
        let biases = [&wq.1, &wk.1, &wv.1];
        let on_cpu = |t: &Tensor| t.device() == crate::Device::Cpu;
        if !all.into_iter().all(on_cpu) || !biases.into_iter().flatten().all(on_cpu) {
            return Ok(None);
        }
        fn projection<'a>(x: &'a Tensor, (w, b): &'a (Tensor, Option<Tensor>), din: usize) -> Projection<'a> {
            Projection {
                x: x.data(),
                t: x.shape()[1],
                din,
                kernel: w.data(),
                bias: b.as_ref().map(Tensor::data),
            }
        }
        attention_fused::project_and_attend(
            query.shape()[0],
            h,
            kd,
            vd,
            &projection(query, &wq, self.dims[0]),
            &projection(key, &wk, self.dims[2]),
            &projection(value, &wv, self.dims[1]),
            mask,
        )
        .map(Some)
    }
}

/// Weights created by `build`.
struct Built {
    /// Feature sizes of query, value and key.
    dims: [usize; 3],
    out_dim: usize,
    query: Dense3,
    key: Dense3,
    value: Dense3,
    output: Dense3,
}

/// Keras `MultiHeadAttention`: `call([query, value])`, `call([query, value, key])`, plus a
/// trailing `[b, tq, tv]` 0/1 mask input with `attentionMaskInput: true`. Used as a single-input
/// layer (a `Sequential` model) it is self-attention.
pub struct MultiHeadAttention {
    common: Common,
    num_heads: usize,
    key_dim: usize,
    value_dim: usize,
    dropout: f32,
    use_bias: bool,
    output_shape: Option<usize>,
    kernel_init: Initializer,
    bias_init: Initializer,
    use_causal_mask: bool,
    return_attention_scores: bool,
    attention_mask_input: bool,
    built: Option<Built>,
}

impl MultiHeadAttention {
    fn from_options(o: &mut Options, common: &Common) -> Result<Self> {
        const OP: &str = "MultiHeadAttention";
        let num_heads = o.required_positive("numHeads")?;
        let key_dim = o.required_positive("keyDim")?;
        let value_dim = match o.usize("valueDim")? {
            Some(0) => {
                return Err(Error::Invalid(format!(
                    "{OP}: option 'valueDim' must be a positive integer, got 0"
                )))
            }
            v => v.unwrap_or(key_dim),
        };
        let dropout = o.f32("dropout")?.unwrap_or(0.0);
        if !(0.0..1.0).contains(&dropout) {
            return Err(Error::Invalid(format!(
                "{OP}: option 'dropout' must be in [0, 1), got {dropout}"
            )));
        }
        let output_shape = match o.value("outputShape") {
            None => None,
            Some(v) => {
                let n = match &v {
                    Value::Array(a) if a.len() == 1 => a[0].as_u64(),
                    other => other.as_u64(),
                };
                match n {
                    Some(n) if n > 0 => Some(n as usize),
                    _ => {
                        return Err(Error::Invalid(format!(
                            "{OP}: option 'outputShape' must be a positive integer (or [n]), got {v}"
                        )))
                    }
                }
            }
        };
        Ok(MultiHeadAttention {
            common: common.clone(),
            num_heads,
            key_dim,
            value_dim,
            dropout,
            use_bias: o.bool("useBias")?.unwrap_or(true),
            output_shape,
            kernel_init: init_option(o, "kernelInitializer", Initializer::GlorotUniform)?,
            bias_init: init_option(o, "biasInitializer", Initializer::Zeros)?,
            use_causal_mask: o.bool("useCausalMask")?.unwrap_or(false),
            return_attention_scores: o.bool("returnAttentionScores")?.unwrap_or(false),
            attention_mask_input: o.bool("attentionMaskInput")?.unwrap_or(false),
            built: None,
        })
    }

    fn op(&self) -> String {
        format!("MultiHeadAttention '{}'", self.common.name)
    }

    fn dense(&self, part: &str, shape: &[usize], bias: &[usize], rng: &mut Rng) -> Result<Dense3> {
        let name = &self.common.name;
        let trainable = self.common.trainable;
        // 3-D kernels get the Keras EinsumDense fans (the initializer's rule for rank > 2).
        let kernel = Param::new(
            format!("{name}/{part}/kernel"),
            self.kernel_init.sample(shape, rng)?,
            shape,
            trainable,
        )?;
        let bias = if self.use_bias {
            Some(Param::new(
                format!("{name}/{part}/bias"),
                self.bias_init.sample(bias, rng)?,
                bias,
                trainable,
            )?)
        } else {
            None
        };
        Ok(Dense3 { kernel, bias })
    }

    /// Input count without the explicit mask: 2 or 3 (`[query, value, key?]`).
    fn split_inputs<'t, T>(&self, inputs: &'t [T]) -> Result<(&'t [T], Option<&'t T>)> {
        let extra = usize::from(self.attention_mask_input);
        let n = inputs.len();
        if !(2 + extra..=3 + extra).contains(&n) {
            let want = if self.attention_mask_input {
                "[query, value, attentionMask] or [query, value, key, attentionMask]"
            } else {
                "[query, value] or [query, value, key]"
            };
            return Err(Error::Invalid(format!(
                "{}: expected inputs {want}, got {n} inputs",
                self.op()
            )));
        }
        Ok(if self.attention_mask_input {
            (&inputs[..n - 1], inputs.last())
        } else {
            (inputs, None)
        })
    }

    fn run(
        &self,
        inputs: &[Tensor],
        mask: Option<&Tensor>,
        masks: [Option<Tensor>; 3],
        ctx: &mut ForwardCtx,
    ) -> Result<Vec<Tensor>> {
        let op = self.op();
        let built = self.built.as_ref().ok_or_else(|| {
            Error::Invalid(format!(
                "layer '{}' is used before it was built; call build(inputShape) first",
                self.common.name
            ))
        })?;
        let (query, value) = (&inputs[0], &inputs[1]);
        let key = inputs.get(2).unwrap_or(value);
        for (what, t, d) in [
            ("query", query, built.dims[0]),
            ("value", value, built.dims[1]),
            ("key", key, built.dims[2]),
        ] {
            if t.rank() != 3 || t.shape()[2] != d {
                return Err(Error::shape(
                    &format!("{op} {what}"),
                    format!("[batch, time, {d}]"),
                    t.shape(),
                ));
            }
        }
        let (b, tq, tv) = (query.shape()[0], query.shape()[1], value.shape()[1]);
        if value.shape()[0] != b || key.shape()[0] != b || key.shape()[1] != tv {
            return Err(Error::shape(
                &format!("{op} value/key"),
                format!(
                    "value and key [{b}, tv, ..] with equal tv (query is {:?})",
                    query.shape()
                ),
                format!("value {:?}, key {:?}", value.shape(), key.shape()),
            ));
        }
        let mask_of = |what: &str, t: &Option<Tensor>, shape: &[usize]| -> Result<Option<Vec<f32>>> {
            match t {
                Some(m) if m.shape() != shape => Err(Error::shape(&format!("{op} {what} mask"), shape, m.shape())),
                Some(m) => Ok(Some(m.to_vec())),
                None => Ok(None),
            }
        };
        let [qm, vm, km] = masks;
        let value_mask = match (mask_of("value", &vm, &[b, tv])?, mask_of("key", &km, &[b, tv])?) {
            (Some(v), Some(k)) => Some(
                v.iter()
                    .zip(&k)
                    .map(|(&a, &b)| if a > 0.5 && b > 0.5 { 1.0 } else { 0.0 })
                    .collect(),
            ),
            (v, k) => v.or(k),
        };
        let explicit = match mask {
            Some(m) if m.shape() != [b, tq, tv] => {
                return Err(Error::shape(&format!("{op} attention mask"), [b, tq, tv], m.shape()))
            }
            Some(m) => Some(m.to_vec()),
            None => None,
        };
        let (h, kd, vd) = (self.num_heads, self.key_dim, self.value_dim);
        // `explain.attentionMaps` may ask for the scores of a layer built without them.
        let capture = crate::nn::attention_maps::capturing(&self.common.name);
        let mask = AttnMask {
            query: mask_of("query", &qm, &[b, tq])?,
            value: value_mask,
            explicit,
            causal: self.use_causal_mask,
        };
        let fusable = !crate::tensor::grad_enabled()
            && !ctx.training
            && !capture
            && !self.return_attention_scores
            && attention_fused::worth_fusing(b, h);
        if fusable {
            if let Some(o) = built.fused_attention([query, key, value], [h, kd, vd], &mask)? {
                return Ok(vec![built.output.apply(&o, h * vd, built.out_dim)?]);
            }
        }
        let q = built.query.apply(query, built.dims[0], h * kd)?;
        let k = built.key.apply(key, built.dims[2], h * kd)?;
        let v = built.value.apply(value, built.dims[1], h * vd)?;
        let opts = AttnOptions {
            heads: h,
            mask,
            dropout: (ctx.training && self.dropout > 0.0).then(|| AttnDropout {
                rate: self.dropout,
                seed: ctx.rng.next_u64(),
            }),
            return_scores: self.return_attention_scores || capture,
        };
        let (o, mut scores) = attention::attention(&q, &k, &v, &opts)?;
        if capture {
            scores
                .iter()
                .for_each(|s| crate::nn::attention_maps::record(&self.common.name, s));
            scores = scores.filter(|_| self.return_attention_scores);
        }
        let y = built.output.apply(&o, h * vd, built.out_dim)?;
        Ok(std::iter::once(y).chain(scores).collect())
    }
}

impl Layer for MultiHeadAttention {
    fn class_name(&self) -> &'static str {
        "MultiHeadAttention"
    }
    fn name(&self) -> &str {
        &self.common.name
    }
    fn build(&mut self, input_shape: &[usize], rng: &mut Rng) -> Result<Vec<usize>> {
        if self.return_attention_scores || self.attention_mask_input {
            return Err(Error::Invalid(format!(
                "{}: with returnAttentionScores or attentionMaskInput the layer has several inputs or outputs; \
                 use it through build_many/call, not as a single-input layer",
                self.op()
            )));
        }
        let shapes = [input_shape.to_vec(), input_shape.to_vec()];
        Ok(self.build_many(&shapes, rng)?.swap_remove(0))
    }
    fn forward(&self, x: &Tensor, ctx: &mut ForwardCtx) -> Result<Tensor> {
        // Self-attention: the input's mask masks both the queries and the values.
        let m = ctx.mask(0).cloned();
        let mut out = self.run(&[x.clone(), x.clone()], None, [m.clone(), m, None], ctx)?;
        Ok(out.swap_remove(0))
    }
    fn build_many(&mut self, input_shapes: &[Vec<usize>], rng: &mut Rng) -> Result<Vec<Vec<usize>>> {
        let op = self.op();
        let (shapes, mask) = self.split_inputs(input_shapes)?;
        for (what, s) in ["query", "value", "key"].iter().zip(shapes) {
            if s.len() != 2 || s.contains(&0) {
                return Err(Error::shape(
                    &format!("{op} {what}"),
                    "[time, features] (without the batch axis)",
                    s,
                ));
            }
        }
        let (tq, dq) = (shapes[0][0], shapes[0][1]);
        let (tv, dv) = (shapes[1][0], shapes[1][1]);
        let dk = shapes.get(2).map_or(dv, |s| s[1]);
        if shapes.get(2).is_some_and(|s| s[0] != tv) {
            return Err(Error::shape(
                &format!("{op} key"),
                format!("[{tv}, features] (as long as value)"),
                &shapes[2],
            ));
        }
        if let Some(m) = mask {
            if m != &[tq, tv] {
                return Err(Error::shape(&format!("{op} attention mask"), [tq, tv], m));
            }
        }
        let (h, kd, vd) = (self.num_heads, self.key_dim, self.value_dim);
        let out_dim = self.output_shape.unwrap_or(dq);
        let query = self.dense("query", &[dq, h, kd], &[h, kd], rng)?;
        let key = self.dense("key", &[dk, h, kd], &[h, kd], rng)?;
        let value = self.dense("value", &[dv, h, vd], &[h, vd], rng)?;
        let output = self.dense("attention_output", &[h, vd, out_dim], &[out_dim], rng)?;
        self.built = Some(Built {
            dims: [dq, dv, dk],
            out_dim,
            query,
            key,
            value,
            output,
        });
        let mut out = vec![vec![tq, out_dim]];
        if self.return_attention_scores {
            out.push(vec![h, tq, tv]);
        }
        Ok(out)
    }
    fn call(&self, inputs: &[Tensor], ctx: &mut ForwardCtx) -> Result<Vec<Tensor>> {
        let (tensors, mask) = self.split_inputs(inputs)?;
        let masks = [ctx.mask(0).cloned(), ctx.mask(1).cloned(), ctx.mask(2).cloned()];
        let masks = if tensors.len() == 2 {
            [masks[0].clone(), masks[1].clone(), None]
        } else {
            masks
        };
        self.run(tensors, mask, masks, ctx)
    }
    fn params(&self) -> Vec<&Param> {
        let Some(b) = &self.built else { return Vec::new() };
        [&b.query, &b.key, &b.value, &b.output]
            .into_iter()
            .flat_map(|d| std::iter::once(&d.kernel).chain(d.bias.iter()))
            .collect()
    }
    fn config(&self) -> Value {
        let mut c = json!({
            "numHeads": self.num_heads,
            "keyDim": self.key_dim,
            "valueDim": self.value_dim,
            "dropout": self.dropout,
            "useBias": self.use_bias,
            "kernelInitializer": self.kernel_init.to_json(),
            "biasInitializer": self.bias_init.to_json(),
            "useCausalMask": self.use_causal_mask,
            "returnAttentionScores": self.return_attention_scores,
            "attentionMaskInput": self.attention_mask_input,
        });
        if let Some(n) = self.output_shape {
            c["outputShape"] = json!(n);
        }
        self.common.write(c)
    }
}
