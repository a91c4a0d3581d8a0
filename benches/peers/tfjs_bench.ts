/**
 * Peer benchmark: TensorFlow.js (pure JS `cpu` backend or the `wasm` backend).
 *
 *   tsx benches/peers/tfjs_bench.ts [wasm|cpu]
 *
 * Prints ONE JSON line on stdout with the same metrics as torch_bench.py:
 * gemm_gflops (tf.matMul 1024^3 + dataSync, best of several),
 * train_samples_per_s (Keras MNIST convnet, Adam + categorical cross-entropy,
 * batch 128 (16 on cpu), model.trainOnBatch), predict_b1_ms (median) and
 * predict_b256_samples_per_s. Random input data.
 *
 * Notes
 * - Both backends are single-threaded in Node: the cpu backend is plain JS, and
 *   tfjs-backend-wasm 4.22 disables its threaded build under Node (tfjs#3830),
 *   so it runs the SIMD single-thread binary.
 * - PATCH: tfjs-backend-wasm 4.22 has no `Conv2DBackpropFilter` kernel (the
 *   conv layers' weight gradient), so trainOnBatch throws on wasm. We register
 *   one for wasm composed from wasm's own Transpose/Conv2D/Slice kernels (see
 *   registerWasmConv2DBackpropFilter); everything in the train step runs in wasm.
 * - The cpu backend is ~1 GFLOP/s, so its run uses few iterations and time
 *   budgets (the whole cpu run stays well under 90 s).
 */
import * as tf from "@tensorflow/tfjs";
import "@tensorflow/tfjs-backend-wasm";
import { bestMs, emit, gemmGflops, medianMs, now, round } from "./common.ts";

type Backend = "wasm" | "cpu";

/** The parts of the wasm backend the patch uses. */
interface WasmBackendLike {
  disposeData(dataId: tf.DataId, force?: boolean): boolean;
}

/**
 * tfjs-backend-wasm 4.22 lacks `Conv2DBackpropFilter` (the conv weight gradient),
 * so model.trainOnBatch fails on wasm. Register it for wasm, built only from
 * wasm kernels (Transpose, Conv2D, Slice), with the classic identity
 *
 *   dW[kh,kw,ci,co] = sum_{n,i,j} xpad[n, i*s+kh, j*s+kw, ci] * dy[n,i,j,co]
 *                   = conv2d(x^T [ci,H,W,n], dy^T [oh,ow,n,co], dilation = stride)
 *
 * followed by a slice to the filter size and a transpose back to [kh,kw,ci,co].
 * (Delegating to the cpu backend's kernel also works but is ~1000x slower: its
 * JS Conv2DBackpropFilter took ~10 s per batch of 16.)
 */
function registerWasmConv2DBackpropFilter(): void {
  const kernel = (name: string): tf.KernelFunc => {
    const k = tf.getKernel(name, "wasm");
    if (k == null) throw new Error(`wasm backend has no ${name} kernel`);
    return k.kernelFunc;
  };
  const transpose = kernel("Transpose");
  const conv2d = kernel("Conv2D");
  const slice = kernel("Slice");
  tf.registerKernel({
    kernelName: "Conv2DBackpropFilter",
    backendName: "wasm",
    kernelFunc: ({ inputs, backend, attrs }) => {
      const wasm = backend as unknown as WasmBackendLike;
      const { x, dy } = inputs as { x: tf.TensorInfo; dy: tf.TensorInfo };
      const a = attrs as unknown as tf.Conv2DBackpropFilterAttrs;
      if (a.dataFormat !== "NHWC") throw new Error("Conv2DBackpropFilter patch: NHWC only");
      const info = tf.backend_util.computeConv2DInfo(
        x.shape as [number, number, number, number],
        a.filterShape,
        a.strides,
        1,
        a.pad,
        a.dimRoundingMode,
      );
      const { top, bottom, left, right } = info.padInfo;
      const [kh, kw, ci, co] = a.filterShape;
      const call = (f: tf.KernelFunc, ins: tf.NamedTensorInfoMap, at: object) =>
        f({ inputs: ins, backend, attrs: at as tf.NamedAttrMap }) as tf.TensorInfo;

      const xT = call(transpose, { x }, { perm: [3, 1, 2, 0] }); // [ci, H, W, n]
      const dyT = call(transpose, { x: dy }, { perm: [1, 2, 0, 3] }); // [oh, ow, n, co]
      const conv = call(
        conv2d,
        { x: xT, filter: dyT },
        {
          strides: [1, 1],
          pad: [
            [0, 0],
            [top, bottom],
            [left, right],
            [0, 0],
          ],
          dataFormat: "NHWC",
          dilations: [info.strideHeight, info.strideWidth],
        },
      ); // [ci, >=kh, >=kw, co]
      const exact = conv.shape[1] === kh && conv.shape[2] === kw;
      const cut = exact ? conv : call(slice, { x: conv }, { begin: [0, 0, 0, 0], size: [ci, kh, kw, co] });
      const dw = call(transpose, { x: cut }, { perm: [1, 2, 0, 3] }); // [kh, kw, ci, co]
      for (const t of exact ? [xT, dyT, conv] : [xT, dyT, conv, cut]) wasm.disposeData(t.dataId);
      return dw;
    },
  });
}

