/**
 * A transformer encoder block written with the public functional API:
 * x + MHA(LN(x)), then + FFN(LN(.)) (pre-norm, as in ViT).
 */
import { add, dense, dropout, layerNormalization, multiHeadAttention, type SymbolicTensor } from "../index.ts";

/** Options of {@link transformerEncoder}. */
export interface EncoderArgs {
  /** Attention heads. */
  numHeads: number;
  /** Hidden size of the feed-forward network. */
  ffDim: number;
  /** Dropout after attention and inside the feed-forward network (default 0). */
  rate?: number;
}

/** Applies one encoder block to `x` (`[batch, tokens, dim]`); returns the same shape. */
export function transformerEncoder(x: SymbolicTensor, args: EncoderArgs): SymbolicTensor {
  const dim = x.shape[x.shape.length - 1];
  const rate = args.rate ?? 0;
  const normed = layerNormalization({ epsilon: 1e-6 }).apply(x);
  let attended = multiHeadAttention({ numHeads: args.numHeads, keyDim: dim / args.numHeads }).apply([normed, normed]);
  if (rate > 0) attended = dropout({ rate }).apply(attended);
  const h = add().apply([x, attended]);
  let ff = dense({ units: args.ffDim, activation: "gelu" }).apply(layerNormalization({ epsilon: 1e-6 }).apply(h));
  if (rate > 0) ff = dropout({ rate }).apply(ff);
  return add().apply([h, dense({ units: dim }).apply(ff)]);
}
