/**
 * Input pipelines: `Dataset` (lazy, re-iterable, tf.data-style transformations) and the readers
 * that make Datasets from files: CSV, image folders, MNIST. Their batches, `{ xs, ys }`, are
 * what `model.fit` consumes.
 */
export { type CsvFeatures, type CsvOptions, type CsvRow, csvDataset } from "./csv.ts";
export {
  type Batched,
  type BatchOptions,
  Dataset,
  type ShuffleOptions,
  type Stackable,
  type TensorTree,
} from "./dataset.ts";
export {
  type ImageBatch,
  ImageDataset,
  type ImageDirectoryOptions,
  imageDatasetFromDirectory,
} from "./image-directory.ts";
export { loadMnist, type Mnist, type MnistOptions } from "./mnist.ts";
export { type MnistDatasetOptions, type MnistSample, mnistDataset } from "./mnist-dataset.ts";
