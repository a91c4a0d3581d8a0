/**
 * `imageDatasetFromDirectory`: Keras 3's `keras.utils.image_dataset_from_directory` for
 * cortex-nn. One subfolder per class; labels come from the sorted folder names; images are
 * decoded, converted and resized (bilinear) in Rust on a worker thread, a batch per task, and
 * reach the model as float pixels in [0, 255] (not rescaled, as in Keras).
 */
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { native } from "../native.ts";
import { Tensor } from "../tensor.ts";
import { Dataset } from "./dataset.ts";
import { MersenneTwister, randomSeed } from "./random.ts";

/**
 * File types indexed. Keras also lists .bmp and .gif; they are skipped here because the decoder
 * is built with PNG and JPEG only (each codec is attack surface on hostile files).
 */
const FORMATS = [".png", ".jpg", ".jpeg"];

/** Options of {@link imageDatasetFromDirectory}; defaults are Keras'. */
export interface ImageDirectoryOptions {
  /** `[height, width]` every image is resized to. Default [256, 256]. */
  imageSize?: readonly [number, number];
  /** Channels of the output: 1, 3 or 4. Default "rgb". */
  colorMode?: "grayscale" | "rgb" | "rgba";
  /**
   * Label encoding: "int" (class index, `ys` `[batch]`), "categorical" (one-hot, `[batch,
   * classes]`), "binary" (0/1, `[batch, 1]`, exactly two classes), or null (no `ys`). Default "int".
   */
  labelMode?: "int" | "categorical" | "binary" | null;
  /** Images per batch. Default 32. */
  batchSize?: number;
  /**
   * Shuffle the file list (seeded) and, for the training data, each epoch's order through a
   * buffer of `8 * batchSize` files. Default true; false gives alphanumeric order.
   */
  shuffle?: boolean;
  /** Seed of the shuffles: required with `validationSplit` and `shuffle`, so the subsets never overlap. */
  seed?: number;
  /** Fraction of files (0 < x < 1) held out for validation: the last ones after the seeded shuffle. */
  validationSplit?: number;
  /** Which part to return with `validationSplit`; "both" returns `[training, validation]`. */
  subset?: "training" | "validation" | "both";
  /** The classes, in label order: a subset of the subfolder names. Default: all, sorted. */
  classNames?: readonly string[];
}

/** A batch of images and their labels. */
export interface ImageBatch {
  /** Pixels, `[batch, height, width, channels]`, floats in [0, 255]. */
  xs: Tensor;
  /** Labels as chosen by `labelMode`. */
  ys: Tensor;
}

/** A Dataset of image batches that also says what its labels mean and where the images are. */
export class ImageDataset<T> extends Dataset<T> {
  /** The class of each label index (the subfolder names). */
  readonly classNames: readonly string[];
  /** The image files, in the order of the unshuffled pass (the file list after the seeded shuffle). */
  readonly filePaths: readonly string[];

  /** Wraps one pass-maker as a Dataset with its classes and files. */
  constructor(inner: Dataset<T>, classNames: readonly string[], filePaths: readonly string[]) {
    super(() => inner[Symbol.asyncIterator]());
    this.classNames = Object.freeze([...classNames]);
    this.filePaths = Object.freeze([...filePaths]);
  }
}

/**
 * Lists the images under `dir` (one subfolder per class, searched recursively) and returns a
 * Dataset of `{ xs, ys }` batches, as `keras.utils.image_dataset_from_directory` does: labels
 * from the sorted subfolder names, the file list shuffled with NumPy's `RandomState(seed)` (so the
 * validation split holds the same files as Keras' with the same seed), the validation files
 * last. Decode errors reject the iteration with an Error naming the file.
 */
