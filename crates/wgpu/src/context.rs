//! The device context: adapter choice, device creation, and the dispatch helper every kernel uses.

use std::sync::Arc;

use crate::pipelines::PipelineCache;
use crate::pool::{BufferPool, PoolStats, PooledBuffer};
use crate::{GpuError, GpuTensor, Result};

/// Workgroups per dispatch dimension guaranteed by WebGPU's default limits.
pub(crate) const MAX_GROUPS: u32 = 65535;

/// What [`adapters`] reports about one adapter (no device is created).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdapterSummary {
    /// Adapter name, e.g. "llvmpipe (LLVM 15.0.6, 256 bits)".
    pub name: String,
    /// Backend, e.g. "Vulkan".
    pub backend: String,
    /// Device type, e.g. "DiscreteGpu" or "Cpu".
    pub device_type: String,
    /// Whether `SHADER_F16` is available.
    pub shader_f16: bool,
    /// Whether `SUBGROUP` operations are available.
    pub subgroup: bool,
}

fn summarize(adapter: &wgpu::Adapter) -> AdapterSummary {
    let info = adapter.get_info();
    let features = adapter.features();
    AdapterSummary {
        name: info.name,
        backend: format!("{:?}", info.backend),
        device_type: format!("{:?}", info.device_type),
        shader_f16: features.contains(wgpu::Features::SHADER_F16),
        subgroup: features.contains(wgpu::Features::SUBGROUP),
    }
}

fn make_instance(backends: Option<wgpu::Backends>) -> wgpu::Instance {
    // Honours WGPU_BACKEND and the other WGPU_* environment variables unless told otherwise.
    let mut desc = wgpu::InstanceDescriptor::from_env_or_default();
    if let Some(b) = backends {
        desc.backends = b;
    }
    wgpu::Instance::new(&desc)
}

fn rank(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    }
}

/// Every adapter wgpu can see (all backends enabled in this build), without creating devices.
pub fn adapters() -> Vec<AdapterSummary> {
    make_instance(None)
        .enumerate_adapters(wgpu::Backends::all())
        .iter()
        .map(summarize)
        .collect()
}

/// One GPU device with its queue, pipeline cache and buffer pool.
pub struct Gpu {
    /// The wgpu instance.
    pub instance: wgpu::Instance,
    /// The chosen adapter.
    pub adapter: wgpu::Adapter,
    /// The device.
    pub device: wgpu::Device,
    /// Its queue.
    pub queue: wgpu::Queue,
    pub(crate) pipelines: PipelineCache,
    pub(crate) pool: Arc<BufferPool>,
    summary: AdapterSummary,
    granted: wgpu::Features,
    /// Test hook: when non-zero, tiled dispatches split at this many workgroups per dimension.
    group_limit_override: std::sync::atomic::AtomicU32,
    /// Conv kernel choice (see `Gpu::set_conv_kernel`): 0 = unset, else the kernel's index + 1.
    pub(crate) conv_kernel: std::sync::atomic::AtomicU8,
    /// Whether the row reductions run their subgroup variants (see `Gpu::set_subgroups`).
    subgroups: std::sync::atomic::AtomicBool,
    /// Queue submissions so far (see `Gpu::submissions`).
    pub(crate) submissions: std::sync::atomic::AtomicU64,
    /// Whether `Gpu::record` collects submissions (`CORTEX_WGPU_RECORD=0` turns it off).
    pub(crate) recording_enabled: bool,
    /// Command buffers `Gpu::record` collects per submission (`CORTEX_WGPU_RECORD=<n>`).
    pub(crate) record_chunk: usize,
}

/// Shaders with a subgroup-operation variant, registered as `<name>_sg` (see source.rs).
const SUBGROUP_VARIANTS: &[(&str, &str)] = &[
    ("reduce", "reduce_sg"),
    ("softmax", "softmax_sg"),
    ("layernorm", "layernorm_sg"),
    ("losses", "losses_sg"),
];

impl Gpu {
    /// Opens the best adapter: discrete > integrated > virtual > CPU (software, e.g. lavapipe).
    ///
    /// `CORTEX_WGPU_ADAPTER=<substring>` picks the first adapter whose name contains it.
    /// `SHADER_F16` and `SUBGROUP` are requested only where the adapter has them; see
    /// [`Gpu::features`] for what was granted. Fails (never panics) when there is no adapter.
    pub fn new() -> Result<Gpu> {
        Self::with_backends(wgpu::Backends::from_env().unwrap_or(wgpu::Backends::all()))
    }

