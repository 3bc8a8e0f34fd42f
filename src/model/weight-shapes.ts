// The weights a model's layers hold, by Keras name (`Conv1/kernel`), and the one check that a set of weight values
// fits them: loading runs it against the built model's variables, `xp check` against the shapes worked out here
// from the topology alone (no TensorFlow), so both refuse a model.json with the same sentence. The same walk finds
// a layer whose output would be empty for the input size (nested models included), as the build would. Shapes flow through
// the graph channels-last from the input; a layer kind not known here has its weights left to the build and an
// output of unknown shape, and an unknown dimension (null) is never held against a file.
import { ModelError } from '../errors.ts';
import { childLayers, isContainer, layerName, spatialOut, type LayerConfigJson, type LayerJson } from './topology.ts';

export type Dim = number | null;
/** A tensor's shape without the batch dimension; undefined where nothing is known. */
type Shape = Dim[] | undefined;

export interface ExpectedWeight {
  /** `layer/weight`, as tfjs names a variable and a weights manifest its entries. */
  name: string;
  shape: readonly Dim[];
}

/** What flows through a topology: the weights its layers create and each layer's output, in graph order. */
interface Walked {
  weights: ExpectedWeight[];
  outputs: { layer: string; shape: Shape }[];
}

/** The weights the layers of `container` (nested models included) create, in graph order. */
export function expectedWeights(container: LayerJson): ExpectedWeight[] {
  const out: Walked = { weights: [], outputs: [] };
  walk(container, undefined, out);
  return out.weights;
}

/**
 * The first layer (nested models included) whose output would be empty, a spatial size of 0 or less, as the build
 * would make it for the input size the topology declares; undefined if none, or where sizes are unknown.
 */
export function firstEmptyOutput(container: LayerJson): { layer: string; size: [number, number] } | undefined {
  const out: Walked = { weights: [], outputs: [] };
  walk(container, undefined, out);
  for (const { layer, shape } of out.outputs) {
    if (shape?.length === 3 && shape.slice(0, 2).some((d) => d !== null && d <= 0))
      return { layer, size: [shape[0] ?? 0, shape[1] ?? 0] };
  }
  return undefined;
}

/** The shape `container` outputs (no batch dimension) for the input size it declares; undefined where unknown. */
export function outputShape(container: LayerJson): Dim[] | undefined {
  return walk(container, undefined, { weights: [], outputs: [] });
}

/**
 * Whether `values` (a shape per weight name) fit `expected`: the first weight whose shape differs, else the weights
 * without a value; undefined when every weight has a value of its shape.
 */
export function weightsMismatch(
  expected: readonly ExpectedWeight[],
  values: (name: string) => readonly number[] | undefined,
  source: string,
): ModelError | undefined {
  const missing: string[] = [];
  for (const { name, shape } of expected) {
    const value = values(name);
    if (!value) missing.push(name);
    else if (!fits(value, shape)) {
      return new ModelError(
        `Weight ${name} from ${source} has shape [${value}], the model expects [${shape.map((d) => d ?? '?')}].`,
        { hint: 'The weights were saved for a different architecture.' },
      );
    }
  }
  if (!missing.length) return undefined;
  return new ModelError(
    `${source} has no values for ${missing.length} weights of the model: ${missing.slice(0, 5).join(', ')}${missing.length > 5 ? ', ...' : ''}.`,
    { hint: 'The weights were saved for a different architecture.' },
  );
}

const fits = (value: readonly number[], shape: readonly Dim[]) =>
  value.length === shape.length && shape.every((d, i) => d === null || d === value[i]);

// The shape a container outputs for `input` (undefined: the shape its own input layer declares).
function walk(container: LayerJson, input: Shape, out: Walked): Shape {
  const layers = childLayers(container);
  if (container.class_name === 'Sequential') {
    let shape = input;
    for (const [i, layer] of layers.entries()) {
      const declared = declaredInput(layer);
      // A Sequential's first layer may carry the input shape it is built with.
      if (layer.class_name === 'InputLayer' || (i === 0 && declared)) shape = declared ?? shape;
      if (layer.class_name !== 'InputLayer') shape = apply(layer, [shape], out);
    }
    return shape;
  }
  const shapes = new Map<string, Shape>();
  for (const layer of layers) {
    const name = layerName(layer);
    if (layer.class_name === 'InputLayer') shapes.set(name, declaredInput(layer) ?? input);
    else
      shapes.set(
        name,
        apply(
          layer,
          inboundNames(layer).map((n) => shapes.get(n)),
          out,
        ),
      );
  }
  const output = (container.config as { output_layers?: unknown[][] }).output_layers?.[0]?.[0];
  return typeof output === 'string' ? shapes.get(output) : undefined;
}

function declaredInput(layer: LayerJson): Shape {
  const c = layer.config as Record<string, unknown> | undefined;
  const s = c && !Array.isArray(c) ? (c.batch_input_shape ?? c.batch_shape) : undefined;
  if (isContainer(layer)) {
    const first = childLayers(layer)[0];
    return first ? declaredInput(first) : undefined;
  }
  return Array.isArray(s) ? s.slice(1).map((d) => (typeof d === 'number' ? d : null)) : undefined;
}

