//! Spatial layers, channels-last: `Conv1D` (valid / same / causal), `Conv2DTranspose`,
//! `UpSampling2D` (nearest), `ZeroPadding2D` and the mask-aware `GlobalAveragePooling1D`.
//!
//! Conv1D records the existing conv2d op on a height-1 view of its input (a reshape, no copy);
//! the other ops are [`CustomOp`]s over the kernels in [`crate::cpu::conv_transpose`] and
//! [`crate::cpu::spatial`].

use serde_json::{json, Value};

use super::dense::init_option;
use super::{ActivationSpec, Common, ForwardCtx, Layer};
use crate::backprop::{CustomOp, Op};
use crate::cpu::conv::{self, Padding};
use crate::cpu::conv_transpose::{self as ct, ConvTranspose2dGeometry};
use crate::cpu::spatial::{self as sp, Conv1dPadding};
use crate::nn::init::Initializer;
use crate::nn::options::{self, Options};
use crate::nn::param::Param;
use crate::rng::Rng;
use crate::{ops, Error, Result, Tensor};

/// (class name, Keras base name) of every layer in this family.
pub(super) const CLASSES: &[(&str, &str)] = &[
    ("Conv1D", "conv1d"),
    ("Conv2DTranspose", "conv2d_transpose"),
    ("UpSampling2D", "up_sampling2d"),
    ("ZeroPadding2D", "zero_padding2d"),
    ("GlobalAveragePooling1D", "global_average_pooling1d"),
];

/// Creates a layer of this family, or `None` for other class names.
pub(super) fn create(class_name: &str, o: &mut Options, common: &Common) -> Option<Result<Box<dyn Layer>>> {
    fn boxed<L: Layer + 'static>(l: Result<L>) -> Result<Box<dyn Layer>> {
        l.map(|l| Box::new(l) as Box<dyn Layer>)
    }
    Some(match class_name {
        "Conv1D" => boxed(Conv1dLayer::from_options(o, common)),
        "Conv2DTranspose" => boxed(Conv2dTransposeLayer::from_options(o, common)),
        "UpSampling2D" => boxed(UpSampling2d::from_options(o, common)),
        "ZeroPadding2D" => boxed(ZeroPadding2d::from_options(o, common)),
        "GlobalAveragePooling1D" => boxed(GlobalAveragePooling1d::from_options(o, common)),
        _ => return None,
    })
}

fn not_built(name: &str) -> Error {
    Error::Invalid(format!(
        "layer '{name}' is used before it was built; call build(inputShape) first"
    ))
}

/// A positive integer given as `n` or `[n]` (Keras accepts both for 1-D sizes).
fn single(o: &mut Options, class: &str, key: &'static str) -> Result<Option<usize>> {
    let Some(v) = o.value(key) else { return Ok(None) };
    let n = match &v {
        Value::Array(a) if a.len() == 1 => options::dim(&a[0]),
        other => options::dim(other),
    };
    n.map(Some).ok_or_else(|| {
        Error::Invalid(format!(
            "{class}: option '{key}' must be a positive integer below 2^31 or [n], got {v}"
        ))
    })
}

/// Keras rejects strides and dilation both above 1; so do we (as `Conv2D` does).
fn check_stride_dilation(class: &str, strides: &[usize], dilation: &[usize]) -> Result<()> {
    if strides.iter().any(|&s| s != 1) && dilation.iter().any(|&d| d != 1) {
        return Err(Error::Invalid(format!(
            "{class}: strides {strides:?} and dilationRate {dilation:?} cannot both differ from 1 (as in Keras)"
        )));
    }
    Ok(())
}

/// `[batch]` followed by a per-sample shape.
fn with_batch(shape: &[usize]) -> Vec<usize> {
    let mut v = vec![1];
    v.extend_from_slice(shape);
    v
}

