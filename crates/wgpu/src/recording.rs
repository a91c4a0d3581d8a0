//! Step recording: many kernel calls, one queue submission.
//!
//! Every kernel call records its own command buffer; submitting each one costs the driver
//! tens of microseconds (81-99 µs per call on an NVIDIA H200 under Vulkan), which a training
//! step of ~40 calls pays ~40 times. Inside [`Gpu::record`] the finished command buffers of
//! this thread are collected instead and go to the queue together, in order, every
//! [`DEFAULT_CHUNK`] calls, when the guard drops, or when something needs their results
//! ([`Gpu::download`], [`Gpu::wait`]).
//!
//! The one hazard is buffer reuse: `queue.write_buffer` (uploads, kernel parameters) lands
//! at the start of the next submission, before every command collected so far. A buffer
//! that a collected command uses, released to the pool and handed to an upload before the
//! submission, would be overwritten before that command reads it. So while this thread has
//! unsubmitted commands, buffers it releases are parked and return to the pool only after
//! the submission.

use std::cell::RefCell;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::pool::BufferPool;
use crate::{Gpu, GpuTensor};

/// A released buffer waiting for the submission of the commands that may use it.
struct Parked {
    buffer: wgpu::Buffer,
    size: u64,
    usage: wgpu::BufferUsages,
    pool: Arc<BufferPool>,
}

/// This thread's open recording on one device (identified by its buffer pool).
struct Recording {
    pool: Arc<BufferPool>,
    depth: usize,
    commands: Vec<wgpu::CommandBuffer>,
    /// Uniform buffers and scratch tensors of the collected commands.
    keep: Vec<crate::pool::PooledBuffer>,
    held: Vec<GpuTensor>,
    parked: Vec<Parked>,
    /// Submissions made by this recording so far: the chunk ramps up 1, 2, 4, .. to
    /// `Gpu::record_chunk` (see `chunk_limit`).
    flushes: u32,
}

/// Commands to collect before the next submission of a recording that has submitted
/// `flushes` times: 1, 2, 4, .. up to `max`. The device starts on the first kernel at once
/// instead of idling until a whole chunk is recorded (on an H200, a fixed chunk of 8 made a
/// batch-8192 predict of about 8 calls 7% slower than one submission per call), and longer
/// recordings still reach the full chunk.
pub fn chunk_limit(flushes: u32, max: usize) -> usize {
    (1usize << flushes.min(16)).min(max.max(1))
}

/// Command buffers per submission inside [`Gpu::record`]: enough to amortise the submit
/// cost, few enough that the device starts on a step's first kernels while the host still
/// records the rest (one submission for a whole step would leave it idle meanwhile).
pub const DEFAULT_CHUNK: usize = 8;

thread_local! {
    static OPEN: RefCell<Option<Recording>> = const { RefCell::new(None) };
}

/// Ends a [`Gpu::record`] scope: the outermost guard submits what was collected.
pub struct RecordGuard<'a> {
    gpu: &'a Gpu,
    /// Whether this guard opened or nested this device's recording (false when recording is
    /// off, or another device's recording was open on this thread).
    active: bool,
}

impl Drop for RecordGuard<'_> {
    fn drop(&mut self) {
        if !self.active {
            return;
        }
        let last = OPEN.with(|open| {
            let mut open = open.borrow_mut();
            let rec = open.as_mut().expect("an active guard implies an open recording");
            rec.depth -= 1;
            rec.depth == 0
        });
        if last {
            self.gpu.flush_recording();
            OPEN.with(|open| open.borrow_mut().take());
        }
    }
}

/// Called by a dropped pooled buffer: parks it when this thread has unsubmitted commands on
/// the same device (returns `None`), else hands it back for immediate release.
pub(crate) fn park(
    pool: &Arc<BufferPool>,
    buffer: wgpu::Buffer,
    size: u64,
    usage: wgpu::BufferUsages,
) -> Option<wgpu::Buffer> {
    OPEN.with(|open| {
        // A buffer dropped while a flush holds the cell has no unsubmitted users left.
        let Ok(mut open) = open.try_borrow_mut() else {
            return Some(buffer);
        };
        match open.as_mut() {
            Some(rec) if Arc::ptr_eq(&rec.pool, pool) && !rec.commands.is_empty() => {
                rec.parked.push(Parked {
                    buffer,
                    size,
                    usage,
                    pool: Arc::clone(pool),
                });
                None
            }
            _ => Some(buffer),
        }
    })
}

