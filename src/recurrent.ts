/**
 * Recurrent layers (SimpleRNN, LSTM, GRU, Bidirectional). Each runs the whole sequence, forward
 * and backward (BPTT), in one fused Rust kernel per batch.
 */
import { type ActivationName, type DaleArgs, type InitializerSpec, Layer, type LayerArgs } from "./layers.ts";

/** Options shared by the recurrent layers. */
export interface RecurrentArgs extends LayerArgs {
  /** State size. */
  units: number;
  /** Output activation (default tanh). */
  activation?: ActivationName;
  /** Add biases (default true). */
  useBias?: boolean;
  /** Return the output of every step `[batch, time, units]` instead of the last `[batch, units]`. */
  returnSequences?: boolean;
  /** Also return the final state(s): outputs become `[output, h]` (LSTM: `[output, h, c]`). */
  returnState?: boolean;
  /** Process the sequence in reverse (the returned sequence is in reversed order, as in Keras). */
  goBackwards?: boolean;
  /** Input kernel initializer (default glorotUniform). */
  kernelInitializer?: InitializerSpec;
  /** Recurrent kernel initializer (default orthogonal). */
  recurrentInitializer?: InitializerSpec | "orthogonal";
  /** Bias initializer (default zeros). */
  biasInitializer?: InitializerSpec;
}

/** Options of {@link lstm} and {@link gru}. */
export interface GatedArgs extends RecurrentArgs {
  /** Gate activation (default sigmoid). */
  recurrentActivation?: ActivationName;
}

/** Fully connected recurrent layer: `h = tanh(x W + h U + b)`. */
export function simpleRNN(args: RecurrentArgs): Layer {
  return new Layer("SimpleRNN", args);
}

/** Arguments of {@link eiRNN}: those of {@link simpleRNN} (activation default relu) and the E/I split. */
export interface EIRNNArgs extends RecurrentArgs, DaleArgs {}

/**
 * The excitatory-inhibitory RNN of Song, Yang and Wang 2016 ("Training excitatory-inhibitory
 * recurrent neural networks for cognitive tasks"): a {@link simpleRNN} (default activation relu)
 * whose recurrent kernel `[units, units]` has row `i` >= 0 for the first
 * `round(excitatoryFraction * units)` units and <= 0 for the others (`|W| D`, D the diagonal
 * of unit signs), and whose input kernel rows follow `inputExcitatoryFraction` (default 1:
 * non-negative input weights). The constraint is kept by projection after every optimizer step,
 * and `getWeights` returns the signed weights. CPU training only; not writable to Keras,
 * TensorFlow.js or ONNX.
 */
export function eiRNN(args: EIRNNArgs): Layer {
  return new Layer("EIRNN", args);
}

/** Long short-term memory (Keras gate order i, f, c, o). */
export function lstm(args: GatedArgs & { unitForgetBias?: boolean }): Layer {
  return new Layer("LSTM", args);
}

/** Gated recurrent unit, Keras 3 `resetAfter: true` form (gates z, r, h). */
export function gru(args: GatedArgs & { resetAfter?: true }): Layer {
  return new Layer("GRU", args);
}

/** Runs a recurrent layer forwards and backwards and merges the two. */
export function bidirectional(args: LayerArgs & { layer: Layer; mergeMode?: "concat" | "sum" | "mul" | "ave" }): Layer {
  const { layer, ...rest } = args;
  if (!(layer instanceof Layer)) throw new TypeError("bidirectional: 'layer' must be a recurrent layer");
  return new Layer("Bidirectional", { ...rest, layer: layer.toJSON() });
}
