/**
 * GPU mode of the benchmarks: the MNIST convnet trained and run with `compile({ device: 'gpu!' })`
 * (train step at batch 1024, inference at batch 8192) and the embedding(1000, 64) -> lstm(128) ->
 * dense(10) model's train step (sequences of 100 tokens, batch 256) and the self-attention block
 * LayerNorm(x + MultiHeadAttention(x, x)) (x [16, 1024, 256], 8 heads) as a functional model,
 * printing one JSON line with the adapter and the ratios against the PyTorch 2.11 / H200 anchors
 * of the GPU issue. These are library calls (`trainOnBatch`, `predict`), so they include the
 * host-to-device copies of each batch and the readback of the loss or predictions; the
 * kernel-level benches (crates/wgpu/examples) time the device work alone. The kernel-level
 * numbers (GEMM 4096^3 and 8192^3, conv2d) come from `cortex-wgpu`'s `gpu_bench` example;
 * benches/gpu.sh runs both on a bare GPU machine.
 *
 * ENGINE=layers runs the same models through the layers' own code on GPU tensors
 * (`model.to('gpu')`, the one-tensor path of issue 15) instead of the planned GPU steps of
 * `compile({ device: 'gpu!' })`; both also time the custom-form GAN step (MLP generator and
 * discriminator as in examples/gan.ts, batch 64, Adam), which only the layers' path runs.
 *
 *   tsx benches/gpu_bench.ts           (SIZES=small for a software adapter such as lavapipe)
 */
import {
  adam,
  add,
  conv2d,
  dense,
  devices,
  dropout,
  embedding,
  flatten,
  model as functionalModel,
  input,
  layerNormalization,
  lstm,
  maxPooling2d,
  multiHeadAttention,
  sequential,
  tensor,
  valueAndGrads,
} from "../index.ts";
import { emit, median, round, sample } from "./peers/common.ts";

const small = process.env.SIZES === "small";
const engine = process.env.ENGINE === "layers" ? "layers" : "planner";

type Compiled = Parameters<ReturnType<typeof sequential>["compile"]>[0];
/** Compiles `m` for the GPU through the chosen engine. */
function onGpu<M extends { compile(args: Compiled): void; to(device: "gpu"): M }>(m: M, args: Compiled): M {
  if (engine === "layers") {
    m.to("gpu").compile(args);
  } else {
    m.compile({ ...args, device: "gpu!" });
  }
  return m;
}
const trainBatch = small ? 32 : 1024;
const inferBatch = small ? 64 : 8192;
// PyTorch 2.11 (cuDNN, TF32 off) on an NVIDIA H200, from the GPU issue.
const ANCHOR = { train_samples_per_s: 422_000, infer_samples_per_s: 2_350_000, lstm_train_samples_per_s: 83_000 };
const lstmBatch = small ? 8 : 256;
const lstmSteps = small ? 10 : 100;

const model = sequential([
  conv2d({ filters: 32, kernelSize: 3, activation: "relu", inputShape: [28, 28, 1] }),
  maxPooling2d({ poolSize: 2 }),
  conv2d({ filters: 64, kernelSize: 3, activation: "relu" }),
  maxPooling2d({ poolSize: 2 }),
  flatten(),
  dropout({ rate: 0.5 }),
  dense({ units: 10, activation: "softmax" }),
]);
onGpu(model, { optimizer: adam({ learningRate: 1e-3 }), loss: "sparseCategoricalCrossentropy" });

const random = (n: number) => Float32Array.from({ length: n }, () => Math.random());
const x = tensor(random(trainBatch * 784), [trainBatch, 28, 28, 1]);
const y = tensor(
  Float32Array.from({ length: trainBatch }, (_, i) => i % 10),
  [trainBatch],
);
const xi = tensor(random(inferBatch * 784), [inferBatch, 28, 28, 1]);

