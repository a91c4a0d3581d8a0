/**
 * `callbacks.tensorBoard`: TensorBoard event files, laid out and tagged as the Keras 3
 * `TensorBoard` callback writes them. The files are written by Rust (`NativeEventWriter`: TFRecord
 * framing, `Event`/`Summary` protobufs from TensorBoard's official .proto files); each call
 * appends a small buffered record, flushed at every epoch end and when training ends.
 */
import { hostname } from "node:os";
import { join } from "node:path";
import type { CustomCallback, Logs } from "./callbacks.ts";
import { native } from "./native.ts";

type EventWriter = InstanceType<typeof native.NativeEventWriter>;

/** Arguments of {@link tensorBoard}. */
export interface TensorBoardArgs {
  /** Run directory: event files go to `<logDir>/train` and `<logDir>/validation`, as in Keras. */
  logDir: string;
  /**
   * `'epoch'` (default): scalars once per epoch (`epoch_loss`, `epoch_accuracy`, ... at step
   * `epoch`); `'batch'` or a number N: also the running batch logs every N batches
   * (`batch_loss`, ... at the global batch number, counted from 1 across epochs).
   */
  updateFreq?: "epoch" | "batch" | number;
  /**
   * Every how many epochs to write a histogram of each weight (`<layer>/<weight>/histogram`,
   * at step `epoch`); 0 (default) writes none. Written by the Rust training loop at the epoch end.
   */
  histogramFreq?: number;
}

/** The `fit` callback {@link tensorBoard} returns. */
export class TensorBoardCallback implements CustomCallback {
  readonly logDir: string;
  /** Batches between batch-level scalars; 0 for epoch-level only. */
  readonly batchEvery: number;
  readonly histogramFreq: number;
  /**
   * For the Rust training loop: weight histograms are written there at the epoch end, where
   * the weights are at hand (`fit` holds the model while it trains, so reading them from this
   * callback would wait for the whole fit). Absent when `histogramFreq` is 0.
   */
  readonly nativeSpec: Readonly<Record<string, unknown>> | undefined;
  #train: EventWriter | undefined;
  #validation: EventWriter | undefined;
  #steps = 0;
  #epochsDone = 0;

  constructor(args: TensorBoardArgs) {
    if (args === null || typeof args !== "object") throw new TypeError("tensorBoard: expected { logDir, ... }");
    for (const key of Object.keys(args)) {
      if (!["logDir", "updateFreq", "histogramFreq"].includes(key)) {
        throw new Error(`tensorBoard: unknown option '${key}'; expected one of: logDir, updateFreq, histogramFreq`);
      }
    }
    if (typeof args.logDir !== "string" || args.logDir === "") {
      throw new TypeError("tensorBoard: logDir must be a non-empty string");
    }
    const freq = args.updateFreq ?? "epoch";
    if (freq === "epoch") this.batchEvery = 0;
    else if (freq === "batch") this.batchEvery = 1;
    else if (typeof freq === "number" && Number.isSafeInteger(freq) && freq > 0) this.batchEvery = freq;
    else throw new RangeError(`tensorBoard: updateFreq must be 'epoch', 'batch' or a positive integer, got ${freq}`);
    const histogramFreq = args.histogramFreq ?? 0;
    if (!Number.isSafeInteger(histogramFreq) || histogramFreq < 0) {
      throw new RangeError(`tensorBoard: histogramFreq must be a non-negative integer, got ${histogramFreq}`);
    }
    this.logDir = args.logDir;
    this.histogramFreq = histogramFreq;
    this.nativeSpec =
      histogramFreq > 0
        ? { type: "tensorBoard", logDir: join(args.logDir, "train"), histogramFreq, hostname: hostname() }
        : undefined;
  }

  /** Opens new event files for this fit (as Keras does each time a model is set). */
  onTrainBegin(info: { epochs: number; steps: number }): void {
    this.#close();
    this.#steps = info.steps;
    this.#epochsDone = 0;
    this.#train = new native.NativeEventWriter(join(this.logDir, "train"), hostname());
  }

  onBatchEnd(batch: number, logs: Logs): void {
    if (this.batchEvery === 0 || !this.#train) return;
    const step = this.#epochsDone * this.#steps + batch + 1;
    if (step % this.batchEvery !== 0) return;
    for (const [name, value] of Object.entries(logs)) this.#train.scalar(`batch_${name}`, step, value);
  }

  onEpochEnd(epoch: number, logs: Logs): void {
    this.#epochsDone = epoch + 1;
    const train = this.#train;
    if (!train) return;
    for (const [name, value] of Object.entries(logs)) {
      if (name.startsWith("val_")) {
        this.#validation ??= new native.NativeEventWriter(join(this.logDir, "validation"), hostname());
        this.#validation.scalar(`epoch_${name.slice(4)}`, epoch, value);
      } else {
        train.scalar(`epoch_${name}`, epoch, value);
      }
    }
    train.flush();
    this.#validation?.flush();
  }

  onTrainEnd(): void {
    this.#close();
  }

  #close(): void {
    this.#train?.close();
    this.#validation?.close();
    this.#train = undefined;
    this.#validation = undefined;
  }
}

/**
 * Writes logs TensorBoard reads (`tensorboard --logdir <logDir>`): the loss and every metric
 * per epoch, or per batch with `updateFreq`, validation logs under `validation/` with the
 * `val_` prefix dropped, and weight histograms every `histogramFreq` epochs, named as Keras 3
 * names them.
 */
export function tensorBoard(args: TensorBoardArgs): TensorBoardCallback {
  return new TensorBoardCallback(args);
}
