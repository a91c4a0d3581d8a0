/**
 * Writes the seed corpus of the model-file fuzzer (crates/core/tests/fuzz_model_files.rs): one
 * small saved model per layer family, compiled, so the fuzzer mutates real files.
 * `npx tsx scripts/make-fuzz-seeds.ts` (the output is committed).
 */
import { rmSync } from "node:fs";
import {
  activation,
  add,
  averagePooling2d,
  batchNormalization,
  bidirectional,
  concatenate,
  conv1d,
  conv2d,
  conv2dTranspose,
  dense,
  dropout,
  embedding,
  flatten,
  globalAveragePooling1d,
  globalAveragePooling2d,
  gru,
  input,
  layerNormalization,
  lstm,
  maxPooling2d,
  model,
  multiHeadAttention,
  positionalEmbedding,
  reshape,
  sequential,
  simpleRNN,
  upSampling2d,
  zeroPadding2d,
} from "../index.ts";

const out = "crates/core/tests/fuzz-corpus";
rmSync(out, { recursive: true, force: true });

const x = input({ shape: [4, 6] });
const attended = multiHeadAttention({ numHeads: 2, keyDim: 3 }).apply([x, x]);
const summed = add().apply([x, attended]);
const joined = concatenate().apply([summed, layerNormalization().apply(summed)]);

const seeds = {
  dense: sequential([
    dense({ units: 4, activation: "relu", inputShape: [3] }),
    dropout({ rate: 0.2 }),
    dense({ units: 2, activation: "softmax" }),
  ]),
  conv: sequential([
    conv2d({ filters: 2, kernelSize: 3, padding: "same", inputShape: [6, 6, 1] }),
    batchNormalization(),
    maxPooling2d({ poolSize: 2 }),
    averagePooling2d({ poolSize: 1 }),
    zeroPadding2d({ padding: 1 }),
    globalAveragePooling2d(),
    dense({ units: 2 }),
  ]),
  deconv: sequential([
    conv2dTranspose({ filters: 2, kernelSize: 2, strides: 2, inputShape: [3, 3, 1] }),
    upSampling2d({ size: 2 }),
    flatten(),
    reshape({ targetShape: [24, 12] }),
    conv1d({ filters: 2, kernelSize: 3 }),
    globalAveragePooling1d(),
  ]),
  recurrent: sequential([
    lstm({ units: 3, returnSequences: true, inputShape: [5, 2] }),
    bidirectional({ layer: gru({ units: 2, returnSequences: true }) }),
    simpleRNN({ units: 2 }),
    activation({ activation: "tanh" }),
  ]),
  tokens: sequential([
    embedding({ inputDim: 12, outputDim: 4, maskZero: true, inputShape: [5] }),
    positionalEmbedding({ sequenceLength: 5 }),
    lstm({ units: 2 }),
  ]),
  attention: model({ inputs: x, outputs: dense({ units: 2 }).apply(joined) }),
};

for (const [name, m] of Object.entries(seeds)) {
  m.compile({ optimizer: "adam", loss: "meanSquaredError", metrics: ["accuracy"] });
  await m.save(`${out}/${name}`);
}
console.log(`wrote ${Object.keys(seeds).length} seeds to ${out}`);
