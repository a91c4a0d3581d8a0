//! Every registered shader parses and validates with naga; every entry point compiles on the device.

use cortex_wgpu::source::SHADERS;
use wgpu::naga;

#[test]
fn every_shader_parses_and_validates() {
    assert!(SHADERS.len() >= 8);
    for (name, src) in SHADERS {
        let module = naga::front::wgsl::parse_str(src).unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(src)));
        // Each shader may use only the optional features it declares.
        let features = cortex_wgpu::source::required_features(name);
        let mut caps = naga::valid::Capabilities::empty();
        if features.contains(wgpu::Features::SUBGROUP) {
            caps |= naga::valid::Capabilities::SUBGROUP;
        }
        if features.contains(wgpu::Features::SHADER_F16) {
            caps |= naga::valid::Capabilities::SHADER_FLOAT16;
        }
        let mut v = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps);
        v.subgroup_stages(naga::valid::ShaderStages::COMPUTE)
            .subgroup_operations(naga::valid::SubgroupOperationSet::all());
        v.validate(&module)
            .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(src)));
        assert!(
            module
                .entry_points
                .iter()
                .all(|e| e.stage == naga::ShaderStage::Compute),
            "{name}"
        );
    }
}

#[test]
fn every_entry_point_is_registered_and_compiles() {
    for (shader, entry) in cortex_wgpu::kernels::ALL_ENTRY_POINTS {
        let src = cortex_wgpu::source::shader_source(shader).unwrap_or_else(|| panic!("{shader} not registered"));
        let module = naga::front::wgsl::parse_str(src).unwrap();
        assert!(
            module.entry_points.iter().any(|e| e.name == *entry),
            "{shader}::{entry} missing"
        );
    }
    let Some(gpu) = super::common::gpu() else { return };
    let n = gpu.warm_up().expect("compile every pipeline");
    assert_eq!(gpu.pipeline_count(), n);
}

#[test]
fn adapters_are_listed() {
    let list = cortex_wgpu::adapters();
    eprintln!("adapters: {list:#?}");
    if super::common::skip() {
        return;
    }
    assert!(!list.is_empty(), "wgpu sees no adapter");
    let gpu = super::common::gpu().unwrap();
    eprintln!("using {:?}, features {:?}", gpu.adapter_summary(), gpu.features());
}

#[cfg(not(any(target_os = "macos", target_os = "ios")))]
#[test]
fn no_adapter_is_an_error_not_a_panic() {
    // Metal is compiled out off Apple platforms, so this backend set has no adapter.
    let err = cortex_wgpu::Gpu::with_backends(wgpu::Backends::METAL)
        .err()
        .expect("no Metal adapter here");
    let msg = err.to_string();
    assert!(msg.contains("no GPU adapter"), "{msg}");
}

/// A dispatch with a binding its shader does not declare is an Error naming the kernel (wgpu's
/// default handler would panic); the same dispatch with the right bindings runs.
#[test]
fn a_bad_binding_is_an_error_not_a_panic() {
    let Some(g) = super::common::gpu() else { return };
    let (src, dst) = (g.upload(&[1.0; 4], &[4]).unwrap(), g.zeros(&[4]).unwrap());
    g.dispatch_for_test("layout", "copy_columns", &[(1, &src), (2, &dst)])
        .unwrap();
    let err = g
        .dispatch_for_test("layout", "copy_columns", &[(1, &src), (2, &dst), (9, &src)])
        .unwrap_err()
        .to_string();
    assert!(err.contains("layout::copy_columns"), "{err}");
    // The device is still usable.
    assert_eq!(g.download(&src).unwrap(), vec![1.0; 4]);
}
