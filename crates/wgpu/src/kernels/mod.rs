//! Compute kernels, one module (and one WGSL file) per op family.

pub mod attention;
pub mod batchnorm;
pub mod conv;
pub mod elementwise;
pub mod embedding;
pub mod gru;
pub mod layernorm;
pub mod layout;
pub mod losses;
pub mod matmul;
pub mod optim;
pub mod pool2d;
pub mod reduce;
pub mod rnn;
pub mod simple_rnn;
pub mod softmax;
pub mod spatial;

/// Every (shader, entry point) pair the kernels dispatch; [`crate::Gpu::warm_up`] compiles them all.
pub const ALL_ENTRY_POINTS: &[(&str, &str)] = &[
    ("matmul", "main"),
    ("matmul_vec4", "main"),
    ("matmul_t128_bk8", "main"),
    ("matmul_t128_bk16", "main"),
    ("matmul_t128_f16", "main"),
    ("elementwise", "bias_add"),
    ("elementwise", "activation"),
    ("elementwise", "activation_grad"),
    ("elementwise", "binary"),
    ("elementwise", "scale"),
    ("elementwise", "nonzero"),
    ("elementwise", "dropout"),
    ("reduce", "sum_rows"),
    ("reduce", "sum_partial"),
    ("reduce", "sum_final"),
    ("softmax", "softmax"),
    ("softmax", "sce_logits"),
    ("softmax", "sce_probs"),
    ("softmax", "log_softmax"),
    ("softmax", "softmax_grad"),
    ("softmax", "log_softmax_grad"),
    ("conv", "forward"),
    ("conv", "backward_input"),
    ("conv", "backward_filter"),
    ("conv", "backward_filter_small"),
    ("conv", "forward_small"),
    ("conv_t128_bk8", "forward"),
    ("conv_t128_bk8", "backward_input"),
    ("conv_t128_bk8", "backward_filter"),
    ("conv_t128_bk16", "forward"),
    ("conv_t128_bk16", "backward_input"),
    ("conv_t128_bk16", "backward_filter"),
    ("pool2d", "max_forward"),
    ("pool2d", "max_backward"),
    ("pool2d", "avg_forward"),
    ("pool2d", "avg_backward"),
    ("layout", "copy_columns"),
    ("layout", "reverse_time"),
    ("layout", "swap_axes12"),
    ("spatial", "pad_forward"),
    ("spatial", "pad_backward"),
    ("spatial", "upsample_forward"),
    ("spatial", "upsample_backward"),
    ("optim", "sgd"),
    ("optim", "sgd_momentum"),
    ("optim", "adam"),
    ("optim", "rmsprop"),
    ("losses", "bce_probs"),
    ("losses", "bce_logits"),
    ("losses", "mae"),
    ("losses", "cce_probs"),
    ("losses", "cce_logits"),
    ("attention_d32", "forward"),
    ("attention_d32", "backward_dq"),
    ("attention_d32", "backward_dkdv"),
    ("attention_d64", "forward"),
    ("attention_d64", "backward_dq"),
    ("attention_d64", "backward_dkdv"),
    ("layernorm", "forward"),
    ("layernorm", "backward"),
    ("layernorm", "param_partial"),
    ("layernorm", "col_partial"),
    ("rnn", "lstm_forward"),
    ("rnn", "lstm_backward"),
    ("rnn", "transpose"),
    ("gru", "gru_forward"),
    ("gru", "gru_backward"),
    ("simple_rnn", "simple_rnn_forward"),
    ("simple_rnn", "simple_rnn_backward"),
    ("embedding", "gather"),
    ("embedding", "scatter_add"),
    ("batchnorm", "sum_partial"),
    ("batchnorm", "sq_partial"),
    ("batchnorm", "mean_final"),
    ("batchnorm", "update_moving"),
    ("batchnorm", "apply"),
    ("batchnorm", "grad_partial"),
    ("batchnorm", "grad_final"),
    ("batchnorm", "backward_dx"),
];

/// Checks that `t` has exactly `len` elements.
pub(crate) fn expect_len(op: &'static str, what: &str, t: &crate::GpuTensor, len: usize) -> crate::Result<()> {
    if t.len() != len {
        return Err(crate::GpuError::Shape {
            op,
            expected: format!("{what} with {len} elements"),
            got: format!("{:?} ({} elements)", t.shape(), t.len()),
        });
    }
    Ok(())
}

/// Converts a size to u32 for a uniform, failing past 2^32 - 1.
pub(crate) fn u32_of(what: &'static str, v: usize) -> crate::Result<u32> {
    u32::try_from(v).map_err(|_| crate::GpuError::Limit {
        what,
        got: v as u64,
        limit: u32::MAX as u64,
    })
}
