/**
 * Console progress for `fit`: a live bar on a TTY (verbose 1), one line per epoch otherwise
 * (verbose 2, or verbose 1 without a TTY).
 */
import type { Logs } from "./callbacks.ts";

function formatLogs(logs: Logs): string {
  return Object.entries(logs)
    .map(([k, v]) => `${k}: ${v.toFixed(4)}`)
    .join(" - ");
}

/** Writes progress for one `fit` call. */
export class ProgressReporter {
  #epochs = 0;
  #steps = 0;
  #epochStart = 0;
  #lastDraw = 0;
  readonly #live: boolean;

  constructor(
    private readonly verbose: number,
    private readonly out: NodeJS.WriteStream = process.stdout,
  ) {
    this.#live = verbose === 1 && Boolean(out.isTTY);
  }

  trainBegin(epochs: number, steps: number): void {
    this.#epochs = epochs;
    this.#steps = steps;
  }

  batchEnd(epoch: number, batch: number, logs: Logs): void {
    if (batch === 0) this.#epochStart = Date.now();
    if (!this.#live) return;
    const now = Date.now();
    if (batch === 0) this.out.write(`Epoch ${epoch + 1}/${this.#epochs}\n`);
    if (now - this.#lastDraw < 100 && batch + 1 < this.#steps) return;
    this.#lastDraw = now;
    const width = 30;
    const done = Math.round(((batch + 1) / this.#steps) * width);
    const bar = `${"=".repeat(Math.max(done - 1, 0))}${done < width ? ">" : "="}${".".repeat(width - done)}`;
    const seconds = ((now - this.#epochStart) / 1000).toFixed(0);
    this.out.write(`\r${batch + 1}/${this.#steps} [${bar}] - ${seconds}s - ${formatLogs(logs)}\x1b[K`);
  }

  epochEnd(epoch: number, logs: Logs): void {
    if (this.verbose === 0) return;
    const seconds = ((Date.now() - this.#epochStart) / 1000).toFixed(1);
    if (this.#live) {
      this.out.write(`\r${this.#steps}/${this.#steps} [${"=".repeat(30)}] - ${seconds}s - ${formatLogs(logs)}\x1b[K\n`);
    } else {
      this.out.write(`Epoch ${epoch + 1}/${this.#epochs} - ${seconds}s - ${formatLogs(logs)}\n`);
    }
  }
}
