//! Where a tensor's data lives. A closed enum rather than a generic parameter: a GPU backend adds
//! a variant and the ops dispatch on it, while layer and model code never change.

/// The devices cortex-nn can compute on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Device {
    /// Host memory; kernels in [`crate::cpu`].
    #[default]
    Cpu,
}

/// A tensor's element buffer on its device.
#[derive(Debug)]
pub enum Storage {
    /// Row-major f32 values in host memory.
    Cpu(Vec<f32>),
}

impl Storage {
    /// The device this storage lives on.
    pub fn device(&self) -> Device {
        match self {
            Storage::Cpu(_) => Device::Cpu,
        }
    }

    /// The values as a host slice.
    pub fn as_slice(&self) -> &[f32] {
        match self {
            Storage::Cpu(v) => v,
        }
    }
}
