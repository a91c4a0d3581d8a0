//! Buffer pool: device buffers bucketed by size class and usage, reused instead of reallocated.
//!
//! Sizes up to 64 MiB round up to a power of two (at least 256 bytes), so a tensor of any
//! size in (2^(k-1), 2^k] bytes reuses the same buffers; larger ones round up to a multiple
//! of 16 MiB (at most 25% waste), and a bucket never exceeds the device's buffer / binding
//! limit (such requests keep their size rounded to 256 bytes). A steady training loop thus
//! allocates nothing after its first step.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Smallest bucket, in bytes (also wgpu's uniform offset alignment).
pub const MIN_BUCKET: u64 = 256;

/// Above this, buckets are multiples of [`LARGE_STEP`] instead of powers of two.
const POW2_LIMIT: u64 = 64 << 20;
/// Bucket step for large buffers.
const LARGE_STEP: u64 = 16 << 20;

/// The size class a request of `bytes` rounds up to, never above `max` unless `bytes` is.
pub fn bucket_size(bytes: u64, max: u64) -> u64 {
    let b = bytes.max(MIN_BUCKET);
    let size = if b <= POW2_LIMIT {
        b.next_power_of_two()
    } else {
        b.div_ceil(LARGE_STEP) * LARGE_STEP
    };
    if size <= max {
        size
    } else {
        b.div_ceil(MIN_BUCKET) * MIN_BUCKET
    }
}

/// Allocation counters of a [`BufferPool`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Buffers created on the device since the pool was made.
    pub allocations: usize,
    /// Bytes of all buffers created (including those freed by [`BufferPool::trim`]).
    pub allocated_bytes: u64,
    /// Buffers currently idle in the pool.
    pub free_buffers: usize,
}

/// A pool of device buffers keyed by (size class, usage).
pub struct BufferPool {
    device: wgpu::Device,
    max_size: u64,
    free: Mutex<HashMap<(u64, wgpu::BufferUsages), Vec<wgpu::Buffer>>>,
    allocations: AtomicUsize,
    allocated_bytes: AtomicU64,
}

impl BufferPool {
    /// An empty pool allocating on `device`.
    pub fn new(device: wgpu::Device) -> Self {
        let limits = device.limits();
        let max_size = limits
            .max_buffer_size
            .min(limits.max_storage_buffer_binding_size as u64);
        Self {
            device,
            max_size,
            free: Mutex::default(),
            allocations: AtomicUsize::new(0),
            allocated_bytes: AtomicU64::new(0),
        }
    }

    /// A buffer of at least `bytes` bytes with `usage`, reused from the pool when one is idle.
    pub fn acquire(self: &Arc<Self>, bytes: u64, usage: wgpu::BufferUsages) -> PooledBuffer {
        let size = bucket_size(bytes, self.max_size);
        let reused = self.free.lock().unwrap().get_mut(&(size, usage)).and_then(Vec::pop);
        let buffer = reused.unwrap_or_else(|| {
            self.allocations.fetch_add(1, Ordering::Relaxed);
            self.allocated_bytes.fetch_add(size, Ordering::Relaxed);
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("cortex-wgpu pool"),
                size,
                usage,
                mapped_at_creation: false,
            })
        });
        PooledBuffer {
            buffer: Some(buffer),
            usage,
            size,
            pool: Arc::clone(self),
        }
    }

    pub(crate) fn release(&self, buffer: wgpu::Buffer, size: u64, usage: wgpu::BufferUsages) {
        self.free.lock().unwrap().entry((size, usage)).or_default().push(buffer);
    }

    /// Current counters.
    pub fn stats(&self) -> PoolStats {
        PoolStats {
            allocations: self.allocations.load(Ordering::Relaxed),
            allocated_bytes: self.allocated_bytes.load(Ordering::Relaxed),
            free_buffers: self.free.lock().unwrap().values().map(Vec::len).sum(),
        }
    }

    /// Destroys every idle buffer (live tensors are untouched).
    pub fn trim(&self) {
        for (_, bufs) in self.free.lock().unwrap().drain() {
            for b in bufs {
                b.destroy();
            }
        }
    }
}

/// A buffer borrowed from a [`BufferPool`]; it goes back to the pool on drop.
pub struct PooledBuffer {
    buffer: Option<wgpu::Buffer>,
    usage: wgpu::BufferUsages,
    size: u64,
    pool: Arc<BufferPool>,
}

impl PooledBuffer {
    /// The underlying wgpu buffer (its size is the bucket size, not the requested size).
    pub fn buffer(&self) -> &wgpu::Buffer {
        self.buffer.as_ref().expect("pooled buffer is present until drop")
    }

    /// Bucket size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        if let Some(b) = self.buffer.take() {
            // Parked instead while this thread has unsubmitted commands (see recording.rs).
            if let Some(b) = crate::recording::park(&self.pool, b, self.size, self.usage) {
                self.pool.release(b, self.size, self.usage);
            }
        }
    }
}
