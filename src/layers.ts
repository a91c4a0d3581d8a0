/**
 * Keras layers (camelCase arguments, channels-last). A layer is a description that a model
 * sends to Rust; it can also be used on its own: `build(inputShape)`, `setWeights`, `apply(x)`.
 */
import { SymbolicTensor } from "./functional.ts";
import { type NativeGradScope, type NativeGrads, type NativeLayer, native } from "./native.ts";
import { expectTensor, Tensor } from "./tensor.ts";

/** Activation names accepted by `activation` options. */
export type ActivationName =
  | "linear"
  | "relu"
  | "sigmoid"
  | "tanh"
  | "softmax"
  | "logSoftmax"
  | "gelu"
  | "geluTanh"
  | "elu"
  | "selu"
  | "leakyRelu"
  | "swish"
  | "softplus";

/** Initializer names, or `{ name: 'randomNormal', mean, stddev }` / `{ name: 'randomUniform', minval, maxval }`. */
export type InitializerSpec =
  | "glorotUniform"
  | "glorotNormal"
  | "heNormal"
  | "heUniform"
  | "lecunNormal"
  | "zeros"
  | "ones"
  | "randomNormal"
  | "randomUniform"
  | { name: "randomNormal"; mean?: number; stddev?: number }
  | { name: "randomUniform"; minval?: number; maxval?: number };

/** Options every layer accepts. */
export interface LayerArgs {
  /** Unique name inside the model (default: Keras-style `dense`, `dense_1`, ...). */
  name?: string;
  /** Sample shape without the batch axis; give it to the first layer of a model. */
  inputShape?: number[];
  /** Whether the layer's weights are updated by training (default true). */
  trainable?: boolean;
}

/** Arguments of {@link dense}. */
export interface DenseArgs extends LayerArgs {
  /** Output size. */
  units: number;
  /** Activation applied to the output (default linear). */
  activation?: ActivationName;
  /** Add a bias (default true). */
  useBias?: boolean;
  /** Kernel initializer (default glorotUniform). */
  kernelInitializer?: InitializerSpec;
  /** Bias initializer (default zeros). */
  biasInitializer?: InitializerSpec;
}

/** Arguments of {@link conv2d}. */
export interface Conv2dArgs extends LayerArgs {
  /** Number of output channels. */
  filters: number;
  /** Window size: `3` or `[3, 3]`. */
  kernelSize: number | [number, number];
  /** Step between windows (default 1). */
  strides?: number | [number, number];
  /** `'valid'` (no padding, default) or `'same'` (TensorFlow padding: output = ceil(input / stride)). */
  padding?: "valid" | "same";
  /** Spacing between kernel taps (default 1). */
  dilationRate?: number | [number, number];
  /** Activation applied to the output (default linear). */
  activation?: ActivationName;
  /** Add a bias (default true). */
  useBias?: boolean;
  /** Kernel initializer (default glorotUniform). */
  kernelInitializer?: InitializerSpec;
  /** Bias initializer (default zeros). */
  biasInitializer?: InitializerSpec;
}

/** Arguments of {@link maxPooling2d} and {@link averagePooling2d}. */
export interface Pooling2dArgs extends LayerArgs {
  /** Window size (default 2). */
  poolSize?: number | [number, number];
  /** Step between windows (default: the pool size). */
  strides?: number | [number, number];
  /** `'valid'` (default) or `'same'`. */
  padding?: "valid" | "same";
}

/** Arguments of {@link reshape}. */
export interface ReshapeArgs extends LayerArgs {
  /** Sample shape after reshaping (no batch axis). */
  targetShape: number[];
}

/** Arguments of {@link dropout}. */
export interface DropoutArgs extends LayerArgs {
  /** Fraction of values zeroed during training, in [0, 1). */
  rate: number;
}

/** Arguments of {@link gaussianNoise}. */
export interface GaussianNoiseArgs extends LayerArgs {
  /** Standard deviation of the noise added during training. */
  stddev: number;
}

/** Arguments of {@link gaussianDropout}. */
export interface GaussianDropoutArgs extends LayerArgs {
  /** Drop probability in [0, 1): the multiplicative noise has variance `rate / (1 - rate)`. */
  rate: number;
}

/** Arguments of {@link activation}. */
export interface ActivationArgs extends LayerArgs {
  /** The function to apply. */
  activation: ActivationName;
}

/** The serialised form of a layer: its Keras class name and options. */
export interface LayerConfig {
  className: string;
  config: Record<string, unknown>;
}

/** Something `apply` can take symbolically: one symbolic tensor or several. */
export type SymbolicInput = SymbolicTensor | SymbolicTensor[];

/**
 * A layer. Its weights live in Rust and are shared by every model that uses it. Use it in
 * `sequential([...])`, call it on symbolic tensors (`layer.apply(input({ shape }))`) to build
 * functional models, or eagerly on Tensors after `build`.
 */