/// Kernel and optional bias weights of a convolution layer.
fn conv_params(
    common: &Common,
    kshape: &[usize],
    filters: usize,
    kernel_init: &Initializer,
    bias_init: Option<&Initializer>,
    rng: &mut Rng,
) -> Result<(Param, Option<Param>)> {
    let name = &common.name;
    let kernel = Param::new(
        format!("{name}/kernel"),
        kernel_init.sample(kshape, rng)?,
        kshape,
        common.trainable,
    )?;
    let bias = match bias_init {
        Some(init) => Some(Param::new(
            format!("{name}/bias"),
            init.sample(&[filters], rng)?,
            &[filters],
            common.trainable,
        )?),
        None => None,
    };
    Ok((kernel, bias))
}

/// Checks a bias against the number of output channels.
fn check_bias(op: &str, b: Option<&Tensor>, channels: usize) -> Result<()> {
    match b {
        Some(b) if b.shape() != [channels] => Err(Error::shape(op, [channels], b.shape())),
        _ => Ok(()),
    }
}

/// 1-D convolution of `x` (`[batch, steps, in_c]`) with a `[k, in_c, out_c]` kernel.
pub(crate) fn conv1d(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: usize,
    dilation: usize,
    padding: Conv1dPadding,
) -> Result<Tensor> {
    let geom = sp::conv1d_geometry(x.shape(), w.shape(), stride, dilation, padding)?;
    check_bias("conv1d bias", b, geom.out_c)?;
    // Height-1 views share storage; their reshape ops route the gradients back to x and w.
    let x4 = x.reshape(&geom.input_shape())?;
    let w4 = w.reshape(&geom.kernel_shape())?;
    let mut inputs = vec![&x4, &w4];
    inputs.extend(b);
    if ops::on_gpu("conv1d", &inputs)? {
        return ops::conv2d_on_gpu(&x4, &w4, b, &geom)?.reshape(&[geom.batch, geom.out_w, geom.out_c]);
    }
    let y = conv::conv2d_forward(x.data(), w.data(), b.map(Tensor::data), &geom);
    let y4 = Tensor::from_op(
        y,
        geom.output_shape(),
        |_| Op::Conv2d {
            x: x4.clone(),
            w: w4.clone(),
            b: b.cloned(),
            geom: geom.clone(),
        },
        &inputs,
    );
    y4.reshape(&[geom.batch, geom.out_w, geom.out_c])
}

/// `Conv1D`: kernel `[kernelSize, in, filters]`.
pub struct Conv1dLayer {
    common: Common,
    filters: usize,
    kernel_size: usize,
    stride: usize,
    dilation: usize,
    padding: Conv1dPadding,
    activation: ActivationSpec,
    use_bias: bool,
    kernel_init: Initializer,
    bias_init: Initializer,
    kernel: Option<Param>,
    bias: Option<Param>,
}

impl Conv1dLayer {
    fn from_options(o: &mut Options, common: &Common) -> Result<Self> {
        const C: &str = "Conv1D";
        let filters = o.required_positive("filters")?;
        let kernel_size = single(o, C, "kernelSize")?
            .ok_or_else(|| Error::Invalid(format!("{C}: option 'kernelSize' is required")))?;
        let stride = single(o, C, "strides")?.unwrap_or(1);
        let dilation = single(o, C, "dilationRate")?.unwrap_or(1);
        check_stride_dilation(C, &[stride], &[dilation])?;
        Ok(Conv1dLayer {
            common: common.clone(),
            filters,
            kernel_size,
            stride,
            dilation,
            padding: Conv1dPadding::parse(&o.string("padding")?.unwrap_or_else(|| "valid".into()))
                .map_err(|e| Error::Invalid(format!("{C}: {e}")))?,
            activation: ActivationSpec::read(o)?,
            use_bias: o.bool("useBias")?.unwrap_or(true),
            kernel_init: init_option(o, "kernelInitializer", Initializer::GlorotUniform)?,
            bias_init: init_option(o, "biasInitializer", Initializer::Zeros)?,
            kernel: None,
            bias: None,
        })
    }
}

