// Inference-only execution of a frozen backbone. Each Conv2D/DepthwiseConv2D -> BatchNormalization
// -> activation chain becomes one fused conv with the BN folded into its kernel and bias:
//   s = gamma / sqrt(moving_variance + epsilon);  W' = W * s;  b' = (b - moving_mean) * s + beta
// so the forward pass runs conv + bias + activation instead of conv, the BN arithmetic and a ReLU.
// On tfjs-node a "fused" conv is still three native ops (conv, add, activation), so this eager
// version gains little; graph.ts compiles the same plan into a TensorFlow graph, the fast path.
// Both hold a snapshot of the weights: rebuild after the weights change.
import * as tf from '@tensorflow/tfjs-node';
import { containerNodes, layerConfig } from './tfjs-internals.ts';

export interface InferenceFn {
  (x: tf.Tensor4D): tf.Tensor4D;
  /** Frees the folded kernels and biases (the model is untouched). */
  dispose(): void;
  /** How many convolutions absorbed a BatchNormalization and/or an activation. */
  readonly foldedConvs: number;
}

export type FusedActivation = 'linear' | 'relu' | 'relu6' | 'elu' | 'sigmoid';
const FUSABLE: readonly string[] = ['linear', 'relu', 'relu6', 'elu', 'sigmoid'];
const isFusable = (activation: string): activation is FusedActivation => FUSABLE.includes(activation);

// A layer used in several models (a nested model re-applied) has one inbound node per use: take
// the one of this model, as tfjs keys them in containerNodes.
function inboundNames(model: tf.LayersModel, layer: tf.layers.Layer): string[] {
  const own = containerNodes(model);
  const node = layer.inboundNodes.find((_, i) => own.has(`${layer.name}_ib-${i}`)) ?? layer.inboundNodes[0];
  return (node?.inboundLayers ?? []).map((l) => l.name);
}

// The activation an Activation or ReLU layer applies, if the fused kernels have it.
function activationOf(layer: tf.layers.Layer | undefined): FusedActivation | undefined {
  if (!layer) return undefined;
  if (layer.getClassName() === 'ReLU') {
    const config = layerConfig(layer, 'ReLU');
    if ((config.negativeSlope ?? 0) !== 0 || (config.threshold ?? 0) !== 0) return undefined;
    if (config.maxValue == null) return 'relu';
    return config.maxValue === 6 ? 'relu6' : undefined;
  }
  if (layer.getClassName() !== 'Activation') return undefined;
  const { activation } = layerConfig(layer, 'Activation');
  return isFusable(activation) ? activation : undefined;
}

function isChannelsLastBatchNorm(layer: tf.layers.Layer | undefined): layer is tf.layers.Layer {
  if (layer?.getClassName() !== 'BatchNormalization') return false;
  const { axis } = layerConfig(layer, 'BatchNormalization');
  return axis === -1 || axis === 3;
}

/**
 * An inference-mode BatchNormalization as y = x * scale + shift per channel, with `bias` (a preceding conv's)
 * added to x first: scale = gamma / sqrt(moving_variance + epsilon), shift = (bias - moving_mean) * scale + beta.
 */
export function batchNormAffine(bn: tf.layers.Layer, bias?: tf.Tensor1D): { scale: tf.Tensor1D; shift: tf.Tensor1D } {
  const config = layerConfig(bn, 'BatchNormalization');
  const weights = bn.getWeights();
  let i = 0;
  const gamma = config.scale ? weights[i++] : undefined;
  const beta = config.center ? weights[i++] : undefined;
  const [mean, variance] = [weights[i], weights[i + 1]];
  return tf.tidy(() => {
    const scale = gamma
      ? tf.mul(tf.rsqrt(tf.add(variance, config.epsilon)), gamma)
      : tf.rsqrt(tf.add(variance, config.epsilon));
    const shifted = bias ? tf.sub(bias, mean) : tf.neg(mean);
    const shift = beta ? tf.add(tf.mul(shifted, scale), beta) : tf.mul(shifted, scale);
    return { scale: scale as tf.Tensor1D, shift: shift as tf.Tensor1D };
  });
}

// New kernel and bias of a conv followed by an inference-mode BatchNormalization.
function foldBatchNorm(conv: tf.layers.Layer, bn: tf.layers.Layer): { filter: tf.Tensor4D; bias: tf.Tensor1D } {
  const [kernel, convBias] = conv.getWeights() as [tf.Tensor4D, tf.Tensor1D?];
  const { scale, shift } = batchNormAffine(bn, convBias);
  return tf.tidy(() => {
    // Conv2D kernels are [kh, kw, in, out]; depthwise ones [kh, kw, in, multiplier] with out = in * multiplier.
    const perOutput = conv.getClassName() === 'Conv2D' ? scale : tf.reshape(scale, [kernel.shape[2], kernel.shape[3]]);
    const filter = tf.mul(kernel, perOutput) as tf.Tensor4D;
    scale.dispose();
    return { filter, bias: shift };
  });
}

/** One step of a folded forward pass: a fused convolution, or a layer run as it is. */
export type FoldedOp =
  | {
      kind: 'conv';
      name: string;
      input: string;
      depthwise: boolean;
      filter: tf.Tensor4D;
      bias?: tf.Tensor1D;
      strides: [number, number];
      dilations: [number, number];
      pad: 'valid' | 'same';
      activation: FusedActivation;
    }
  | { kind: 'layer'; name: string; inputs: string[]; layer: tf.layers.Layer };