export class Layer {
  /** Keras class name, e.g. `Dense`. */
  readonly className: string;
  /** The options it was created with. */
  readonly config: Readonly<Record<string, unknown>>;
  /** @internal */
  readonly native: NativeLayer;

  constructor(className: string, config: object, handle?: NativeLayer) {
    if (config === null || typeof config !== "object" || Array.isArray(config)) {
      throw new TypeError(`${className}: expected an options object, got ${JSON.stringify(config)}`);
    }
    this.className = className;
    this.config = Object.freeze({ ...config }) as Record<string, unknown>;
    // Options are validated here, so mistakes surface where the layer is written.
    this.native = handle ?? new native.NativeLayer(className, JSON.stringify(this.config));
  }

  /** @internal Wraps a live native layer (the layers of a loaded model). */
  static fromNative(handle: NativeLayer): Layer {
    return new Layer(handle.className, JSON.parse(handle.config()), handle);
  }

  /** The layer's name (given, or a unique Keras-style default such as `dense_2`). */
  get name(): string {
    return this.native.name;
  }

  /** Whether training updates its weights; set before `compile` (Keras semantics). */
  get trainable(): boolean {
    return this.native.trainable;
  }
  set trainable(value: boolean) {
    this.native.trainable = value;
  }

  /** Creates the weights for samples of `inputShape` (no batch axis); returns the output sample shape. */
  build(inputShape: number[]): number[] {
    return this.native.build(inputShape);
  }

  /** Copies of the weights (kernel, then bias). */
  getWeights(): Tensor[] {
    return this.native.getWeights().map((w) => new Tensor(w.data, w.shape));
  }

  /** Replaces the weights, in `getWeights` order. */
  setWeights(weights: Tensor[]): void {
    if (!Array.isArray(weights)) throw new TypeError("setWeights: expected an array of Tensors");
    this.native.setWeights(weights.map((w, i) => expectTensor(w, `setWeights: weight ${i}`).data));
  }

  /**
   * On symbolic tensors: records a call and returns symbolic outputs (one, or an array for
   * several outputs). On a Tensor: computes the output eagerly (inference mode unless `training`).
   */
  apply(x: SymbolicInput, options?: { training?: boolean }): SymbolicTensor;
  apply(x: SymbolicInput, options: { training?: boolean; multiOutput: true }): SymbolicTensor[];
  apply(x: Tensor, options?: { training?: boolean }): Tensor;
  apply(x: Tensor | SymbolicInput, options: { training?: boolean; multiOutput?: boolean } = {}): unknown {
    if (x instanceof SymbolicTensor || (Array.isArray(x) && x.every((v) => v instanceof SymbolicTensor))) {
      const inputs = Array.isArray(x) ? x : [x];
      const shapes = this.native.outputShapes(inputs.map((t) => [...t.shape]));
      const outs = shapes.map((shape, i) => new SymbolicTensor(shape, { layer: this, inputs, index: i }));
      return outs.length === 1 && !options.multiOutput ? outs[0] : outs;
    }
    const input = expectTensor(x, `${this.className}.apply: x`);
    const out = this.native.apply(input.data, [...input.shape], options.training ?? false);
    return new Tensor(out.data, out.shape);
  }

  /** @internal Gradients of this layer's weights from a backward pass (for `valueAndGrads`). */
  gradsFrom(grads: NativeGrads): Tensor[] {
    return grads.ofLayer(this.native).map((g) => new Tensor(g.data, g.shape));
  }

  /** @internal Adds this layer's weights to a `valueAndGrads` scope. */
  addToGradScope(scope: NativeGradScope): void {
    scope.addLayer(this.native);
  }

  /** `{ className, config }` as given. */
  toJSON(): LayerConfig {
    return { className: this.className, config: { ...this.config } };
  }
}

/** Fully connected layer: `activation(x · kernel + bias)` on the last axis. */
export function dense(args: DenseArgs): Layer {
  return new Layer("Dense", args);
}

/** The E/I options of `eiRNN`, the recurrent layer that obeys Dale's law. */
export interface DaleArgs {
  /**
   * Fraction of this layer's units that are excitatory, in [0, 1] (default 0.8); the first
   * `round(fraction * units)` units are excitatory, the rest inhibitory. It fixes the signs of
   * the units' outgoing weights in the next E/I layer, which receives it as its
   * `inputExcitatoryFraction`.
   */
  excitatoryFraction?: number;
  /**
   * Fraction of the inputs that are excitatory, in [0, 1] (default 1: raw inputs count as
   * excitatory, so their weights are non-negative). Kernel row `i` (the weights leaving input
   * `i`) is >= 0 for the first `round(fraction * inputs)` inputs and <= 0 for the rest.
   */
  inputExcitatoryFraction?: number;
}

