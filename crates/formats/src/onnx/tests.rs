//! Exporter tests that need no ONNX runtime: structure, names and errors. (Numerical agreement
//! with the engine is checked in test/onnx.test.ts through onnxruntime-node.)

use cortex_core::nn::Model;
use serde_json::{json, Value};

use super::*;

fn l(class: &str, config: Value) -> Value {
    json!({ "className": class, "config": config })
}

fn seq(layers: Vec<Value>, shape: Value) -> Model {
    Model::from_config(
        &json!({ "className": "Sequential", "layers": layers, "inputShape": shape }),
        1,
    )
    .unwrap()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn dense_model_has_named_io_dynamic_batch_and_opset() {
    let m = seq(
        vec![l("Dense", json!({ "units": 2, "activation": "relu" }))],
        json!([3]),
    );
    let bytes = export(&m, &ExportOptions::default()).unwrap();
    assert_eq!(&bytes[..2], &[0x08, 0x08]); // ir_version 8
    assert_eq!(&bytes[bytes.len() - 4..], &[0x42, 0x02, 0x10, 17]); // opset_import { version 17 }
    for s in ["input", "output", "batch", "MatMul", "Relu", "cortex-nn"] {
        assert!(contains(&bytes, s.as_bytes()), "missing {s}");
    }
}

#[test]
fn opset_range_and_ir_versions() {
    let m = seq(vec![l("Dense", json!({ "units": 2 }))], json!([3]));
    assert!(export(&m, &ExportOptions { opset: 16 }).is_err());
    assert!(export(&m, &ExportOptions { opset: 22 }).is_err());
    let b = export(&m, &ExportOptions { opset: 21 }).unwrap();
    assert_eq!(&b[..2], &[0x08, 10]);
    assert_eq!(&b[b.len() - 4..], &[0x42, 0x02, 0x10, 21]);
}

#[test]
fn names_for_several_inputs_and_outputs() {
    assert_eq!(input_names(1), ["input"]);
    assert_eq!(input_names(2), ["input_0", "input_1"]);
    assert_eq!(output_names(3)[2], "output_2");
}

#[test]
fn masked_recurrence_is_refused_naming_the_layer() {
    let m = seq(
        vec![
            l("Embedding", json!({ "inputDim": 5, "outputDim": 4, "maskZero": true })),
            l("GRU", json!({ "units": 3, "name": "the_gru" })),
        ],
        json!([6]),
    );
    let e = export(&m, &ExportOptions::default()).unwrap_err().to_string();
    assert!(e.contains("'the_gru' (GRU)") && e.contains("mask"), "{e}");
}

#[test]
fn unbuilt_model_is_refused() {
    let m = Model::from_config(
        &json!({ "className": "Sequential", "layers": [l("Dense", json!({ "units": 2 }))] }),
        1,
    )
    .unwrap();
    let e = export(&m, &ExportOptions::default()).unwrap_err().to_string();
    assert!(e.contains("not built"), "{e}");
}

#[test]
fn unsupported_recurrent_activation_is_refused() {
    let m = seq(
        vec![l("LSTM", json!({ "units": 2, "activation": "gelu" }))],
        json!([4, 3]),
    );
    let e = export(&m, &ExportOptions::default()).unwrap_err().to_string();
    assert!(e.contains("(LSTM)") && e.contains("gelu"), "{e}");
}