export interface FoldedPlan {
  input: string;
  output: string;
  ops: FoldedOp[];
  /** Tensors made by folding (not the model's own variables): dispose with the plan. */
  held: tf.Tensor[];
  foldedConvs: number;
}

/** The model's graph as ops: each conv, with the BatchNormalization and activation that follow it folded in. */
export function foldPlan(model: tf.LayersModel): FoldedPlan {
  if (model.inputs.length !== 1 || model.outputs.length !== 1) {
    throw new Error('Folding expects a model with one input and one output.');
  }
  const consumers = new Map<string, tf.layers.Layer[]>();
  for (const layer of model.layers) {
    for (const name of inboundNames(model, layer)) consumers.set(name, [...(consumers.get(name) ?? []), layer]);
  }
  const input = model.inputLayers[0].name;
  const output = model.outputLayers[0].name;
  // The next layer of a chain, when it alone reads this one and this one is not the model output.
  const next = (layer: tf.layers.Layer) => {
    const list = consumers.get(layer.name) ?? [];
    return list.length === 1 && layer.name !== output ? list[0] : undefined;
  };

  const held: tf.Tensor[] = [];
  const absorbed = new Set<string>();
  const ops: FoldedOp[] = [];
  let foldedConvs = 0;
  for (const layer of model.layers) {
    if (layer.name === input || absorbed.has(layer.name)) continue;
    const inputs = inboundNames(model, layer);
    const cls = layer.getClassName();
    const config = cls === 'Conv2D' || cls === 'DepthwiseConv2D' ? layerConfig(layer, cls) : undefined;
    if (config?.dataFormat !== 'channelsLast' || config.padding === 'causal' || !isFusable(config.activation)) {
      ops.push({ kind: 'layer', name: layer.name, inputs, layer });
      continue;
    }
    let last = layer;
    let [filter, bias] = layer.getWeights() as [tf.Tensor4D, tf.Tensor1D?];
    let activation: FusedActivation = config.activation;
    if (activation === 'linear') {
      const bn = next(layer);
      if (isChannelsLastBatchNorm(bn)) {
        const folded = foldBatchNorm(layer, bn);
        held.push(folded.filter, folded.bias);
        ({ filter, bias } = folded);
        absorbed.add(bn.name);
        last = bn;
      }
      const act = next(last);
      const fused = activationOf(act);
      if (act && fused) {
        activation = fused;
        absorbed.add(act.name);
        last = act;
      }
    }
    if (last !== layer) foldedConvs++;
    ops.push({
      kind: 'conv',
      name: last.name,
      input: inputs[0],
      depthwise: cls === 'DepthwiseConv2D',
      filter,
      bias,
      strides: config.strides,
      dilations: config.dilationRate,
      pad: config.padding,
      activation,
    });
  }
  return { input, output, ops, held, foldedConvs };
}

const opInputs = (op: FoldedOp) => (op.kind === 'conv' ? [op.input] : op.inputs);

/**
 * A function computing the model's output from its input with BatchNormalization folded into
 * the preceding convolutions; the other layers run as they are. For inference with frozen weights.
 */
export function freezeForInference(model: tf.LayersModel): InferenceFn {
  const plan = foldPlan(model);
  const run = (op: FoldedOp, xs: tf.Tensor[]): tf.Tensor => {
    if (op.kind === 'layer') return op.layer.apply(xs.length === 1 ? xs[0] : xs) as tf.Tensor;
    const args = {
      x: xs[0] as tf.Tensor4D,
      filter: op.filter,
      strides: op.strides,
      pad: op.pad,
      dilations: op.dilations,
      bias: op.bias,
      activation: op.activation,
    };
    return op.depthwise ? tf.fused.depthwiseConv2d(args) : tf.fused.conv2d(args);
  };
  // Free each intermediate as soon as its last consumer ran: keeps peak memory low.
  const uses = new Map<string, number>();
  for (const op of plan.ops) for (const n of opInputs(op)) uses.set(n, (uses.get(n) ?? 0) + 1);

  const fn = ((x: tf.Tensor4D) =>
    tf.tidy(() => {
      const values = new Map<string, tf.Tensor>([[plan.input, x]]);
      // The plan is in graph order (tfjs sorts a model's layers so), so each input is computed before it is read.
      const computed = (name: string) => {
        const value = values.get(name);
        if (!value) throw new Error(`Folded op input ${name} is read before it is computed.`);
        return value;
      };
      const left = new Map(uses);
      for (const op of plan.ops) {
        const inputs = opInputs(op);
        values.set(op.name, run(op, inputs.map(computed)));
        for (const n of inputs) {
          const remaining = (left.get(n) ?? 0) - 1;
          left.set(n, remaining);
          if (remaining === 0 && n !== plan.input) computed(n).dispose();
        }
      }
      return values.get(plan.output) as tf.Tensor4D;
    })) as InferenceFn;
  Object.defineProperty(fn, 'foldedConvs', { value: plan.foldedConvs });
  fn.dispose = () => tf.dispose(plan.held);
  return fn;
}
