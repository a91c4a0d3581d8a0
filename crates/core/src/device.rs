//! Where a tensor's data lives. A closed enum rather than a generic parameter: ops dispatch on
//! the storage's device (see [`crate::ops`]), while layer and model code never change.

use std::sync::{Arc, OnceLock};

use cortex_wgpu::{Gpu, GpuError, GpuTensor};

use crate::{Error, Result};

/// The devices cortex-nn can compute on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Device {
    /// Host memory; kernels in [`crate::cpu`].
    #[default]
    Cpu,
    /// The process-wide GPU ([`shared_gpu`]); kernels in cortex-wgpu.
    Gpu,
}

impl Device {
    /// Parses `'cpu'` or `'gpu'`.
    pub fn parse(name: &str) -> Result<Device> {
        match name {
            "cpu" => Ok(Device::Cpu),
            "gpu" => Ok(Device::Gpu),
            other => Err(Error::Invalid(format!(
                "unknown device '{other}'; expected 'cpu' or 'gpu'"
            ))),
        }
    }

    /// `"cpu"` or `"gpu"`.
    pub fn name(self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            Device::Gpu => "gpu",
        }
    }
}

/// The process-wide GPU device, opened on first use (an error if there is no adapter).
pub fn shared_gpu() -> Result<Arc<Gpu>> {
    static SHARED: OnceLock<std::result::Result<Arc<Gpu>, String>> = OnceLock::new();
    SHARED
        .get_or_init(|| Gpu::new().map(Arc::new).map_err(|e| e.to_string()))
        .clone()
        .map_err(|e| Error::Invalid(format!("gpu: {e}")))
}

/// A cortex-wgpu error as an engine error.
pub(crate) fn gpu_err(e: GpuError) -> Error {
    Error::Invalid(format!("gpu: {e}"))
}

/// A tensor's element buffer on its device.
#[derive(Debug)]
pub enum Storage {
    /// Row-major f32 values in host memory.
    Cpu(Vec<f32>),
    /// Row-major f32 values in a GPU buffer.
    Gpu(GpuStorage),
}

/// Values in a GPU buffer, with a host copy made on the first read from the host.
///
/// Engine tensors are immutable, so the copy never goes stale: no in-place kernel runs on the
/// buffer of a tensor (the optimizers' in-place updates belong to `gpu_model`'s own buffers).
#[derive(Debug)]
pub struct GpuStorage {
    tensor: GpuTensor,
    host: OnceLock<Vec<f32>>,
}

impl GpuStorage {
    /// The buffer (still shared with this storage, whose host mirror is dropped): the caller
    /// writes it and replaces the storage.
    pub(crate) fn take_tensor(&mut self) -> GpuTensor {
        self.host = OnceLock::new();
        self.tensor.clone()
    }
}

impl Storage {
    /// Wraps a device tensor.
    pub fn gpu(tensor: GpuTensor) -> Storage {
        Storage::Gpu(GpuStorage {
            tensor,
            host: OnceLock::new(),
        })
    }

    /// The device this storage lives on.
    pub fn device(&self) -> Device {
        match self {
            Storage::Cpu(_) => Device::Cpu,
            Storage::Gpu(_) => Device::Gpu,
        }
    }

    /// The values in host memory: a GPU buffer is read back once (blocking) and the copy kept.
    /// Unwinds when the read-back fails (a lost device); [`Storage::host_values`] returns that
    /// as an Error instead.
    pub fn as_slice(&self) -> &[f32] {
        match self.host_values() {
            Ok(v) => v,
            Err(e) => panic!("reading a GPU tensor back to the host failed: {e}"),
        }
    }

    /// [`Storage::as_slice`], with a failed read-back as an Error.
    pub fn host_values(&self) -> Result<&[f32]> {
        match self {
            Storage::Cpu(v) => Ok(v),
            Storage::Gpu(s) => {
                if let Some(v) = s.host.get() {
                    return Ok(v);
                }
                let values = shared_gpu()?.download(&s.tensor).map_err(gpu_err)?;
                // Another thread may have filled it meanwhile: the values are the same.
                Ok(s.host.get_or_init(|| values))
            }
        }
    }

    /// The device buffer, for GPU storage.
    pub fn gpu_tensor(&self) -> Option<&GpuTensor> {
        match self {
            Storage::Cpu(_) => None,
            Storage::Gpu(s) => Some(&s.tensor),
        }
    }
}
