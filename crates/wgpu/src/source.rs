//! The shader registry: every WGSL source of the crate, by name.

/// Every WGSL shader of the crate as (name, source); the name is the file stem.
pub const SHADERS: &[(&str, &str)] = &[
    ("matmul", include_str!("shaders/matmul.wgsl")),
    ("matmul_vec4", include_str!("shaders/matmul_vec4.wgsl")),
    // The 128x128-tile GEMM, compiled for two k-slab depths (see matmul_t128_common.wgsl).
    (
        "matmul_t128_bk8",
        concat!(
            "const BK: u32 = 8u;\nalias ST = f32;\n",
            include_str!("shaders/matmul_t128_common.wgsl"),
            include_str!("shaders/matmul_t128.wgsl")
        ),
    ),
    (
        "matmul_t128_bk16",
        concat!(
            "const BK: u32 = 16u;\nalias ST = f32;\n",
            include_str!("shaders/matmul_t128_common.wgsl"),
            include_str!("shaders/matmul_t128.wgsl")
        ),
    ),
    // Mixed precision (SHADER_F16): the same tiling staged in f16.
    (
        "matmul_t128_f16",
        concat!(
            "enable f16;\nconst BK: u32 = 16u;\nalias ST = f16;\n",
            include_str!("shaders/matmul_t128_common.wgsl"),
            include_str!("shaders/matmul_t128_f16.wgsl")
        ),
    ),
    (
        "elementwise",
        concat!(
            include_str!("shaders/activation_math.wgsl"),
            include_str!("shaders/elementwise.wgsl")
        ),
    ),
    // The row-reducing shaders come twice: "<name>" reduces through workgroup memory
    // everywhere, "<name>_sg" through subgroup operations (see wg_reduce_tree.wgsl).
    (
        "reduce",
        concat!(
            include_str!("shaders/wg_reduce_tree.wgsl"),
            include_str!("shaders/reduce.wgsl")
        ),
    ),
    (
        "reduce_sg",
        concat!(
            include_str!("shaders/wg_reduce_subgroup.wgsl"),
            include_str!("shaders/reduce.wgsl")
        ),
    ),
    (
        "softmax",
        concat!(
            include_str!("shaders/wg_reduce_tree.wgsl"),
            include_str!("shaders/softmax.wgsl")
        ),
    ),
    (
        "softmax_sg",
        concat!(
            include_str!("shaders/wg_reduce_subgroup.wgsl"),
            include_str!("shaders/softmax.wgsl")
        ),
    ),
    // Implicit-GEMM conv: shared gathers plus a 64- or 128-tile core (see conv_common.wgsl).
    (
        "conv",
        concat!(
            include_str!("shaders/conv_common.wgsl"),
            include_str!("shaders/conv.wgsl")
        ),
    ),
    (
        "conv_t128_bk8",
        concat!(
            "const BK: u32 = 8u;\n",
            include_str!("shaders/conv_common.wgsl"),
            include_str!("shaders/conv_t128.wgsl")
        ),
    ),
    (
        "conv_t128_bk16",
        concat!(
            "const BK: u32 = 16u;\n",
            include_str!("shaders/conv_common.wgsl"),
            include_str!("shaders/conv_t128.wgsl")
        ),
    ),
    ("pool2d", include_str!("shaders/pool2d.wgsl")),
    ("spatial", include_str!("shaders/spatial.wgsl")),
    ("layout", include_str!("shaders/layout.wgsl")),
    ("optim", include_str!("shaders/optim.wgsl")),
    (
        "losses",
        concat!(
            include_str!("shaders/wg_reduce_tree.wgsl"),
            include_str!("shaders/losses.wgsl")
        ),
    ),
    (
        "losses_sg",
        concat!(
            include_str!("shaders/wg_reduce_subgroup.wgsl"),
            include_str!("shaders/losses.wgsl")
        ),
    ),
    // One attention source with two head-dim bounds prepended (see the shader's header).
    (
        "attention_d32",
        concat!(
            include_str!("shaders/attention_d32.wgsl"),
            include_str!("shaders/attention.wgsl")
        ),
    ),
    (
        "attention_d64",
        concat!(
            include_str!("shaders/attention_d64.wgsl"),
            include_str!("shaders/attention.wgsl")
        ),
    ),
    (
        "layernorm",
        concat!(
            include_str!("shaders/wg_reduce_tree.wgsl"),
            include_str!("shaders/layernorm.wgsl")
        ),
    ),
    (
        "layernorm_sg",
        concat!(
            include_str!("shaders/wg_reduce_subgroup.wgsl"),
            include_str!("shaders/layernorm.wgsl")
        ),
    ),
    (
        "rnn",
        concat!(
            include_str!("shaders/activation_math.wgsl"),
            include_str!("shaders/rnn.wgsl")
        ),
    ),
    (
        "gru",
        concat!(
            include_str!("shaders/activation_math.wgsl"),
            include_str!("shaders/gru.wgsl")
        ),
    ),
    (
        "simple_rnn",
        concat!(
            include_str!("shaders/activation_math.wgsl"),
            include_str!("shaders/simple_rnn.wgsl")
        ),
    ),
    ("embedding", include_str!("shaders/embedding.wgsl")),
    ("batchnorm", include_str!("shaders/batchnorm.wgsl")),
];

/// Optional device features shader `name` needs: `SUBGROUP` for the `_sg` variants,
/// `SHADER_F16` for the `_f16` ones, none for the rest (the path every device has).
pub fn required_features(name: &str) -> wgpu::Features {
    if name.ends_with("_sg") {
        wgpu::Features::SUBGROUP
    } else if name.ends_with("_f16") {
        wgpu::Features::SHADER_F16
    } else {
        wgpu::Features::empty()
    }
}

/// The WGSL source of shader `name`, if registered.
pub fn shader_source(name: &str) -> Option<&'static str> {
    SHADERS.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}
