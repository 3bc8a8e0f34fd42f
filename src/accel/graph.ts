// The frozen backbone as a native TensorFlow graph. tfjs-node runs ops one by one (eager), and its
// "fused" conv is conv + add + activation in three ops. A graph runs in one session call, with
// TensorFlow's own fused kernels (_FusedConv2D: conv + bias + ReLU/ReLU6 in one pass), Grappler's
// optimizations and the Inception branches in parallel. The folded plan (BatchNormalization already
// in the kernels) is written as a graph with the weights as constants and opened as a session
// (saved-model.ts).
import * as tf from '@tensorflow/tfjs-node';
import { batchNormAffine, foldPlan, freezeForInference, type FoldedOp, type InferenceFn } from './fold.ts';
import { accelPolicy, type AccelPolicy } from './policy.ts';
import { DT_FLOAT, DT_INT32, type Attr, type NodeDef } from './protobuf.ts';
import { openSession } from './saved-model.ts';
import { layerConfig } from './tfjs-internals.ts';

/** A layer kind the graph writer has no TensorFlow op for. */
export class UnsupportedLayerError extends Error {}

const T: Attr = { type: DT_FLOAT };
const pair = (v: number | number[]): [number, number] => (Array.isArray(v) ? [v[0], v[1] ?? v[0]] : [v, v]);
const nhwc = (v: number | number[]) => [1, ...pair(v), 1];
const padding = (p: string): Attr => ({ s: p.toUpperCase() });

function constant(name: string, values: Float32Array | Int32Array, shape: number[]): NodeDef {
  const dtype = values instanceof Float32Array ? DT_FLOAT : DT_INT32;
  const content = new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
  return {
    name,
    op: 'Const',
    inputs: [],
    attrs: { dtype: { type: dtype }, value: { tensor: { dtype, shape, content } } },
  };
}

const ACTIVATION_OPS: Record<string, string> = {
  relu: 'Relu',
  relu6: 'Relu6',
  elu: 'Elu',
  sigmoid: 'Sigmoid',
  tanh: 'Tanh',
  selu: 'Selu',
  softplus: 'Softplus',
};

function activationNode(name: string, input: string, activation: string): NodeDef[] {
  if (activation === 'linear') return [{ name, op: 'Identity', inputs: [input], attrs: { T } }];
  const op = ACTIVATION_OPS[activation];
  if (!op) throw new UnsupportedLayerError(`activation ${activation}`);
  return [{ name, op, inputs: [input], attrs: { T } }];
}

function convNodes(op: Extract<FoldedOp, { kind: 'conv' }>): NodeDef[] {
  const filter = constant(`${op.name}/filter`, op.filter.dataSync() as Float32Array, op.filter.shape);
  const channels = op.depthwise ? op.filter.shape[2] * op.filter.shape[3] : op.filter.shape[3];
  const bias = constant(
    `${op.name}/bias`,
    op.bias ? (op.bias.dataSync() as Float32Array) : new Float32Array(channels),
    [channels],
  );
  const common = {
    T,
    strides: { ints: nhwc(op.strides) },
    padding: padding(op.pad),
    data_format: { s: 'NHWC' },
    dilations: { ints: nhwc(op.dilations) },
  };
  const fusedActivation = { relu: 'Relu', relu6: 'Relu6', elu: 'Elu' }[op.activation as string];
  if (!op.depthwise && (op.activation === 'linear' || fusedActivation)) {
    // One kernel: convolution, bias and activation in a single pass over the output.
    return [
      filter,
      bias,
      {
        name: op.name,
        op: '_FusedConv2D',
        inputs: [op.input, filter.name, bias.name],
        attrs: {
          ...common,
          use_cudnn_on_gpu: { b: true },
          num_args: { i: 1 },
          TArgs: { types: [DT_FLOAT] },
          fused_ops: { strings: fusedActivation ? ['BiasAdd', fusedActivation] : ['BiasAdd'] },
          epsilon: { f: 0 },
        },
      },
    ];
  }
  // Depthwise: plain ops; Grappler's remapper fuses them where the build has a fused kernel.
  const conv = `${op.name}/conv`;
  const biased = `${op.name}/bias_add`;
  return [
    filter,
    bias,
    {
      name: conv,
      op: op.depthwise ? 'DepthwiseConv2dNative' : 'Conv2D',
      inputs: [op.input, filter.name],
      attrs: common,
    },
    { name: biased, op: 'BiasAdd', inputs: [conv, bias.name], attrs: { T, data_format: { s: 'NHWC' } } },
    ...activationNode(op.name, biased, op.activation),
  ];
}

