/**
 * Listing 1 of the source material: an image classifier for 224x224 RGB images and 1,000
 * classes. conv 32 -> conv 64 (3x3, relu) -> max pool -> conv 128 -> max pool -> conv 256 ->
 * flatten -> dense 1024 -> dense 1000 softmax. Almost all of its weights are in the first dense
 * layer (the flattened 52x52x256 map times 1024), so it is ~710M parameters with Keras' default
 * 'valid' padding (~823M with 'same'); see README.md.
 *
 *   npx tsx examples/seed/cnn.ts            (STEPS=1 BATCH=2 PADDING=valid by default)
 */
import {
  adam,
  conv2d,
  dense,
  flatten,
  maxPooling2d,
  type Sequential,
  sequential,
  setSeed,
  tensor,
} from "../../index.ts";
import { integers, isMain, normals, paramCount, peakRssGb, seconds, uniforms } from "./common.ts";

/** The listing's shapes, adjustable so a test can build the same stack small. */
export interface CnnShape {
  /** Image height and width (default 224). */
  size?: number;
  /** Colour channels (default 3). */
  channels?: number;
  /** Classes (default 1000). */
  classes?: number;
  /** Units of the hidden dense layer (default 1024). */
  hidden?: number;
  /** Convolution padding (default 'valid', Keras' default; the listing gives none). */
  padding?: "valid" | "same";
}

/** Builds and compiles the listing's model. */
export function buildCnn(shape: CnnShape = {}): Sequential {
  const { size = 224, channels = 3, classes = 1000, hidden = 1024, padding = "valid" } = shape;
  const conv = (filters: number, first = false) =>
    conv2d({
      filters,
      kernelSize: 3,
      activation: "relu",
      padding,
      ...(first ? { inputShape: [size, size, channels] } : {}),
    });
  const m = sequential(
    [
      conv(32, true),
      conv(64),
      maxPooling2d({ poolSize: 2 }),
      conv(128),
      maxPooling2d({ poolSize: 2 }),
      conv(256),
      flatten(),
      dense({ units: hidden, activation: "relu" }),
      dense({ units: classes, activation: "softmax" }),
    ],
    { name: "seed_cnn" },
  );
  // Integer labels, so the sparse loss (the listing's one-hot 'categoricalCrossentropy' would need
  // a 1000-wide label per image for no gain).
  m.compile({ optimizer: adam({ learningRate: 1e-3 }), loss: "sparseCategoricalCrossentropy", metrics: ["accuracy"] });
  return m;
}

/**
 * The parameter count of {@link buildCnn} in closed form: four 3x3 convolutions (kernel + bias),
 * the flattened map into the hidden layer, and the hidden layer into the classes.
 */
export function cnnParams(shape: CnnShape = {}): number {
  const { size = 224, channels = 3, classes = 1000, hidden = 1024, padding = "valid" } = shape;
  const convOut = (n: number) => (padding === "valid" ? n - 2 : n);
  const pool = (n: number) => Math.floor(n / 2);
  const side = convOut(pool(convOut(pool(convOut(convOut(size))))));
  const conv = (cin: number, cout: number) => 9 * cin * cout + cout;
  return (
    conv(channels, 32) +
    conv(32, 64) +
    conv(64, 128) +
    conv(128, 256) +
    (side * side * 256 * hidden + hidden) +
    (hidden * classes + classes)
  );
}

/** Builds the model and trains it `steps` steps on random images and labels; returns what it measured. */
export async function main(
  args: CnnShape & { steps?: number; batch?: number; quiet?: boolean } = {},
): Promise<{ params: number; buildSeconds: number; stepSeconds: number[]; losses: number[]; peakGb: number }> {
  const { steps = 1, batch = 2, quiet = false } = args;
  const { size = 224, channels = 3, classes = 1000 } = args;
  const log = quiet ? () => {} : console.log;
  setSeed(1);
  let t0 = performance.now();
  const m = buildCnn(args);
  const params = paramCount(m);
  const buildSeconds = seconds(t0);
  if (!quiet) m.summary();
  log(
    `cnn: ${params.toLocaleString("en-US")} parameters (formula: ${cnnParams(args).toLocaleString("en-US")}), built in ${buildSeconds.toFixed(1)} s`,
  );
  const next = uniforms(11);
  const stepSeconds: number[] = [];
  const losses: number[] = [];
  for (let s = 0; s < steps; s++) {
    const x = tensor(normals(batch * size * size * channels, next), [batch, size, size, channels]);
    const y = tensor(integers(batch, classes, next), [batch]);
    t0 = performance.now();
    const logs = await m.trainOnBatch(x, y);
    stepSeconds.push(seconds(t0));
    losses.push(logs.loss);
    log(`cnn: step ${s + 1}/${steps} (batch ${batch}) loss ${logs.loss.toFixed(4)} in ${stepSeconds[s].toFixed(1)} s`);
  }
  const peakGb = peakRssGb();
  log(`cnn: peak memory ${peakGb.toFixed(1)} GB`);
  return { params, buildSeconds, stepSeconds, losses, peakGb };
}

if (isMain(import.meta.url)) {
  const padding = (process.env.PADDING ?? "valid") as "valid" | "same";
  if (padding !== "valid" && padding !== "same") throw new Error(`PADDING must be 'valid' or 'same', got '${padding}'`);
  await main({ steps: Number(process.env.STEPS ?? 1), batch: Number(process.env.BATCH ?? 2), padding });
}
