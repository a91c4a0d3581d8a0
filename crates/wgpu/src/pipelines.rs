//! Compiled compute pipelines, cached by (shader name, entry point).

use std::collections::HashMap;
use std::sync::Mutex;

use crate::source::shader_source;
use crate::{GpuError, Result};

/// A compute pipeline and its (auto-derived) bind group layout for group 0.
#[derive(Clone)]
pub struct CachedPipeline {
    /// The pipeline.
    pub pipeline: wgpu::ComputePipeline,
    /// Layout of bind group 0 as derived from the entry point's used bindings.
    pub layout: wgpu::BindGroupLayout,
}

/// How much of wgpu's run-time safety code is compiled into our shaders
/// (`CORTEX_WGPU_CHECKS=full|bounds|none`).
///
/// wgpu's defaults are for untrusted (web) shaders: every array index is clamped and every loop
/// gets a hidden 64-bit iteration counter with an extra exit, so a shader cannot hang the GPU.
/// Our shaders are ours: every loop's trip count is bounded by sizes the host has validated.
/// The hidden counter, though, hides the constant trip count of the inner FMA loops from the
/// driver's compiler, which then cannot unroll them or keep their arrays in registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum ShaderChecks {
    /// wgpu's defaults: clamped indices and bounded loops.
    Full,
    /// Clamped indices, no loop counter (the default).
    #[default]
    Bounds,
    /// Neither: an out-of-range index into workgroup or private memory is undefined behaviour
    /// (buffer accesses stay within their bindings through Vulkan's robust buffer access).
    None,
}

impl ShaderChecks {
    /// Parses `full`, `bounds` or `none`.
    pub fn parse(s: &str) -> Option<ShaderChecks> {
        match s {
            "full" => Some(ShaderChecks::Full),
            "bounds" => Some(ShaderChecks::Bounds),
            "none" => Some(ShaderChecks::None),
            _ => None,
        }
    }

    /// `CORTEX_WGPU_CHECKS`, or the default when unset; an unrecognised value is reported on
    /// stderr and the default used.
    pub fn from_env() -> ShaderChecks {
        match std::env::var("CORTEX_WGPU_CHECKS") {
            Ok(v) => ShaderChecks::parse(&v).unwrap_or_else(|| {
                let default = ShaderChecks::default();
                eprintln!(
                    "cortex-wgpu: CORTEX_WGPU_CHECKS={v:?} is not full, bounds or none; using {}",
                    default.name()
                );
                default
            }),
            Err(_) => ShaderChecks::default(),
        }
    }

    /// The name `parse` reads.
    pub fn name(self) -> &'static str {
        match self {
            ShaderChecks::Full => "full",
            ShaderChecks::Bounds => "bounds",
            ShaderChecks::None => "none",
        }
    }

    fn runtime_checks(self) -> wgpu::ShaderRuntimeChecks {
        let mut checks = wgpu::ShaderRuntimeChecks::checked();
        checks.force_loop_bounding = self == ShaderChecks::Full;
        checks.bounds_checks = self != ShaderChecks::None;
        checks
    }
}

/// Pipeline cache: shader modules by name and pipelines by (shader, entry point).
#[derive(Default)]
pub struct PipelineCache {
    modules: Mutex<HashMap<(&'static str, ShaderChecks), wgpu::ShaderModule>>,
    pipelines: Mutex<HashMap<(String, String, ShaderChecks), CachedPipeline>>,
    checks: Mutex<ShaderChecks>,
}

impl PipelineCache {
    /// An empty cache whose shaders are compiled with `checks`.
    pub fn new(checks: ShaderChecks) -> PipelineCache {
        PipelineCache {
            checks: Mutex::new(checks),
            ..Default::default()
        }
    }

    /// The run-time checks compiled into shaders from now on.
    pub fn checks(&self) -> ShaderChecks {
        *self.checks.lock().unwrap()
    }

    /// Compiles shaders with `checks` from now on (pipelines compiled under each mode stay
    /// cached, so switching back and forth compiles nothing twice).
    pub fn set_checks(&self, checks: ShaderChecks) {
        *self.checks.lock().unwrap() = checks;
    }

    /// The pipeline for `entry` in shader `shader`, compiling it on first use.
    pub fn get(&self, device: &wgpu::Device, shader: &str, entry: &str) -> Result<CachedPipeline> {
        let checks = self.checks();
        let key = (shader.to_string(), entry.to_string(), checks);
        if let Some(p) = self.pipelines.lock().unwrap().get(&key) {
            return Ok(p.clone());
        }
        let module = self.module(device, shader, checks)?;
        device.push_error_scope(wgpu::ErrorFilter::Validation);
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&format!("{shader}::{entry}")),
            layout: None,
            module: &module,
            entry_point: Some(entry),
            compilation_options: Default::default(),
            cache: None,
        });
        if let Some(err) = pollster::block_on(device.pop_error_scope()) {
            return Err(GpuError::Shader {
                shader: shader.into(),
                entry: entry.into(),
                message: err.to_string(),
            });
        }
        let layout = pipeline.get_bind_group_layout(0);
        let cached = CachedPipeline { pipeline, layout };
        self.pipelines.lock().unwrap().insert(key, cached.clone());
        Ok(cached)
    }

    /// Number of compiled pipelines.
    pub fn len(&self) -> usize {
        self.pipelines.lock().unwrap().len()
    }

    /// True when nothing has been compiled yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn module(&self, device: &wgpu::Device, shader: &str, checks: ShaderChecks) -> Result<wgpu::ShaderModule> {
        let mut modules = self.modules.lock().unwrap();
        let (name, src) = crate::source::SHADERS
            .iter()
            .find(|(n, _)| *n == shader)
            .copied()
            .ok_or_else(|| GpuError::UnknownShader(shader.into()))?;
        debug_assert!(shader_source(name).is_some());
        if let Some(m) = modules.get(&(name, checks)) {
            return Ok(m.clone());
        }
        device.push_error_scope(wgpu::ErrorFilter::Validation);
        let desc = wgpu::ShaderModuleDescriptor {
            label: Some(name),
            source: wgpu::ShaderSource::Wgsl(src.into()),
        };
        // SAFETY: every loop in our shaders ends after a number of iterations bounded by
        // host-validated sizes, and under `ShaderChecks::None` every workgroup/private index
        // stays in range (the kernel suites check results on every shape class they handle);
        // see `ShaderChecks`.
        let module = unsafe { device.create_shader_module_trusted(desc, checks.runtime_checks()) };
        if let Some(err) = pollster::block_on(device.pop_error_scope()) {
            return Err(GpuError::Shader {
                shader: name.into(),
                entry: "(module)".into(),
                message: err.to_string(),
            });
        }
        modules.insert((name, checks), module.clone());
        Ok(module)
    }
}
