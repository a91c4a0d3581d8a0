//! SimpleRNN, LSTM, GRU and Bidirectional as the ONNX `RNN`/`LSTM`/`GRU` ops (layout 0:
//! time-major, so the batch-major Keras tensors are transposed around the op).
//!
//! Weight layouts: Keras keeps `kernel [in, G*u]`, `recurrent_kernel [u, G*u]` with gates
//! LSTM i,f,c,o and GRU z,r,h; ONNX wants `W [dirs, G*u, in]`, `R [dirs, G*u, u]`,
//! `B [dirs, 2*G*u]` (input biases then recurrent biases) with gates LSTM i,o,f,c and GRU z,r,h.
//! Keras 3 GRU (`resetAfter`, the only form the engine has) applies the reset gate after the
//! recurrent matmul and its bias, which is ONNX `linear_before_reset = 1`.

use cortex_core::Result;
use serde_json::Value as Json;

use super::graph::{permute, Builder, LayerCtx, Value};
use super::proto::Attr;

/// One recurrent layer's settings and weights, read from its config and `{prefix}` weights.
struct Cell<'a> {
    class: &'a str,
    units: usize,
    activation: String,
    recurrent_activation: String,
    return_sequences: bool,
    return_state: bool,
    go_backwards: bool,
    kernel: &'a [f32],
    recurrent: &'a [f32],
    bias: Option<&'a [f32]>,
}

impl Cell<'_> {
    fn gates(&self) -> usize {
        match self.class {
            "LSTM" => 4,
            "GRU" => 3,
            _ => 1,
        }
    }

    fn states(&self) -> usize {
        if self.class == "LSTM" {
            2
        } else {
            1
        }
    }

    /// ONNX (W, R, B) for one direction, gates reordered.
    fn onnx_weights(&self, features: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let (u, g) = (self.units, self.gates());
        // Position k of the ONNX gate order takes Keras gate block order[k].
        let order: &[usize] = match self.class {
            "LSTM" => &[0, 3, 1, 2],
            "GRU" => &[0, 1, 2],
            _ => &[0],
        };
        let reorder_cols = |m: &[f32], rows: usize| -> Vec<f32> {
            // [rows, G*u] with Keras gate blocks -> same with ONNX blocks, then transpose.
            let mut out = Vec::with_capacity(m.len());
            for r in 0..rows {
                for &k in order {
                    out.extend_from_slice(&m[r * g * u + k * u..r * g * u + (k + 1) * u]);
                }
            }
            permute(&out, &[rows, g * u], &[1, 0])
        };
        let w = reorder_cols(self.kernel, features);
        let r = reorder_cols(self.recurrent, u);
        let reorder_vec =
            |v: &[f32]| -> Vec<f32> { order.iter().flat_map(|&k| v[k * u..(k + 1) * u].to_vec()).collect() };
        let mut bias = match (self.bias, self.class) {
            // GRU bias [2, 3u]: input bias row, then recurrent bias row.
            (Some(bv), "GRU") => {
                let mut v = reorder_vec(&bv[..g * u]);
                v.extend(reorder_vec(&bv[g * u..]));
                v
            }
            (Some(bv), _) => {
                let mut v = reorder_vec(bv);
                v.extend(std::iter::repeat_n(0.0, g * u));
                v
            }
            (None, _) => vec![0.0; 2 * g * u],
        };
        bias.truncate(2 * g * u);
        (w, r, bias)
    }
}

fn onnx_activation(l: &LayerCtx, name: &str) -> Result<Attr> {
    // ONNX Runtime's recurrent kernels take only a few activations without extra parameters.
    Ok(Attr::Str(
        match name {
            "tanh" => "Tanh",
            "sigmoid" => "Sigmoid",
            "relu" => "Relu",
            other => {
                return Err(l.unsupported(format!(
                    "recurrent activation '{other}' has no ONNX RNN mapping (tanh, sigmoid and relu do)"
                )))
            }
        }
        .into(),
    ))
}

