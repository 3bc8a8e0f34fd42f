// Puts loaded weight values into a built model, checking that every weight gets a value of the
// right shape (tfjs' own non-strict loading would silently leave random initial values).
import * as tf from '@tensorflow/tfjs-node';
import { ModelError } from '../errors.ts';
import type { H5Weights } from './h5.ts';

/** All layers, descending into nested models (which are left out themselves), in graph order. */
export function flatLayers(model: tf.LayersModel): tf.layers.Layer[] {
  return model.layers.flatMap((layer) => (layer instanceof tf.LayersModel ? flatLayers(layer) : [layer]));
}

/** Layers that own weights, descending into nested models, in graph order. */
export function weightedLayers(model: tf.LayersModel): tf.layers.Layer[] {
  return flatLayers(model).filter((layer) => layer.weights.length > 0);
}

const sameShape = (a: readonly number[], b: readonly (number | null)[]) => a.length === b.length && a.every((v, i) => v === b[i]);

/** Sets weights from tensors keyed by Keras weight name (`conv2d_1/kernel`, as in a tfjs weights manifest). */
export function assignNamedWeights(model: tf.LayersModel, named: tf.NamedTensorMap, source: string): void {
  const pairs: [tf.LayerVariable, tf.Tensor][] = [];
  const missing: string[] = [];
  for (const layer of weightedLayers(model)) {
    for (const variable of layer.weights) {
      const value = named[variable.originalName];
      if (!value) {
        missing.push(variable.originalName);
        continue;
      }
      if (!sameShape(value.shape, variable.shape)) {
        throw new ModelError(
          `Weight ${variable.originalName} from ${source} has shape [${value.shape}], the model expects [${variable.shape}].`,
          { hint: 'The weights were saved for a different architecture.' },
        );
      }
      pairs.push([variable, value]);
    }
  }
  if (missing.length > 0) {
    throw new ModelError(`${source} has no values for ${missing.length} weights of the model: ${missing.slice(0, 5).join(', ')}${missing.length > 5 ? ', ...' : ''}.`, {
      hint: 'The weights were saved for a different architecture.',
    });
  }
  for (const [variable, value] of pairs) variable.write(value);
}

// Auto-generated Keras names: `conv2d_7` -> base `conv2d`, index 7; `conv2d` -> index 0.
function splitAutoName(name: string): { base: string; index: number } {
  const m = /^(.*?)(?:_(\d+))?$/.exec(name)!;
  return { base: m[1], index: m[2] ? Number(m[2]) : 0 };
}

function groupByBase(names: string[]): Map<string, string[]> {
  const groups = new Map<string, string[]>();
  for (const n of names) {
    const { base } = splitAutoName(n);
    groups.set(base, [...(groups.get(base) ?? []), n]);
  }
  for (const list of groups.values()) list.sort((a, b) => splitAutoName(a).index - splitAutoName(b).index);
  return groups;
}

/**
 * Pairs model layers with file layers by name. Auto-generated names can be numbered differently
 * (Keras 2 counts conv2d_1, conv2d_2...; Keras 3 conv2d, conv2d_1...): when a group of same-base
 * names does not line up (some missing in the file, or the file has the bare `conv2d` and the
 * model not), the group is paired in creation order, as Keras' by-order loading would.
 */
function matchLayers(modelNames: string[], fileNames: string[]): Map<string, string> {
  const match = new Map<string, string>();
  const fileSet = new Set(fileNames);
  const fileGroups = groupByBase(fileNames);
  for (const [base, names] of groupByBase(modelNames)) {
    const candidates = fileGroups.get(base) ?? [];
    const shifted = candidates.includes(base) && !names.includes(base);
    const exact = !shifted && names.every((n) => fileSet.has(n));
    names.forEach((n, i) => {
      const other = exact ? n : candidates[i];
      if (other) match.set(n, other);
    });
  }
  return match;
}

/** Sets weights from a Keras .h5 file's layers onto the model's layers. */
export function assignH5Weights(model: tf.LayersModel, weights: H5Weights, source: string): void {
  const layers = weightedLayers(model);
  const match = matchLayers(
    layers.map((l) => l.name),
    [...weights.keys()],
  );
  const missing = layers.filter((l) => !match.has(l.name)).map((l) => l.name);
  if (missing.length > 0) {
    throw new ModelError(
      `${source} has no weights for ${missing.length} layers of the model: ${missing.slice(0, 5).join(', ')}${missing.length > 5 ? ', ...' : ''}.`,
      { hint: 'Check that the file holds weights for this backbone (backbone.name) and not another architecture.' },
    );
  }
  const values: [tf.layers.Layer, tf.Tensor[]][] = [];
  for (const layer of layers) {
    const fileLayer = match.get(layer.name)!;
    const list = weights.get(fileLayer)!;
    if (list.length !== layer.weights.length || list.some((w, i) => !sameShape(w.shape, layer.weights[i].shape))) {
      throw new ModelError(
        `Layer ${layer.name} expects weights of shapes ${layer.weights.map((w) => `[${w.shape}]`).join(' ')}, ` +
          `${source} has ${list.map((w) => `[${w.shape}]`).join(' ')} for layer ${fileLayer}.`,
        { hint: 'The weights were saved for a different architecture or width (alpha).' },
      );
    }
    values.push([layer, list.map((w) => tf.tensor(w.values, w.shape, 'float32'))]);
  }
  for (const [layer, tensors] of values) {
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
        name: w.originalName.split('/').pop()!,
        shape: w.shape as number[],
        values: w.read().dataSync() as Float32Array,
      })),
    );
  }
  return out;
}
