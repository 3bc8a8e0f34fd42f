// The training loss with class weights and label smoothing: Keras' numbers (test/fixtures/keras/reference.py, from
// Keras' own loss classes) and a hand computation; the class weights of `balanced` and the error naming the classes.
import * as tf from '@tensorflow/tfjs-node';
import { describe, expect, it } from 'vitest';
import { classWeights } from '../../src/config/classes.ts';
import { trainingAccuracy, trainingLoss } from '../../src/model/loss.ts';
import { taskFor } from '../../src/model/task.ts';
import reference from '../fixtures/keras/reference.json' with { type: 'json' };

const lossOf = (kind: 'binary' | 'categorical', smoothing: number, weights?: number[]) => {
  const batch = reference.losses[kind];
  const task = taskFor(kind === 'binary' ? 2 : 3);
  const loss = trainingLoss(task, { labelSmoothing: smoothing, classWeights: weights });
  if (typeof loss === 'string') return undefined;
  // tfjs reduces the per-sample values with a mean, as trainOnBatch does.
  return tf.tidy(() => tf.mean(loss(tf.tensor2d(batch.y), tf.tensor2d(batch.p))).dataSync()[0]);
};

describe('the training loss', () => {
  it("equals Keras' cross-entropy with label smoothing and sample weights", () => {
    for (const r of reference.losses.values) {
      const kind = r.kind as 'binary' | 'categorical';
      const batch = reference.losses[kind];
      // Class weights that give each sample the fixture's sample weight (its class's).
      const byClass = r.weighted ? classWeightsFrom(batch.y, batch.w) : undefined;
      const value = lossOf(kind, r.smoothing, byClass) ?? plainLoss(kind);
      expect(value, `${kind} smoothing ${r.smoothing}${r.weighted ? ' weighted' : ''}`).toBeCloseTo(r.loss, 6);
    }
  });

  it('weights each sample by its class, reduced over the batch size (a hand computation)', () => {
    // Binary batch y = [1, 0, 1, 0], p = [0.9, 0.2, 0.4, 0.6]; class 0 weighs 0.5, class 1 weighs 2.
    const hand = (2 * -Math.log(0.9) + 0.5 * -Math.log(0.8) + 2 * -Math.log(0.4) + 0.5 * -Math.log(0.4)) / 4;
    expect(lossOf('binary', 0, [0.5, 2])).toBeCloseTo(hand, 6);
    // Label smoothing 0.2 on top: targets 0.9 and 0.1.
    const bce = (t: number, p: number) => -(t * Math.log(p) + (1 - t) * Math.log(1 - p));
    const smoothed = (2 * bce(0.9, 0.9) + 0.5 * bce(0.1, 0.2) + 2 * bce(0.9, 0.4) + 0.5 * bce(0.1, 0.6)) / 4;
    expect(lossOf('binary', 0.2, [0.5, 2])).toBeCloseTo(smoothed, 6);
  });

  it("keeps tfjs' loss by name without either option", () => {
    expect(trainingLoss(taskFor(2))).toBe('binaryCrossentropy');
    expect(trainingLoss(taskFor(4), { labelSmoothing: 0 })).toBe('categoricalCrossentropy');
  });

  it('weights the training accuracy as Keras does: sum of w * correct / sum of w', () => {
    const accuracy = trainingAccuracy(taskFor(2), [0.5, 2]);
    if (typeof accuracy === 'string') throw new Error('expected a weighted accuracy');
    // Correct: samples 1 and 2 (p 0.9 for 1, p 0.2 for 0); wrong: 3 and 4.
    const value = tf.tidy(
      () => accuracy(tf.tensor2d([[1], [0], [1], [0]]), tf.tensor2d([[0.9], [0.2], [0.4], [0.6]])).dataSync()[0],
    );
    expect(value).toBeCloseTo((2 + 0.5) / (2 + 0.5 + 2 + 0.5), 6);
  });
});

describe('training.class_weight', () => {
  it("balanced is Keras' n_samples / (n_classes * count)", () => {
    // 6 samples: 4 of class 0, 1 of class 1, 1 of class 2.
    expect(classWeights('balanced', ['a', 'b', 'c'], [0, 0, 1, 0, 2, 0])).toEqual([6 / 12, 6 / 3, 6 / 3]);
  });

  it('maps class names to weights, a class left out weighing 1', () => {
    expect(classWeights({ dogs: 3 }, ['cats', 'dogs'], [0, 1])).toEqual([1, 3]);
  });

  it('names the classes when given one that is not there', () => {
    expect(() => classWeights({ cats: 1, dgos: 2 }, ['cats', 'dogs'], [0, 1])).toThrow(
      'training.class_weight names a class the data does not have: "dgos"; did you mean dogs?; the classes are cats, dogs',
    );
  });
});

function classWeightsFrom(y: number[][], w: number[]): number[] {
  const out: number[] = [];
  y.forEach((row, i) => {
    const c = row.length === 1 ? row[0] : row.indexOf(1);
    out[c] = w[i];
  });
  return out;
}

function plainLoss(kind: 'binary' | 'categorical'): number {
  const batch = reference.losses[kind];
  return tf.tidy(() => {
    const y = tf.tensor2d(batch.y);
    const p = tf.tensor2d(batch.p);
    const fn = kind === 'binary' ? tf.metrics.binaryCrossentropy : tf.metrics.categoricalCrossentropy;
    return tf.mean(fn(y, p)).dataSync()[0];
  });
}