fn read_cell<'a>(l: &'a LayerCtx, config: &'a Json, prefix: &str) -> Result<Cell<'a>> {
    let s = |k: &str, d: &str| config.get(k).and_then(Json::as_str).unwrap_or(d).to_string();
    let flag = |k: &str| config.get(k).and_then(Json::as_bool).unwrap_or(false);
    let class = match l.class.as_str() {
        "Bidirectional" => l
            .config
            .get("layer")
            .and_then(|v| v.get("className"))
            .and_then(Json::as_str)
            .unwrap_or(""),
        c => c,
    };
    if class == "GRU" && config.get("resetAfter").and_then(Json::as_bool) == Some(false) {
        return Err(l.unsupported("GRU resetAfter=false"));
    }
    Ok(Cell {
        class,
        units: config.get("units").and_then(Json::as_u64).unwrap_or(0) as usize,
        activation: s("activation", "tanh"),
        recurrent_activation: s("recurrentActivation", "sigmoid"),
        return_sequences: flag("returnSequences"),
        return_state: flag("returnState"),
        go_backwards: flag("goBackwards"),
        kernel: l.param(&format!("{prefix}kernel"))?.1,
        recurrent: l.param(&format!("{prefix}recurrent_kernel"))?.1,
        bias: l.maybe(&format!("{prefix}bias")).map(|(_, d)| d),
    })
}

/// SimpleRNN, LSTM, GRU, Bidirectional; `None` for other classes.
pub fn emit(b: &mut Builder, l: &LayerCtx, ins: &[Value]) -> Option<Result<Vec<Value>>> {
    match l.class.as_str() {
        "SimpleRNN" | "LSTM" | "GRU" | "Bidirectional" => Some(emit_rnn(b, l, ins)),
        _ => None,
    }
}

