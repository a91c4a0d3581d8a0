//! Moving tensors across the boundary: JavaScript sends a `Float32Array` and a shape; results
//! come back as `{ data, shape }` whose buffer JavaScript owns (freed by its garbage collector).

use cortex_core::Tensor;
use napi::bindgen_prelude::Float32Array;
use napi_derive::napi;

/// A tensor's values and shape, as returned to JavaScript.
#[napi(object)]
pub struct TensorData {
    /// Row-major values.
    pub data: Float32Array,
    /// Dimensions.
    pub shape: Vec<u32>,
}

impl TensorData {
    /// Hands a tensor's values to JavaScript (moved, not copied, when nothing else holds them).
    pub fn from_tensor(t: Tensor) -> TensorData {
        HostTensor::take(t).into()
    }
}

/// A result's values taken out of the engine on a worker thread, so that an async task's
/// `resolve` on the JavaScript thread only wraps the buffer: no copy of the output and no
/// page faults from allocating one on the event loop.
pub struct HostTensor {
    data: Vec<f32>,
    shape: Vec<u32>,
}

impl HostTensor {
    pub fn take(t: Tensor) -> HostTensor {
        let shape = t.shape().iter().map(|&d| d as u32).collect();
        HostTensor {
            data: t.into_vec(),
            shape,
        }
    }
}

impl From<HostTensor> for TensorData {
    fn from(h: HostTensor) -> TensorData {
        TensorData {
            data: Float32Array::new(h.data),
            shape: h.shape,
        }
    }
}

/// Copies JavaScript data into an engine tensor, checking the length against the shape.
pub fn to_tensor(what: &str, data: &[f32], shape: &[u32]) -> napi::Result<Tensor> {
    let shape: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
    Tensor::new(data.to_vec(), &shape).map_err(|e| napi::Error::new(napi::Status::InvalidArg, format!("{what}: {e}")))
}
