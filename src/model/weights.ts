// Puts loaded weight values into a built model, checking that every weight gets a value of the
// right shape (tfjs' own non-strict loading would silently leave random initial values).
import * as tf from '@tensorflow/tfjs-node';
import type { H5Weights } from './h5.ts';
import { pairH5Layers } from './h5-layers.ts';
import { weightsMismatch } from './weight-shapes.ts';

/** All layers, descending into nested models (which are left out themselves), in graph order. */
export function flatLayers(model: tf.LayersModel): tf.layers.Layer[] {
  return model.layers.flatMap((layer) => (layer instanceof tf.LayersModel ? flatLayers(layer) : [layer]));
}

/** Layers that own weights, descending into nested models, in graph order. */
export function weightedLayers(model: tf.LayersModel): tf.layers.Layer[] {
  return flatLayers(model).filter((layer) => layer.weights.length > 0);
}

/** Sets weights from tensors keyed by Keras weight name (`conv2d_1/kernel`, as in a tfjs weights manifest). */
export function assignNamedWeights(model: tf.LayersModel, named: tf.NamedTensorMap, source: string): void {
  const variables = weightedLayers(model).flatMap((layer) => layer.weights);
  // The check `xp check` makes with the shapes read from the topology (weight-shapes.ts).
  const problem = weightsMismatch(
    variables.map((v) => ({ name: v.originalName, shape: v.shape })),
    (name) => named[name]?.shape,
    source,
  );
  if (problem) throw problem;
  for (const variable of variables) variable.write(named[variable.originalName]);
}

/** Sets weights from a Keras .h5 file's layers onto the model's layers. */
export function assignH5Weights(model: tf.LayersModel, weights: H5Weights, source: string): void {
  for (const { layer, weights: found } of pairH5Layers(weightedLayers(model), weights, source)) {
    const tensors = found.map((w) => tf.tensor(w.values, w.shape, 'float32'));
    layer.setWeights(tensors);
    tf.dispose(tensors);
  }
}

/** The model's weights per layer in Keras order, e.g. to write with writeKerasH5. */
export function layerWeights(model: tf.LayersModel): H5Weights {
  const out: H5Weights = new Map();
  for (const layer of weightedLayers(model)) {
    out.set(
      layer.name,
      layer.weights.map((w) => ({
        name: w.originalName.slice(w.originalName.lastIndexOf('/') + 1),
        shape: w.shape as number[],
        values: w.read().dataSync() as Float32Array,
      })),
    );
  }
  return out;
}
