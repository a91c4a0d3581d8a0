//! Callbacks that steer training from Rust, so they never wait on JavaScript: early stopping,
//! model checkpoints, backup-and-restore, learning-rate reduction on plateaus, CSV logs and
//! terminate-on-NaN. (Progress bars and user callbacks receive events in JavaScript without
//! blocking training.)

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

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
    /// Multiply the learning rate by `factor` when `monitor` stops improving (Keras
    /// `ReduceLROnPlateau`); logs the rate as `learning_rate`.
    ReduceLrOnPlateau {
        monitor: String,
        factor: f32,
        patience: usize,
        mode: Mode,
        min_delta: f64,
        cooldown: usize,
        min_lr: f32,
        best: Option<f64>,
        wait: usize,
        cooldown_left: usize,
    },
    /// Append each epoch's logs to a CSV file (Keras `CSVLogger`).
    CsvLogger {
        filename: PathBuf,
        separator: String,
        append: bool,
        keys: Option<Vec<String>>,
        file: Option<fs::File>,
    },
    /// Save the model with its training state after every epoch and resume from it when a
    /// run restarts (Keras `BackupAndRestore`); the backup goes when training completes.
    BackupAndRestore { dir: PathBuf, delete_checkpoint: bool },
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
            "reduceLROnPlateau" => {
                let monitor = o.string("monitor")?.unwrap_or_else(|| "val_loss".into());
                let factor = o.f32("factor")?.unwrap_or(0.1);
                if !(factor > 0.0 && factor < 1.0) {
                    return Err(Error::Invalid(format!(
                        "reduceLROnPlateau: factor must be in (0, 1), got {factor}"
                    )));
                }
                Callback::ReduceLrOnPlateau {
                    mode: mode_for(&mut o, &monitor)?,
                    monitor,
                    factor,
                    patience: o.usize("patience")?.unwrap_or(10),
                    min_delta: o.f32("minDelta")?.unwrap_or(1e-4).abs() as f64,
                    cooldown: o.usize("cooldown")?.unwrap_or(0),
                    min_lr: o.f32("minLr")?.unwrap_or(0.0),
                    best: None,
                    wait: 0,
                    cooldown_left: 0,
                }
            }
            "csvLogger" => Callback::CsvLogger {
                filename: o
                    .string("filename")?
                    .ok_or_else(|| Error::Invalid("csvLogger: option 'filename' is required".into()))?
                    .into(),
                separator: o.string("separator")?.unwrap_or_else(|| ",".into()),
                append: o.bool("append")?.unwrap_or(false),
                keys: None,
                file: None,
            },
            "backupAndRestore" => {
                let dir = o
                    .string("backupDir")?
                    .ok_or_else(|| Error::Invalid("backupAndRestore: option 'backupDir' is required".into()))?;
                if let Some(freq) = o.string("saveFreq")? {
                    if freq != "epoch" {
                        return Err(Error::Invalid(format!(
                            "backupAndRestore: saveFreq must be 'epoch', got '{freq}'"
                        )));
                    }
                }
                Callback::BackupAndRestore {
                    dir: dir.into(),
                    delete_checkpoint: o.bool("deleteCheckpoint")?.unwrap_or(true),
                }
            }
            other => {
                return Err(Error::Invalid(format!(
                    "unknown callback type '{other}'; expected earlyStopping, modelCheckpoint, terminateOnNaN, \
                     reduceLROnPlateau, csvLogger or backupAndRestore"
                )))
            }
        };
        o.finish()?;
        Ok(cb)
    }

    /// Called before the first epoch; returns the epoch to resume at (backupAndRestore).
    pub fn on_train_begin(&mut self, model: &mut Model) -> Result<Option<usize>> {
        match self {
            Callback::CsvLogger {
                filename, append, file, ..
            } => {
                let f = fs::OpenOptions::new()
                    .create(true)
                    .write(true)
                    .append(*append)
                    .truncate(!*append)
                    .open(&*filename)
                    .map_err(|e| Error::Io(format!("csvLogger: cannot open '{}': {e}", filename.display())))?;
                *file = Some(f);
                Ok(None)
            }
            Callback::BackupAndRestore { dir, .. } => restore_backup(model, dir),
            _ => Ok(None),
        }
    }

    /// Called when training ends without an error.
    pub fn on_train_end(&mut self, _model: &mut Model) -> Result<()> {
        match self {
            Callback::CsvLogger { file, .. } => {
                file.take();
                Ok(())
            }
            Callback::BackupAndRestore {
                dir,
                delete_checkpoint: true,
            } => {
                for name in ["weights.safetensors", "model.json"] {
                    let _ = fs::remove_file(dir.join(name));
                }
                // Only an emptied directory goes; anything else the user put there stays.
                let _ = fs::remove_dir(&*dir);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Called after each epoch (callbacks may add logs); returns true to stop training.
    pub fn on_epoch_end(&mut self, epoch: usize, logs: &mut Logs, model: &mut Model) -> Result<bool> {
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
            Callback::ReduceLrOnPlateau {
                monitor,
                factor,
                patience,
                mode,
                min_delta,
                cooldown,
                min_lr,
                best,
                wait,
                cooldown_left,
            } => {
                let optimizer = &mut model.compiled()?.optimizer;
                if optimizer.schedule.is_some() {
                    return Err(Error::Invalid(
                        "reduceLROnPlateau cannot change a learning rate that follows a schedule".into(),
                    ));
                }
                logs.push(("learning_rate".into(), optimizer.learning_rate as f64));
                let Some(current) = lookup(logs, monitor) else {
                    return Err(Error::Invalid(format!(
                        "reduceLROnPlateau monitors '{monitor}', which is not in the logs"
                    )));
                };
                // Keras' order: the cooldown counts down, then an improvement resets the wait.
                if *cooldown_left > 0 {
                    *cooldown_left -= 1;
                    *wait = 0;
                }
                if best.is_none_or(|b| improved(*mode, current, b, *min_delta)) {
                    *best = Some(current);
                    *wait = 0;
                } else if *cooldown_left == 0 {
                    *wait += 1;
                    if *wait >= *patience && optimizer.learning_rate > *min_lr {
                        optimizer.learning_rate = (optimizer.learning_rate * *factor).max(*min_lr);
                        *cooldown_left = *cooldown;
                        *wait = 0;
                    }
                }
                Ok(false)
            }
            Callback::CsvLogger {
                filename,
                separator,
                keys,
                file,
                ..
            } => {
                let Some(f) = file.as_mut() else { return Ok(false) };
                let io =
                    |e: std::io::Error| Error::Io(format!("csvLogger: cannot write '{}': {e}", filename.display()));
                let keys = keys.get_or_insert_with(|| {
                    // Keras writes the keys sorted, after the epoch.
                    let mut k: Vec<String> = logs.iter().map(|(k, _)| k.clone()).collect();
                    k.sort();
                    k
                });
                if f.metadata().map_err(io)?.len() == 0 {
                    writeln!(f, "epoch{separator}{}", keys.join(separator)).map_err(io)?;
                }
                let values: Vec<String> = keys
                    .iter()
                    .map(|k| lookup(logs, k).map_or_else(|| "NA".into(), |v| v.to_string()))
                    .collect();
                writeln!(f, "{epoch}{separator}{}", values.join(separator)).map_err(io)?;
                f.flush().map_err(io)?;
                Ok(false)
            }
            Callback::BackupAndRestore { dir, .. } => {
                super::io::save_with(model, dir, Some(serde_json::json!({ "epoch": epoch })))?;
                Ok(false)
            }
            Callback::Custom(f) => f(epoch, logs, model),
        }
    }

    /// True for terminate-on-NaN (fit then stops quietly instead of failing).
    pub fn is_terminate_on_nan(&self) -> bool {
        matches!(self, Callback::TerminateOnNaN)
    }
}

/// Loads a backup written by `backupAndRestore` into `model` (weights, optimizer state, random
/// state); returns the epoch to resume at, or `None` when there is no backup.
fn restore_backup(model: &mut Model, dir: &Path) -> Result<Option<usize>> {
    if !dir.join("weights.safetensors").exists() {
        return Ok(None);
    }
    let options = super::io::LoadOptions::new(0);
    let (saved, state) = super::io::load_with_state(dir, &options)
        .map_err(|e| Error::Invalid(format!("backupAndRestore: cannot restore '{}': {e}", dir.display())))?;
    let epoch = state
        .as_ref()
        .and_then(|s| s.get("epoch"))
        .and_then(Value::as_u64)
        .ok_or_else(|| Error::Invalid(format!("backupAndRestore: '{}' holds no epoch", dir.display())))?;
    let weights: Vec<Vec<f32>> = saved.get_weights()?.into_iter().map(|(_, _, w)| w).collect();
    model
        .set_weights(&weights)
        .map_err(|e| Error::Invalid(format!("backupAndRestore: the backup is of another model: {e}")))?;
    if let Some(s) = saved.optimizer_state() {
        model.set_optimizer_state(s)?;
    }
    model.set_rng(crate::rng::Rng::from_state(saved.rng_state()));
    Ok(Some(epoch as usize + 1))
}
