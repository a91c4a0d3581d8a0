//! Parameter-free image layers of a GPU model: AveragePooling2D, GlobalAveragePooling2D,
//! ZeroPadding2D and UpSampling2D (nearest), planned from a layer's config and run on
//! cortex-wgpu's pooling and spatial kernels (NHWC).

use cortex_wgpu::{Gpu, GpuTensor, Pool2dSpec};
use serde_json::Value;

use super::gpu_err;
use super::steps::padding;
use crate::{Error, Result};

/// One of the layers of this module, with its geometry.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum SpatialPlan {
    AvgPool {
        pool: (usize, usize),
        strides: (usize, usize),
        same: bool,
    },
    GlobalAvgPool,
    /// `[top, bottom, left, right]`.
    ZeroPad([usize; 4]),
    /// Rows and columns factors.
    UpSample((usize, usize)),
}

/// Reads a `[a, b]` config entry.
fn pair(config: &Value, key: &str) -> Option<(usize, usize)> {
    let a = config.get(key)?.as_array()?;
    Some((a.first()?.as_u64()? as usize, a.get(1)?.as_u64()? as usize))
}

/// Plans layer `name` of `class` (one of AveragePooling2D, GlobalAveragePooling2D,
/// ZeroPadding2D, UpSampling2D) from its config as the layer writes it.
pub(super) fn plan(class: &str, name: &str, config: &Value) -> Result<SpatialPlan> {
    let bad = |what: &str| Error::Invalid(format!("gpu: {class} '{name}' has no valid {what}"));
    Ok(match class {
        "AveragePooling2D" => {
            let pool = pair(config, "poolSize").unwrap_or((2, 2));
            SpatialPlan::AvgPool {
                pool,
                strides: pair(config, "strides").unwrap_or(pool),
                same: config.get("padding").and_then(Value::as_str) == Some("same"),
            }
        }
        "GlobalAveragePooling2D" => SpatialPlan::GlobalAvgPool,
        "ZeroPadding2D" => {
            // The layer writes `[[top, bottom], [left, right]]`.
            let p = config
                .get("padding")
                .and_then(Value::as_array)
                .ok_or_else(|| bad("padding"))?;
            let two = |v: Option<&Value>| -> Option<(usize, usize)> {
                let a = v?.as_array()?;
                Some((a.first()?.as_u64()? as usize, a.get(1)?.as_u64()? as usize))
            };
            let ((t, b), (l, r)) = two(p.first()).zip(two(p.get(1))).ok_or_else(|| bad("padding"))?;
            SpatialPlan::ZeroPad([t, b, l, r])
        }
        "UpSampling2D" => {
            if let Some(mode) = config.get("interpolation").and_then(Value::as_str) {
                if mode != "nearest" {
                    return Err(bad("interpolation (only nearest)"));
                }
            }
            SpatialPlan::UpSample(pair(config, "size").ok_or_else(|| bad("size"))?)
        }
        other => return Err(Error::Invalid(format!("gpu: {other} is not a spatial layer"))),
    })
}

impl SpatialPlan {
    /// The Keras class, for messages.
    pub(super) fn class(&self) -> &'static str {
        match self {
            SpatialPlan::AvgPool { .. } => "AveragePooling2D",
            SpatialPlan::GlobalAvgPool => "GlobalAveragePooling2D",
            SpatialPlan::ZeroPad(_) => "ZeroPadding2D",
            SpatialPlan::UpSample(_) => "UpSampling2D",
        }
    }

    /// The layer kind, for profiles.
    pub(super) fn kind(&self) -> &'static str {
        match self {
            SpatialPlan::AvgPool { .. } => "avg_pool",
            SpatialPlan::GlobalAvgPool => "global_avg_pool",
            SpatialPlan::ZeroPad(_) => "zero_pad",
            SpatialPlan::UpSample(_) => "upsample",
        }
    }

    fn pool_spec(&self, s: [usize; 4]) -> Option<Pool2dSpec> {
        match *self {
            SpatialPlan::AvgPool { pool, strides, same } => Some(Pool2dSpec {
                pool,
                strides,
                padding: padding(same, [s[1], s[2]], pool, strides, (1, 1)),
            }),
            _ => None,
        }
    }

    /// The layer's output for `x` `[batch, h, w, c]`.
    pub(super) fn forward(&self, g: &Gpu, x: &GpuTensor) -> Result<GpuTensor> {
        let s = nhwc(self.class(), x.shape())?;
        match *self {
            SpatialPlan::AvgPool { .. } => {
                let spec = self.pool_spec(s).expect("average pooling");
                g.avg_pool2d(x, &spec).map_err(gpu_err)
            }
            SpatialPlan::GlobalAvgPool => g.global_avg_pool2d(x).map_err(gpu_err),
            SpatialPlan::ZeroPad(pads) => g.zero_pad2d(x, pads).map_err(gpu_err),
            SpatialPlan::UpSample(size) => g.upsample_nearest2d(x, size).map_err(gpu_err),
        }
    }

    /// The gradient wrt the input (of shape `x_shape`) from the output gradient `dy`.
    pub(super) fn backward(&self, g: &Gpu, x_shape: &[usize], dy: &GpuTensor) -> Result<GpuTensor> {
        let s = nhwc(self.class(), x_shape)?;
        match *self {
            SpatialPlan::AvgPool { .. } => {
                let spec = self.pool_spec(s).expect("average pooling");
                g.avg_pool2d_backward(dy, s, &spec).map_err(gpu_err)
            }
            SpatialPlan::GlobalAvgPool => g.global_avg_pool2d_backward(dy, s).map_err(gpu_err),
            SpatialPlan::ZeroPad(pads) => g.zero_pad2d_backward(dy, s, pads).map_err(gpu_err),
            SpatialPlan::UpSample(size) => g.upsample_nearest2d_backward(dy, s, size).map_err(gpu_err),
        }
    }
}

fn nhwc(class: &str, shape: &[usize]) -> Result<[usize; 4]> {
    <[usize; 4]>::try_from(shape).map_err(|_| Error::shape(&format!("gpu: {class}"), "[batch, h, w, c]", shape))
}