impl Layer for Conv1dLayer {
    fn class_name(&self) -> &'static str {
        "Conv1D"
    }
    fn name(&self) -> &str {
        &self.common.name
    }
    fn build(&mut self, input_shape: &[usize], rng: &mut Rng) -> Result<Vec<usize>> {
        if input_shape.len() != 2 {
            let what = format!("Conv1D '{}'", self.common.name);
            return Err(Error::shape(&what, "input [steps, channels]", input_shape));
        }
        let kshape = [self.kernel_size, input_shape[1], self.filters];
        let geom = sp::conv1d_geometry(
            &with_batch(input_shape),
            &kshape,
            self.stride,
            self.dilation,
            self.padding,
        )?;
        let bias_init = self.use_bias.then_some(&self.bias_init);
        let (k, b) = conv_params(&self.common, &kshape, self.filters, &self.kernel_init, bias_init, rng)?;
        self.kernel = Some(k);
        self.bias = b;
        Ok(vec![geom.out_w, geom.out_c])
    }
    fn forward(&self, x: &Tensor, _ctx: &mut ForwardCtx) -> Result<Tensor> {
        let kernel = self.kernel.as_ref().ok_or_else(|| not_built(&self.common.name))?;
        let bias = self.bias.as_ref().map(Param::get);
        let y = conv1d(
            x,
            &kernel.get(),
            bias.as_ref(),
            self.stride,
            self.dilation,
            self.padding,
        )?;
        self.activation.apply_owned(y)
    }
    fn params(&self) -> Vec<&Param> {
        self.kernel.iter().chain(self.bias.iter()).collect()
    }
    fn config(&self) -> Value {
        self.common.write(json!({
            "filters": self.filters,
            "kernelSize": self.kernel_size,
            "strides": self.stride,
            "dilationRate": self.dilation,
            "padding": self.padding.name(),
            "activation": self.activation.name(),
            "useBias": self.use_bias,
            "kernelInitializer": self.kernel_init.to_json(),
            "biasInitializer": self.bias_init.to_json(),
        }))
    }
}

/// Gradients of a transposed convolution (see [`crate::cpu::conv_transpose`]).
struct ConvTranspose2dOp {
    x: Tensor,
    w: Tensor,
    b: Option<Tensor>,
    geom: ConvTranspose2dGeometry,
}

impl CustomOp for ConvTranspose2dOp {
    fn name(&self) -> &'static str {
        "conv2dTranspose"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        let mut v = vec![&self.x, &self.w];
        v.extend(self.b.iter());
        v
    }
    fn vjp(&self, _out: &Tensor, g: &[f32]) -> Result<Vec<(Tensor, Vec<f32>)>> {
        let mut v = Vec::with_capacity(3);
        if self.x.tracks() {
            v.push((
                self.x.clone(),
                ct::conv2d_transpose_backward_input(g, self.w.data(), &self.geom),
            ));
        }
        if self.w.tracks() {
            v.push((
                self.w.clone(),
                ct::conv2d_transpose_backward_filter(self.x.data(), g, &self.geom),
            ));
        }
        if let Some(b) = self.b.as_ref().filter(|b| b.tracks()) {
            v.push((b.clone(), ct::conv2d_transpose_backward_bias(g, &self.geom)));
        }
        Ok(v)
    }
}

/// Transposed 2-D convolution of `x` (`[batch, h, w, in_c]`) with a `[kh, kw, out_c, in_c]`
/// kernel, Keras output size.
pub(crate) fn conv2d_transpose(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    strides: [usize; 2],
    dilation: [usize; 2],
    padding: Padding,
) -> Result<Tensor> {
    let geom = ConvTranspose2dGeometry::new(x.shape(), w.shape(), strides, dilation, padding)?;
    check_bias("conv2dTranspose bias", b, geom.out_channels())?;
    let mut on = vec![x, w];
    on.extend(b);
    if ops::on_gpu("conv2dTranspose", &on)? {
        return ops::conv2d_transpose_on_gpu(x, w, b, &geom);
    }
    let y = ct::conv2d_transpose_forward(x.data(), w.data(), b.map(Tensor::data), &geom);
    let mut inputs = vec![x, w];
    inputs.extend(b);
    let op = ConvTranspose2dOp {
        x: x.clone(),
        w: w.clone(),
        b: b.cloned(),
        geom: geom.clone(),
    };
    ops::custom(y, geom.output_shape(), || Box::new(op), &inputs)
}

