// The parts of tfjs that xp's acceleration reads but tfjs does not export or type: tfjs-node's backend (which
// runs TensorFlow ops by name and SavedModel sessions), and fields of layers and compiled models that exist at
// runtime but are private in the typings. Every cast into tfjs internals is here, so that a tfjs upgrade that
// moves one of them breaks one file.
import * as tf from '@tensorflow/tfjs-node';

/** An attribute of a TensorFlow op run by name (its `type` is one of the binding's TF_ATTR_* codes). */
export interface OpAttr {
  name: string;
  type: number;
  value: number | string;
}

/** tfjs-node's NodeJSKernelBackend, the members xp uses. */
export interface NodeBackend {
  binding: {
    TF_ATTR_FLOAT: number;
    TF_ATTR_INT: number;
    TF_ATTR_TYPE: number;
    TF_ATTR_STRING: number;
    TF_FLOAT: number;
    TF_INT32: number;
  };
  getDTypeInteger(dtype: tf.DataType): number;
  executeSingleOutput(name: string, attrs: OpAttr[], inputs: tf.TensorInfo[]): tf.Tensor;
  executeMultipleOutputs(name: string, attrs: OpAttr[], inputs: tf.TensorInfo[], outputs: number): tf.Tensor[];
  loadSavedModelMetaGraph(path: string, tags: string): number;
  runSavedModel(
    id: number,
    inputs: tf.Tensor[],
    infos: { name: string; tfDtype: string }[],
    outputs: string[],
  ): tf.Tensor[];
  deleteSavedModel(id: number): void;
}

/** The backend as tfjs-node's, or undefined on any other backend. */
export function nodeBackend(
  backend: unknown = tf.getBackend() === 'tensorflow' ? tf.backend() : undefined,
): NodeBackend | undefined {
  const b = backend as Partial<NodeBackend> | undefined;
  const complete =
    b &&
    typeof b.executeMultipleOutputs === 'function' &&
    typeof b.loadSavedModelMetaGraph === 'function' &&
    typeof b.runSavedModel === 'function';
  return complete ? (b as NodeBackend) : undefined;
}

/** The parts of tfjs-layers' Dense read by the head step (present at runtime, private in the typings). */
export interface DenseInternals {
  kernel: { read(): tf.Variable; trainable: boolean };
  bias: { read(): tf.Variable } | null;
  activation: { apply(x: tf.Tensor): tf.Tensor };
  kernelRegularizer?: unknown;
  biasRegularizer?: unknown;
  activityRegularizer?: unknown;
  kernelConstraint?: unknown;
  biasConstraint?: unknown;
}

export const denseInternals = (layer: tf.layers.Layer): DenseInternals => layer as unknown as DenseInternals;

/** The name of a Dense layer's activation ('relu', 'sigmoid', ...), as tfjs registers its class. */
export const activationName = (layer: DenseInternals): string =>
  (layer.activation.constructor as { className?: string }).className ?? '';

/** A Dropout layer's noise shape (undefined or null: a mask of the input's shape). */
export const noiseShape = (layer: tf.layers.Layer): unknown =>
  (layer as unknown as { noiseShape?: unknown }).noiseShape;

type LossFn = (yTrue: tf.Tensor, yPred: tf.Tensor) => tf.Tensor;

/** A compiled LayersModel's loss and metric functions, as model.compile leaves them. */
export interface CompiledInternals {
  loss: unknown;
  lossFunctions: LossFn[];
  metricsTensors: [LossFn, number][];
  calculateLosses(): tf.Scalar[];
}

export const compiledInternals = (model: tf.LayersModel): CompiledInternals => model as unknown as CompiledInternals;

/** The keys (`<layer>_ib-<node>`) of the layer calls that belong to this model. */
export const containerNodes = (model: tf.LayersModel): Set<string> =>
  (model as unknown as { containerNodes: Set<string> }).containerNodes;

/** tfjs' GlorotUniform class (tfjs exports an instance factory, not the class). */
export const GlorotUniform = tf.initializers.glorotUniform({}).constructor as new (args: {
  seed?: number;
}) => {
  apply(shape: number[], dtype?: tf.DataType): tf.Tensor;
};

/** An initializer object as tfjs-layers' configs take it. */
export const asInitializer = (init: object): ReturnType<typeof tf.initializers.glorotUniform> =>
  init as unknown as ReturnType<typeof tf.initializers.glorotUniform>;

/** The attributes tf.image.transform hands to its kernel. */
export interface TransformAttrs {
  interpolation: 'nearest' | 'bilinear';
  fillMode: 'constant' | 'reflect' | 'wrap' | 'nearest';
  fillValue: number;
  outputShape?: [number, number];
}

export const transformAttrs = (attrs: tf.NamedAttrMap | undefined): TransformAttrs =>
  attrs as unknown as TransformAttrs;

/** A BatchNormalization layer's variables and hyperparameters. */
export interface BatchNormInternals {
  gamma?: tf.LayerVariable;
  beta?: tf.LayerVariable;
  movingMean: tf.LayerVariable;
  movingVariance: tf.LayerVariable;
  epsilon: number;
  momentum: number;
  axis: number;
}

export const batchNormInternals = (layer: tf.layers.Layer): BatchNormInternals =>
  layer as unknown as BatchNormInternals;

/** Sets the seed a Dropout layer draws its next masks from (tfjs reads it on every call). */
export const setDropoutSeed = (layer: tf.layers.Layer, seed: number): void => {
  (layer as unknown as { seed: number }).seed = seed;
};

type Pair = [number, number];
type ConvConfig = {
  activation: string;
  dataFormat: 'channelsFirst' | 'channelsLast';
  strides: Pair;
  dilationRate: Pair;
  padding: 'valid' | 'same' | 'causal';
};
type PoolConfig = { poolSize: Pair; strides: Pair; padding: 'valid' | 'same' | 'causal' };

/**
 * What `getConfig()` holds for the layer kinds that folding and the compiled graph read, as tfjs-layers writes
 * it (tfjs types every config as an untyped dict; sizes and strides are already normalized to pairs).
 */
export interface LayerConfigs {
  Activation: { activation: string };
  ReLU: { maxValue?: number | null; negativeSlope?: number; threshold?: number };
  BatchNormalization: { axis: number; scale: boolean; center: boolean; epsilon: number };
  Conv2D: ConvConfig;
  DepthwiseConv2D: ConvConfig;
  MaxPooling2D: PoolConfig;
  AveragePooling2D: PoolConfig;
  Concatenate: { axis: number };
  ZeroPadding2D: { padding: [Pair, Pair] };
}

/** The config of a layer of class `className`; throws when the layer is of another class (check it first). */
export function layerConfig<K extends keyof LayerConfigs>(layer: tf.layers.Layer, className: K): LayerConfigs[K] {
  if (layer.getClassName() !== className) {
    throw new Error(`Layer ${layer.name} is a ${layer.getClassName()}, not a ${className}.`);
  }
  return layer.getConfig() as unknown as LayerConfigs[K];
}