// Warm-ups of ~100 ms or more: an idle GPU needs a while to reach full clocks.
const trainMs = median(await sample(() => model.trainOnBatch(x, y), { warmup: small ? 3 : 30, runs: small ? 3 : 30 }));
const inferMs = median(
  await sample(() => model.predict(xi, { batchSize: inferBatch }), { warmup: small ? 2 : 5, runs: small ? 3 : 20 }),
);
// A serving-sized request: latency of predict on 64 images (host overhead dominates here).
const xs = tensor(random(64 * 784), [64, 28, 28, 1]);
const smallInferMs = median(
  await sample(() => model.predict(xs, { batchSize: 64 }), { warmup: small ? 2 : 50, runs: small ? 3 : 50 }),
);

const rnn = sequential([
  embedding({ inputDim: 1000, outputDim: 64, inputShape: [lstmSteps] }),
  lstm({ units: 128 }),
  dense({ units: 10, activation: "softmax" }),
]);
onGpu(rnn, { optimizer: adam({ learningRate: 1e-3 }), loss: "sparseCategoricalCrossentropy" });
const tokens = tensor(
  Float32Array.from({ length: lstmBatch * lstmSteps }, () => Math.floor(Math.random() * 1000)),
  [lstmBatch, lstmSteps],
);
const tokenLabels = tensor(
  Float32Array.from({ length: lstmBatch }, (_, i) => i % 10),
  [lstmBatch],
);
const lstmMs = median(
  await sample(() => rnn.trainOnBatch(tokens, tokenLabels), { warmup: small ? 3 : 30, runs: small ? 3 : 30 }),
);
const lstmTrain = lstmBatch / (lstmMs * 1e-3);

// The attention block, trained with MSE against zeros (forward + backward + Adam).
const [attnBatch, attnSeq, attnDim] = small ? [2, 64, 256] : [16, 1024, 256];
const tokensIn = input({ shape: [attnSeq, attnDim] });
const attended = multiHeadAttention({ numHeads: 8, keyDim: attnDim / 8 }).apply([tokensIn, tokensIn]);
const block = functionalModel({
  inputs: tokensIn,
  outputs: layerNormalization({ epsilon: 1e-5 }).apply(add().apply([tokensIn, attended])),
});
onGpu(block, { optimizer: adam({ learningRate: 1e-3 }), loss: "meanSquaredError" });
const attnX = tensor(random(attnBatch * attnSeq * attnDim), [attnBatch, attnSeq, attnDim]);
const attnY = tensor(new Float32Array(attnBatch * attnSeq * attnDim), [attnBatch, attnSeq, attnDim]);
const attnTrainMs = median(
  await sample(() => block.trainOnBatch(attnX, attnY), { warmup: small ? 3 : 10, runs: small ? 3 : 20 }),
);
const attnPredictMs = median(
  await sample(() => block.predict(attnX, { batchSize: attnBatch }), { warmup: 2, runs: small ? 3 : 20 }),
);

// The custom-form GAN step of examples/gan.ts (PyTorch's anchor: 5.2 ms on the H200): both
// models on the GPU through their layers, valueAndGrads + applyGradients for each.
const latent = 100;
const mlp = (layers: ReturnType<typeof dense>[]) => sequential(layers).to("gpu");
const generator = mlp([
  dense({ units: 256, activation: "leakyRelu", inputShape: [latent] }),
  dense({ units: 256, activation: "leakyRelu" }),
  dense({ units: 256, activation: "leakyRelu" }),
  dense({ units: 784, activation: "tanh" }),
]);
const discriminator = mlp([
  dense({ units: 256, activation: "leakyRelu", inputShape: [784] }),
  dense({ units: 256, activation: "leakyRelu" }),
  dense({ units: 256, activation: "leakyRelu" }),
  dense({ units: 1 }),
]);
const [gOpt, dOpt] = [adam({ learningRate: 2e-4, beta1: 0.5 }), adam({ learningRate: 2e-4, beta1: 0.5 })];
const bce = { name: "binaryCrossentropy", fromLogits: true } as const;
const ganBatch = 64;
const realImages = tensor(random(ganBatch * 784), [ganBatch, 784]);
const [ones, zeros] = [
  tensor(new Float32Array(ganBatch).fill(1), [ganBatch, 1]),
  tensor(new Float32Array(ganBatch), [ganBatch, 1]),
];
const ganStep = () => {
  const z = tensor(random(ganBatch * latent), [ganBatch, latent]);
  const d = valueAndGrads(
    () =>
      discriminator
        .call(realImages)
        .loss(ones, bce)
        .add(discriminator.call(generator.call(z).toTensor()).loss(zeros, bce)),
    discriminator,
  );
  dOpt.applyGradients(d.grads, discriminator);
  const g = valueAndGrads(() => discriminator.call(generator.call(z)).loss(ones, bce), generator);
  gOpt.applyGradients(g.grads, generator);
};
const ganMs = median(await sample(async () => ganStep(), { warmup: small ? 2 : 20, runs: small ? 3 : 50 }));

