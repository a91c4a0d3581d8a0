//! Convolutions, pooling and the other spatial layers. Keras data is channels-last and stays so
//! between layers; ONNX `Conv`/`ConvTranspose`/`MaxPool`/`AveragePool` are channels-first, so
//! each is wrapped in a pair of `Transpose`s (ONNX Runtime's optimizer cancels adjacent pairs).
//! TensorFlow's "same" padding (extra pad at the end) is written as explicit pads computed from
//! the fixed spatial sizes, never as `auto_pad`.

use cortex_core::Result;

use super::core::activation;
use super::graph::{permute, Builder, LayerCtx, Value};
use super::proto::Attr;

/// Output length and (begin, end) pads of one axis, as the engine's `window_axis`.
fn window(input: usize, k: usize, s: usize, d: usize, same: bool) -> (usize, usize, usize) {
    let span = (k - 1) * d + 1;
    if same {
        let out = input.div_ceil(s);
        let total = ((out - 1) * s + span).saturating_sub(input);
        (out, total / 2, total - total / 2)
    } else {
        ((input - span) / s + 1, 0, 0)
    }
}

fn is_same(l: &LayerCtx) -> bool {
    l.str("padding", "valid") == "same"
}

fn ints(v: &[usize]) -> Attr {
    Attr::Ints(v.iter().map(|&x| x as i64).collect())
}

/// Conv2D, Conv1D, Conv2DTranspose, the poolings, UpSampling2D, ZeroPadding2D; `None` for
/// other classes.
pub fn emit(b: &mut Builder, l: &LayerCtx, ins: &[Value]) -> Option<Result<Vec<Value>>> {
    let x = &ins[0];
    let v = match l.class.as_str() {
        "Conv2D" => conv2d(b, l, x),
        "Conv1D" => conv1d(b, l, x),
        "Conv2DTranspose" => conv2d_transpose(b, l, x),
        "MaxPooling2D" | "AveragePooling2D" => pool2d(b, l, x),
        "GlobalAveragePooling2D" => {
            let y = b.reduce_mean(&x.name, &[1, 2], false, &l.name);
            Ok(Value::new(y, vec![x.shape[2]]))
        }
        "GlobalAveragePooling1D" => gap1d(b, l, x),
        "UpSampling2D" => upsample(b, l, x),
        "ZeroPadding2D" => zero_pad(b, l, x),
        _ => return None,
    };
    Some(v.map(|v| vec![v]))
}

fn to_nchw(b: &mut Builder, x: &str, rank: usize, hint: &str) -> String {
    match rank {
        3 => b.transpose(x, &[0, 3, 1, 2], hint),
        _ => b.transpose(x, &[0, 2, 1], hint),
    }
}

fn to_nhwc(b: &mut Builder, x: &str, rank: usize, hint: &str) -> String {
    match rank {
        3 => b.transpose(x, &[0, 2, 3, 1], hint),
        _ => b.transpose(x, &[0, 2, 1], hint),
    }
}

fn bias_input(b: &mut Builder, l: &LayerCtx) -> Option<String> {
    l.maybe("bias")
        .map(|(s, d)| b.weight(&format!("{}/bias", l.name), s, d.to_vec()))
}

fn conv2d(b: &mut Builder, l: &LayerCtx, x: &Value) -> Result<Value> {
    let (kshape, kernel) = l.param("kernel")?;
    let (kh, kw, cin, cout) = (kshape[0], kshape[1], kshape[2], kshape[3]);
    let s = l.pair("strides", [1, 1]);
    let d = l.pair("dilationRate", [1, 1]);
    let same = is_same(l);
    let (oh, pt, pb) = window(x.shape[0], kh, s[0], d[0], same);
    let (ow, pl, pr) = window(x.shape[1], kw, s[1], d[1], same);
    // HWIO -> OIHW
    let w = b.weight(
        &format!("{}/kernel", l.name),
        &[cout, cin, kh, kw],
        permute(kernel, kshape, &[3, 2, 0, 1]),
    );
    let xin = to_nchw(b, &x.name, 3, &l.name);
    let mut inputs = vec![xin.as_str(), w.as_str()];
    let bias = bias_input(b, l);
    inputs.extend(bias.as_deref());
    let y = b.op(
        "Conv",
        &inputs,
        vec![
            ("kernel_shape", ints(&[kh, kw])),
            ("strides", ints(&s)),
            ("dilations", ints(&d)),
            ("pads", ints(&[pt, pl, pb, pr])),
        ],
        &l.name,
    );
    let y = to_nhwc(b, &y, 3, &l.name);
    let y = activation(b, l, &y, &l.str("activation", "linear"))?;
    Ok(Value::new(y, vec![oh, ow, cout]))
}

