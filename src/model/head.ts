// The trainable classifier on top of the backbone features, and the full model saved for serving.
import * as tf from '@tensorflow/tfjs-node';
import type { HeadConfig } from '../config/types.ts';
import { ModelError } from '../errors.ts';
import { glorotUniform } from '../accel/index.ts';

import { taskFor, type Loss } from './task.ts';

export type { Loss } from './task.ts';

const POOLING_LAYERS = {
  flatten: (name: string) => tf.layers.flatten({ name }),
  avg: (name: string) => tf.layers.globalAveragePooling2d({ name }),
  max: (name: string) => tf.layers.globalMaxPooling2d({ name }),
} as const;

const POOLING_NAMES = { flatten: 'flatten', avg: 'global_average_pooling2d', max: 'global_max_pooling2d' } as const;

export function lossFor(numClasses: number): Loss {
  return taskFor(numClasses).loss;
}

/**
 * Pooling -> [Dense(units, activation) -> Dropout(dropout)]* -> Dense(1, sigmoid) or Dense(n, softmax),
 * with Keras' default layer names (flatten, dense, dropout, dense_1, ...).
 * Keras reference: Flatten -> Dense(1024, relu) -> Dropout(0.2) -> Dense(1, sigmoid).
 */
export function buildHead(
  featureShape: number[],
  cfg: HeadConfig,
  numClasses: number,
  opts: { seed?: number } = {},
): tf.LayersModel {
  if (numClasses < 2) {
    throw new ModelError(`The head needs at least 2 classes, got ${numClasses}.`, {
      hint: 'Put the images of each class in its own folder under data.train.',
    });
  }
  const counters = new Map<string, number>();
  const kerasName = (base: string) => {
    const n = counters.get(base) ?? 0;
    counters.set(base, n + 1);
    return n === 0 ? base : `${base}_${n}`;
  };
  // Seeded Glorot initialisation (Keras' default): a trial starts from the same weights however it is run.
  let layerIndex = 0;
  const kernelInitializer = () =>
    opts.seed === undefined ? undefined : glorotUniform(opts.seed * 7919 + layerIndex++);
  const input = tf.input({ shape: featureShape, name: 'features' });
  let x = POOLING_LAYERS[cfg.pooling](kerasName(POOLING_NAMES[cfg.pooling])).apply(input) as tf.SymbolicTensor;
  for (const units of cfg.units) {
    x = tf.layers
      .dense({
        units,
        activation: cfg.activation,
        name: kerasName('dense'),
        kernelInitializer: kernelInitializer(),
      })
      .apply(x) as tf.SymbolicTensor;
    if (cfg.dropout > 0)
      x = tf.layers.dropout({ rate: cfg.dropout, name: kerasName('dropout') }).apply(x) as tf.SymbolicTensor;
  }
  const task = taskFor(numClasses);
  const output = tf.layers
    .dense({
      units: task.units,
      activation: task.activation,
      name: kerasName('dense'),
      kernelInitializer: kernelInitializer(),
    })
    .apply(x) as tf.SymbolicTensor;
  return tf.model({ inputs: input, outputs: output, name: 'head' });
}

/** Backbone then head as one model: preprocessed image -> class probabilities, for saving and serving. */
export function composeModel(backbone: tf.LayersModel, head: tf.LayersModel): tf.LayersModel {
  const input = tf.input({ shape: backbone.inputs[0].shape.slice(1) as number[], name: 'image' });
  const features = backbone.apply(input) as tf.SymbolicTensor;
  const output = head.apply(features) as tf.SymbolicTensor;
  return tf.model({ inputs: input, outputs: output, name: 'xp_model' });
}
