// training.metrics as Keras 3 computes them: state accumulated over an epoch's batches (reset each epoch, as fit
// resets its metrics), on the probabilities the head outputs. AUC is keras.metrics.AUC's default: 200 thresholds
// spread evenly over [0, 1] (with -eps and 1 + eps at the ends), ROC curve, trapezoids ('interpolation'); AUC,
// precision and recall (threshold 0.5) see every output unit as one binary decision (multi_label false), so a softmax
// head's one-hot targets are flattened; top_k_accuracy is TopKCategoricalAccuracy: the true class's probability is at
// least the k-th largest (ties count as in).
import * as tf from '@tensorflow/tfjs-node';
import type { ExtraMetric } from '../config/types.ts';
import type { Task } from '../model/task.ts';

const THRESHOLDS = 200;

export interface MetricState {
  /** Adds a batch: probabilities [n, units] row-major, and each sample's class (weighted by its class's weight). */
  update(p: ArrayLike<number>, labels: ArrayLike<number>): void;
  /** The metrics over every batch added, by name. */
  results(): Partial<Record<ExtraMetric, number>>;
}

const ratio = (a: number, b: number) => (b === 0 ? 0 : a / b); // Keras' divide_no_nan

/**
 * The state of the metrics named, for the task's outputs; undefined when there are none. With class weights each
 * sample counts its class's weight, as Keras passes fit's class weights to the metrics as sample weights.
 */
export function createMetrics(
  names: readonly ExtraMetric[] | undefined,
  task: Task,
  opts: { k?: number; classWeights?: number[] } = {},
): MetricState | undefined {
  if (!names?.length) return undefined;
  // Buckets of keras' optimized confusion update: a prediction in bucket b is above thresholds 0..b.
  const positives = new Float64Array(THRESHOLDS);
  const negatives = new Float64Array(THRESHOLDS);
  const atHalf = { tp: 0, fp: 0, fn: 0 };
  const topK = { hits: 0, count: 0 };
  const units = task.units;
  const k = opts.k ?? 5;
  return {
    update(p, labels) {
      for (let i = 0; i < labels.length; i++) {
        const w = opts.classWeights?.[labels[i]] ?? 1;
        for (let c = 0; c < units; c++) {
          const q = Math.min(1, Math.max(0, p[i * units + c]));
          const positive = task.kind === 'binary' ? labels[i] === 1 : labels[i] === c;
          // float32 arithmetic, as Keras': ceil(q * (thresholds - 1)) - 1, the first bucket taking q = 0 too.
          const bucket = Math.max(0, Math.ceil(Math.fround(Math.fround(q) * (THRESHOLDS - 1))) - 1);
          (positive ? positives : negatives)[bucket] += w;
          if (q > 0.5) {
            if (positive) atHalf.tp += w;
            else atHalf.fp += w;
          } else if (positive) atHalf.fn += w;
        }
        if (task.kind === 'categorical') {
          const truth = p[i * units + labels[i]];
          let above = 0;
          for (let c = 0; c < units; c++) if (p[i * units + c] > truth) above++;
          if (above < k) topK.hits += w;
          topK.count += w;
        }
      }
    },
    results() {
      const out: Partial<Record<ExtraMetric, number>> = {};
      for (const name of names) {
        if (name === 'auc') out.auc = rocAuc(positives, negatives);
        if (name === 'precision') out.precision = ratio(atHalf.tp, atHalf.tp + atHalf.fp);
        if (name === 'recall') out.recall = ratio(atHalf.tp, atHalf.tp + atHalf.fn);
        if (name === 'top_k_accuracy') out.top_k_accuracy = ratio(topK.hits, topK.count);
      }
      return out;
    },
  };
}

/** Keras' AUC (ROC, interpolation) from the buckets' counts of positive and negative predictions. */
function rocAuc(positives: Float64Array, negatives: Float64Array): number {
  const totalPositive = positives.reduce((a, b) => a + b, 0);
  const totalNegative = negatives.reduce((a, b) => a + b, 0);
  // At threshold t: predictions in buckets t and above are positive.
  const recall: number[] = [];
  const fpRate: number[] = [];
  let tp = 0;
  let fp = 0;
  for (let t = THRESHOLDS - 1; t >= 0; t--) {
    tp += positives[t];
    fp += negatives[t];
    recall[t] = ratio(tp, totalPositive);
    fpRate[t] = ratio(fp, totalNegative);
  }
  let auc = 0;
  for (let t = 0; t < THRESHOLDS - 1; t++) auc += (fpRate[t] - fpRate[t + 1]) * ((recall[t] + recall[t + 1]) / 2);
  return auc;
}

/**
 * What the training step's metrics see, kept for the epoch's metrics: compiled as one more metric of the model (its
 * value, 0, is ignored), it is handed the probabilities of the step's own forward pass, in training mode, as Keras'
 * metrics are, whichever trainer runs the step. `take` returns them once, for the caller to dispose.
 */
export interface PredictionTap {
  metric: (yTrue: tf.Tensor, yPred: tf.Tensor) => tf.Tensor;
  take(): tf.Tensor | undefined;
}

export function predictionTap(): PredictionTap {
  let kept: tf.Tensor | undefined;
  return {
    metric: function predictions(_yTrue, yPred) {
      kept?.dispose();
      kept = tf.keep(tf.clone(yPred));
      return tf.zeros([]);
    },
    take() {
      const p = kept;
      kept = undefined;
      return p;
    },
  };
}
