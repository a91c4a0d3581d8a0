/**
 * Sequence and image layers beyond the basics: conv1d, conv2dTranspose, upSampling2d,
 * zeroPadding2d, globalAveragePooling1d, embedding and a learned positional embedding.
 */
import { type ActivationName, type InitializerSpec, Layer, type LayerArgs } from "./layers.ts";

/** Options of {@link conv1d}. */
export interface Conv1dArgs extends LayerArgs {
  /** Output channels. */
  filters: number;
  /** Window length. */
  kernelSize: number;
  /** Step (default 1). */
  strides?: number;
  /** `'valid'` (default), `'same'` or `'causal'` (left padding only). */
  padding?: "valid" | "same" | "causal";
  /** Spacing between taps (default 1). */
  dilationRate?: number;
  /** Output activation (default linear). */
  activation?: ActivationName;
  /** Add a bias (default true). */
  useBias?: boolean;
  /** Kernel initializer. */
  kernelInitializer?: InitializerSpec;
  /** Bias initializer. */
  biasInitializer?: InitializerSpec;
}

/** 1-D convolution over `[batch, time, channels]` with a `[k, in, out]` kernel. */
export function conv1d(args: Conv1dArgs): Layer {
  return new Layer("Conv1D", args);
}

/** Options of {@link conv2dTranspose}. */
export interface Conv2dTransposeArgs extends LayerArgs {
  /** Output channels. */
  filters: number;
  /** Window size. */
  kernelSize: number | [number, number];
  /** Upsampling factor (default 1). */
  strides?: number | [number, number];
  /** `'valid'` (default) or `'same'` (output = input * stride). */
  padding?: "valid" | "same";
  /** Spacing between kernel taps (default 1; not combined with strides > 1). */
  dilationRate?: number | [number, number];
  /** Output activation (default linear). */
  activation?: ActivationName;
  /** Add a bias (default true). */
  useBias?: boolean;
  /** Kernel initializer. */
  kernelInitializer?: InitializerSpec;
  /** Bias initializer. */
  biasInitializer?: InitializerSpec;
}

/** Transposed 2-D convolution (learned upsampling) with a `[kh, kw, out, in]` kernel. */
export function conv2dTranspose(args: Conv2dTransposeArgs): Layer {
  return new Layer("Conv2DTranspose", args);
}

/** Repeats rows and columns `size` times (nearest neighbour). */
export function upSampling2d(
  args: LayerArgs & { size?: number | [number, number]; interpolation?: "nearest" } = {},
): Layer {
  return new Layer("UpSampling2D", args);
}

/** Pads height and width with zeros: `n`, `[h, w]` or `[[top, bottom], [left, right]]`. */
export function zeroPadding2d(
  args: LayerArgs & { padding?: number | [number, number] | [[number, number], [number, number]] } = {},
): Layer {
  return new Layer("ZeroPadding2D", args);
}

/** Mean over time: `[b, t, c] -> [b, c]` (masked steps excluded). */
export function globalAveragePooling1d(args: LayerArgs & { keepdims?: boolean } = {}): Layer {
  return new Layer("GlobalAveragePooling1D", args);
}

/** Options of {@link embedding}. */
export interface EmbeddingArgs extends LayerArgs {
  /** Vocabulary size. */
  inputDim: number;
  /** Vector size. */
  outputDim: number;
  /** Treat index 0 as padding and mask it for later layers (default false). */
  maskZero?: boolean;
  /** Table initializer (default randomUniform ±0.05). */
  embeddingsInitializer?: InitializerSpec;
}

/** Looks up a vector per integer index: `[b, t] -> [b, t, outputDim]`. */
export function embedding(args: EmbeddingArgs): Layer {
  return new Layer("Embedding", args);
}

/** Adds a learned vector per position to `[b, t, d]` inputs (t <= sequenceLength). */
export function positionalEmbedding(
  args: LayerArgs & { sequenceLength: number; initializer?: InitializerSpec },
): Layer {
  return new Layer("PositionalEmbedding", args);
}