export function imageDatasetFromDirectory(
  dir: string,
  options: ImageDirectoryOptions & { subset: "both"; labelMode: null },
): Promise<[ImageDataset<{ xs: Tensor }>, ImageDataset<{ xs: Tensor }>]>;
export function imageDatasetFromDirectory(
  dir: string,
  options: ImageDirectoryOptions & { subset: "both" },
): Promise<[ImageDataset<ImageBatch>, ImageDataset<ImageBatch>]>;
export function imageDatasetFromDirectory(
  dir: string,
  options: ImageDirectoryOptions & { labelMode: null },
): Promise<ImageDataset<{ xs: Tensor }>>;
export function imageDatasetFromDirectory(
  dir: string,
  options?: ImageDirectoryOptions,
): Promise<ImageDataset<ImageBatch>>;
export async function imageDatasetFromDirectory(
  dir: string,
  options: ImageDirectoryOptions = {},
): Promise<ImageDataset<ImageBatch | { xs: Tensor }> | ImageDataset<ImageBatch | { xs: Tensor }>[]> {
  const o = checkOptions(options);
  const { paths, labels, classNames } = await indexDirectory(dir, options.classNames);
  if (o.labelMode === "binary" && classNames.length !== 2) {
    throw new Error(
      `imageDatasetFromDirectory: labelMode "binary" needs exactly 2 classes, ${dir} has [${classNames.join(", ")}]`,
    );
  }
  if (o.shuffle) {
    // Keras shuffles paths and labels with two generators of the same seed: one permutation.
    new MersenneTwister(o.seed).shuffle(paths);
    new MersenneTwister(o.seed).shuffle(labels);
  }
  // As in Keras: a lone subset is reshuffled each epoch; with "both", the validation half is not.
  const make = (subset: "training" | "validation" | undefined, shuffleEpochs = o.shuffle) => {
    const [p, l] = splitOf(paths, labels, o.validationSplit, subset);
    if (p.length === 0) {
      throw new Error(
        `imageDatasetFromDirectory: no ${subset ?? ""}${subset ? " " : ""}images found in ${dir} ` +
          `(formats: ${FORMATS.join(", ")})`,
      );
    }
    return build(p, l, classNames, o, shuffleEpochs);
  };
  if (options.subset === "both") return [make("training"), make("validation", false)];
  return make(options.subset);
}

type Checked = Required<Pick<ImageDirectoryOptions, "colorMode" | "batchSize" | "shuffle">> & {
  height: number;
  width: number;
  channels: number;
  labelMode: "int" | "categorical" | "binary" | null;
  seed: number;
  validationSplit: number | undefined;
};

function checkOptions(options: ImageDirectoryOptions): Checked {
  const [height, width] = options.imageSize ?? [256, 256];
  for (const side of [height, width]) {
    if (!Number.isInteger(side) || side < 1 || side > 16384) {
      throw new RangeError(
        `imageDatasetFromDirectory: imageSize must be two integers in 1..16384, got ${options.imageSize}`,
      );
    }
  }
  const colorMode = options.colorMode ?? "rgb";
  const channels = { grayscale: 1, rgb: 3, rgba: 4 }[colorMode];
  if (!channels)
    throw new TypeError(`imageDatasetFromDirectory: colorMode must be grayscale, rgb or rgba, got ${colorMode}`);
  const labelMode = options.labelMode === undefined ? "int" : options.labelMode;
  if (labelMode !== null && !["int", "categorical", "binary"].includes(labelMode)) {
    throw new TypeError(
      `imageDatasetFromDirectory: labelMode must be int, categorical, binary or null, got ${labelMode}`,
    );
  }
  const batchSize = options.batchSize ?? 32;
  if (!Number.isInteger(batchSize) || batchSize < 1) {
    throw new RangeError(`imageDatasetFromDirectory: batchSize must be a positive integer, got ${batchSize}`);
  }
  if (batchSize * height * width * channels > 2 ** 28) {
    throw new RangeError(
      `imageDatasetFromDirectory: a batch of ${batchSize} x ${height}x${width}x${channels} is over 2^28 floats (1 GiB)`,
    );
  }
  const shuffle = options.shuffle ?? true;
  const { validationSplit, subset } = options;
  if (validationSplit !== undefined && !(validationSplit > 0 && validationSplit < 1)) {
    throw new RangeError(`imageDatasetFromDirectory: validationSplit must be between 0 and 1, got ${validationSplit}`);
  }
  if ((validationSplit === undefined) !== (subset === undefined)) {
    throw new TypeError("imageDatasetFromDirectory: `subset` and `validationSplit` go together: give both or neither");
  }
  if (subset !== undefined && !["training", "validation", "both"].includes(subset)) {
    throw new TypeError(`imageDatasetFromDirectory: subset must be training, validation or both, got ${subset}`);
  }
  if (validationSplit !== undefined && shuffle && options.seed === undefined) {
    throw new TypeError(
      "imageDatasetFromDirectory: with validationSplit and shuffle, give a `seed` so the training and validation " +
        "subsets cannot overlap",
    );
  }
  const seed = options.seed ?? randomSeed();
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) {
    throw new RangeError(`imageDatasetFromDirectory: seed must be an integer in [0, 2^32), got ${seed}`);
  }
  return { height, width, channels, colorMode, labelMode, batchSize, shuffle, seed, validationSplit };
}

