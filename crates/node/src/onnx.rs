//! ONNX export binding: serializes the model on a worker thread, then writes the file
//! atomically (a temporary file in the same directory, renamed into place).

use std::path::PathBuf;

use cortex_core::nn::{io, SharedLayer};
use cortex_formats::onnx::{self, ExportOptions};
use napi::bindgen_prelude::AsyncTask;
use napi::{Env, Task};
use napi_derive::napi;

use crate::guarded;
use crate::model::NativeModel;

/// Background ONNX export.
pub struct ExportOnnxTask {
    model: SharedLayer,
    path: PathBuf,
    opts: ExportOptions,
}

impl Task for ExportOnnxTask {
    type Output = ();
    type JsValue = ();

    fn compute(&mut self) -> napi::Result<()> {
        guarded("exportOnnx", || {
            let bytes = {
                let guard = self.model.read();
                let model = guard.as_model().ok_or_else(|| {
                    cortex_core::Error::Invalid("exportOnnx: the handle does not hold a model".into())
                })?;
                onnx::export(model, &self.opts)?
            };
            io::write_atomically(&self.path, &bytes)
        })
    }

    fn resolve(&mut self, _env: Env, _output: ()) -> napi::Result<()> {
        Ok(())
    }
}

/// Writes a built model as an ONNX file at `path`: opset `opset` (17 to 21, default 17),
/// float32 input(s) `input` (or `input_0`, `input_1`, ...) and output(s) `output` (or
/// `output_0`, ...) with a dynamic first (batch) axis, channels-last layout as in Keras.
/// Rejects with an Error naming the layer when a layer has no faithful ONNX form.
#[napi(ts_return_type = "Promise<void>")]
pub fn export_onnx(model: &NativeModel, path: String, opset: Option<u32>) -> AsyncTask<ExportOnnxTask> {
    AsyncTask::new(ExportOnnxTask {
        model: model.cell(),
        path: PathBuf::from(path),
        opts: ExportOptions {
            opset: opset.unwrap_or(onnx::MIN_OPSET),
        },
    })
}