fn emit_rnn(b: &mut Builder, l: &LayerCtx, ins: &[Value]) -> Result<Vec<Value>> {
    let x = &ins[0];
    if x.mask.is_some() {
        // Keras masks may hold any step (the previous state is carried over); ONNX's
        // sequence_lens only expresses right-padding, so there is no faithful mapping.
        return Err(l.unsupported(
            "its input carries a mask (e.g. Embedding maskZero); masked recurrence has no faithful ONNX mapping",
        ));
    }
    let (t, f) = (x.shape[0], x.shape[1]);
    let bidi = l.class == "Bidirectional";
    let inner_cfg = if bidi {
        l.config
            .get("layer")
            .and_then(|v| v.get("config"))
            .cloned()
            .unwrap_or(Json::Null)
    } else {
        l.config.clone()
    };
    // Directions in ONNX order (forward in time first) with the Keras layer each one runs.
    let cells: Vec<Cell> = if bidi {
        let inner = inner_cfg.get("name").and_then(Json::as_str).unwrap_or("");
        let fwd = read_cell(l, &inner_cfg, &format!("forward_{inner}/"))?;
        let mut bwd = read_cell(l, &inner_cfg, &format!("backward_{inner}/"))?;
        bwd.go_backwards = !fwd.go_backwards;
        vec![fwd, bwd]
    } else {
        vec![read_cell(l, &inner_cfg, "")?]
    };
    let c0 = &cells[0];
    let (u, g, ns) = (c0.units, c0.gates(), c0.states());
    // `dirs[k]` = index into `cells` of ONNX direction k.
    let dirs: Vec<usize> = if bidi {
        if cells[0].go_backwards {
            vec![1, 0]
        } else {
            vec![0, 1]
        }
    } else {
        vec![0]
    };
    let nd = dirs.len();
    let (mut w, mut r, mut bias) = (Vec::new(), Vec::new(), Vec::new());
    for &k in &dirs {
        let (wk, rk, bk) = cells[k].onnx_weights(f);
        w.extend(wk);
        r.extend(rk);
        bias.extend(bk);
    }
    let wn = b.weight(&format!("{}/W", l.name), &[nd, g * u, f], w);
    let rn = b.weight(&format!("{}/R", l.name), &[nd, g * u, u], r);
    let bn = b.weight(&format!("{}/B", l.name), &[nd, 2 * g * u], bias);

    // A standalone goBackwards layer emits its sequence in processing order (as Keras), so
    // the input is reversed and run forward; inside Bidirectional ONNX's reverse direction
    // already returns the sequence in input order, as Keras' wrapper does.
    let mut xin = x.name.clone();
    if !bidi && c0.go_backwards {
        let starts = b.ints(&[-1]);
        let ends = b.ints(&[i64::MIN]);
        let axes = b.ints(&[1]);
        let steps = b.ints(&[-1]);
        xin = b.op("Slice", &[&xin, &starts, &ends, &axes, &steps], vec![], &l.name);
    }
    let xt = b.transpose(&xin, &[1, 0, 2], &l.name);

    // Initial states: inputs after x, Keras order (per layer: h then c; Bidirectional: the
    // forward layer's then the backward layer's), stacked as [dirs, batch, u] in ONNX order.
    let mut init = vec![String::new(); ns];
    if ins.len() > 1 {
        if ins.len() != 1 + ns * cells.len() {
            return Err(l.unsupported(format!("expected {} initial state inputs", ns * cells.len())));
        }
        for (s, slot) in init.iter_mut().enumerate() {
            let parts: Vec<String> = dirs
                .iter()
                .map(|&k| b.unsqueeze(&ins[1 + k * ns + s].name, &[0], &l.name))
                .collect();
            *slot = if parts.len() == 1 {
                parts[0].clone()
            } else {
                b.op("Concat", &[&parts[0], &parts[1]], vec![("axis", Attr::Int(0))], &l.name)
            };
        }
    }

    let mut acts = Vec::new();
    for &k in &dirs {
        let c = &cells[k];
        match c.class {
            "LSTM" => {
                acts.push(onnx_activation(l, &c.recurrent_activation)?);
                acts.push(onnx_activation(l, &c.activation)?);
                acts.push(onnx_activation(l, &c.activation)?);
            }
            "GRU" => {
                acts.push(onnx_activation(l, &c.recurrent_activation)?);
                acts.push(onnx_activation(l, &c.activation)?);
            }
            _ => acts.push(onnx_activation(l, &c.activation)?),
        }
    }
    let acts = Attr::Strs(
        acts.into_iter()
            .map(|a| match a {
                Attr::Str(s) => s,
                _ => unreachable!("activations are strings"),
            })
            .collect(),
    );
    let mut attrs = vec![
        ("hidden_size", Attr::Int(u as i64)),
        (
            "direction",
            Attr::Str(if bidi { "bidirectional" } else { "forward" }.into()),
        ),
        ("activations", acts),
    ];
    let op = match c0.class {
        "LSTM" => "LSTM",
        "GRU" => {
            attrs.push(("linear_before_reset", Attr::Int(1)));
            "GRU"
        }
        _ => "RNN",
    };
    // Inputs: X, W, R, B, sequence_lens (omitted), initial_h, initial_c.
    let mut inputs: Vec<&str> = vec![&xt, &wn, &rn, &bn];
    if ins.len() > 1 {
        inputs.push("");
        inputs.extend(init.iter().map(String::as_str));
    }
    let n_out = if op == "LSTM" { 3 } else { 2 };
    let outs = b.op_n(op, &inputs, attrs, &l.name, n_out);
    let (y, yh) = (&outs[0], &outs[1]);
    let yc = outs.get(2);

    // Per Keras layer (cells order): its sequence [b, t, u] or final state [b, u], then states.
    let ret_seq = c0.return_sequences;
    let mut per_cell: Vec<(String, Vec<String>)> = Vec::new();
    let ybt = ret_seq.then(|| b.transpose(y, &[2, 0, 1, 3], &l.name)); // [b, t, dirs, u]
    for k in 0..cells.len() {
        let d = dirs.iter().position(|&c| c == k).expect("every cell has a direction") as i64;
        let h = b.pick(yh, d, 0, &l.name);
        let mut states = vec![h.clone()];
        if let Some(yc) = yc {
            states.push(b.pick(yc, d, 0, &l.name));
        }
        let out = match &ybt {
            Some(ybt) => b.pick(ybt, d, 2, &l.name),
            None => h,
        };
        per_cell.push((out, states));
    }
    let seq_shape = |units: usize| if ret_seq { vec![t, units] } else { vec![units] };
    let main = if bidi {
        let (a, bb) = (&per_cell[0].0, &per_cell[1].0);
        let mode = l.str("mergeMode", "concat");
        match mode.as_str() {
            "concat" => Value::new(
                b.op("Concat", &[a, bb], vec![("axis", Attr::Int(-1))], &l.name),
                seq_shape(2 * u),
            ),
            "sum" => Value::new(b.op("Add", &[a, bb], vec![], &l.name), seq_shape(u)),
            "mul" => Value::new(b.op("Mul", &[a, bb], vec![], &l.name), seq_shape(u)),
            "ave" => {
                let s = b.op("Add", &[a, bb], vec![], &l.name);
                let half = b.scalar(0.5);
                Value::new(b.op("Mul", &[&s, &half], vec![], &l.name), seq_shape(u))
            }
            other => return Err(l.unsupported(format!("mergeMode '{other}'"))),
        }
    } else {
        Value::new(per_cell[0].0.clone(), seq_shape(u))
    };
    let mut result = vec![main];
    if c0.return_state {
        for (_, states) in &per_cell {
            result.extend(states.iter().map(|s| Value::new(s.clone(), vec![u])));
        }
    }
    Ok(result)
}
