// The training loss, written once with Keras 3's formulas: cross-entropy on targets smoothed by label_smoothing,
// each sample weighted by its class's weight (fit's class_weight), reduced as Keras' sum_over_batch_size does
// (sum of weighted losses / samples: tfjs' mean of the values returned here). Without either option the model keeps
// tfjs' own loss by name, which the native head's written-out backward pass (src/accel/tail.ts) recognises.
import * as tf from '@tensorflow/tfjs-node';
import type { Loss, Task } from './task.ts';

export interface LossOptions {
  labelSmoothing?: number;
  /** One weight per class, in class order; undefined: every sample weighs 1. */
  classWeights?: number[];
}

export type LossFn = (yTrue: tf.Tensor, yPred: tf.Tensor) => tf.Tensor;
export type MetricFn = LossFn;

const EPSILON = 1e-7; // Keras' backend epsilon, with which its cross-entropies clip

/** Targets as Keras' losses smooth them: y(1 - s) + s/2 for one sigmoid unit, y(1 - s) + s/classes for softmax. */
export function smoothTargets(y: tf.Tensor, task: Task, smoothing = 0): tf.Tensor {
  if (!smoothing) return y;
  const spread = task.kind === 'binary' ? 0.5 : 1 / task.numClasses;
  return tf.add(tf.mul(y, 1 - smoothing), smoothing * spread);
}

/** Keras' cross-entropy of each sample (probabilities, not logits): a [n] tensor. */
export function crossEntropy(y: tf.Tensor, p: tf.Tensor, task: Task, smoothing = 0): tf.Tensor1D {
  return tf.tidy(() => {
    const target = smoothTargets(y, task, smoothing);
    if (task.kind === 'binary') {
      const q = tf.clipByValue(p, EPSILON, 1 - EPSILON);
      const terms = tf.add(tf.mul(target, tf.log(q)), tf.mul(tf.sub(1, target), tf.log(tf.sub(1, q))));
      return tf.neg(tf.mean(terms, -1)) as tf.Tensor1D;
    }
    const q = tf.clipByValue(tf.div(p, tf.sum(p, -1, true)), EPSILON, 1 - EPSILON);
    return tf.neg(tf.sum(tf.mul(target, tf.log(q)), -1)) as tf.Tensor1D;
  });
}

/** Each sample's class weight, read from its (unsmoothed) target: a [n] tensor. */
export function sampleWeights(y: tf.Tensor, task: Task, classWeights: number[]): tf.Tensor1D {
  return tf.tidy(() =>
    task.kind === 'binary'
      ? (tf.add(tf.mul(tf.reshape(y, [-1]), classWeights[1] - classWeights[0]), classWeights[0]) as tf.Tensor1D)
      : (tf.sum(tf.mul(y, tf.tensor1d(classWeights)), -1) as tf.Tensor1D),
  );
}

/** The loss the model compiles with: tfjs' by name when plain, else Keras' weighted, smoothed cross-entropy. */
export function trainingLoss(task: Task, opts: LossOptions = {}): Loss | LossFn {
  const { labelSmoothing = 0, classWeights } = opts;
  if (!labelSmoothing && !classWeights) return task.loss;
  return function weightedCrossEntropy(y, p) {
    return tf.tidy(() => {
      const losses = crossEntropy(y, p, task, labelSmoothing);
      return classWeights ? tf.mul(losses, sampleWeights(y, task, classWeights)) : losses;
    });
  };
}

/**
 * The accuracy the model compiles with: tfjs' by name without class weights; with them, the batch's weighted
 * accuracy (sum of w * correct / sum of w), which the loop weighs by the batch's summed weight to give Keras'
 * epoch figure.
 */
export function trainingAccuracy(task: Task, classWeights?: number[]): 'accuracy' | MetricFn {
  if (!classWeights) return 'accuracy';
  return function accuracy(y, p) {
    return tf.tidy(() => {
      const correct =
        task.kind === 'binary'
          ? tf.cast(tf.equal(tf.reshape(tf.greater(p, 0.5), [-1]), tf.cast(tf.reshape(y, [-1]), 'bool')), 'float32')
          : tf.cast(tf.equal(tf.argMax(p, -1), tf.argMax(y, -1)), 'float32');
      const w = sampleWeights(y, task, classWeights);
      return tf.div(tf.sum(tf.mul(correct, w)), tf.sum(w)); // a scalar, whose mean tfjs takes
    });
  };
}
