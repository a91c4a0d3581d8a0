/**
 * The functional API: `input({ shape })`, `layer.apply(symbolic)` and
 * `model({ inputs, outputs })` describe a graph of layers; Rust runs it.
 */
import type { Layer } from "./layers.ts";

/** Where a symbolic tensor comes from: a model input, or output `index` of a layer call. */
export interface SymbolicSource {
  layer: Layer | { native: { id: number } };
  inputs: SymbolicTensor[];
  index: number;
}

/** A placeholder for a batch of tensors with a known sample shape (no batch axis). */
export class SymbolicTensor {
  constructor(
    /** Sample shape, without the batch axis. */
    readonly shape: readonly number[],
    /** The call that produces it; undefined for model inputs. */
    readonly source?: SymbolicSource,
    /** Name of a model input. */
    readonly name?: string,
  ) {}

  toString(): string {
    return `SymbolicTensor[None, ${this.shape.join(", ")}]`;
  }
}

/** Arguments of {@link input}. */
export interface InputArgs {
  /** Sample shape, without the batch axis. */
  shape: number[];
  /** Optional name. */
  name?: string;
}

/** A model input: the start of a functional graph. */
export function input(args: InputArgs): SymbolicTensor {
  if (!args || !Array.isArray(args.shape) || args.shape.some((d) => !Number.isInteger(d) || d <= 0)) {
    throw new TypeError(`input: shape must be an array of positive integers, got ${JSON.stringify(args?.shape)}`);
  }
  return new SymbolicTensor([...args.shape], undefined, args.name);
}

/** The serialisable graph of a functional model. */
export interface GraphDescription {
  className: "Functional";
  name?: string;
  layers: { ref: number }[];
  inputs: number[][];
  inputNames: string[];
  nodes: { layer: number; inputs: [number, number][] }[];
  outputs: [number, number][];
}

/** Walks back from `outputs` to `inputs` and numbers layers and calls (topological order). */
export function describeGraph(inputs: SymbolicTensor[], outputs: SymbolicTensor[], name?: string): GraphDescription {
  const layerIds: number[] = [];
  const nodes: GraphDescription["nodes"] = [];
  const nodeOf = new Map<SymbolicSource, number>();
  const refOf = (t: SymbolicTensor): [number, number] => {
    const i = inputs.indexOf(t);
    if (i >= 0) return [-1, i];
    if (!t.source) {
      throw new Error(`model: ${t} is an input() that is not listed in 'inputs'`);
    }
    return [visit(t.source), t.source.index];
  };
  // One node per call; all outputs of a call share its source object identity via inputs+layer.
  const callKey = new Map<string, SymbolicSource>();
  const visit = (src: SymbolicSource): number => {
    const key = `${src.layer.native.id}:${src.inputs.map((t) => objectId(t)).join(",")}`;
    const canonical = callKey.get(key) ?? src;
    callKey.set(key, canonical);
    const known = nodeOf.get(canonical);
    if (known !== undefined) return known;
    const ins = src.inputs.map(refOf);
    let layer = layerIds.indexOf(src.layer.native.id);
    if (layer < 0) layer = layerIds.push(src.layer.native.id) - 1;
    const index = nodes.push({ layer, inputs: ins }) - 1;
    nodeOf.set(canonical, index);
    return index;
  };
  const outRefs = outputs.map(refOf);
  return {
    className: "Functional",
    name,
    layers: layerIds.map((id) => ({ ref: id })),
    inputs: inputs.map((t) => [...t.shape]),
    // Keras' default names, so named inputs work the same for a model built here or loaded.
    inputNames: inputs.map((t, i) => t.name ?? (i === 0 ? "input_layer" : `input_layer_${i}`)),
    nodes,
    outputs: outRefs,
  };
}

const ids = new WeakMap<object, number>();
let nextId = 0;
function objectId(o: object): number {
  let id = ids.get(o);
  if (id === undefined) {
    id = nextId++;
    ids.set(o, id);
  }
  return id;
}
