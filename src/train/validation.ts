// Validation: each epoch's validation batches (Keras' validation_steps from a shuffled stream), the whole set
// for a run's result, the frozen backbone's validation features computed once per run, and scoring: loss and
// accuracy per epoch, and the saved model's result (loss, accuracy, per-class scores, confusion) in one pass.
import { setImmediate } from 'node:timers/promises';
import * as tf from '@tensorflow/tfjs-node';
import type { Experiment } from '../config/types.ts';
import { createIndexStream, gatherBatch } from '../data/batches.ts';
import { predictedClasses, taskFor } from '../model/task.ts';
import type { ClassScores, RunResult } from '../events.ts';
import type { Rng } from '../util/random.ts';
import type { PreparedData } from './data.ts';
import { FEATURE_IMAGES, labelTensor, type Features } from './feed.ts';
import { crossEntropy } from '../model/loss.ts';
import type { MetricState } from './metrics.ts';
import { predictor } from '../accel/index.ts';

/** Sample indices of the validation set and a function giving their inputs. */
export type Part = [Int32Array, () => tf.Tensor];

export interface EpochValidation {
  parts: Part[];
  /** Images the epoch validates on (validation_steps x batch_size, or the whole set). */
  images: number;
  dispose(): void;
}

export interface EvaluateOptions {
  labelSmoothing?: number;
  metrics?: MetricState;
}

export interface ValidationSet {
  /** Images in the validation set. */
  count: number;
  /** The next epoch's validation batches; their inputs are gathered once for all the group's heads. */
  nextEpoch(): EpochValidation;
  /** Draws the validation batches of `epochs` epochs without making them: a resumed run's epochs done. */
  skipEpochs(epochs: number): void;
  /**
   * Loss and accuracy of a model on an epoch's parts, Keras-style (sample-weighted means), the loss with the trial's
   * label smoothing; `metrics` is handed every prediction (training.metrics).
   */
  evaluate(model: tf.LayersModel, parts: Part[], opts?: EvaluateOptions): { loss: number; accuracy: number };
  /** The model on the whole set: the run's result, its weights being those of `epoch`. */
  score(model: tf.LayersModel, epoch: number, labelSmoothing?: number): RunResult;
  dispose(): void;
}

/**
 * The frozen backbone's features of the whole validation set, computed once per group before its runs start: a
 * turn of the event loop between calls, so that Ctrl-C is heard, and undefined when a stop is asked for meanwhile
 * (the runs then end as interrupted before training began).
 */
export async function computeValidationFeatures(
  data: PreparedData,
  shared: Experiment,
  features: Features,
  stopped: () => boolean,
): Promise<tf.Tensor | undefined> {
  const split = data.validation;
  const size = shared.data.image_size;
  const batchSize = Math.max(shared.data.batch_size, FEATURE_IMAGES);
  const parts: tf.Tensor[] = [];
  const all = Int32Array.from({ length: split.count }, (_, i) => i);
  try {
    for (let start = 0; start < split.count; start += batchSize) {
      await setImmediate();
      if (stopped()) return undefined;
      const idx = all.subarray(start, Math.min(start + batchSize, split.count));
      const { x } = gatherBatch(split.images, split.labels, idx, size);
      parts.push(tf.tidy(() => features(imageTensor(x, idx.length, size))));
    }
    return tf.concat(parts);
  } finally {
    tf.dispose(parts);
  }
}

/** `cached`: the frozen backbone's validation features (computeValidationFeatures); the set owns them from here on. */
export function createValidationSet(
  data: PreparedData,
  shared: Experiment,
  features: Features,
  opts: { frozen: boolean; rng: Rng; cached?: tf.Tensor },
): ValidationSet {
  const size = shared.data.image_size;
  const batchSize = shared.data.batch_size;
  const count = data.validation.count;
  const stream = createIndexStream(count, batchSize, { shuffle: true, rng: opts.rng });
  const steps = shared.training.validation_steps ?? stream.batchesPerPass;
  if (opts.frozen && !opts.cached) throw new Error('a frozen backbone validates on its cached validation features');
  const cached = opts.frozen ? opts.cached : undefined;
  // Cached features are evaluated in large chunks: every predict call reads the head's whole kernel, so small
  // chunks cost as much again as the arithmetic. Per-sample sums: same result.
  const chunkSize = cached ? 250 : batchSize;
  const input = (idx: Int32Array): tf.Tensor =>
    cached
      ? tf.gather(cached, tf.tensor1d(idx, 'int32'))
      : features(
          imageTensor(gatherBatch(data.validation.images, data.validation.labels, idx, size).x, idx.length, size),
        );
  const everything = Int32Array.from({ length: count }, (_, i) => i);
  // Cached features go through in one call, as they are (a gather would copy them).
  const whole: Part[] = cached
    ? [[everything, () => cached]]
    : chunks(everything, chunkSize).map((idx) => [idx, () => input(idx)]);

  return {
    count,
    nextEpoch() {
      const indices = concat(Array.from({ length: steps }, () => stream.next()));
      // When the epoch validates on the whole set, on the cached features as they are (sums do not depend on order).
      if (cached && isPermutation(indices, count)) return { parts: whole, images: count, dispose: () => {} };
      const gathered = new Map<number, tf.Tensor>();
      const once = (idx: Int32Array) => {
        const known = gathered.get(idx.byteOffset);
        if (known) return known;
        const x = tf.keep(input(idx));
        gathered.set(idx.byteOffset, x);
        return x;
      };
      const parts = chunks(indices, chunkSize).map((idx): Part => [idx, () => once(idx)]);
      return { parts, images: indices.length, dispose: () => tf.dispose([...gathered.values()]) };
    },
    skipEpochs(epochs) {
      for (let i = 0; i < epochs * steps; i++) stream.next();
    },
    evaluate: (model, parts, opts) => evaluate(model, parts, data, opts),
    score: (model, epoch, labelSmoothing) => score(model, whole, data, epoch, labelSmoothing),
    dispose: () => tf.dispose(cached),
  };
}

