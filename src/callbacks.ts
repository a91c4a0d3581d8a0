/**
 * Training callbacks. Early stopping, checkpoints and terminate-on-NaN run inside the Rust
 * training loop (they never wait on JavaScript); user callbacks receive events on the event
 * loop without ever pausing training.
 */

/** Per-epoch or running logs, e.g. `{ loss, accuracy, val_loss, val_accuracy }`. */
export type Logs = Record<string, number>;

/** Hooks a plain object can implement. Returning values is ignored; to stop, set `model.stopTraining = true`. */
export interface CustomCallback {
  /** Before the first epoch. */
  onTrainBegin?(info: { epochs: number; steps: number }): void;
  /** After each epoch, with its final logs (validation included). */
  onEpochEnd?(epoch: number, logs: Logs): void;
  /** After each batch, with running averages over the epoch. */
  onBatchEnd?(batch: number, logs: Logs): void;
  /** When `fit` finishes. */
  onTrainEnd?(logs: Logs): void;
}

/** A callback implemented in Rust. */
export class NativeCallback {
  constructor(readonly spec: Readonly<Record<string, unknown>>) {}
}

/** A learning-rate schedule: `(epoch, currentLr) => newLr`, evaluated before each epoch. */
export class LearningRateScheduler {
  constructor(readonly schedule: (epoch: number, lr: number) => number) {}
}

/** Anything `fit` accepts in `callbacks`. */
export type Callback = CustomCallback | NativeCallback | LearningRateScheduler;

/** Arguments of {@link earlyStopping}. */
export interface EarlyStoppingArgs {
  /** Log to watch (default `val_loss`). */
  monitor?: string;
  /** Smallest change that counts as an improvement (default 0). */
  minDelta?: number;
  /** Epochs without improvement before stopping (default 0). */
  patience?: number;
  /** `'auto'` (max for accuracies, min otherwise), `'min'` or `'max'`. */
  mode?: "auto" | "min" | "max";
  /** Put back the best epoch's weights when stopping (default false). */
  restoreBestWeights?: boolean;
}

/** Stops training when the monitored log stops improving. */
export function earlyStopping(args: EarlyStoppingArgs = {}): NativeCallback {
  return new NativeCallback({ type: "earlyStopping", ...args });
}

/** Arguments of {@link modelCheckpoint}. */
export interface ModelCheckpointArgs {
  /** Directory to save into; `{epoch}` is replaced by the epoch number (1-based). */
  filepath: string;
  /** Log to watch for `saveBestOnly` (default `val_loss`). */
  monitor?: string;
  /** Only save when the monitored log improves (default false). */
  saveBestOnly?: boolean;
  /** `'auto'`, `'min'` or `'max'`. */
  mode?: "auto" | "min" | "max";
}

/** Saves the model (atomically) at the end of epochs. */
export function modelCheckpoint(args: ModelCheckpointArgs): NativeCallback {
  return new NativeCallback({ type: "modelCheckpoint", ...args });
}

/** Arguments of {@link reduceLROnPlateau} (Keras `ReduceLROnPlateau`). */
export interface ReduceLROnPlateauArgs {
  /** Log to watch (default `val_loss`). */
  monitor?: string;
  /** Factor the rate is multiplied by, in (0, 1) (default 0.1). */
  factor?: number;
  /** Epochs without improvement before reducing (default 10). */
  patience?: number;
  /** `'auto'`, `'min'` or `'max'`. */
  mode?: "auto" | "min" | "max";
  /** Smallest change that counts as an improvement (default 1e-4). */
  minDelta?: number;
  /** Epochs to wait after a reduction before counting again (default 0). */
  cooldown?: number;
  /** Lowest rate (default 0). */
  minLr?: number;
}

/**
 * Reduces the learning rate when the monitored log stops improving; the rate each epoch
 * trained with is logged as `learning_rate`. Not with a per-step learning-rate schedule.
 */
export function reduceLROnPlateau(args: ReduceLROnPlateauArgs = {}): NativeCallback {
  return new NativeCallback({ type: "reduceLROnPlateau", ...args });
}

/** Arguments of {@link csvLogger} (Keras `CSVLogger`). */
export interface CsvLoggerArgs {
  /** The CSV file. */
  filename: string;
  /** Column separator (default `,`). */
  separator?: string;
  /** Append to an existing file instead of replacing it (default false). */
  append?: boolean;
}

/** Writes each epoch's logs as a row of a CSV file (columns: epoch, then the log names sorted). */
export function csvLogger(args: CsvLoggerArgs): NativeCallback {
  return new NativeCallback({ type: "csvLogger", ...args });
}

/** Arguments of {@link backupAndRestore} (Keras `BackupAndRestore`). */
export interface BackupAndRestoreArgs {
  /** Directory of the backup (a cortex-nn model directory with its training state). */
  backupDir: string;
  /** Only `'epoch'`: back up at the end of every epoch. */
  saveFreq?: "epoch";
  /** Remove the backup when training completes (default true). */
  deleteCheckpoint?: boolean;
}

/**
 * Makes a run survive interruption: after every epoch the model, its optimizer state and its
 * random state are saved to `backupDir`; a `fit` that finds a backup there restores it and
 * continues from the next epoch, exactly as the interrupted run would have.
 */
export function backupAndRestore(args: BackupAndRestoreArgs): NativeCallback {
  return new NativeCallback({ type: "backupAndRestore", ...args });
}

/** Ends training quietly (resolving `fit`) when the loss becomes NaN or infinite, instead of rejecting. */
export function terminateOnNaN(): NativeCallback {
  return new NativeCallback({ type: "terminateOnNaN" });
}

/**
 * Sets the learning rate before each epoch from `schedule(epoch, lr)`. The schedule must be a
 * pure function of its arguments: it is evaluated for every epoch when `fit` starts, so the
 * Rust training loop never has to call back into JavaScript.
 */
export function learningRateScheduler(schedule: (epoch: number, lr: number) => number): LearningRateScheduler {
  if (typeof schedule !== "function")
    throw new TypeError("learningRateScheduler: expected a function (epoch, lr) => lr");
  return new LearningRateScheduler(schedule);
}
export { type TensorBoardArgs, TensorBoardCallback, tensorBoard } from "./tensorboard.ts";
