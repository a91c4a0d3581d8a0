//! The Bidirectional wrapper: one recurrent layer run forward in time and a copy run backward,
//! outputs merged (concat, sum, mul or ave). Weights: `{bi}/forward_{inner}/...` then
//! `{bi}/backward_{inner}/...`.

use super::*;

/// How the two directions' outputs are merged (Keras `mergeMode`); the GPU path reads it too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Merge {
    Concat,
    Sum,
    Mul,
    Ave,
}

impl Merge {
    /// Parses a Keras `mergeMode`.
    pub(crate) fn parse(mode: &str) -> Option<Merge> {
        match mode {
            "concat" => Some(Merge::Concat),
            "sum" => Some(Merge::Sum),
            "mul" => Some(Merge::Mul),
            "ave" => Some(Merge::Ave),
            _ => None,
        }
    }

    /// The Keras `mergeMode` name.
    fn name(self) -> &'static str {
        match self {
            Merge::Concat => "concat",
            Merge::Sum => "sum",
            Merge::Mul => "mul",
            Merge::Ave => "ave",
        }
    }
}

/// Runs one recurrent layer forward and a copy of it backward in time, and merges the outputs.
pub struct Bidirectional {
    common: Common,
    forward: Rnn,
    backward: Rnn,
    merge: Merge,
    inner_name: String,
}

impl Bidirectional {
    pub(super) fn from_options(o: &mut Options, common: &Common) -> Result<Bidirectional> {
        let spec = o.value("layer").ok_or_else(|| {
            Error::Invalid("Bidirectional: option 'layer' ({ className, config }) is required".into())
        })?;
        let class = spec.get("className").and_then(Value::as_str).unwrap_or_default();
        let cell = cell_of(class).ok_or_else(|| {
            Error::Invalid(format!(
                "Bidirectional: option 'layer' must be {{ className: 'SimpleRNN' | 'LSTM' | 'GRU', config }}, got {spec}"
            ))
        })?;
        let config = spec.get("config").cloned().unwrap_or(Value::Null);
        let mode = o.string("mergeMode")?.unwrap_or_else(|| "concat".into());
        let merge = Merge::parse(&mode).ok_or_else(|| {
            Error::Invalid(format!(
                "Bidirectional: option 'mergeMode' must be one of concat, sum, mul, ave; got '{mode}'"
            ))
        })?;
        let base = crate::nn::layers::base_name(class);
        let inner = |direction: &str| -> Result<(Rnn, String)> {
            let mut io = Options::new(&format!("Bidirectional layer {class}"), &config)?;
            let mut ic = Common::read(&mut io)?;
            let inner_name = if ic.name.is_empty() {
                base.to_string()
            } else {
                ic.name.clone()
            };
            ic.name = format!("{}/{direction}_{inner_name}", common.name);
            ic.trainable &= common.trainable;
            let rnn = Rnn::from_options(cell, &mut io, &ic, false)?;
            io.finish()?;
            Ok((rnn, inner_name))
        };
        let (forward, inner_name) = inner("forward")?;
        let (mut backward, _) = inner("backward")?;
        backward.go_backwards = !forward.go_backwards;
        Ok(Bidirectional {
            common: common.clone(),
            forward,
            backward,
            merge,
            inner_name,
        })
    }

    fn what(&self) -> String {
        format!("Bidirectional '{}'", self.common.name)
    }

    fn merged_units(&self) -> usize {
        if self.merge == Merge::Concat {
            2 * self.forward.units
        } else {
            self.forward.units
        }
    }

    /// The two directions' outputs merged by `mergeMode`.
    fn merged(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        match self.merge {
            Merge::Concat => concat_last(a, b),
            Merge::Sum => ops::add(a, b),
            Merge::Mul => ops::mul(a, b),
            Merge::Ave => ops::scale(&ops::add(a, b)?, 0.5),
        }
    }

