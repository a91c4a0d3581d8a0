/**
 * Decodes large JSON request bodies on worker threads. `JSON.parse` plus flattening of a
 * 256-row MNIST body (4.3 MB) takes 100-250 ms on one core: on the main thread that would stall
 * every other request, health probes included. Bodies above a threshold come here instead.
 */
import { Worker } from "node:worker_threads";
import { type DecodedRequest, decodeRequestBody } from "./protocols.ts";

/**
 * The worker runs the very function the main thread uses, from its source text: an `eval`
 * worker needs no separate file, so it works the same from the TypeScript sources, the ESM
 * build and the CommonJS bundle. `__name` is defined because some TypeScript transpilers
 * (esbuild with keepNames, as in tsx) wrap inner functions in a call to it.
 */
const WORKER_SOURCE = `
const __name = (fn) => fn;
const decode = ${decodeRequestBody.toString()};
const { parentPort } = require("node:worker_threads");
const utf8 = new TextDecoder();
parentPort.on("message", ({ id, bytes, protocol, sampleShape, inputName, outputName }) => {
  try {
    const result = decode(utf8.decode(bytes), protocol, sampleShape, inputName, outputName);
    parentPort.postMessage({ id, result }, [result.data.buffer]);
  } catch (error) {
    parentPort.postMessage({ id, error: String(error && error.message ? error.message : error) });
  }
});
`;

interface Task {
  resolve: (r: DecodedRequest) => void;
  reject: (e: Error) => void;
}

/** A small pool of decode workers, started on first use. */
export class DecodePool {
  readonly #size: number;
  readonly #workers: { worker: Worker; tasks: Map<number, Task> }[] = [];
  #nextId = 0;
  #closed = false;

  constructor(size: number) {
    this.#size = Math.max(1, size);
  }

  /** Decodes `bytes` (transferred: the caller must not use them afterwards). Rejects with the 400 message. */
  decode(
    bytes: Uint8Array,
    protocol: "tfserving" | "v2",
    sampleShape: number[] | null,
    inputName: string,
    outputName: string,
  ): Promise<DecodedRequest> {
    if (this.#closed) return Promise.reject(new Error("decode pool closed"));
    const slot = this.#pick();
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      slot.tasks.set(id, { resolve, reject });
      slot.worker.postMessage({ id, bytes, protocol, sampleShape, inputName, outputName }, [
        bytes.buffer as ArrayBuffer,
      ]);
    });
  }

  /** The least busy worker, starting a new one while the pool is not full. */
  #pick() {
    const idle = this.#workers.find((w) => w.tasks.size === 0);
    if (idle) return idle;
    if (this.#workers.length < this.#size) return this.#spawn();
    return this.#workers.reduce((a, b) => (b.tasks.size < a.tasks.size ? b : a));
  }

  #spawn() {
    const worker = new Worker(WORKER_SOURCE, { eval: true });
    // Idle workers must not keep a process alive that has nothing else to do.
    worker.unref();
    const slot = { worker, tasks: new Map<number, Task>() };
    worker.on("message", (msg: { id: number; result?: DecodedRequest; error?: string }) => {
      const task = slot.tasks.get(msg.id);
      slot.tasks.delete(msg.id);
      if (!task) return;
      if (msg.result) task.resolve(msg.result);
      else task.reject(new Error(msg.error ?? "decode failed"));
    });
    // A crashed worker (e.g. out of memory on a huge body) fails its own tasks only.
    const fail = (error: Error) => {
      const i = this.#workers.indexOf(slot);
      if (i >= 0) this.#workers.splice(i, 1);
      for (const task of slot.tasks.values()) task.reject(new WorkerCrash(error.message));
      slot.tasks.clear();
    };
    worker.on("error", fail);
    worker.on("exit", (code) => fail(new Error(`decode worker exited with code ${code}`)));
    this.#workers.push(slot);
    return slot;
  }

  /** Stops the workers. */
  async close(): Promise<void> {
    this.#closed = true;
    await Promise.all(this.#workers.splice(0).map((w) => w.worker.terminate()));
  }
}

/** The worker died rather than rejecting the body: a server error (500), not a bad request. */
export class WorkerCrash extends Error {}