/// `Conv2DTranspose`: kernel `[kh, kw, filters, in]`.
pub struct Conv2dTransposeLayer {
    common: Common,
    filters: usize,
    kernel_size: [usize; 2],
    strides: [usize; 2],
    dilation: [usize; 2],
    padding: Padding,
    activation: ActivationSpec,
    use_bias: bool,
    kernel_init: Initializer,
    bias_init: Initializer,
    kernel: Option<Param>,
    bias: Option<Param>,
}

impl Conv2dTransposeLayer {
    fn from_options(o: &mut Options, common: &Common) -> Result<Self> {
        const C: &str = "Conv2DTranspose";
        let filters = o.required_positive("filters")?;
        let kernel_size = o
            .pair("kernelSize")?
            .ok_or_else(|| Error::Invalid(format!("{C}: option 'kernelSize' is required")))?;
        let strides = o.pair("strides")?.unwrap_or([1, 1]);
        let dilation = o.pair("dilationRate")?.unwrap_or([1, 1]);
        check_stride_dilation(C, &strides, &dilation)?;
        Ok(Conv2dTransposeLayer {
            common: common.clone(),
            filters,
            kernel_size,
            strides,
            dilation,
            padding: Padding::parse(&o.string("padding")?.unwrap_or_else(|| "valid".into()))
                .map_err(|e| Error::Invalid(format!("{C}: {e}")))?,
            activation: ActivationSpec::read(o)?,
            use_bias: o.bool("useBias")?.unwrap_or(true),
            kernel_init: init_option(o, "kernelInitializer", Initializer::GlorotUniform)?,
            bias_init: init_option(o, "biasInitializer", Initializer::Zeros)?,
            kernel: None,
            bias: None,
        })
    }
}

impl Layer for Conv2dTransposeLayer {
    fn class_name(&self) -> &'static str {
        "Conv2DTranspose"
    }
    fn name(&self) -> &str {
        &self.common.name
    }
    fn build(&mut self, input_shape: &[usize], rng: &mut Rng) -> Result<Vec<usize>> {
        if input_shape.len() != 3 {
            let what = format!("Conv2DTranspose '{}'", self.common.name);
            return Err(Error::shape(&what, "input [height, width, channels]", input_shape));
        }
        let kshape = [self.kernel_size[0], self.kernel_size[1], self.filters, input_shape[2]];
        let geom = ConvTranspose2dGeometry::new(
            &with_batch(input_shape),
            &kshape,
            self.strides,
            self.dilation,
            self.padding,
        )?;
        let bias_init = self.use_bias.then_some(&self.bias_init);
        let (k, b) = conv_params(&self.common, &kshape, self.filters, &self.kernel_init, bias_init, rng)?;
        self.kernel = Some(k);
        self.bias = b;
        Ok(geom.output_shape()[1..].to_vec())
    }
    fn forward(&self, x: &Tensor, _ctx: &mut ForwardCtx) -> Result<Tensor> {
        let kernel = self.kernel.as_ref().ok_or_else(|| not_built(&self.common.name))?;
        let bias = self.bias.as_ref().map(Param::get);
        let y = conv2d_transpose(
            x,
            &kernel.get(),
            bias.as_ref(),
            self.strides,
            self.dilation,
            self.padding,
        )?;
        self.activation.apply_owned(y)
    }
    fn params(&self) -> Vec<&Param> {
        self.kernel.iter().chain(self.bias.iter()).collect()
    }
    fn config(&self) -> Value {
        self.common.write(json!({
            "filters": self.filters,
            "kernelSize": self.kernel_size,
            "strides": self.strides,
            "dilationRate": self.dilation,
            "padding": if self.padding == Padding::Same { "same" } else { "valid" },
            "activation": self.activation.name(),
            "useBias": self.use_bias,
            "kernelInitializer": self.kernel_init.to_json(),
            "biasInitializer": self.bias_init.to_json(),
        }))
    }
}

