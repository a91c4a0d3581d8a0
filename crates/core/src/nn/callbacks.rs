//! Callbacks that steer training from Rust, so they never wait on JavaScript: early stopping,
//! model checkpoints and terminate-on-NaN. (Progress bars and user callbacks receive events in
//! JavaScript without blocking training.)

use std::path::PathBuf;

use serde_json::Value;

use super::model::{Logs, Model};
use super::options::Options;
use crate::{Error, Result};

/// Which direction of a monitored value is better.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    /// Lower is better.
    Min,
    /// Higher is better.
    Max,
}

fn mode_for(o: &mut Options, monitor: &str) -> Result<Mode> {
    Ok(match o.string("mode")?.as_deref().unwrap_or("auto") {
        "min" => Mode::Min,
        "max" => Mode::Max,
        "auto" => {
            if monitor.contains("acc") {
                Mode::Max
            } else {
                Mode::Min
            }
        }
        other => {
            return Err(Error::Invalid(format!(
                "callback mode must be 'auto', 'min' or 'max', got '{other}'"
            )))
        }
    })
}

fn improved(mode: Mode, current: f64, best: f64, min_delta: f64) -> bool {
    match mode {
        Mode::Min => current < best - min_delta,
        Mode::Max => current > best + min_delta,
    }
}

fn lookup(logs: &Logs, key: &str) -> Option<f64> {
    logs.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
}

/// A callback's epoch-end code: (epoch, logs, model) to "stop training?".
pub type EpochHook = Box<dyn FnMut(usize, &Logs, &Model) -> Result<bool> + Send>;

/// A training callback evaluated in Rust at the end of each epoch.
pub enum Callback {
    /// Stop when `monitor` has not improved for `patience` epochs.
    EarlyStopping {
        monitor: String,
        min_delta: f64,
        patience: usize,
        mode: Mode,
        restore_best_weights: bool,
        best: Option<f64>,
        wait: usize,
        best_weights: Option<Vec<Vec<f32>>>,
    },
    /// Save the model (atomically) after epochs, optionally only when `monitor` improves.
    ModelCheckpoint {
        filepath: String,
        monitor: String,
        save_best_only: bool,
        mode: Mode,
        best: Option<f64>,
    },
    /// Stop (without an error) when the loss becomes NaN or infinite.
    TerminateOnNaN,
    /// Runs at each epoch end with the model at hand (e.g. the binding's TensorBoard weight
    /// histograms, which live in another crate); returns true to stop training.
    Custom(EpochHook),
}

impl Callback {
    /// Parses `{ "type": "earlyStopping" | "modelCheckpoint" | "terminateOnNaN", ...options }`.
    pub fn parse(v: &Value) -> Result<Callback> {
        let kind = v.get("type").and_then(Value::as_str).unwrap_or("");
        let mut rest = v.clone();
        if let Some(m) = rest.as_object_mut() {
            m.remove("type");
        }
        let mut o = Options::new(kind, &rest)?;
        let cb = match kind {
            "earlyStopping" => {
                let monitor = o.string("monitor")?.unwrap_or_else(|| "val_loss".into());
                Callback::EarlyStopping {
                    mode: mode_for(&mut o, &monitor)?,
                    monitor,
                    min_delta: o.f32("minDelta")?.unwrap_or(0.0).abs() as f64,
                    patience: o.usize("patience")?.unwrap_or(0),
                    restore_best_weights: o.bool("restoreBestWeights")?.unwrap_or(false),
                    best: None,
                    wait: 0,
                    best_weights: None,
                }
            }
            "modelCheckpoint" => {
                let filepath = o
                    .string("filepath")?
                    .ok_or_else(|| Error::Invalid("modelCheckpoint: option 'filepath' is required".into()))?;
                let monitor = o.string("monitor")?.unwrap_or_else(|| "val_loss".into());
                Callback::ModelCheckpoint {
                    filepath,
                    mode: mode_for(&mut o, &monitor)?,
                    monitor,
                    save_best_only: o.bool("saveBestOnly")?.unwrap_or(false),
                    best: None,
                }
            }
            "terminateOnNaN" => Callback::TerminateOnNaN,
            other => {
                return Err(Error::Invalid(format!(
                    "unknown callback type '{other}'; expected earlyStopping, modelCheckpoint or terminateOnNaN"
                )))
            }
        };
        o.finish()?;
        Ok(cb)
    }

    /// Called after each epoch; returns true to stop training.
    pub fn on_epoch_end(&mut self, epoch: usize, logs: &Logs, model: &mut Model) -> Result<bool> {
        match self {
            Callback::EarlyStopping {
                monitor,
                min_delta,
                patience,
                mode,
                restore_best_weights,
                best,
                wait,
                best_weights,
            } => {
                let Some(current) = lookup(logs, monitor) else {
                    let keys: Vec<&str> = logs.iter().map(|(k, _)| k.as_str()).collect();
                    return Err(Error::Invalid(format!(
                        "earlyStopping monitors '{monitor}', but the logs only have: {}",
                        keys.join(", ")
                    )));
                };
                if best.is_none_or(|b| improved(*mode, current, b, *min_delta)) {
                    *best = Some(current);
                    *wait = 0;
                    if *restore_best_weights {
                        *best_weights = Some(model.get_weights()?.into_iter().map(|(_, _, w)| w).collect());
                    }
                    return Ok(false);
                }
                *wait += 1;
                if *wait >= *patience {
                    if let Some(w) = best_weights.take() {
                        model.set_weights(&w)?;
                    }
                    return Ok(true);
                }
                Ok(false)
            }
            Callback::ModelCheckpoint {
                filepath,
                monitor,
                save_best_only,
                mode,
                best,
            } => {
                if *save_best_only {
                    let current = lookup(logs, monitor).ok_or_else(|| {
                        Error::Invalid(format!(
                            "modelCheckpoint monitors '{monitor}', which is not in the logs"
                        ))
                    })?;
                    if best.is_some_and(|b| !improved(*mode, current, b, 0.0)) {
                        return Ok(false);
                    }
                    *best = Some(current);
                }
                let path = PathBuf::from(filepath.replace("{epoch}", &(epoch + 1).to_string()));
                super::io::save(model, &path)?;
                Ok(false)
            }
            Callback::TerminateOnNaN => Ok(false),
            Callback::Custom(f) => f(epoch, logs, model),
        }
    }

    /// True for terminate-on-NaN (fit then stops quietly instead of failing).
    pub fn is_terminate_on_nan(&self) -> bool {
        matches!(self, Callback::TerminateOnNaN)
    }
}