    /// Like [`Gpu::new`], searching only `backends` (ignores `WGPU_BACKEND`).
    pub fn with_backends(backends: wgpu::Backends) -> Result<Gpu> {
        let instance = make_instance(Some(backends));
        let mut list = instance.enumerate_adapters(backends);
        if list.is_empty() {
            return Err(GpuError::NoAdapter {
                backends: format!("{backends:?}"),
            });
        }
        list.sort_by_key(|a| rank(a.get_info().device_type));
        let wanted = std::env::var("CORTEX_WGPU_ADAPTER").ok();
        let idx = wanted
            .as_deref()
            .and_then(|w| {
                list.iter()
                    .position(|a| a.get_info().name.to_lowercase().contains(&w.to_lowercase()))
            })
            .unwrap_or(0);
        let adapter = list.swap_remove(idx);
        let summary = summarize(&adapter);
        let optional = wgpu::Features::SHADER_F16 | wgpu::Features::SUBGROUP;
        let granted = adapter.features() & optional;
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("cortex-wgpu"),
            required_features: granted,
            required_limits: adapter.limits(),
            ..Default::default()
        }))
        .map_err(|e| GpuError::RequestDevice {
            adapter: summary.name.clone(),
            message: e.to_string(),
        })?;
        let pool = Arc::new(BufferPool::new(device.clone()));
        Ok(Gpu {
            instance,
            adapter,
            device,
            queue,
            pipelines: PipelineCache::new(crate::pipelines::ShaderChecks::from_env()),
            pool,
            summary,
            granted,
            group_limit_override: std::sync::atomic::AtomicU32::new(0),
            conv_kernel: std::sync::atomic::AtomicU8::new(0),
            // CORTEX_WGPU_SUBGROUPS=0 keeps the workgroup-memory path (for comparisons).
            subgroups: std::sync::atomic::AtomicBool::new(
                granted.contains(wgpu::Features::SUBGROUP)
                    && std::env::var("CORTEX_WGPU_SUBGROUPS").map_or(true, |v| v != "0"),
            ),
            submissions: std::sync::atomic::AtomicU64::new(0),
            recording_enabled: std::env::var("CORTEX_WGPU_RECORD").map_or(true, |v| v != "0"),
            record_chunk: std::env::var("CORTEX_WGPU_RECORD")
                .ok()
                .and_then(|v| v.parse().ok())
                .filter(|&n: &usize| n > 0)
                .unwrap_or(crate::recording::DEFAULT_CHUNK),
        })
    }

    /// The adapter this context runs on.
    pub fn adapter_summary(&self) -> &AdapterSummary {
        &self.summary
    }

    /// Optional features granted to the device (a subset of `SHADER_F16 | SUBGROUP`).
    pub fn features(&self) -> wgpu::Features {
        self.granted
    }

    /// Buffer pool counters (a steady loop stops increasing `allocations`).
    pub fn pool_stats(&self) -> PoolStats {
        self.pool.stats()
    }

    /// Frees idle pooled buffers.
    pub fn trim_pool(&self) {
        self.pool.trim();
    }

    /// The run-time checks compiled into this device's shaders (`CORTEX_WGPU_CHECKS`).
    pub fn shader_checks(&self) -> crate::pipelines::ShaderChecks {
        self.pipelines.checks()
    }

    /// Compiles (or reuses) kernels with `checks` from now on: for comparisons and tests.
    pub fn set_shader_checks(&self, checks: crate::pipelines::ShaderChecks) {
        self.pipelines.set_checks(checks);
    }

    /// Number of compiled pipelines in the cache.
    pub fn pipeline_count(&self) -> usize {
        self.pipelines.len()
    }

    /// Blocks until all submitted work has finished (submitting this thread's recording first).
    pub fn wait(&self) -> Result<()> {
        self.flush_recording();
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| GpuError::Readback(e.to_string()))?;
        Ok(())
    }

    /// Compiles (and caches) every entry point the kernels dispatch, in the variants this
    /// device runs (see [`Gpu::set_subgroups`]; the f16 GEMM only with `SHADER_F16`);
    /// returns how many.
    pub fn warm_up(&self) -> Result<usize> {
        let mut compiled = 0;
        for (shader, entry) in crate::kernels::ALL_ENTRY_POINTS {
            let shader = self.resolve_shader(shader);
            // Variants for features this device lacks (f16 GEMM) are never dispatched here.
            if self.granted.contains(crate::source::required_features(shader)) {
                self.pipelines.get(&self.device, shader, entry)?;
                compiled += 1;
            }
        }
        Ok(compiled)
    }

    /// Whether the row reductions (softmax, the cross-entropy losses, layer norm, full sums)
    /// run on subgroup operations: on by default where the device has `SUBGROUP`.
    pub fn subgroups(&self) -> bool {
        self.subgroups.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Switches the row reductions between their subgroup variants and the workgroup-memory
    /// path every device has (for tests and comparisons); refused where the device lacks
    /// `SUBGROUP`.
    pub fn set_subgroups(&self, on: bool) -> Result<()> {
        if on && !self.granted.contains(wgpu::Features::SUBGROUP) {
            return Err(GpuError::Invalid {
                op: "set_subgroups",
                message: format!("adapter '{}' has no subgroup operations", self.summary.name),
            });
        }
        self.subgroups.store(on, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// The registered shader that runs for `shader`: its subgroup variant when enabled.
    pub(crate) fn resolve_shader<'s>(&self, shader: &'s str) -> &'s str {
        if self.subgroups() {
            if let Some((_, sg)) = SUBGROUP_VARIANTS.iter().find(|(base, _)| *base == shader) {
                return sg;
            }
        }
        shader
    }

    /// Workgroups allowed per dispatch dimension: the device's
    /// `max_compute_workgroups_per_dimension`, or a lower test override.
    pub fn max_workgroups_per_dimension(&self) -> u32 {
        let device = self.device.limits().max_compute_workgroups_per_dimension.max(1);
        match self.group_limit_override.load(std::sync::atomic::Ordering::Relaxed) {
            0 => device,
            o => o.min(device),
        }
    }

    /// Test hook: makes GEMM/conv dispatches split as if the per-dimension workgroup limit
    /// were `limit` (`None` restores the device limit), so the splitting path can be tested
    /// with small tensors.
    #[doc(hidden)]
    pub fn set_workgroup_limit_override(&self, limit: Option<u32>) {
        self.group_limit_override
            .store(limit.unwrap_or(0), std::sync::atomic::Ordering::Relaxed);
    }

    /// Test hook: records one dispatch of `shader::entry` (a 128-byte zeroed uniform, the
    /// given bindings, one workgroup) and submits it, so a test can show that a binding the
    /// shader lacks is an Error rather than a panic in wgpu's default error handler.
    #[doc(hidden)]
    pub fn dispatch_for_test(&self, shader: &str, entry: &str, buffers: &[(u32, &GpuTensor)]) -> Result<()> {
        let bufs: Vec<(u32, &wgpu::Buffer)> = buffers.iter().map(|(b, t)| (*b, t.buffer())).collect();
        let mut batch = self.batch();
        batch.dispatch(shader, entry, &[0u32; 32], &bufs, (1, 1, 1))?;
        batch.submit()
    }

    /// Starts a batch of dispatches recorded into one command encoder.
    pub(crate) fn batch(&self) -> Batch<'_> {
        Batch {
            gpu: self,
            encoder: self.device.create_command_encoder(&Default::default()),
            keep: Vec::new(),
            held: Vec::new(),
        }
    }
}