/// `[b, h, w, c]` of a rank-4 tensor, or a shape error naming `op`.
fn nhwc(op: &str, x: &Tensor) -> Result<[usize; 4]> {
    match *x.shape() {
        [b, h, w, c] => Ok([b, h, w, c]),
        _ => Err(Error::shape(
            op,
            "input of rank 4 [batch, height, width, channels]",
            x.shape(),
        )),
    }
}

/// Gradient of nearest upsampling: sums each block back onto its source pixel.
struct Upsample2dOp {
    x: Tensor,
    shape: [usize; 4],
    size: [usize; 2],
}

impl CustomOp for Upsample2dOp {
    fn name(&self) -> &'static str {
        "upSampling2d"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.x]
    }
    fn vjp(&self, _out: &Tensor, g: &[f32]) -> Result<Vec<(Tensor, Vec<f32>)>> {
        Ok(vec![(
            self.x.clone(),
            sp::upsample_nearest2d_backward(g, self.shape, self.size),
        )])
    }
}

/// `UpSampling2D` with nearest-neighbour interpolation: `[b, h, w, c] -> [b, h*sh, w*sw, c]`.
pub struct UpSampling2d {
    common: Common,
    size: [usize; 2],
}

impl UpSampling2d {
    fn from_options(o: &mut Options, common: &Common) -> Result<Self> {
        let size = o.pair("size")?.unwrap_or([2, 2]);
        match o.string("interpolation")?.as_deref() {
            None | Some("nearest") => {}
            Some(other) => {
                return Err(Error::Invalid(format!(
                    "UpSampling2D: option 'interpolation' must be 'nearest' (the only mode implemented), got {other:?}"
                )))
            }
        }
        Ok(UpSampling2d {
            common: common.clone(),
            size,
        })
    }
}

impl Layer for UpSampling2d {
    fn class_name(&self) -> &'static str {
        "UpSampling2D"
    }
    fn name(&self) -> &str {
        &self.common.name
    }
    fn build(&mut self, input_shape: &[usize], _rng: &mut Rng) -> Result<Vec<usize>> {
        match *input_shape {
            [h, w, c] => Ok(vec![h * self.size[0], w * self.size[1], c]),
            _ => Err(Error::shape(
                "UpSampling2D",
                "input [height, width, channels]",
                input_shape,
            )),
        }
    }
    fn forward(&self, x: &Tensor, _ctx: &mut ForwardCtx) -> Result<Tensor> {
        let shape = nhwc("UpSampling2D", x)?;
        let [b, h, w, c] = shape;
        let out_shape = vec![b, h * self.size[0], w * self.size[1], c];
        if ops::on_gpu("upSampling2d", &[x])? {
            return ops::upsample2d_on_gpu(x, shape, self.size);
        }
        let y = sp::upsample_nearest2d(x.data(), shape, self.size);
        let op = Upsample2dOp {
            x: x.clone(),
            shape,
            size: self.size,
        };
        ops::custom(y, out_shape, || Box::new(op), &[x])
    }
    fn config(&self) -> Value {
        self.common
            .write(json!({ "size": self.size, "interpolation": "nearest" }))
    }
}

/// Gradient of zero padding: the interior of the output gradient.
struct Pad2dOp {
    x: Tensor,
    shape: [usize; 4],
    pads: [usize; 4],
}