/** The class folders' image files, in Keras' order: by class, then by walk order within one. */
async function indexDirectory(
  dir: string,
  wanted: readonly string[] | undefined,
): Promise<{ paths: string[]; labels: number[]; classNames: string[] }> {
  let entries: import("node:fs").Dirent[];
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch (e) {
    throw new Error(`imageDatasetFromDirectory: cannot read directory ${dir}: ${(e as Error).message}`);
  }
  const subdirs = entries
    .filter((e) => e.isDirectory() && !e.name.startsWith("."))
    .map((e) => e.name)
    .sort(byCodePoint);
  let classNames = subdirs;
  if (wanted) {
    const missing = wanted.filter((c) => !subdirs.includes(c));
    if (missing.length > 0) {
      throw new Error(
        `imageDatasetFromDirectory: classNames [${missing.join(", ")}] are not subfolders of ${dir} ([${subdirs.join(", ")}])`,
      );
    }
    classNames = [...wanted];
  }
  const paths: string[] = [];
  const labels: number[] = [];
  for (const [label, name] of classNames.entries()) {
    for (const file of await walk(join(dir, name))) {
      paths.push(file);
      labels.push(label);
    }
  }
  return { paths, labels, classNames };
}

function byCodePoint(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * Image files under `root`, as Keras lists them: `os.walk` sorted by folder path, files sorted
 * within each folder. Symbolic links are not followed (Keras' default).
 */
async function walk(root: string): Promise<string[]> {
  const folders: [string, string[]][] = [];
  const visit = async (folder: string) => {
    let entries: import("node:fs").Dirent[];
    try {
      entries = await readdir(folder, { withFileTypes: true });
    } catch (e) {
      throw new Error(`imageDatasetFromDirectory: cannot read directory ${folder}: ${(e as Error).message}`);
    }
    const files = entries
      .filter((e) => e.isFile() && FORMATS.some((f) => e.name.toLowerCase().endsWith(f)))
      .map((e) => e.name)
      .sort(byCodePoint);
    folders.push([folder, files]);
    for (const e of entries) if (e.isDirectory()) await visit(join(folder, e.name));
  };
  await visit(root);
  folders.sort((a, b) => byCodePoint(a[0], b[0]));
  return folders.flatMap(([folder, files]) => files.map((f) => join(folder, f)));
}

/** Keras' split: the last `floor(split * n)` files validate, the others train. */
function splitOf(
  paths: string[],
  labels: number[],
  split: number | undefined,
  subset: "training" | "validation" | undefined,
): [string[], number[]] {
  if (split === undefined || subset === undefined) return [paths, labels];
  const cut = paths.length - Math.floor(split * paths.length);
  return subset === "training" ? [paths.slice(0, cut), labels.slice(0, cut)] : [paths.slice(cut), labels.slice(cut)];
}

function build(
  paths: string[],
  labels: number[],
  classNames: string[],
  o: Checked,
  shuffle: boolean,
): ImageDataset<ImageBatch | { xs: Tensor }> {
  let files = Dataset.fromGenerator(() => paths.map((path, i) => ({ path, label: labels[i] })));
  // tf.data's per-epoch shuffle of the training files, with Keras' buffer of 8 batches.
  if (shuffle) files = files.shuffle(o.batchSize * 8, { seed: o.seed });
  const batches = files
    .chunk(o.batchSize)
    .map(async (group) => {
      const data = await native.decodeImages(
        group.map((f) => f.path),
        o.height,
        o.width,
        o.channels,
      );
      const xs = new Tensor(data, [group.length, o.height, o.width, o.channels]);
      if (o.labelMode === null) return { xs };
      return {
        xs,
        ys: encodeLabels(
          group.map((f) => f.label),
          o.labelMode,
          classNames.length,
        ),
      };
    })
    // Decode the next batches while the model trains on this one.
    .prefetch(2);
  return new ImageDataset(batches, classNames, paths);
}

function encodeLabels(labels: number[], mode: "int" | "categorical" | "binary", classes: number): Tensor {
  if (mode === "int") return new Tensor(Float32Array.from(labels), [labels.length]);
  if (mode === "binary") return new Tensor(Float32Array.from(labels), [labels.length, 1]);
  const out = new Float32Array(labels.length * classes);
  labels.forEach((l, i) => {
    out[i * classes + l] = 1;
  });
  return new Tensor(out, [labels.length, classes]);
}
