//! Max/average pooling and global average pooling.

use serde_json::{json, Value};

use super::{Common, ForwardCtx, Layer};
use crate::cpu::conv::Padding;
use crate::cpu::pool::Pool2dGeometry;
use crate::nn::options::Options;
use crate::rng::Rng;
use crate::{ops, Error, Result, Tensor};

/// `maxPooling2d` / `averagePooling2d`.
pub struct Pooling2d {
    common: Common,
    max: bool,
    pool_size: [usize; 2],
    strides: [usize; 2],
    padding: Padding,
}

impl Pooling2d {
    pub(super) fn from_options(o: &mut Options, common: &Common, max: bool) -> Result<Self> {
        let pool_size = o.pair("poolSize")?.unwrap_or([2, 2]);
        Ok(Pooling2d {
            common: common.clone(),
            max,
            pool_size,
            strides: o.pair("strides")?.unwrap_or(pool_size),
            padding: Padding::parse(&o.string("padding")?.unwrap_or_else(|| "valid".into()))?,
        })
    }
}

impl Layer for Pooling2d {
    fn class_name(&self) -> &'static str {
        if self.max {
            "MaxPooling2D"
        } else {
            "AveragePooling2D"
        }
    }
    fn plain_max_pool(&self) -> Option<[usize; 2]> {
        (self.max && self.strides == self.pool_size && self.padding == Padding::Valid).then_some(self.pool_size)
    }
    fn name(&self) -> &str {
        &self.common.name
    }
    fn build(&mut self, input_shape: &[usize], _rng: &mut Rng) -> Result<Vec<usize>> {
        if input_shape.len() != 3 {
            return Err(Error::shape(
                self.class_name(),
                "input [height, width, channels]",
                input_shape,
            ));
        }
        let mut with_batch = vec![1];
        with_batch.extend_from_slice(input_shape);
        let geom = Pool2dGeometry::new(&with_batch, self.pool_size, self.strides, self.padding)?;
        Ok(geom.output_shape()[1..].to_vec())
    }
    fn forward(&self, x: &Tensor, _ctx: &mut ForwardCtx) -> Result<Tensor> {
        if self.max {
            ops::max_pool2d(x, self.pool_size, self.strides, self.padding)
        } else {
            ops::avg_pool2d(x, self.pool_size, self.strides, self.padding)
        }
    }
    fn config(&self) -> Value {
        self.common.write(json!({
            "poolSize": self.pool_size,
            "strides": self.strides,
            "padding": if self.padding == Padding::Same { "same" } else { "valid" },
        }))
    }
}

/// `globalAveragePooling2d`: `[b, h, w, c] -> [b, c]`.
pub struct GlobalAveragePooling2d {
    common: Common,
}

impl GlobalAveragePooling2d {
    pub(super) fn new(common: &Common) -> Self {
        GlobalAveragePooling2d { common: common.clone() }
    }
}

impl Layer for GlobalAveragePooling2d {
    fn class_name(&self) -> &'static str {
        "GlobalAveragePooling2D"
    }
    fn name(&self) -> &str {
        &self.common.name
    }
    fn build(&mut self, input_shape: &[usize], _rng: &mut Rng) -> Result<Vec<usize>> {
        if input_shape.len() != 3 {
            return Err(Error::shape(
                "GlobalAveragePooling2D",
                "input [height, width, channels]",
                input_shape,
            ));
        }
        Ok(vec![input_shape[2]])
    }
    fn forward(&self, x: &Tensor, _ctx: &mut ForwardCtx) -> Result<Tensor> {
        ops::global_avg_pool(x)
    }
    fn config(&self) -> Value {
        self.common.write(json!({}))
    }
}