impl CustomOp for Pad2dOp {
    fn name(&self) -> &'static str {
        "zeroPadding2d"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.x]
    }
    fn vjp(&self, _out: &Tensor, g: &[f32]) -> Result<Vec<(Tensor, Vec<f32>)>> {
        Ok(vec![(self.x.clone(), sp::crop2d(g, self.shape, self.pads))])
    }
}

/// `ZeroPadding2D`: zeros around `[b, h, w, c]` images.
pub struct ZeroPadding2d {
    common: Common,
    /// `[top, bottom, left, right]`.
    pads: [usize; 4],
}

/// Parses `n`, `[h, w]` or `[[top, bottom], [left, right]]` into `[top, bottom, left, right]`.
fn parse_padding2d(v: &Value) -> Option<[usize; 4]> {
    let n = options::count;
    let pair = |v: &Value| match v {
        Value::Array(a) if a.len() == 2 => n(&a[0]).zip(n(&a[1])),
        _ => None,
    };
    match v {
        Value::Array(a) if a.len() == 2 && a.iter().all(Value::is_array) => {
            let ((t, b), (l, r)) = pair(&a[0]).zip(pair(&a[1]))?;
            Some([t, b, l, r])
        }
        Value::Array(_) => pair(v).map(|(h, w)| [h, h, w, w]),
        other => n(other).map(|p| [p; 4]),
    }
}

impl ZeroPadding2d {
    fn from_options(o: &mut Options, common: &Common) -> Result<Self> {
        let pads = match o.value("padding") {
            None => [1; 4],
            Some(v) => parse_padding2d(&v).ok_or_else(|| {
                Error::Invalid(format!(
                    "ZeroPadding2D: option 'padding' must be a non-negative integer below 2^31, [height, width] or \
                     [[top, bottom], [left, right]], got {v}"
                ))
            })?,
        };
        Ok(ZeroPadding2d {
            common: common.clone(),
            pads,
        })
    }
}

impl Layer for ZeroPadding2d {
    fn class_name(&self) -> &'static str {
        "ZeroPadding2D"
    }
    fn name(&self) -> &str {
        &self.common.name
    }
    fn build(&mut self, input_shape: &[usize], _rng: &mut Rng) -> Result<Vec<usize>> {
        let [t, b, l, r] = self.pads;
        match *input_shape {
            [h, w, c] => Ok(vec![h + t + b, w + l + r, c]),
            _ => Err(Error::shape(
                "ZeroPadding2D",
                "input [height, width, channels]",
                input_shape,
            )),
        }
    }
    fn forward(&self, x: &Tensor, _ctx: &mut ForwardCtx) -> Result<Tensor> {
        let shape = nhwc("ZeroPadding2D", x)?;
        let [b, h, w, c] = shape;
        let [pt, pb, pl, pr] = self.pads;
        if ops::on_gpu("zeroPadding2d", &[x])? {
            return ops::pad2d_on_gpu(x, shape, self.pads);
        }
        let y = sp::pad2d(x.data(), shape, self.pads);
        let op = Pad2dOp {
            x: x.clone(),
            shape,
            pads: self.pads,
        };
        ops::custom(y, vec![b, h + pt + pb, w + pl + pr, c], || Box::new(op), &[x])
    }
    fn config(&self) -> Value {
        let [t, b, l, r] = self.pads;
        self.common.write(json!({ "padding": [[t, b], [l, r]] }))
    }
}

/// Gradient of the masked mean over time.
struct MaskedMeanOp {
    x: Tensor,
    mask: Tensor,
    dims: [usize; 3],
}

impl CustomOp for MaskedMeanOp {
    fn name(&self) -> &'static str {
        "globalAveragePooling1d"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.x]
    }
    fn vjp(&self, _out: &Tensor, g: &[f32]) -> Result<Vec<(Tensor, Vec<f32>)>> {
        let [b, t, c] = self.dims;
        Ok(vec![(
            self.x.clone(),
            sp::masked_mean_time_backward(g, self.mask.data(), b, t, c),
        )])
    }
}