// Where the time goes: CORTEX_GPU_PROFILE=1 makes newly compiled GPU models wait for the
// device after every stage and print ms per stage (one JSON line per 10 steps, on stderr).
// It runs after the timed loops above, so it does not slow them.
if (engine === "planner" && process.env.GPU_BENCH_PROFILE !== "0") {
  process.env.CORTEX_GPU_PROFILE = "1";
  model.compile({ optimizer: adam({ learningRate: 1e-3 }), loss: "sparseCategoricalCrossentropy", device: "gpu!" });
  for (let i = 0; i < 10; i++) await model.trainOnBatch(x, y);
  for (let i = 0; i < 10; i++) await model.predict(xi, { batchSize: inferBatch });
  rnn.compile({ optimizer: adam({ learningRate: 1e-3 }), loss: "sparseCategoricalCrossentropy", device: "gpu!" });
  for (let i = 0; i < 10; i++) await rnn.trainOnBatch(tokens, tokenLabels);
  block.compile({ optimizer: adam({ learningRate: 1e-3 }), loss: "meanSquaredError", device: "gpu!" });
  for (let i = 0; i < 10; i++) await block.trainOnBatch(attnX, attnY);
  process.env.CORTEX_GPU_PROFILE = "0";
}

const train = trainBatch / (trainMs * 1e-3);
const infer = inferBatch / (inferMs * 1e-3);
emit({
  peer: "cortex-nn gpu",
  engine,
  adapter: model.device,
  // Non-default settings of this run (benches/gpu.sh compares them in one session).
  shader_checks: process.env.CORTEX_WGPU_CHECKS ?? "default",
  record: process.env.CORTEX_WGPU_RECORD ?? "default",
  conv_kernel: process.env.CORTEX_CONV_KERNEL ?? "default",
  adapters: devices().map((d) => `${d.name} (${d.backend}, ${d.deviceType})`),
  convnet_train_batch: trainBatch,
  convnet_train_samples_per_s: round(train, 0),
  convnet_infer_batch: inferBatch,
  convnet_infer_samples_per_s: round(infer, 0),
  vs_h200_pytorch_train: round(train / ANCHOR.train_samples_per_s, 3),
  vs_h200_pytorch_infer: round(infer / ANCHOR.infer_samples_per_s, 3),
  convnet_predict_b64_ms: round(smallInferMs, 3),
  lstm_train_batch: lstmBatch,
  lstm_train_samples_per_s: round(lstmTrain, 0),
  vs_h200_pytorch_lstm_train: round(lstmTrain / ANCHOR.lstm_train_samples_per_s, 3),
  attn_block: [attnBatch, attnSeq, attnDim],
  attn_block_predict_ms: round(attnPredictMs, 2),
  attn_block_train_step_ms: round(attnTrainMs, 2),
  gan_custom_step_b64_ms: round(ganMs, 2),
  vs_h200_pytorch_gan_step: round(5.2 / ganMs, 3),
});