fn conv1d(b: &mut Builder, l: &LayerCtx, x: &Value) -> Result<Value> {
    let (kshape, kernel) = l.param("kernel")?;
    let (k, cin, cout) = (kshape[0], kshape[1], kshape[2]);
    let s = l.usize("strides", 1);
    let d = l.usize("dilationRate", 1);
    let padding = l.str("padding", "valid");
    let t = x.shape[0];
    let (out, lo, hi) = match padding.as_str() {
        "causal" => {
            // Same output length as "same", all the padding on the left (the engine's rule);
            // the right pad is whatever the last window still needs.
            let out = t.div_ceil(s);
            let lo = (k - 1) * d;
            let needed = (out - 1) * s + (k - 1) * d + 1;
            (out, lo, needed.saturating_sub(t + lo))
        }
        p => window(t, k, s, d, p == "same"),
    };
    // [k, in, out] -> [out, in, k]
    let w = b.weight(
        &format!("{}/kernel", l.name),
        &[cout, cin, k],
        permute(kernel, kshape, &[2, 1, 0]),
    );
    let xin = to_nchw(b, &x.name, 2, &l.name);
    let mut inputs = vec![xin.as_str(), w.as_str()];
    let bias = bias_input(b, l);
    inputs.extend(bias.as_deref());
    let y = b.op(
        "Conv",
        &inputs,
        vec![
            ("kernel_shape", ints(&[k])),
            ("strides", ints(&[s])),
            ("dilations", ints(&[d])),
            ("pads", ints(&[lo, hi])),
        ],
        &l.name,
    );
    let y = to_nhwc(b, &y, 2, &l.name);
    let y = activation(b, l, &y, &l.str("activation", "linear"))?;
    Ok(Value::new(y, vec![out, cout]))
}

/// Keras' transposed convolution is the adjoint of the convolution that maps its output size
/// back to its input size; the same pads as that convolution, with `output_padding` where the
/// convolution ignored trailing rows.
fn conv2d_transpose(b: &mut Builder, l: &LayerCtx, x: &Value) -> Result<Value> {
    let (kshape, kernel) = l.param("kernel")?;
    let (kh, kw, cout, cin) = (kshape[0], kshape[1], kshape[2], kshape[3]);
    let s = l.pair("strides", [1, 1]);
    let d = l.pair("dilationRate", [1, 1]);
    let same = is_same(l);
    let axis = |input: usize, k: usize, s: usize, d: usize| {
        let span = (k - 1) * d + 1;
        let out = if same { input * s } else { (input - 1) * s + span };
        let (_, lo, _) = window(out, k, s, d, same);
        let full = (input - 1) * s + span;
        let end = full as i64 - lo as i64 - out as i64;
        if end >= 0 {
            (out, lo, end as usize, 0)
        } else {
            (out, lo, 0, (-end) as usize)
        }
    };
    let (oh, pt, pb, eh) = axis(x.shape[0], kh, s[0], d[0]);
    let (ow, pl, pr, ew) = axis(x.shape[1], kw, s[1], d[1]);
    // [kh, kw, out, in] -> ONNX ConvTranspose weight [in, out, kh, kw]
    let w = b.weight(
        &format!("{}/kernel", l.name),
        &[cin, cout, kh, kw],
        permute(kernel, kshape, &[3, 2, 0, 1]),
    );
    let xin = to_nchw(b, &x.name, 3, &l.name);
    let mut inputs = vec![xin.as_str(), w.as_str()];
    let bias = bias_input(b, l);
    inputs.extend(bias.as_deref());
    let y = b.op(
        "ConvTranspose",
        &inputs,
        vec![
            ("kernel_shape", ints(&[kh, kw])),
            ("strides", ints(&s)),
            ("dilations", ints(&d)),
            ("pads", ints(&[pt, pl, pb, pr])),
            ("output_padding", ints(&[eh, ew])),
        ],
        &l.name,
    );
    let y = to_nhwc(b, &y, 3, &l.name);
    let y = activation(b, l, &y, &l.str("activation", "linear"))?;
    Ok(Value::new(y, vec![oh, ow, cout]))
}

