/**
 * Explanations computed in Rust: saliency maps (Simonyan et al. 2014), integrated gradients
 * (Sundararajan et al. 2017), Grad-CAM (Selvaraju et al. 2017), attention maps of
 * multiHeadAttention layers, the model-randomisation sanity check of Adebayo et al. 2018, and
 * PNG heatmap grids.
 */

import { writePng } from "./image.ts";
import { Model } from "./model.ts";
import { native } from "./native.ts";
import { expectTensor, Tensor } from "./tensor.ts";

/** Which class to explain. */
export interface TargetArgs {
  /** One class for all samples, one per sample, or (default) each sample's predicted class. */
  target?: number | number[];
  /** Which model output (default 0). */
  output?: number;
}

async function targets(model: Model, x: Tensor, args: TargetArgs): Promise<number[]> {
  const n = x.shape[0];
  if (typeof args.target === "number") return new Array(n).fill(args.target);
  if (Array.isArray(args.target)) {
    if (args.target.length !== n) throw new RangeError(`explain: ${args.target.length} targets for ${n} samples`);
    return args.target;
  }
  const pred = await model.predict(x);
  const out = Array.isArray(pred) ? pred[args.output ?? 0] : pred;
  const k = out.shape[out.shape.length - 1];
  return Array.from({ length: n }, (_, i) => {
    let best = 0;
    for (let c = 1; c < k; c++) if (out.data[i * k + c] > out.data[i * k + best]) best = c;
    return best;
  });
}

/** `|d score / d x|`: how much each input value moves the target class's score; shaped like `x`. */
export async function saliency(model: Model, x: Tensor, args: TargetArgs = {}): Promise<Tensor> {
  expectTensor(x, "saliency: x");
  const classes = await targets(model, x, args);
  const r = await model.native.inputGradients([x.data], [[...x.shape]], classes, args.output ?? 0);
  const g = r.tensors[0];
  return new Tensor(g.data.map(Math.abs), g.shape);
}

/** Options of {@link integratedGradients}. */
export interface IntegratedGradientsArgs extends TargetArgs {
  /** The reference input: one sample (a Tensor without the batch axis is fine) or a number (default 0: a black image). */
  baseline?: Tensor | number;
  /** Intervals of the path integral (trapezoid rule; default 64). */
  steps?: number;
}

/**
 * Attributions that sum to `score(x) - score(baseline)` for the target class (completeness),
 * shaped like `x`.
 */
export async function integratedGradients(
  model: Model,
  x: Tensor,
  args: IntegratedGradientsArgs = {},
): Promise<Tensor> {
  expectTensor(x, "integratedGradients: x");
  const classes = await targets(model, x, args);
  const row = x.data.length / x.shape[0];
  const base =
    args.baseline instanceof Tensor
      ? args.baseline
      : new Tensor(new Float32Array(row).fill(args.baseline ?? 0), [1, ...x.shape.slice(1)]);
  const steps = args.steps ?? 64;
  if (!Number.isInteger(steps) || steps <= 0)
    throw new RangeError(`integratedGradients: steps must be a positive integer, got ${steps}`);
  const r = await model.native.integratedGradients(
    x.data,
    [...x.shape],
    base.data,
    [...base.shape],
    classes,
    args.output ?? 0,
    steps,
  );
  const a = r.tensors[0];
  return new Tensor(a.data, a.shape);
}

/** Options of {@link gradCam}. */
export interface GradCamArgs extends TargetArgs {
  /** Name of the (convolutional) layer whose activations are weighed. */
  layer: string;
}

/** Grad-CAM heatmaps, shaped like the layer's positions (`[batch, h, w]` for a conv layer). */
export async function gradCam(model: Model, x: Tensor, args: GradCamArgs): Promise<Tensor> {
  expectTensor(x, "gradCam: x");
  if (typeof args?.layer !== "string") throw new TypeError("gradCam: option 'layer' (a layer name) is required");
  const classes = await targets(model, x, args);
  const r = await model.native.gradCam([x.data], [[...x.shape]], args.layer, classes, args.output ?? 0);
  const h = r.tensors[0];
  return new Tensor(h.data, h.shape);
}

/** Options of {@link attentionMaps}. */
export interface AttentionMapsArgs {
  /** Name of the multiHeadAttention layer (it may sit in a nested model). */
  layer: string;
}

/**
 * The attention probabilities of a multiHeadAttention layer, `[batch, heads, query, key]`
 * (each row sums to 1 over the keys), from an inference pass of `model` on `x`: Keras'
 * `return_attention_scores` without rebuilding the model. A layer called more than once per
 * pass gives its first call's maps.
 */
export async function attentionMaps(model: Model, x: Tensor | Tensor[], args: AttentionMapsArgs): Promise<Tensor> {
  const xs = Array.isArray(x) ? x : [x];
  for (const [i, t] of xs.entries()) expectTensor(t, `attentionMaps: x[${i}]`);
  if (typeof args?.layer !== "string") throw new TypeError("attentionMaps: option 'layer' (a layer name) is required");
  const r = await model.native.attentionMaps(
    xs.map((t) => t.data),
    xs.map((t) => [...t.shape]),
    args.layer,
  );
  const s = r.tensors[0];
  return new Tensor(s.data, s.shape);
}

