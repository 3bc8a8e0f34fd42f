// The pretrained backbone: a Keras architecture (or any tfjs LayersModel) rebuilt for the
// experiment's input size, cut at `cut_layer`, weights loaded, frozen as configured.
import * as tf from '@tensorflow/tfjs-node';
import type { BackboneConfig, Preprocessing } from '../config/types.ts';
import { batchNormInternals } from '../accel/index.ts';
import { ModelError } from '../errors.ts';
import { readKerasH5 } from './h5.ts';
import { kerasWeightsFile, kerasWeightsPath, type KerasWeightsOptions } from './keras-weights.ts';
import { localWeights } from './remote-weights.ts';
import { kerasArchitecture, unknownLayerError, weightsSource, type WeightsSource } from './layers.ts';
export { backboneLayerNames, inspectBackboneWeights, unknownLayerError } from './layers.ts';
import { nsfwjsWeightShards } from './nsfwjs.ts';
import { inspectTfjsModel, readWeightGroup } from './tfjs-model.ts';
import { allLayerNames, cutTopology, type LayerJson } from './topology.ts';
import { assignH5Weights, assignNamedWeights, flatLayers } from './weights.ts';

export type ResolvedPreprocessing = Exclude<Preprocessing, 'auto'>;

export interface LoadBackboneOptions extends KerasWeightsOptions {}

export interface Backbone {
  /** Input [null, h, w, 3] -> output of cut_layer. */
  model: tf.LayersModel;
  preprocessing: ResolvedPreprocessing;
  /** Output shape without the batch dimension, e.g. [7, 7, 768]. */
  featureShape: number[];
}

/** rescale: x/255; inception: x/127.5 - 1; none: x. Input is float32 in 0..255. */
export function preprocess(x: tf.Tensor, mode: ResolvedPreprocessing): tf.Tensor {
  return tf.tidy(() => {
    if (mode === 'rescale') return tf.div(x, 255);
    if (mode === 'inception') return tf.sub(tf.div(x, 127.5), 1);
    return tf.clone(x);
  });
}

// Weights are written right after building: skip the random initialization of ~20M values.
function zeroInitializers(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(zeroInitializers);
  if (value && typeof value === 'object') {
    return Object.fromEntries(
      Object.entries(value).map(([k, v]) => [
        k,
        k.endsWith('_initializer') && v && typeof v === 'object'
          ? { class_name: 'Zeros', config: {} }
          : zeroInitializers(v),
      ]),
    );
  }
  return value;
}

// A Sequential > Sequential > Model chain cut inside the Model is just that Model: return it, flat.
// What stays nested is wrapped in a functional model, so that callers always get one with inputs.
function unwrap(model: tf.LayersModel, inputShape: number[]): tf.LayersModel {
  const layers = model.layers.filter((l) => l.getClassName() !== 'InputLayer');
  if (layers.length === 1 && layers[0] instanceof tf.LayersModel) return unwrap(layers[0], inputShape);
  if (!(model instanceof tf.Sequential)) return model;
  const input = tf.input({ shape: inputShape });
  return tf.model({ inputs: input, outputs: model.apply(input) as tf.SymbolicTensor, name: model.name });
}

async function buildCut(
  topology: LayerJson,
  cutLayer: string,
  inputSize: [number, number],
  what: string,
): Promise<tf.LayersModel> {
  const names = allLayerNames(topology);
  const cut = names.includes(cutLayer) ? cutTopology(topology, cutLayer, inputSize) : undefined;
  if (!cut) throw unknownLayerError('backbone.cut_layer', cutLayer, names, what);
  const fail = (reason: string, cause?: unknown) =>
    new ModelError(`Cannot build ${what} for input ${inputSize[0]}x${inputSize[1]} up to ${cutLayer}: ${reason}`, {
      cause,
      hint: 'The input may be too small for this backbone (InceptionV3 needs at least 75x75, MobileNetV2 32x32); raise data.image_size.',
    });
  let model: tf.LayersModel;
  try {
    model = unwrap(
      await tf.models.modelFromJSON({ modelTopology: zeroInitializers(cut) } as Parameters<
        typeof tf.models.modelFromJSON
      >[0]),
      [...inputSize, 3],
    );
  } catch (error) {
    throw fail((error as Error).message, error);
  }
  // tfjs builds valid convolutions on too small inputs with negative sizes instead of failing.
  const empty = flatLayers(model).find((l) => [l.outputShape].flat(2).some((d) => typeof d === 'number' && d <= 0));
  if (empty) {
    model.dispose();
    throw fail(`layer ${empty.name} would output shape [${empty.outputShape}].`);
  }
  return model;
}

// model.json checked, then its weight files read (only those it may name, at the sizes it says).
async function readTfjsModel(file: string): Promise<{ topology: LayerJson; weights: tf.NamedTensorMap }> {
  const model = await inspectTfjsModel(file);
  const weights: tf.NamedTensorMap = {};
  try {
    for (const group of model.groups)
      Object.assign(weights, tf.io.decodeWeights(await readWeightGroup(model, group), group.weights));
  } catch (error) {
    tf.dispose(weights);
    throw error;
  }
  return { topology: model.topology, weights };
}