function layerNodes(op: Extract<FoldedOp, { kind: 'layer' }>): NodeDef[] {
  const { name, inputs, layer } = op;
  const cls = layer.getClassName();
  switch (cls) {
    case 'MaxPooling2D':
    case 'AveragePooling2D': {
      const c = layerConfig(layer, cls);
      return [
        {
          name,
          op: cls === 'MaxPooling2D' ? 'MaxPool' : 'AvgPool',
          inputs,
          attrs: {
            T,
            ksize: { ints: nhwc(c.poolSize) },
            strides: { ints: nhwc(c.strides ?? c.poolSize) },
            padding: padding(c.padding),
            data_format: { s: 'NHWC' },
          },
        },
      ];
    }
    case 'Concatenate': {
      const axis = constant(`${name}/axis`, new Int32Array([layerConfig(layer, cls).axis]), []);
      return [
        axis,
        {
          name,
          op: 'ConcatV2',
          inputs: [...inputs, axis.name],
          attrs: { T, N: { i: inputs.length }, Tidx: { type: DT_INT32 } },
        },
      ];
    }
    case 'Add':
      return [
        inputs.length === 2
          ? { name, op: 'AddV2', inputs, attrs: { T } }
          : { name, op: 'AddN', inputs, attrs: { T, N: { i: inputs.length } } },
      ];
    case 'ZeroPadding2D': {
      const [[t, b], [l, r]] = layerConfig(layer, cls).padding.map((p) => pair(p));
      const paddings = constant(`${name}/paddings`, new Int32Array([0, 0, t, b, l, r, 0, 0]), [4, 2]);
      return [
        paddings,
        { name, op: 'Pad', inputs: [...inputs, paddings.name], attrs: { T, Tpaddings: { type: DT_INT32 } } },
      ];
    }
    case 'Activation':
      return activationNode(name, inputs[0], layerConfig(layer, cls).activation);
    case 'ReLU': {
      const { maxValue } = layerConfig(layer, cls);
      if (maxValue == null) return activationNode(name, inputs[0], 'relu');
      if (maxValue === 6) return activationNode(name, inputs[0], 'relu6');
      throw new UnsupportedLayerError(`ReLU(max_value=${maxValue})`);
    }
    case 'Dropout':
      return activationNode(name, inputs[0], 'linear');
    case 'BatchNormalization': {
      // Inference BN on its own: x * scale + shift with constants.
      const { axis } = layerConfig(layer, cls);
      if (axis !== -1 && axis !== 3) throw new UnsupportedLayerError('BatchNormalization not on the channel axis');
      const { scale, shift } = batchNormAffine(layer);
      const scaleNode = constant(`${name}/scale`, scale.dataSync() as Float32Array, scale.shape);
      const shiftNode = constant(`${name}/offset`, shift.dataSync() as Float32Array, shift.shape);
      tf.dispose([scale, shift]);
      return [
        scaleNode,
        shiftNode,
        { name: `${name}/mul`, op: 'Mul', inputs: [inputs[0], scaleNode.name], attrs: { T } },
        { name, op: 'AddV2', inputs: [`${name}/mul`, shiftNode.name], attrs: { T } },
      ];
    }
    default:
      throw new UnsupportedLayerError(cls);
  }
}

/** The graph nodes of a model; throws UnsupportedLayerError for layer kinds it does not know. */
export function graphNodes(model: tf.LayersModel): { nodes: NodeDef[]; foldedConvs: number } {
  const plan = foldPlan(model);
  try {
    const shape = model.inputs[0].shape.map((d) => d ?? -1);
    const nodes: NodeDef[] = [
      { name: plan.input, op: 'Placeholder', inputs: [], attrs: { dtype: T, shape: { shape } } },
    ];
    for (const op of plan.ops) nodes.push(...(op.kind === 'conv' ? convNodes(op) : layerNodes(op)));
    nodes.push({ name: 'features', op: 'Identity', inputs: [plan.output], attrs: { T } });
    return { nodes, foldedConvs: plan.foldedConvs };
  } finally {
    tf.dispose(plan.held);
  }
}

export interface CompiledInferenceFn extends InferenceFn {
  /** graph: one TensorFlow session call; eager: folded tfjs ops (a layer kind had no graph op); layers: model.predict (plain policy). */
  readonly mode: 'graph' | 'eager' | 'layers';
}

/**
 * The frozen model compiled to a TensorFlow graph session: same outputs as model.predict (to float
 * rounding), faster. Models with a layer kind the graph writer lacks get freezeForInference's
 * eager function instead, and a policy without a compiled backbone gets model.predict (mode tells which).
 * A snapshot: recompile after the weights change.
 */
export async function compileForInference(
  model: tf.LayersModel,
  policy: AccelPolicy = accelPolicy(),
): Promise<CompiledInferenceFn> {
  if (!policy.compiledBackbone) {
    const predict = (x: tf.Tensor4D) => model.predict(x) as tf.Tensor4D;
    return Object.assign(predict, { dispose: () => {}, foldedConvs: 0, mode: 'layers' as const });
  }
  let graph: ReturnType<typeof graphNodes>;
  try {
    graph = graphNodes(model);
  } catch (error) {
    if (!(error instanceof UnsupportedLayerError)) throw error;
    return Object.defineProperty(freezeForInference(model), 'mode', { value: 'eager' }) as CompiledInferenceFn;
  }
  const inputShape = model.inputs[0].shape.map((d) => d ?? -1);
  const outputShape = model.outputs[0].shape.map((d) => d ?? -1);
  const session = openSession(
    graph.nodes,
    { image: { name: `${graph.nodes[0].name}:0`, dtype: DT_FLOAT, shape: inputShape } },
    { features: { name: 'features:0', dtype: DT_FLOAT, shape: outputShape } },
  );
  const fn = ((x: tf.Tensor4D) => session.run([x])[0] as tf.Tensor4D) as CompiledInferenceFn;
  Object.defineProperty(fn, 'foldedConvs', { value: graph.foldedConvs });
  Object.defineProperty(fn, 'mode', { value: 'graph' });
  fn.dispose = () => session.close();
  return fn;
}
