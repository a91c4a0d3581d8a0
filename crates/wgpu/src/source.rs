//! The shader registry: every WGSL source of the crate, by name.

/// Every WGSL shader of the crate as (name, source); the name is the file stem.
pub const SHADERS: &[(&str, &str)] = &[
    ("matmul", include_str!("shaders/matmul.wgsl")),
    ("matmul_vec4", include_str!("shaders/matmul_vec4.wgsl")),
    ("elementwise", include_str!("shaders/elementwise.wgsl")),
    ("reduce", include_str!("shaders/reduce.wgsl")),
    ("softmax", include_str!("shaders/softmax.wgsl")),
    ("conv", include_str!("shaders/conv.wgsl")),
    ("pool2d", include_str!("shaders/pool2d.wgsl")),
    ("optim", include_str!("shaders/optim.wgsl")),
];

/// The WGSL source of shader `name`, if registered.
pub fn shader_source(name: &str) -> Option<&'static str> {
    SHADERS.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}