/** Spearman rank correlation of two equally long arrays (average ranks for ties). */
export function rankCorrelation(a: ArrayLike<number>, b: ArrayLike<number>): number {
  const ranks = (v: ArrayLike<number>) => {
    const order = Array.from({ length: v.length }, (_, i) => i).sort((i, j) => v[i] - v[j]);
    const r = new Float64Array(v.length);
    for (let s = 0; s < order.length; ) {
      let e = s;
      while (e + 1 < order.length && v[order[e + 1]] === v[order[s]]) e++;
      for (let k = s; k <= e; k++) r[order[k]] = (s + e) / 2;
      s = e + 1;
    }
    return r;
  };
  const [ra, rb] = [ranks(a), ranks(b)];
  const mean = (ra.length - 1) / 2;
  let num = 0;
  let da = 0;
  let db = 0;
  for (let i = 0; i < ra.length; i++) {
    num += (ra[i] - mean) * (rb[i] - mean);
    da += (ra[i] - mean) ** 2;
    db += (rb[i] - mean) ** 2;
  }
  return da === 0 || db === 0 ? 0 : num / Math.sqrt(da * db);
}

/** Options of {@link randomizationCheck}. */
export interface RandomizationCheckArgs extends TargetArgs {
  /** The explanation to test (default saliency). */
  method?: "saliency" | "integratedGradients";
  /** Seed of the randomised copy's weights. */
  seed?: number;
}

/**
 * The model-randomisation sanity check (Adebayo et al. 2018): explains `x` with the model and
 * with a copy of it whose weights are freshly initialised, and returns the rank correlation of
 * each sample's attribution magnitudes. Near 1 means the explanation ignores what the model
 * learned; a trustworthy method gives a low correlation.
 */
export async function randomizationCheck(
  model: Model,
  x: Tensor,
  args: RandomizationCheckArgs = {},
): Promise<{ correlations: number[]; mean: number }> {
  const classes = await targets(model, x, args);
  const random = new Model([], new native.NativeModel(JSON.stringify(model.toJSON()), args.seed ?? 1));
  random.build(x.shape.slice(1) as number[]);
  const explain = (m: Model) =>
    args.method === "integratedGradients"
      ? integratedGradients(m, x, { ...args, target: classes })
      : saliency(m, x, { ...args, target: classes });
  const [a, b] = [await explain(model), await explain(random)];
  const row = x.data.length / x.shape[0];
  const correlations = Array.from({ length: x.shape[0] }, (_, i) =>
    rankCorrelation(
      a.data.subarray(i * row, (i + 1) * row).map(Math.abs),
      b.data.subarray(i * row, (i + 1) * row).map(Math.abs),
    ),
  );
  return { correlations, mean: correlations.reduce((s, v) => s + v, 0) / correlations.length };
}

/** Options of {@link writeHeatmapGrid}. */
export interface HeatmapGridArgs {
  /** Images per row (default 10). */
  columns?: number;
  /** Pixel value range of the images (default `[0, 1]`). */
  range?: [number, number];
}

/**
 * Writes a PNG grid: each image (`[n, h, w]` or `[n, h, w, 1]`) in gray with its heatmap
 * (`[n, h', w']`, scaled to the image by nearest neighbour, normalised per image) in red over it.
 */
export async function writeHeatmapGrid(
  path: string,
  images: Tensor,
  heatmaps: Tensor,
  args: HeatmapGridArgs = {},
): Promise<void> {
  const [n, h, w] = images.shape;
  const [hn, hh, hw] = heatmaps.shape;
  if (hn !== n || heatmaps.shape.length !== 3 || images.data.length !== n * h * w) {
    throw new RangeError(`writeHeatmapGrid: ${images.shape} images need [${n}, h, w] heatmaps, got ${heatmaps.shape}`);
  }
  const columns = Math.min(args.columns ?? 10, n);
  const rows = Math.ceil(n / columns);
  const [lo, hi] = args.range ?? [0, 1];
  const width = columns * (w + 1);
  const height = rows * (h + 1);
  const rgb = new Uint8Array(width * height * 3);
  for (let i = 0; i < n; i++) {
    const heat = heatmaps.data.subarray(i * hh * hw, (i + 1) * hh * hw);
    let top = 0;
    for (const v of heat) top = Math.max(top, Math.abs(v));
    const [ox, oy] = [(i % columns) * (w + 1), Math.floor(i / columns) * (h + 1)];
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const g = Math.max(0, Math.min(1, (images.data[i * h * w + y * w + x] - lo) / (hi - lo)));
        const v = top > 0 ? Math.abs(heat[Math.floor((y * hh) / h) * hw + Math.floor((x * hw) / w)]) / top : 0;
        const p = ((oy + y) * width + ox + x) * 3;
        rgb[p] = Math.round(255 * Math.min(1, 0.6 * g + v));
        rgb[p + 1] = Math.round(255 * 0.6 * g * (1 - v));
        rgb[p + 2] = Math.round(255 * 0.6 * g * (1 - v));
      }
    }
  }
  await writePng(path, rgb, width, height, 3);
}