function buildConvnet(): tf.Sequential {
  // keras.io "Simple MNIST convnet" (34,826 parameters).
  const model = tf.sequential({
    layers: [
      tf.layers.conv2d({
        inputShape: [28, 28, 1],
        filters: 32,
        kernelSize: 3,
        activation: "relu",
      }),
      tf.layers.maxPooling2d({ poolSize: 2 }),
      tf.layers.conv2d({ filters: 64, kernelSize: 3, activation: "relu" }),
      tf.layers.maxPooling2d({ poolSize: 2 }),
      tf.layers.flatten(),
      tf.layers.dropout({ rate: 0.5 }),
      tf.layers.dense({ units: 10, activation: "softmax" }),
    ],
  });
  model.compile({
    optimizer: tf.train.adam(1e-3),
    loss: "categoricalCrossentropy",
  });
  return model;
}

async function main(): Promise<void> {
  const backend = (process.argv[2] ?? "wasm") as Backend;
  if (backend !== "wasm" && backend !== "cpu") {
    throw new Error(`usage: tfjs_bench.ts [wasm|cpu] (got ${backend})`);
  }
  const tStart = now();
  const patched: string[] = [];
  if (backend === "wasm") {
    registerWasmConv2DBackpropFilter();
    patched.push("Conv2DBackpropFilter (wasm Transpose+Conv2D composite)");
  }
  if (!(await tf.setBackend(backend))) throw new Error(`tfjs backend ${backend} failed to start`);
  await tf.ready();
  const slow = backend === "cpu";

  // GEMM 1024^3, result read back with dataSync.
  const N = 1024;
  const a = tf.randomNormal([N, N]);
  const b = tf.randomNormal([N, N]);
  const gemmMs = await bestMs(
    () => {
      const c = tf.matMul(a, b);
      c.dataSync();
      c.dispose();
    },
    slow ? { warmup: 0, runs: 3, budgetMs: 6_000 } : { warmup: 2, runs: 8, budgetMs: 20_000 },
  );
  tf.dispose([a, b]);

  // Train step: batch 128 (cpu: batch 16, since one cpu step at 128 takes ~75 s;
  // its per-sample cost is linear in the batch size, so samples/s is comparable).
  const batch = slow ? 16 : 128;
  const model = buildConvnet();
  const x = tf.randomUniform([batch, 28, 28, 1]);
  const y = tf.oneHot(tf.randomUniform([batch], 0, 10, "int32") as tf.Tensor1D, 10);
  const steps = slow ? 1 : 3;
  const trainMs = await medianMs(
    async () => {
      for (let i = 0; i < steps; i++) await model.trainOnBatch(x, y);
    },
    slow ? { warmup: 1, runs: 2, budgetMs: 15_000 } : { warmup: 1, runs: 5, budgetMs: 30_000 },
  );
  tf.dispose([x, y]);

  // Inference (dropout inactive in predict()).
  const predict = (input: tf.Tensor) => () => {
    const out = model.predict(input) as tf.Tensor;
    out.dataSync();
    out.dispose();
  };
  const x1 = tf.randomUniform([1, 28, 28, 1]);
  const x256 = tf.randomUniform([256, 28, 28, 1]);
  const p1Ms = await medianMs(
    predict(x1),
    slow ? { warmup: 3, runs: 20, budgetMs: 5_000 } : { warmup: 10, runs: 100, budgetMs: 10_000 },
  );
  const p256Ms = await medianMs(
    predict(x256),
    slow ? { warmup: 1, runs: 2, budgetMs: 6_000 } : { warmup: 2, runs: 10, budgetMs: 15_000 },
  );
  tf.dispose([x1, x256]);
  model.dispose();

  const simd = backend === "wasm" ? await tf.env().getAsync("WASM_HAS_SIMD_SUPPORT") : false;
  emit({
    peer: `tfjs-${backend}`,
    version: tf.version.tfjs,
    backend: tf.getBackend(),
    threads: 1,
    simd,
    patched_kernels: patched,
    gemm_gflops: round(gemmGflops(N, N, N, gemmMs)),
    train_batch: batch,
    train_samples_per_s: round((batch * steps) / (trainMs * 1e-3), 1),
    predict_b1_ms: round(p1Ms, 4),
    predict_b256_samples_per_s: round(256 / (p256Ms * 1e-3), 1),
    wall_s: round((now() - tStart) / 1e3),
  });
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