const predictors = new WeakMap<tf.LayersModel, (x: tf.Tensor) => tf.Tensor>();
function predict(model: tf.LayersModel): (x: tf.Tensor) => tf.Tensor {
  let p = predictors.get(model);
  if (!p) {
    p = predictor(model);
    predictors.set(model, p);
  }
  return p;
}

function evaluate(
  model: tf.LayersModel,
  parts: Part[],
  data: PreparedData,
  opts: EvaluateOptions = {},
): { loss: number; accuracy: number } {
  let loss = 0;
  let correct = 0;
  let n = 0;
  for (const [idx, input] of parts) {
    const y = data.validation.labels;
    const labels = Int32Array.from(idx, (i) => y[i]);
    const [l, c] = tf.tidy(() => {
      const p = predict(model)(input());
      opts.metrics?.update(p.dataSync(), labels);
      return batchLossAndCorrect(p, labels, data.numClasses, opts.labelSmoothing);
    });
    loss += l;
    correct += c;
    n += idx.length;
  }
  return { loss: loss / n, accuracy: correct / n };
}

/** Loss, predicted classes and confusion of the model on the given parts, from one prediction per part. */
function score(model: tf.LayersModel, parts: Part[], data: PreparedData, epoch: number, labelSmoothing = 0): RunResult {
  const task = taskFor(data.numClasses);
  const k = data.numClasses;
  const confusion = Array.from({ length: k }, () => new Array<number>(k).fill(0));
  let loss = 0;
  let n = 0;
  for (const [idx, input] of parts) {
    const labels = Int32Array.from(idx, (i) => data.validation.labels[i]);
    const [l, predicted] = tf.tidy(() => {
      const p = predict(model)(input());
      return [
        batchLossAndCorrect(p, labels, k, labelSmoothing)[0],
        predictedClasses(task, p.dataSync() as Float32Array),
      ] as const;
    });
    for (const [j, label] of labels.entries()) confusion[label][predicted[j]]++;
    loss += l;
    n += idx.length;
  }
  const correct = confusion.reduce((a, row, i) => a + row[i], 0);
  return {
    epoch,
    images: n,
    val_accuracy: correct / n,
    val_loss: loss / n,
    per_class: classScores(confusion, data.classNames),
    confusion,
    class_names: data.classNames,
  };
}

/** Precision, recall and F1 of each class from a confusion matrix (rows true, columns predicted); 0 where undefined, as scikit-learn. */
export function classScores(confusion: number[][], classNames: string[]): Record<string, ClassScores> {
  return Object.fromEntries(
    classNames.map((name, c) => {
      const tp = confusion[c][c];
      const support = confusion[c].reduce((a, b) => a + b, 0);
      const predicted = confusion.reduce((a, row) => a + row[c], 0);
      const precision = predicted ? tp / predicted : 0;
      const recall = support ? tp / support : 0;
      const f1 = precision + recall ? (2 * precision * recall) / (precision + recall) : 0;
      return [name, { precision, recall, f1, support }];
    }),
  );
}

/** Summed cross-entropy (Keras' clipping and label smoothing) and number of correct predictions of one batch. */
export function batchLossAndCorrect(
  p: tf.Tensor,
  labels: Int32Array,
  numClasses: number,
  labelSmoothing = 0,
): [number, number] {
  return tf.tidy(() => {
    const task = taskFor(numClasses);
    const y = labelTensor(labels, numClasses);
    const loss = tf.sum(crossEntropy(y, p, task, labelSmoothing));
    const correct =
      task.kind === 'binary'
        ? tf.equal(tf.greater(p, 0.5).toFloat(), y).toFloat().sum()
        : tf.equal(tf.argMax(p, 1), tf.tensor1d(labels, 'int32')).toFloat().sum();
    return [loss.dataSync()[0], correct.dataSync()[0]];
  });
}

function imageTensor(x: Uint8Array, n: number, size: [number, number]): tf.Tensor4D {
  return tf.tidy(() => tf.tensor4d(x, [n, size[0], size[1], 3], 'int32').toFloat());
}

/** Every index of 0..n-1 exactly once. */
function isPermutation(idx: Int32Array, n: number): boolean {
  if (idx.length !== n) return false;
  const seen = new Uint8Array(n);
  for (const i of idx) {
    if (i < 0 || i >= n || seen[i]) return false;
    seen[i] = 1;
  }
  return true;
}

function chunks(idx: Int32Array, size: number): Int32Array[] {
  return Array.from({ length: Math.ceil(idx.length / size) }, (_, i) =>
    idx.subarray(i * size, Math.min((i + 1) * size, idx.length)),
  );
}

function concat(parts: Int32Array[]): Int32Array {
  const out = new Int32Array(parts.reduce((a, p) => a + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