fn pool2d(b: &mut Builder, l: &LayerCtx, x: &Value) -> Result<Value> {
    let k = l.pair("poolSize", [2, 2]);
    let s = l.pair("strides", k);
    let same = is_same(l);
    let (oh, pt, pb) = window(x.shape[0], k[0], s[0], 1, same);
    let (ow, pl, pr) = window(x.shape[1], k[1], s[1], 1, same);
    let op = if l.class == "MaxPooling2D" {
        "MaxPool"
    } else {
        "AveragePool"
    };
    let xin = to_nchw(b, &x.name, 3, &l.name);
    // Padded positions never win a max and (count_include_pad = 0, the default) are not
    // counted in an average: the engine's rule.
    let y = b.op(
        op,
        &[&xin],
        vec![
            ("kernel_shape", ints(&k)),
            ("strides", ints(&s)),
            ("pads", ints(&[pt, pl, pb, pr])),
        ],
        &l.name,
    );
    let y = to_nhwc(b, &y, 3, &l.name);
    Ok(Value::new(y, vec![oh, ow, x.shape[2]]))
}

fn gap1d(b: &mut Builder, l: &LayerCtx, x: &Value) -> Result<Value> {
    let keep = l.bool("keepdims", false);
    let c = x.shape[1];
    let shape = if keep { vec![1, c] } else { vec![c] };
    let y = match &x.mask {
        None => b.reduce_mean(&x.name, &[1], keep, &l.name),
        Some(m) if m.dims.len() != 1 => return Err(l.unsupported("its input mask is not [batch, time]")),
        Some(m) => {
            // Masked mean over time: sum(x * m) / max(sum(m), 1) (an all-masked row gives 0,
            // as the engine's masked_mean_time).
            let m3 = b.unsqueeze(&m.name, &[2], &l.name);
            let xm = b.op("Mul", &[&x.name, &m3], vec![], &l.name);
            let sum = b.reduce_sum(&xm, &[1], keep, &l.name);
            let count = b.reduce_sum(&m3, &[1], keep, &l.name);
            let one = b.scalar(1.0);
            let count = b.op("Max", &[&count, &one], vec![], &l.name);
            b.op("Div", &[&sum, &count], vec![], &l.name)
        }
    };
    Ok(Value::new(y, shape))
}

/// Nearest-neighbour upsampling as unsqueeze + expand + reshape (exact, and independent of
/// `Resize`'s coordinate conventions): `[b, h, w, c] -> [b, h, sh, w, sw, c] -> [b, h*sh, w*sw, c]`.
fn upsample(b: &mut Builder, l: &LayerCtx, x: &Value) -> Result<Value> {
    let [sh, sw] = l.pair("size", [2, 2]);
    let (h, w, c) = (x.shape[0], x.shape[1], x.shape[2]);
    let u = b.unsqueeze(&x.name, &[2, 4], &l.name);
    let shape = b.ints(&[1, 1, sh as i64, 1, sw as i64, 1]);
    let e = b.op("Expand", &[&u, &shape], vec![], &l.name);
    let out = vec![h * sh, w * sw, c];
    Ok(Value::new(b.reshape_batch(&e, &out, &l.name), out))
}

fn zero_pad(b: &mut Builder, l: &LayerCtx, x: &Value) -> Result<Value> {
    let pads: Vec<usize> = match l.config.get("padding").and_then(|v| v.as_array()) {
        Some(a) if a.len() == 2 => a
            .iter()
            .flat_map(|p| p.as_array().cloned().unwrap_or_default())
            .filter_map(|v| v.as_u64().map(|v| v as usize))
            .collect(),
        _ => Vec::new(),
    };
    let &[t, bo, le, r] = pads.as_slice() else {
        return Err(l.unsupported("expected padding [[top, bottom], [left, right]] in its config"));
    };
    let p = b.ints(&[0, t as i64, le as i64, 0, 0, bo as i64, r as i64, 0]);
    let y = b.op(
        "Pad",
        &[&x.name, &p],
        vec![("mode", Attr::Str("constant".into()))],
        &l.name,
    );
    Ok(Value::new(
        y,
        vec![x.shape[0] + t + bo, x.shape[1] + le + r, x.shape[2]],
    ))
}
