/**
 * cortex-nn: Keras-style neural networks for Node.js, computed by a Rust engine.
 */

export * as attacks from "./src/attacks.ts";
export {
  batchNormalization,
  layerNormalization,
  type MultiHeadAttentionArgs,
  multiHeadAttention,
} from "./src/attention.ts";
export type { Callback, CustomCallback, Logs } from "./src/callbacks.ts";
export * as callbacks from "./src/callbacks.ts";
export { Dataset } from "./src/data/dataset.ts";
export * as data from "./src/data/index.ts";
export { loadMnist } from "./src/data/mnist.ts";
export * as explain from "./src/explain.ts";
export type { ExportArgs } from "./src/export.ts";
export type { BatchIterable, DataBatch, Tensors } from "./src/feed.ts";
export { input, SymbolicTensor } from "./src/functional.ts";
export { encodePng, type GrayImage, type ImageGridOptions, imageGrid, writePng } from "./src/image.ts";
export * as layers from "./src/layers.ts";
export {
  activation,
  add,
  averagePooling2d,
  concatenate,
  conv2d,
  dense,
  dropout,
  eiDense,
  flatten,
  gaussianDropout,
  gaussianNoise,
  globalAveragePooling2d,
  Layer,
  maxPooling2d,
  multiply,
  reshape,
} from "./src/layers.ts";
export * as losses from "./src/losses.ts";
export {
  type BatchArgs,
  type CompileArgs,
  type DpArgs,
  type EvaluateArgs,
  type FitArgs,
  History,
  type LoadModelArgs,
  loadModel,
  Model,
  type ModelArgs,
  model,
  type QuantizeMode,
  type SaveArgs,
  Sequential,
  sequential,
} from "./src/model.ts";
export {
  type DeviceInfo,
  devices,
  getMaxModelBytes,
  getNumThreads,
  matMul,
  setMaxModelBytes,
  setNumThreads,
  setSeed,
} from "./src/ops.ts";
export * as optimizers from "./src/optimizers.ts";
export {
  adam,
  adamw,
  type LearningRateSchedule,
  lamb,
  lion,
  Optimizer,
  rmsprop,
  schedules,
  sgd,
} from "./src/optimizers.ts";
export * as privacy from "./src/privacy.ts";
export { bidirectional, eiRNN, gru, lstm, simpleRNN } from "./src/recurrent.ts";
export {
  type Batcher,
  BatcherError,
  type BatcherOptions,
  type BatcherStats,
  type BatchInfo,
  type BatchPredictOptions,
  batcher,
} from "./src/serving/batcher.ts";
export { type RequestLog, type ServeOptions, type Server, serve } from "./src/serving/server.ts";
export {
  conv1d,
  conv2dTranspose,
  embedding,
  globalAveragePooling1d,
  positionalEmbedding,
  upSampling2d,
  zeroPadding2d,
} from "./src/spatial.ts";
export {
  constant,
  type Device,
  grads,
  TapeTensor,
  type TapeTensorOptions,
  type ValueAndGrads,
  valueAndGrads,
  variable,
} from "./src/tape.ts";
export { type NestedArray, Tensor, tensor } from "./src/tensor.ts";
