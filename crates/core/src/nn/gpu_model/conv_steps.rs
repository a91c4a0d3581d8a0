//! Conv1D and Conv2DTranspose of a GPU model, on the implicit-GEMM conv2d kernels (NHWC).
//!
//! * Conv1D views its `[batch, steps, channels]` input as a `[batch, 1, steps, channels]`
//!   image and its `[k, in, filters]` kernel as `[1, k, in, filters]` (reshapes, no copies);
//!   `causal` padding is a left pad of `dilation * (k - 1)` columns, which [`Conv2dSpec`]'s
//!   asymmetric padding expresses directly.
//! * Conv2DTranspose runs the convolution `C` it is the adjoint of (as the CPU layer does, see
//!   [`crate::cpu::conv_transpose`]): `C` maps the `[batch, oh, ow, filters]` output back to the
//!   `[batch, h, w, in]` input with the Keras kernel `[kh, kw, filters, in]` read as a conv
//!   kernel `[kh, kw, cin = filters, cout = in]`. Forward is `C`'s backward-input pass, the input
//!   gradient `C`'s forward pass, the kernel gradient `C`'s backward-filter pass with the output
//!   gradient as `C`'s input and the layer input as `C`'s output gradient.
//!
//! Both take their geometry (output size, the `same` padding split) from the CPU layer's own
//! geometry code, so the two devices agree on every option the CPU layer accepts. Bias and
//! activation are applied as for Conv2D (the activation by the caller in `steps.rs`).

use cortex_wgpu::{Conv2dSpec, Gpu, GpuTensor};
use serde_json::Value;

use super::steps::{accumulate, Act};
use super::{gpu_err, unsupported};
use crate::cpu::conv::{Conv2dGeometry, Padding};
use crate::cpu::conv_transpose::ConvTranspose2dGeometry;
use crate::cpu::spatial::{conv1d_geometry, Conv1dPadding};
use crate::{Error, Result};

/// Which layer, with its padding mode.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum ConvKind {
    Conv1d(Conv1dPadding),
    Transpose(Padding),
}

/// A planned Conv1D or Conv2DTranspose layer; `w` and `b` index the model's device weights.
#[derive(Clone, Debug)]
pub(super) struct ConvPlan {
    pub kind: ConvKind,
    pub w: usize,
    pub b: Option<usize>,
    /// Spatial kernel size: `(1, k)` for Conv1D.
    pub kernel_hw: (usize, usize),
    pub strides: (usize, usize),
    pub dilation: (usize, usize),
    pub act: Act,
}

/// A positive integer config entry given as `n` or `[n]` (Conv1D).
fn single(config: &Value, key: &str) -> Option<usize> {
    let v = config.get(key)?;
    let v = match v.as_array() {
        Some(a) if a.len() == 1 => &a[0],
        Some(_) => return None,
        None => v,
    };
    v.as_u64().map(|n| n as usize)
}

/// A `[a, b]` (or `n` for both) config entry (Conv2DTranspose).
fn pair(config: &Value, key: &str) -> Option<(usize, usize)> {
    let v = config.get(key)?;
    if let Some(n) = v.as_u64() {
        return Some((n as usize, n as usize));
    }
    let a = v.as_array()?;
    match a.as_slice() {
        [h, w] => Some((h.as_u64()? as usize, w.as_u64()? as usize)),
        _ => None,
    }
}

/// Plans a Conv1D or Conv2DTranspose layer from its config as the layer writes it; the kernel
/// is weight `w`, the bias (if any) `b`.
pub(super) fn plan(class: &str, name: &str, config: &Value, w: usize, b: Option<usize>, act: Act) -> Result<ConvPlan> {
    let bad = |what: &str| Error::Invalid(format!("gpu: {class} '{name}' has no valid {what}"));
    let padding = config.get("padding").and_then(Value::as_str).unwrap_or("valid");
    // Options the CPU layer does not have either; refused by name should a config carry them.
    for key in ["outputPadding", "dataFormat", "groups"] {
        if config.get(key).is_some_and(|v| !v.is_null()) {
            return Err(unsupported(&format!("{class} option '{key}' (layer '{name}')")));
        }
    }
    Ok(match class {
        "Conv1D" => ConvPlan {
            kind: ConvKind::Conv1d(Conv1dPadding::parse(padding).map_err(|_| bad("padding"))?),
            w,
            b,
            kernel_hw: (1, single(config, "kernelSize").ok_or_else(|| bad("kernelSize"))?),
            strides: (1, single(config, "strides").unwrap_or(1)),
            dilation: (1, single(config, "dilationRate").unwrap_or(1)),
            act,
        },
        "Conv2DTranspose" => ConvPlan {
            kind: ConvKind::Transpose(Padding::parse(padding).map_err(|_| bad("padding"))?),
            w,
            b,
            kernel_hw: pair(config, "kernelSize").ok_or_else(|| bad("kernelSize"))?,
            strides: pair(config, "strides").unwrap_or((1, 1)),
            dilation: pair(config, "dilationRate").unwrap_or((1, 1)),
            act,
        },
        other => return Err(Error::Invalid(format!("gpu: {other} is not a Conv1D/Conv2DTranspose"))),
    })
}