/// `GlobalAveragePooling1D`: `[b, t, c] -> [b, c]` (or `[b, 1, c]` with `keepdims`), the mean
/// over the unmasked steps when the input carries a mask.
pub struct GlobalAveragePooling1d {
    common: Common,
    keepdims: bool,
}

impl GlobalAveragePooling1d {
    fn from_options(o: &mut Options, common: &Common) -> Result<Self> {
        Ok(GlobalAveragePooling1d {
            common: common.clone(),
            keepdims: o.bool("keepdims")?.unwrap_or(false),
        })
    }
}

impl Layer for GlobalAveragePooling1d {
    fn class_name(&self) -> &'static str {
        "GlobalAveragePooling1D"
    }
    fn name(&self) -> &str {
        &self.common.name
    }
    fn build(&mut self, input_shape: &[usize], _rng: &mut Rng) -> Result<Vec<usize>> {
        match *input_shape {
            [_, c] if self.keepdims => Ok(vec![1, c]),
            [_, c] => Ok(vec![c]),
            _ => Err(Error::shape(
                "GlobalAveragePooling1D",
                "input [steps, channels]",
                input_shape,
            )),
        }
    }
    fn forward(&self, x: &Tensor, ctx: &mut ForwardCtx) -> Result<Tensor> {
        const OP: &str = "GlobalAveragePooling1D";
        let [b, t, c] = match *x.shape() {
            [b, t, c] => [b, t, c],
            _ => return Err(Error::shape(OP, "input of rank 3 [batch, steps, channels]", x.shape())),
        };
        let y = match ctx.mask(0) {
            None => ops::global_avg_pool(x)?,
            Some(mask) => {
                if mask.shape() != [b, t] {
                    return Err(Error::shape(&format!("{OP} mask"), [b, t], mask.shape()));
                }
                if ops::on_gpu("globalAveragePooling1d", &[x])? {
                    return self.finish(masked_mean_on_device(x, mask, [b, t, c])?, [b, c], ctx);
                }
                let y = sp::masked_mean_time(x.data(), mask.data(), b, t, c);
                let op = MaskedMeanOp {
                    x: x.clone(),
                    mask: mask.detach(),
                    dims: [b, t, c],
                };
                ops::custom(y, vec![b, c], || Box::new(op), &[x])?
            }
        };
        self.finish(y, [b, c], ctx)
    }
    fn config(&self) -> Value {
        self.common.write(json!({ "keepdims": self.keepdims }))
    }
}

impl GlobalAveragePooling1d {
    fn finish(&self, y: Tensor, [b, c]: [usize; 2], ctx: &mut ForwardCtx) -> Result<Tensor> {
        // The time axis is gone, so no mask goes on.
        ctx.output_masks = Some(vec![None]);
        if self.keepdims {
            y.reshape(&[b, 1, c])
        } else {
            Ok(y)
        }
    }
}

/// The masked mean over time from device ops: the plain mean over time of `x` times
/// `t * mask / count` (per sample, expanded over channels; built on the host from the `[b, t]`
/// mask), so `y[n] = sum_t mask[n, t] x[n, t] / count[n]` with gradients through the mean and
/// the product. A sample with an all-zero mask gets zeros, as on the CPU.
fn masked_mean_on_device(x: &Tensor, mask: &Tensor, [b, t, c]: [usize; 3]) -> Result<Tensor> {
    let m = mask.host_values()?;
    let mut w = crate::alloc::try_with_capacity("GlobalAveragePooling1D mask weights", b * t * c)?;
    for row in m.chunks_exact(t.max(1)) {
        let count: f32 = row.iter().sum();
        let scale = if count != 0.0 { t as f32 / count } else { 0.0 };
        for &keep in row {
            w.extend(std::iter::repeat_n(keep * scale, c));
        }
    }
    let w = Tensor::new(w, x.shape())?.to(x.device())?;
    ops::global_avg_pool(&ops::mul(x, &w)?)
}
