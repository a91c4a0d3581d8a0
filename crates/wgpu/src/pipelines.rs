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

/// Pipeline cache: shader modules by name and pipelines by (shader, entry point).
#[derive(Default)]
pub struct PipelineCache {
    modules: Mutex<HashMap<&'static str, wgpu::ShaderModule>>,
    pipelines: Mutex<HashMap<(String, String), CachedPipeline>>,
}

impl PipelineCache {
    /// The pipeline for `entry` in shader `shader`, compiling it on first use.
    pub fn get(&self, device: &wgpu::Device, shader: &str, entry: &str) -> Result<CachedPipeline> {
        let key = (shader.to_string(), entry.to_string());
        if let Some(p) = self.pipelines.lock().unwrap().get(&key) {
            return Ok(p.clone());
        }
        let module = self.module(device, shader)?;
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

    fn module(&self, device: &wgpu::Device, shader: &str) -> Result<wgpu::ShaderModule> {
        let mut modules = self.modules.lock().unwrap();
        let (name, src) = crate::source::SHADERS
            .iter()
            .find(|(n, _)| *n == shader)
            .copied()
            .ok_or_else(|| GpuError::UnknownShader(shader.into()))?;
        debug_assert!(shader_source(name).is_some());
        if let Some(m) = modules.get(name) {
            return Ok(m.clone());
        }
        device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(name),
            source: wgpu::ShaderSource::Wgsl(src.into()),
        });
        if let Some(err) = pollster::block_on(device.pop_error_scope()) {
            return Err(GpuError::Shader {
                shader: name.into(),
                entry: "(module)".into(),
                message: err.to_string(),
            });
        }
        modules.insert(name, module.clone());
        Ok(module)
    }
}