// The layers feeding a layer's first call (Keras 2's [[name, node, index, kwargs], ...]).
function inboundNames(layer: LayerJson): string[] {
  const node = layer.inbound_nodes?.[0];
  if (!Array.isArray(node)) return [];
  return node
    .map((inbound) => (Array.isArray(inbound) ? inbound[0] : inbound?.name))
    .filter((n) => typeof n === 'string');
}

const last = (s: Shape): Dim => (s?.length ? s[s.length - 1] : null);
const dim = (v: unknown): Dim => (typeof v === 'number' && Number.isSafeInteger(v) ? v : null);
const pair = (v: unknown): [Dim, Dim] => (Array.isArray(v) ? [dim(v[0]), dim(v[1] ?? v[0])] : [dim(v), dim(v)]);
const times = (a: Dim, b: Dim): Dim => (a === null || b === null ? null : a * b);

// Layers that create no weights and keep their (first) input's shape.
const SAME_SHAPE = new Set([
  'Activation',
  'ReLU',
  'LeakyReLU',
  'ELU',
  'Softmax',
  'ThresholdedReLU',
  'Dropout',
  'SpatialDropout2D',
  'GaussianNoise',
  'GaussianDropout',
  'AlphaDropout',
  'Rescaling',
  'Add',
  'Subtract',
  'Multiply',
  'Average',
  'Maximum',
  'Minimum',
]);

/** Records the weights `layer` creates for these inputs and its output shape, and returns that shape. */
function apply(layer: LayerJson, inputs: Shape[], out: Walked): Shape {
  if (isContainer(layer)) return walk(layer, inputs[0], out);
  const shape = applyLayer(layer, inputs, out.weights);
  out.outputs.push({ layer: layerName(layer), shape });
  return shape;
}

function applyLayer(layer: LayerJson, inputs: Shape[], out: ExpectedWeight[]): Shape {
  const c: LayerConfigJson = Array.isArray(layer.config) ? {} : layer.config;
  const x = inputs[0];
  const name = layerName(layer);
  const add = (weight: string, shape: Dim[]) => out.push({ name: `${name}/${weight}`, shape });
  const channelsLast = (c.data_format ?? 'channels_last') === 'channels_last';
  // [h, w] of a 4D tensor's spatial dimensions after this layer, then its channels.
  const image = (channels: Dim): Shape => {
    const [h, w] = x?.length === 3 ? spatialOut(layer, [x[0], x[1]]) : [null, null];
    return [h, w, channels];
  };
  if (SAME_SHAPE.has(layer.class_name)) return x;
  switch (layer.class_name) {
    case 'Conv2D': {
      if (!channelsLast) return undefined;
      const filters = dim(c.filters);
      add('kernel', [...pair(c.kernel_size), last(x), filters]);
      if (c.use_bias !== false) add('bias', [filters]);
      return image(filters);
    }
    case 'DepthwiseConv2D': {
      if (!channelsLast) return undefined;
      const multiplier = dim(c.depth_multiplier ?? 1);
      add('depthwise_kernel', [...pair(c.kernel_size), last(x), multiplier]);
      if (c.use_bias !== false) add('bias', [times(last(x), multiplier)]);
      return image(times(last(x), multiplier));
    }
    case 'SeparableConv2D': {
      if (!channelsLast) return undefined;
      const multiplier = dim(c.depth_multiplier ?? 1);
      const filters = dim(c.filters);
      add('depthwise_kernel', [...pair(c.kernel_size), last(x), multiplier]);
      add('pointwise_kernel', [1, 1, times(last(x), multiplier), filters]);
      if (c.use_bias !== false) add('bias', [filters]);
      return image(filters);
    }
    case 'BatchNormalization': {
      const axis = Array.isArray(c.axis) ? undefined : dim(c.axis ?? -1);
      const features =
        x && axis !== null && axis !== undefined ? (x[axis < 0 ? x.length + axis : axis - 1] ?? null) : null;
      if (c.scale !== false) add('gamma', [features]);
      if (c.center !== false) add('beta', [features]);
      add('moving_mean', [features]);
      add('moving_variance', [features]);
      return x;
    }
    case 'Dense': {
      const units = dim(c.units);
      add('kernel', [last(x), units]);
      if (c.use_bias !== false) add('bias', [units]);
      return x ? [...x.slice(0, -1), units] : undefined;
    }
    case 'ZeroPadding2D':
    case 'MaxPooling2D':
    case 'AveragePooling2D':
      return channelsLast ? image(last(x)) : undefined;
    case 'GlobalAveragePooling2D':
    case 'GlobalMaxPooling2D':
      return channelsLast && !c.keepdims ? [last(x)] : undefined;
    case 'Flatten':
      return x ? [x.reduce<Dim>((a, b) => times(a, b), 1)] : undefined;
    case 'Concatenate': {
      const axis = dim(c.axis ?? -1);
      if (!x || !inputs.every((s) => s?.length === x.length) || (axis !== -1 && axis !== x.length)) return undefined;
      let channels: Dim = 0;
      for (const s of inputs) {
        const more = last(s);
        channels = channels === null || more === null ? null : channels + more;
      }
      return [...x.slice(0, -1), channels];
    }
    case 'Reshape':
      return Array.isArray(c.target_shape) && c.target_shape.every((d: unknown) => dim(d) !== null && (d as number) > 0)
        ? c.target_shape
        : undefined;
    default:
      // Weights of a kind not known here are left to the build, which checks every one.
      return undefined;
  }
}
