/**
 * Attention and normalization layers. MultiHeadAttention runs a fused, tiled (flash-style)
 * Rust kernel that only materialises the attention matrix when scores are requested.
 */
import { type InitializerSpec, Layer, type LayerArgs } from "./layers.ts";

/** Options of {@link multiHeadAttention}. */
export interface MultiHeadAttentionArgs extends LayerArgs {
  /** Number of heads. */
  numHeads: number;
  /** Size of each query/key head. */
  keyDim: number;
  /** Size of each value head (default keyDim). */
  valueDim?: number;
  /** Dropout on the attention probabilities during training (default 0). */
  dropout?: number;
  /** Biases on the projections (default true). */
  useBias?: boolean;
  /** Output size (default: the query's last dimension). */
  outputShape?: number;
  /** Mask future positions (decoder self-attention). */
  useCausalMask?: boolean;
  /** Also output the attention probabilities `[batch, heads, tq, tv]` as a second output. */
  returnAttentionScores?: boolean;
  /** The last input is an explicit `[batch, tq, tv]` 0/1 attention mask. */
  attentionMaskInput?: boolean;
  /** Projection kernel initializer (default glorotUniform). */
  kernelInitializer?: InitializerSpec;
  /** Projection bias initializer (default zeros). */
  biasInitializer?: InitializerSpec;
}

/** Multi-head attention; call on `[query, value]` or `[query, value, key]`. */
export function multiHeadAttention(args: MultiHeadAttentionArgs): Layer {
  return new Layer("MultiHeadAttention", args);
}

/** Options of {@link layerNormalization}. */
export interface LayerNormalizationArgs extends LayerArgs {
  /** Small constant for stability (default 1e-3). */
  epsilon?: number;
  /** Learn an offset beta (default true). */
  center?: boolean;
  /** Learn a scale gamma (default true). */
  scale?: boolean;
}

/** Normalises each sample over its last axis. */
export function layerNormalization(args: LayerNormalizationArgs = {}): Layer {
  return new Layer("LayerNormalization", args);
}

/** Options of {@link batchNormalization}. */
export interface BatchNormalizationArgs extends LayerArgs {
  /** Decay of the moving statistics (default 0.99). */
  momentum?: number;
  /** Small constant for stability (default 1e-3). */
  epsilon?: number;
  /** Learn an offset beta (default true). */
  center?: boolean;
  /** Learn a scale gamma (default true). */
  scale?: boolean;
}

/** Normalises over the batch during training, with moving statistics for inference. */
export function batchNormalization(args: BatchNormalizationArgs = {}): Layer {
  return new Layer("BatchNormalization", args);
}