/// The GPU spec of a CPU convolution geometry: its low (top/left) padding, and the high padding
/// that gives the same output size (the GPU kernels, like the CPU ones, skip taps outside the
/// input, so only the size depends on the high side).
fn spec_of(g: &Conv2dGeometry) -> Result<Conv2dSpec> {
    let high = |out: usize, s: usize, k: usize, d: usize, input: usize, low: usize| {
        ((out.max(1) - 1) * s + (k - 1) * d + 1).saturating_sub(input + low)
    };
    let spec = Conv2dSpec {
        strides: (g.stride_h, g.stride_w),
        dilation: (g.dil_h, g.dil_w),
        padding: [
            g.pad_top,
            g.pad_left,
            high(g.out_h, g.stride_h, g.k_h, g.dil_h, g.in_h, g.pad_top),
            high(g.out_w, g.stride_w, g.k_w, g.dil_w, g.in_w, g.pad_left),
        ],
    };
    if spec.output_size(g.in_h, g.in_w, g.k_h, g.k_w) != Some((g.out_h, g.out_w)) {
        return Err(Error::Invalid(format!(
            "gpu: internal error: conv spec {spec:?} does not give the {}x{} output of {g:?}",
            g.out_h, g.out_w
        )));
    }
    Ok(spec)
}

fn four(shape: &[usize]) -> [usize; 4] {
    [shape[0], shape[1], shape[2], shape[3]]
}

impl ConvPlan {
    /// The Keras class, for messages.
    pub(super) fn class(&self) -> &'static str {
        match self.kind {
            ConvKind::Conv1d(_) => "Conv1D",
            ConvKind::Transpose(_) => "Conv2DTranspose",
        }
    }

    /// The layer kind, for profiles.
    pub(super) fn kind_name(&self) -> &'static str {
        match self.kind {
            ConvKind::Conv1d(_) => "conv1d",
            ConvKind::Transpose(_) => "conv2d_transpose",
        }
    }

    /// The pre-activation output (bias added) for `x`, the tensor backward reads as `x` (the
    /// height-1 image for Conv1D) and the conv spec (of the adjoint conv for Conv2DTranspose).
    pub(super) fn forward(
        &self,
        g: &Gpu,
        weights: &[GpuTensor],
        x: GpuTensor,
    ) -> Result<(GpuTensor, GpuTensor, Conv2dSpec)> {
        let kernel = &weights[self.w];
        let (z, x, spec) = match self.kind {
            ConvKind::Conv1d(padding) => {
                let geom = conv1d_geometry(x.shape(), kernel.shape(), self.strides.1, self.dilation.1, padding)?;
                let spec = spec_of(&geom)?;
                let x4 = x.reshape(&geom.input_shape()).map_err(gpu_err)?;
                let k4 = kernel.clone().reshape(&geom.kernel_shape()).map_err(gpu_err)?;
                let z = g.conv2d(&x4, &k4, &spec).map_err(gpu_err)?;
                let z = z.reshape(&[geom.batch, geom.out_w, geom.out_c]).map_err(gpu_err)?;
                (z, x4, spec)
            }
            ConvKind::Transpose(padding) => {
                let (s, d) = (self.strides, self.dilation);
                let geom = ConvTranspose2dGeometry::new(x.shape(), kernel.shape(), [s.0, s.1], [d.0, d.1], padding)?;
                let spec = spec_of(&geom.conv)?;
                let out = four(&geom.output_shape());
                let z = g.conv2d_backward_input(&x, kernel, out, &spec).map_err(gpu_err)?;
                (z, x, spec)
            }
        };
        let z = match self.b {
            Some(b) => g.bias_add(&z, &weights[b]).map_err(gpu_err)?,
            None => z,
        };
        Ok((z, x, spec))
    }

    /// From the pre-activation gradient `dz` (the layer's output shape): adds the kernel and
    /// bias gradients into `grads` and returns the input gradient when `need_dx`.
    pub(super) fn backward(
        &self,
        g: &Gpu,
        weights: &[GpuTensor],
        x: &GpuTensor,
        spec: &Conv2dSpec,
        dz: GpuTensor,
        need_dx: bool,
        grads: &mut [Option<GpuTensor>],
    ) -> Result<Option<GpuTensor>> {
        let kernel = &weights[self.w];
        if let Some(b) = self.b {
            let cout = *dz.shape().last().unwrap_or(&1);
            let flat = dz.clone().reshape(&[dz.len() / cout.max(1), cout]).map_err(gpu_err)?;
            accumulate(g, &mut grads[b], g.sum_rows(&flat).map_err(gpu_err)?)?;
        }
        match self.kind {
            ConvKind::Conv1d(_) => {
                // x is the [batch, 1, steps, in] view; dz is [batch, out steps, filters].
                let (batch, steps, cin) = (x.shape()[0], x.shape()[2], x.shape()[3]);
                let ds = dz.shape().to_vec();
                let dz4 = dz.reshape(&[ds[0], 1, ds[1], ds[2]]).map_err(gpu_err)?;
                let dk = g
                    .conv2d_backward_filter(x, &dz4, self.kernel_hw, spec)
                    .map_err(gpu_err)?;
                accumulate(g, &mut grads[self.w], dk.reshape(kernel.shape()).map_err(gpu_err)?)?;
                if !need_dx {
                    return Ok(None);
                }
                let ks = kernel.shape();
                let k4 = kernel.clone().reshape(&[1, ks[0], ks[1], ks[2]]).map_err(gpu_err)?;
                let dx = g
                    .conv2d_backward_input(&dz4, &k4, four(x.shape()), spec)
                    .map_err(gpu_err)?;
                Ok(Some(dx.reshape(&[batch, steps, cin]).map_err(gpu_err)?))
            }
            ConvKind::Transpose(_) => {
                // The adjoint conv's input is dz, its output gradient the layer input x.
                let dk = g
                    .conv2d_backward_filter(&dz, x, self.kernel_hw, spec)
                    .map_err(gpu_err)?;
                accumulate(g, &mut grads[self.w], dk)?;
                if !need_dx {
                    return Ok(None);
                }
                Ok(Some(g.conv2d(&dz, kernel, spec).map_err(gpu_err)?))
            }
        }
    }
}