    fn run(&self, inputs: &[Tensor], ctx: &mut ForwardCtx) -> Result<Vec<Tensor>> {
        let what = self.what();
        let Some((x, states)) = inputs.split_first() else {
            return Err(Error::Invalid(format!("{what}: expected at least one input")));
        };
        let ns = n_states(self.forward.cell);
        if !states.is_empty() && states.len() != 2 * ns {
            return Err(Error::Invalid(format!(
                "{what}: expected {} initial state tensor(s) (forward then backward) after the input, got {}",
                2 * ns,
                states.len()
            )));
        }
        let (fs, bs) = states.split_at(states.len() / 2);
        let mask = ctx.mask(0).cloned();
        let mut yf = self.forward.run(x, fs, mask.as_ref(), true, ctx)?;
        let mut yb = self.backward.run(x, bs, mask.as_ref(), true, ctx)?;
        let y = self.merged(&yf.remove(0), &yb.remove(0))?;
        let mut outs = vec![y];
        outs.extend(yf);
        outs.extend(yb);
        let mut masks = vec![None; outs.len()];
        if self.forward.return_sequences {
            masks[0] = mask;
        }
        ctx.output_masks = Some(masks);
        Ok(outs)
    }
}

impl Layer for Bidirectional {
    fn class_name(&self) -> &'static str {
        "Bidirectional"
    }
    fn name(&self) -> &str {
        &self.common.name
    }
    fn build(&mut self, input_shape: &[usize], rng: &mut Rng) -> Result<Vec<usize>> {
        self.forward.build_weights(input_shape, rng)?;
        self.backward.build_weights(input_shape, rng)?;
        let mut out = self.forward.output_shape(input_shape[0]);
        *out.last_mut().expect("non-empty") = self.merged_units();
        Ok(out)
    }
    fn build_many(&mut self, input_shapes: &[Vec<usize>], rng: &mut Rng) -> Result<Vec<Vec<usize>>> {
        let what = self.what();
        let Some(first) = input_shapes.first() else {
            return Err(Error::Invalid(format!("{what}: expected at least one input")));
        };
        check_state_shapes(&what, input_shapes, 2 * n_states(self.forward.cell), self.forward.units)?;
        let out = self.build(first, rng)?;
        let mut shapes = vec![out];
        if self.forward.return_state {
            shapes.extend(std::iter::repeat_n(
                vec![self.forward.units],
                2 * n_states(self.forward.cell),
            ));
        }
        Ok(shapes)
    }
    fn forward(&self, x: &Tensor, ctx: &mut ForwardCtx) -> Result<Tensor> {
        let mut outs = self.run(std::slice::from_ref(x), ctx)?;
        if let Some(m) = ctx.output_masks.as_mut() {
            m.truncate(1);
        }
        Ok(outs.swap_remove(0))
    }
    fn call(&self, inputs: &[Tensor], ctx: &mut ForwardCtx) -> Result<Vec<Tensor>> {
        self.run(inputs, ctx)
    }
    fn forward_embedded(&self, embedding: &dyn Layer, x: &Tensor, ctx: &mut ForwardCtx) -> Result<Option<Tensor>> {
        let Some(lookup) = super::embedded::foldable_lookup(embedding, x, self.forward.return_state, ctx)? else {
            return Ok(None);
        };
        let Some(a) = self.forward.run_embedded(&lookup, true, ctx)? else {
            return Ok(None);
        };
        let Some(b) = self.backward.run_embedded(&lookup, true, ctx)? else {
            return Ok(None);
        };
        self.merged(&a, &b).map(Some)
    }
    fn set_precision(&self, precision: crate::nn::quantize::Precision) -> bool {
        let f = self.forward.set_precision(precision);
        self.backward.set_precision(precision) && f
    }
    fn params(&self) -> Vec<&Param> {
        let mut p = self.forward.params();
        p.extend(self.backward.params());
        p
    }
    fn config(&self) -> Value {
        let mut inner = self.forward.config_value();
        let map = inner.as_object_mut().expect("object");
        map.insert("name".into(), self.inner_name.clone().into());
        map.remove("trainable");
        self.common.write(json!({
            "layer": {"className": class_of(self.forward.cell), "config": inner},
            "mergeMode": self.merge.name(),
        }))
    }
}
