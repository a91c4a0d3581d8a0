//! The implicit-GEMM conv on every tiling ([`MatmulKernel::CONCRETE`], chosen per device
//! with `Gpu::set_conv_kernel`), all three passes against the f64 loops of `conv.rs`.

use std::sync::OnceLock;

use super::common::gpu;
use super::conv::{check_on, Case};
use cortex_wgpu::{Conv2dSpec, Gpu, MatmulKernel};

/// One extra device per concrete kernel (the shared one stays on `Auto` for other tests).
fn devices() -> &'static [(MatmulKernel, Gpu)] {
    static DEVICES: OnceLock<Vec<(MatmulKernel, Gpu)>> = OnceLock::new();
    if gpu().is_none() {
        return &[];
    }
    DEVICES.get_or_init(|| {
        MatmulKernel::CONCRETE
            .into_iter()
            .map(|k| {
                let g = Gpu::new().expect("device");
                g.set_conv_kernel(k);
                (k, g)
            })
            .collect()
    })
}

fn check_all(c: Case) {
    for (k, g) in devices() {
        assert_eq!(g.conv_kernel(), *k);
        assert_eq!(
            g.conv_kernel_for(1000, 1000),
            *k,
            "lavapipe has the memory for every kernel"
        );
        check_on(g, &c);
    }
}

#[test]
fn mnist_layer_and_ragged_tiles() {
    // gm = 242, gn = 64 (backward_input: gn = 32).
    check_all(Case {
        x: [2, 13, 13, 32],
        k: [3, 3, 32, 64],
        spec: Conv2dSpec::default(),
    });
    // Same padding, two ragged column tiles (cout 140), backward_filter gm = 180.
    check_all(Case {
        x: [2, 12, 12, 20],
        k: [3, 3, 20, 140],
        spec: Conv2dSpec {
            padding: [1, 1, 1, 1],
            ..Default::default()
        },
    });
}

#[test]
fn strides_dilation_padding() {
    check_all(Case {
        x: [3, 9, 11, 5],
        k: [3, 3, 5, 7],
        spec: Conv2dSpec {
            padding: [1, 1, 1, 1],
            ..Default::default()
        },
    });
    check_all(Case {
        x: [2, 10, 13, 3],
        k: [3, 4, 3, 6],
        spec: Conv2dSpec {
            strides: (2, 3),
            padding: [0, 1, 1, 2],
            ..Default::default()
        },
    });
    check_all(Case {
        x: [2, 8, 9, 2],
        k: [5, 5, 2, 3],
        spec: Conv2dSpec {
            strides: (2, 1),
            dilation: (1, 2),
            padding: [2, 4, 2, 4],
        },
    });
}

#[test]
fn backward_filter_split_k_on_every_kernel() {
    // k = 8 * 18 * 18 = 2592 over one output tile: split-K in workgroup z.
    check_all(Case {
        x: [8, 20, 20, 4],
        k: [3, 3, 4, 8],
        spec: Conv2dSpec::default(),
    });
}