impl Gpu {
    /// Collects this thread's kernel calls on this device into one queue submission until
    /// the returned guard drops (scopes nest; the outermost one submits), submitting every
    /// [`Gpu::record_chunk`] calls on the way. Results read with [`Gpu::download`] inside the
    /// scope are complete: it submits what came before first. `CORTEX_WGPU_RECORD=0` turns
    /// recording off (one submission per call, for comparisons).
    pub fn record(&self) -> RecordGuard<'_> {
        let active = self.recording_enabled
            && OPEN.with(|open| {
                let mut open = open.borrow_mut();
                match open.as_mut() {
                    Some(rec) if Arc::ptr_eq(&rec.pool, &self.pool) => {
                        rec.depth += 1;
                        true
                    }
                    // Another device's recording stays open; this device submits directly.
                    Some(_) => false,
                    None => {
                        *open = Some(Recording {
                            pool: Arc::clone(&self.pool),
                            depth: 1,
                            commands: Vec::new(),
                            keep: Vec::new(),
                            held: Vec::new(),
                            parked: Vec::new(),
                            flushes: 0,
                        });
                        true
                    }
                }
            });
        RecordGuard { gpu: self, active }
    }

    /// Whether [`Gpu::record`] collects submissions on this device (`CORTEX_WGPU_RECORD`).
    pub fn recording_enabled(&self) -> bool {
        self.recording_enabled
    }

    /// Kernel calls per submission inside [`Gpu::record`] (`CORTEX_WGPU_RECORD=<n>`, else
    /// [`DEFAULT_CHUNK`]).
    pub fn record_chunk(&self) -> usize {
        self.record_chunk
    }

    /// Queue submissions made so far (every kernel call outside [`Gpu::record`] is one).
    pub fn submissions(&self) -> u64 {
        self.submissions.load(Ordering::Relaxed)
    }

    /// Submits `commands` now, or adds them to this thread's open recording on this device;
    /// `keep` and `held` (what the commands use) are released only after the submission.
    pub(crate) fn submit_commands(
        &self,
        commands: wgpu::CommandBuffer,
        keep: Vec<crate::pool::PooledBuffer>,
        held: Vec<GpuTensor>,
    ) {
        let mut item = Some((commands, keep, held));
        let mut flush_now = false;
        OPEN.with(|open| {
            if let Some(rec) = open.borrow_mut().as_mut() {
                if Arc::ptr_eq(&rec.pool, &self.pool) {
                    let (c, k, h) = item.take().expect("present");
                    rec.commands.push(c);
                    rec.keep.extend(k);
                    rec.held.extend(h);
                    flush_now = rec.commands.len() >= chunk_limit(rec.flushes, self.record_chunk);
                }
            }
        });
        if let Some((c, keep, held)) = item {
            self.queue.submit(Some(c));
            self.submissions.fetch_add(1, Ordering::Relaxed);
            drop((keep, held));
        }
        if flush_now {
            self.flush_recording();
        }
    }

    /// Submits this thread's collected commands on this device (if any), then releases the
    /// buffers they used.
    pub(crate) fn flush_recording(&self) {
        let taken = OPEN.with(|open| {
            let mut open = open.borrow_mut();
            let rec = open.as_mut().filter(|r| Arc::ptr_eq(&r.pool, &self.pool))?;
            if rec.commands.is_empty() && rec.parked.is_empty() {
                return None;
            }
            if !rec.commands.is_empty() {
                rec.flushes += 1;
            }
            Some((
                std::mem::take(&mut rec.commands),
                std::mem::take(&mut rec.keep),
                std::mem::take(&mut rec.held),
                std::mem::take(&mut rec.parked),
            ))
        });
        let Some((commands, keep, held, parked)) = taken else {
            return;
        };
        if !commands.is_empty() {
            self.queue.submit(commands);
            self.submissions.fetch_add(1, Ordering::Relaxed);
        }
        // Nothing is unsubmitted now, so these go straight back to the pool.
        drop((keep, held));
        for p in parked {
            p.pool.release(p.buffer, p.size, p.usage);
        }
    }
}
