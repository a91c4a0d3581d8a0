//! Device tensors, upload and download.

use crate::pool::PooledBuffer;
use crate::{Gpu, GpuError, Result};

/// Element type of a [`GpuTensor`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    /// 32-bit float (every data tensor).
    F32,
    /// 32-bit unsigned integer (max-pooling argmax indices).
    U32,
}

/// A row-major tensor in a pooled device storage buffer; the buffer returns to the pool when
/// the last clone is dropped.
///
/// Clones (and [`GpuTensor::reshape`]d clones) share the buffer, like views: the in-place
/// kernels (optimizer updates) change every clone.
#[derive(Clone)]
pub struct GpuTensor {
    pub(crate) buf: std::sync::Arc<PooledBuffer>,
    pub(crate) len: usize,
    pub(crate) shape: Vec<usize>,
    pub(crate) dtype: DType,
}

impl GpuTensor {
    /// The storage buffer (may be larger than `len * 4` bytes: pool bucket size).
    pub fn buffer(&self) -> &wgpu::Buffer {
        self.buf.buffer()
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for a zero-element tensor.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The shape (row-major).
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The same data under another shape with the same element count (no copy).
    pub fn reshape(mut self, shape: &[usize]) -> Result<Self> {
        let n: usize = shape.iter().product();
        if n != self.len {
            return Err(GpuError::Shape {
                op: "reshape",
                expected: format!("{} elements", self.len),
                got: format!("{shape:?} ({n} elements)"),
            });
        }
        self.shape = shape.to_vec();
        Ok(self)
    }

    pub(crate) fn expect_f32(&self, op: &'static str) -> Result<()> {
        if self.dtype != DType::F32 {
            return Err(GpuError::DType {
                op,
                expected: DType::F32,
                got: self.dtype,
            });
        }
        Ok(())
    }
}

impl std::fmt::Debug for GpuTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuTensor")
            .field("shape", &self.shape)
            .field("dtype", &self.dtype)
            .finish()
    }
}

impl Gpu {
    /// Copies `data` (row-major, `shape.iter().product()` elements) into a new device tensor.
    pub fn upload(&self, data: &[f32], shape: &[usize]) -> Result<GpuTensor> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(GpuError::Shape {
                op: "upload",
                expected: format!("{n} elements for shape {shape:?}"),
                got: format!("{} elements", data.len()),
            });
        }
        let t = self.empty(shape, DType::F32)?;
        if !data.is_empty() {
            self.queue.write_buffer(t.buffer(), 0, bytemuck::cast_slice(data));
        }
        Ok(t)
    }

    /// Copies `data` into a new u32 device tensor (e.g. argmax indices for tests).
    pub fn upload_u32(&self, data: &[u32], shape: &[usize]) -> Result<GpuTensor> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(GpuError::Shape {
                op: "upload_u32",
                expected: format!("{n} elements for shape {shape:?}"),
                got: format!("{} elements", data.len()),
            });
        }
        let t = self.empty(shape, DType::U32)?;
        if !data.is_empty() {
            self.queue.write_buffer(t.buffer(), 0, bytemuck::cast_slice(data));
        }
        Ok(t)
    }

    /// A new tensor of `shape` with unspecified contents (a pooled buffer).
    pub fn empty(&self, shape: &[usize], dtype: DType) -> Result<GpuTensor> {
        let len: usize = shape.iter().product();
        let bytes = (len as u64) * 4;
        let limit = self.device.limits().max_storage_buffer_binding_size as u64;
        if bytes > limit {
            return Err(GpuError::Limit {
                what: "tensor bytes",
                got: bytes,
                limit,
            });
        }
        let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
        let buf = self.pool.acquire(bytes, usage);
        Ok(GpuTensor {
            buf: std::sync::Arc::new(buf),
            len,
            shape: shape.to_vec(),
            dtype,
        })
    }

    /// A new f32 tensor of `shape` filled with zeros.
    pub fn zeros(&self, shape: &[usize]) -> Result<GpuTensor> {
        let t = self.empty(shape, DType::F32)?;
        let mut enc = self.device.create_command_encoder(&Default::default());
        enc.clear_buffer(t.buffer(), 0, None);
        self.submit_commands(enc.finish(), Vec::new(), Vec::new());
        Ok(t)
    }

    /// Reads an f32 tensor back to the host (blocks until the GPU has finished).
    pub fn download(&self, t: &GpuTensor) -> Result<Vec<f32>> {
        t.expect_f32("download")?;
        Ok(bytemuck::cast_slice(&self.read_bytes(t)?).to_vec())
    }

    /// Reads a u32 tensor back to the host (blocks until the GPU has finished).
    pub fn download_u32(&self, t: &GpuTensor) -> Result<Vec<u32>> {
        if t.dtype != DType::U32 {
            return Err(GpuError::DType {
                op: "download_u32",
                expected: DType::U32,
                got: t.dtype,
            });
        }
        Ok(bytemuck::cast_slice(&self.read_bytes(t)?).to_vec())
    }

    fn read_bytes(&self, t: &GpuTensor) -> Result<Vec<u8>> {
        let bytes = (t.len as u64) * 4;
        if bytes == 0 {
            return Ok(Vec::new());
        }
        // What this thread recorded so far must run before the copy.
        self.flush_recording();
        let staging = self
            .pool
            .acquire(bytes, wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST);
        let mut enc = self.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(t.buffer(), 0, staging.buffer(), 0, bytes);
        self.queue.submit(Some(enc.finish()));
        self.submissions.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let slice = staging.buffer().slice(..bytes);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| GpuError::Readback(e.to_string()))?;
        rx.recv()
            .map_err(|e| GpuError::Readback(e.to_string()))?
            .map_err(|e| GpuError::Readback(e.to_string()))?;
        let out = slice.get_mapped_range().to_vec();
        staging.buffer().unmap();
        Ok(out)
    }
}