/** Freezes the backbone as configured: `trainable_from` wins over `trainable`. */
export function applyTrainable(model: tf.LayersModel, cfg: Pick<BackboneConfig, 'trainable' | 'trainable_from'>): void {
  const layers = flatLayers(model);
  let from = cfg.trainable ? 0 : layers.length;
  if (cfg.trainable_from !== undefined) {
    from = layers.findIndex((l) => l.name === cfg.trainable_from);
    if (from < 0) {
      const names = layers.filter((l) => l.getClassName() !== 'InputLayer').map((l) => l.name);
      throw unknownLayerError('backbone.trainable_from', cfg.trainable_from, names, 'the cut backbone');
    }
  }
  // A model's trainable setter only flags weights; set each layer, whatever its saved config said.
  model.trainable = from < layers.length;
  for (const [i, layer] of layers.entries()) layer.trainable = i >= from;
  for (const layer of layers) if (layer.getClassName() === 'BatchNormalization') patchBatchNorm(layer);
}

/**
 * Two fixes to tfjs' BatchNormalization, which in training mode always normalizes with the batch:
 * - frozen layers normalize with their moving statistics, as in Keras >= 2.1.3 (fine-tuning
 *   depends on it);
 * - layers without gamma or beta (InceptionV3 has scale=False) crash tfjs' training path and its
 *   gradients (tf.batchNorm records a missing scale), so they get explicit ones/zeros.
 */
function patchBatchNorm(layer: tf.layers.Layer): void {
  const patched = layer as tf.layers.Layer & { __xpPatchedBn?: boolean };
  if (patched.__xpPatchedBn) return;
  patched.__xpPatchedBn = true;
  const bn = batchNormInternals(layer);
  const call = layer.call.bind(layer);
  const normalize = (x: tf.Tensor, mean: tf.Tensor, variance: tf.Tensor) =>
    tf.batchNorm(
      x,
      mean,
      variance,
      bn.beta?.read() ?? tf.zerosLike(mean),
      bn.gamma?.read() ?? tf.onesLike(mean),
      bn.epsilon,
    );
  layer.call = (inputs, kwargs) => {
    const training = layer.trainable && kwargs?.training === true;
    if (bn.gamma && bn.beta) return call(inputs, training ? kwargs : { ...kwargs, training: false });
    return tf.tidy(() => {
      const x = Array.isArray(inputs) ? inputs[0] : inputs;
      if (!training) return normalize(x, bn.movingMean.read(), bn.movingVariance.read());
      const axes = [...Array(x.rank).keys()].filter((a) => a !== (bn.axis < 0 ? x.rank + bn.axis : bn.axis));
      const { mean, variance } = tf.moments(x, axes);
      const update = (v: tf.LayerVariable, value: tf.Tensor) =>
        v.write(tf.sub(v.read(), tf.mul(tf.sub(v.read(), value), 1 - bn.momentum)));
      update(bn.movingMean, mean);
      update(bn.movingVariance, variance);
      return normalize(x, mean, variance);
    });
  };
}

function resolvePreprocessing(mode: Preprocessing, source: WeightsSource): ResolvedPreprocessing {
  if (mode !== 'auto') return mode;
  // nsfwjs feeds its models x/255 (NSFWJS.infer divides by 255); Keras' InceptionV3 and MobileNetV2
  // ImageNet weights and Teachable Machine models expect [-1, 1].
  return source.kind === 'nsfwjs' ? 'rescale' : 'inception';
}

/** A weights source, with a tfjs model's topology and weights read. */
type ReadSource =
  | Exclude<WeightsSource, { kind: 'tfjs' }>
  | { kind: 'tfjs'; file: string; topology: LayerJson; weights: tf.NamedTensorMap };

// Puts the weights of `source` into the built model.
async function loadWeights(
  model: tf.LayersModel,
  cfg: BackboneConfig,
  source: ReadSource,
  inputSize: [number, number],
  opts: LoadBackboneOptions,
): Promise<void> {
  if (source.kind === 'tfjs') return assignNamedWeights(model, source.weights, source.file);
  if (source.kind === 'nsfwjs') {
    const weights: tf.NamedTensorMap = Object.assign(
      {},
      ...nsfwjsWeightShards(cfg.name).map((g) => tf.io.decodeWeights(g.buffers, g.weights)),
    );
    try {
      return assignNamedWeights(model, weights, `the nsfwjs ${cfg.name} weights`);
    } finally {
      tf.dispose(weights);
    }
  }
  const file = source.kind === 'h5' ? source.file : await kerasWeightsPath(kerasWeightsFile(cfg.name, inputSize), opts);
  assignH5Weights(model, await readKerasH5(file), file);
}

/** Loads the backbone for `inputSize` [h, w], cut at cfg.cut_layer, frozen per cfg. */
export async function loadBackbone(
  cfg: BackboneConfig,
  inputSize: [number, number],
  opts: LoadBackboneOptions = {},
): Promise<Backbone> {
  const source = weightsSource(await localWeights(cfg.weights));
  const read: ReadSource = source.kind === 'tfjs' ? { ...source, ...(await readTfjsModel(source.file)) } : source;
  try {
    const topology = read.kind === 'tfjs' ? read.topology : kerasArchitecture(cfg.name);
    const model = await buildCut(topology, cfg.cut_layer, inputSize, read.kind === 'tfjs' ? read.file : cfg.name);
    try {
      await loadWeights(model, cfg, read, inputSize, opts);
      applyTrainable(model, cfg);
    } catch (error) {
      model.dispose();
      throw error;
    }
    return {
      model,
      preprocessing: resolvePreprocessing(cfg.preprocessing, source),
      featureShape: model.outputs[0].shape.slice(1) as number[],
    };
  } finally {
    if (read.kind === 'tfjs') tf.dispose(read.weights);
  }
}