/// Splits `groups` workgroups over x and y so neither exceeds the per-dimension limit;
/// shaders linearise with `wid.y * num_workgroups.x + wid.x` and skip indices past the end.
pub(crate) fn grid(groups: u32) -> (u32, u32) {
    if groups <= MAX_GROUPS {
        (groups.max(1), 1)
    } else {
        (MAX_GROUPS, groups.div_ceil(MAX_GROUPS))
    }
}

/// Dispatches recorded into one encoder, submitted together.
pub(crate) struct Batch<'a> {
    gpu: &'a Gpu,
    encoder: wgpu::CommandEncoder,
    keep: Vec<PooledBuffer>,
    /// Scratch tensors the recorded commands use; released only after the submit.
    held: Vec<GpuTensor>,
}

impl Batch<'_> {
    /// Keeps a scratch tensor alive until this batch is submitted. A scratch buffer released
    /// earlier goes back to the pool while the recorded commands still use it, and another
    /// thread's upload into it (applied at the next submit, before these commands) corrupts
    /// both: an H200 showed exactly that. Every scratch tensor of a batch goes through here.
    pub fn hold(&mut self, t: GpuTensor) {
        self.held.push(t);
    }

    /// Records one dispatch of `shader::entry` with `params` at binding 0 (uniform) and
    /// storage buffers at the given bindings.
    pub fn dispatch<P: bytemuck::Pod>(
        &mut self,
        shader: &str,
        entry: &str,
        params: &P,
        buffers: &[(u32, &wgpu::Buffer)],
        groups: (u32, u32, u32),
    ) -> Result<()> {
        let gpu = self.gpu;
        let limit = gpu.device.limits().max_compute_workgroups_per_dimension;
        for (what, g) in [
            ("workgroups x", groups.0),
            ("workgroups y", groups.1),
            ("workgroups z", groups.2),
        ] {
            if g > limit {
                return Err(GpuError::Limit {
                    what,
                    got: g as u64,
                    limit: limit as u64,
                });
            }
        }
        let pipe = gpu.pipelines.get(&gpu.device, gpu.resolve_shader(shader), entry)?;
        let bytes = bytemuck::bytes_of(params);
        let uniform = gpu.pool.acquire(
            bytes.len() as u64,
            wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        );
        gpu.queue.write_buffer(uniform.buffer(), 0, bytes);
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: uniform.buffer(),
                offset: 0,
                size: wgpu::BufferSize::new(bytes.len() as u64),
            }),
        }];
        entries.extend(buffers.iter().map(|(binding, b)| wgpu::BindGroupEntry {
            binding: *binding,
            resource: b.as_entire_binding(),
        }));
        // A bad binding is a validation error, which without a scope reaches wgpu's default
        // handler and panics: caught here, it is an Error of this call.
        gpu.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let bind = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(entry),
            layout: &pipe.layout,
            entries: &entries,
        });
        if let Some(err) = pollster::block_on(gpu.device.pop_error_scope()) {
            return Err(GpuError::Invalid {
                op: "dispatch",
                message: format!("binding the buffers of {shader}::{entry}: {err}"),
            });
        }
        {
            let mut pass = self.encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(entry),
                timestamp_writes: None,
            });
            pass.set_pipeline(&pipe.pipeline);
            pass.set_bind_group(0, &bind, &[]);
            if groups.0 > 0 && groups.1 > 0 && groups.2 > 0 {
                pass.dispatch_workgroups(groups.0, groups.1, groups.2);
            }
        }
        self.keep.push(uniform);
        Ok(())
    }

    /// Records a `groups` grid of `shader::entry`, split into several dispatches wherever a
    /// dimension exceeds [`Gpu::max_workgroups_per_dimension`]. `params(offset)` builds each
    /// dispatch's uniform; the shader adds `offset` (x, y, z) to `workgroup_id` so every
    /// piece computes its own part of the full grid.
    pub fn dispatch_tiled<P: bytemuck::Pod>(
        &mut self,
        shader: &str,
        entry: &str,
        params: impl Fn([u32; 3]) -> P,
        buffers: &[(u32, &wgpu::Buffer)],
        groups: (u32, u32, u32),
    ) -> Result<()> {
        let lim = self.gpu.max_workgroups_per_dimension();
        let starts = |n: u32| (0..n.max(1)).step_by(lim as usize);
        for z0 in starts(groups.2) {
            for y0 in starts(groups.1) {
                for x0 in starts(groups.0) {
                    let size = (
                        (groups.0 - x0.min(groups.0)).min(lim),
                        (groups.1 - y0.min(groups.1)).min(lim),
                        (groups.2 - z0.min(groups.2)).min(lim),
                    );
                    self.dispatch(shader, entry, &params([x0, y0, z0]), buffers, size)?;
                }
            }
        }
        Ok(())
    }

    /// Submits everything recorded, or adds it to an open [`Gpu::record`] scope (uniform
    /// buffers and held scratch tensors go back to the pool after the submission).
    /// An encoding error (a validation error wgpu reports when the encoder finishes) is an
    /// Error, and nothing is submitted.
    pub fn submit(self) -> Result<()> {
        let device = &self.gpu.device;
        device.push_error_scope(wgpu::ErrorFilter::Validation);
        let commands = self.encoder.finish();
        if let Some(err) = pollster::block_on(device.pop_error_scope()) {
            return Err(GpuError::Invalid {
                op: "submit",
                message: format!("recording the dispatches failed: {err}"),
            });
        }
        self.gpu.submit_commands(commands, self.keep, self.held);
        Ok(())
    }
}