/** Arguments of {@link eiDense}. */
export interface EIDenseArgs extends LayerArgs {
  /** Number of excitatory output units. */
  units: number;
  /**
   * Number of inhibitory interneurons (default `round(units / 10)`, at least 1: the paper's
   * one interneuron for every ten excitatory units). 0 makes the row-sign layer (Song, Yang &
   * Wang 2016): no interneurons, a single `kernel` `|W| * D` whose row `i` has the sign `D` of
   * input `i` (see `inputExcitatoryFraction`), so `getWeights` returns `[kernel, bias]`. Its
   * initial weights are `|glorotUniform|` with the rows of excitatory inputs scaled by
   * `sqrt(nI / nE)` and those of inhibitory inputs by `sqrt(nE / nI)`, as `eiRNN`'s. It only has
   * weights of both signs after a layer with inhibitory units of its own (an `eiRNN`).
   */
  inhibitoryUnits?: number;
  /** Activation applied to the output (default linear). */
  activation?: ActivationName;
  /** Add a bias (default true). */
  useBias?: boolean;
  /**
   * Fraction of the inputs that are excitatory, in [0, 1] (default 1: raw inputs and the
   * outputs of another eiDense count as excitatory). After an `eiRNN` give its
   * `excitatoryFraction`: the rows of `kernel` and `inhibitoryKernel` leaving its inhibitory
   * units (the last ones) are then <= 0, and the rows of E and I inputs start balanced
   * (scaled by `sqrt(nI / nE)` and `sqrt(nE / nI)`).
   */
  inputExcitatoryFraction?: number;
}

/**
 * A dense layer obeying Dale's law: the DANN layer of Cornford et al. 2021 ("Learning to live
 * with Dale's principle"). Its `units` outputs are excitatory, and `inhibitoryUnits` linear
 * interneurons driven by the same inputs inhibit them:
 * `activation(x · kernel + (x · inhibitoryKernel) · inhibitoryOutput + bias)` with `kernel`
 * `[in, units]` >= 0, `inhibitoryKernel` `[in, inhibitoryUnits]` >= 0 and `inhibitoryOutput`
 * `[inhibitoryUnits, units]` <= 0; `getWeights` returns these four, signed. Initialisation is
 * the paper's: exponential excitatory weights, interneurons balancing them in expectation.
 * `inhibitoryUnits: 0` gives the row-sign layer instead (see {@link EIDenseArgs}), the readout
 * for an `eiRNN`.
 * After every optimizer step (`fit` and `applyGradients`) a weight whose sign flipped is set to
 * 0. The paper's corrected SGD (scaled interneuron gradients) is not applied: under adam and
 * the other per-weight-normalising optimizers a constant gradient scale has no effect. Trains
 * on the GPU too (through the layers' own GPU ops; the sign projection after each step reads
 * the constrained weights back to the host); the Keras, TensorFlow.js and ONNX writers refuse
 * it.
 */
export function eiDense(args: EIDenseArgs): Layer {
  return new Layer("EIDense", args);
}

/** 2-D convolution over NHWC images with a `[kh, kw, in, out]` kernel. */
export function conv2d(args: Conv2dArgs): Layer {
  return new Layer("Conv2D", args);
}

/** Max over each window. */
export function maxPooling2d(args: Pooling2dArgs = {}): Layer {
  return new Layer("MaxPooling2D", args);
}

/** Mean over each window (`same` padding does not count padded cells). */
export function averagePooling2d(args: Pooling2dArgs = {}): Layer {
  return new Layer("AveragePooling2D", args);
}

/** Mean over height and width: `[b, h, w, c] -> [b, c]`. */
export function globalAveragePooling2d(args: LayerArgs = {}): Layer {
  return new Layer("GlobalAveragePooling2D", args);
}

/** Flattens each sample to a vector. */
export function flatten(args: LayerArgs = {}): Layer {
  return new Layer("Flatten", args);
}

/** Reshapes each sample to `targetShape`. */
export function reshape(args: ReshapeArgs): Layer {
  return new Layer("Reshape", args);
}

/** Zeroes a fraction `rate` of values during training (inverted dropout). */
export function dropout(args: DropoutArgs): Layer {
  return new Layer("Dropout", args);
}

/** Adds zero-mean Gaussian noise during training (a regulariser against noisy inputs); the identity in inference. */
export function gaussianNoise(args: GaussianNoiseArgs): Layer {
  return new Layer("GaussianNoise", args);
}

/** Multiplies by Gaussian noise of mean 1 during training (Gaussian dropout); the identity in inference. */
export function gaussianDropout(args: GaussianDropoutArgs): Layer {
  return new Layer("GaussianDropout", args);
}

/** Applies an activation function. */
export function activation(args: ActivationArgs): Layer {
  return new Layer("Activation", args);
}

/** Elementwise sum of two or more inputs of equal shape (functional models). */
export function add(args: LayerArgs = {}): Layer {
  return new Layer("Add", args);
}

/** Elementwise product of two or more inputs of equal shape (functional models). */
export function multiply(args: LayerArgs = {}): Layer {
  return new Layer("Multiply", args);
}

/** Joins two or more inputs along `axis` (default -1, the last). */
export function concatenate(args: LayerArgs & { axis?: number } = {}): Layer {
  return new Layer("Concatenate", args);
}
