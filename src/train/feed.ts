// Feeding the heads: training batches drawn in order from the shuffled index stream, augmented, and through the
// frozen backbone several batches per call, one batch ahead of the step that trains on them.
import * as tf from '@tensorflow/tfjs-node';
import type { Experiment } from '../config/types.ts';
import { createIndexStream, gatherBatch } from '../data/batches.ts';
import { createAugmenter, randomTransform } from '../data/augment.ts';
import { preprocess, type Backbone } from '../model/backbone.ts';
import { taskFor } from '../model/task.ts';
import type { Rng } from '../util/random.ts';
import type { PreparedData } from './data.ts';

/** Images per backbone call when features are computed ahead (frozen backbone). */
export const FEATURE_IMAGES = 100;

export interface Batch {
  input: tf.Tensor;
  target: tf.Tensor;
  /** The class of each sample, as the target encodes it. */
  labels: Int32Array;
  n: number;
}

/** Images -> what the heads take: backbone features (frozen), or preprocessed images (fine-tuning). */
export type Features = (x: tf.Tensor4D) => tf.Tensor;

export function backboneFeatures(backbone: Backbone, forward?: (x: tf.Tensor4D) => tf.Tensor): Features {
  return (x) =>
    tf.tidy(() => {
      const input = preprocess(x, backbone.preprocessing) as tf.Tensor4D;
      return forward ? forward(input) : input; // fine-tuning: the model takes preprocessed images
    });
}

export interface EpochBatches {
  /** The step's batch, and the input of the one after it when it is already computed. */
  next(): { batch: Batch; upcoming?: tf.Tensor };
  /** Frees batches computed ahead of an interruption. */
  dispose(): void;
}

export interface TrainingFeed {
  steps: number;
  epoch(): EpochBatches;
  /** Draws the indices and augmentation of `batches` batches without making them: a resumed run's epochs done. */
  skip(batches: number): void;
}

export function createTrainingFeed(
  data: PreparedData,
  shared: Experiment,
  features: Features,
  opts: { frozen: boolean; indexRng: Rng; augmentRng: Rng },
): TrainingFeed {
  const size = shared.data.image_size;
  const batchSize = shared.data.batch_size;
  const stream = createIndexStream(data.train.count, batchSize, { shuffle: true, rng: opts.indexRng });
  const augmenter = createAugmenter(shared.augmentation, size, opts.augmentRng);
  const steps = shared.training.steps_per_epoch ?? stream.batchesPerPass;
  // The frozen backbone runs on ~100 images per call, which it does faster per image than batch by batch; each
  // image's features are the same, and the heads still train batch by batch.
  const batchesPerCall = opts.frozen ? Math.max(1, Math.round(FEATURE_IMAGES / batchSize)) : 1;

  // The next k training batches, augmented in order (the augmenter's random draws are the same as one at a time),
  // through the backbone in one call.
  const nextBatches = (k: number): Batch[] => {
    const labels: Int32Array[] = [];
    const all = tf.tidy(() => {
      const augmented = Array.from({ length: k }, () => {
        const { x, y } = gatherBatch(data.train.images, data.train.labels, stream.next(), size);
        labels.push(y);
        return augmenter.augment(tf.tensor4d(x, [y.length, size[0], size[1], 3], 'int32'));
      });
      return features(k === 1 ? augmented[0] : tf.concat(augmented));
    });
    const inputs =
      k === 1
        ? [all]
        : tf.split(
            all,
            labels.map((y) => y.length),
          );
    if (k > 1) all.dispose();
    return inputs.map((input, i) => ({
      input,
      target: labelTensor(labels[i], data.numClasses),
      labels: labels[i],
      n: labels[i].length,
    }));
  };

  return {
    steps,
    epoch() {
      const queue: Batch[] = [];
      let queued = 0;
      return {
        next() {
          // One batch ahead: a head's update prepares the next batch's matmul (step.ts) when it is known.
          if (queue.length < 2 && queued < steps) {
            const k = Math.min(batchesPerCall, steps - queued);
            queue.push(...nextBatches(k));
            queued += k;
          }
          const batch = queue.shift();
          if (!batch) throw new Error(`the epoch has ${steps} steps: no batch is left for another`);
          return { batch, upcoming: queue[0]?.input };
        },
        dispose() {
          for (const b of queue.splice(0)) tf.dispose([b.input, b.target]);
        },
      };
    },
    skip(batches) {
      for (let i = 0; i < batches; i++) {
        const idx = stream.next();
        // The augmenter draws one transform per image, in order (augment.ts).
        if (!augmenter.identity)
          for (let j = 0; j < idx.length; j++) randomTransform(shared.augmentation, size, opts.augmentRng);
      }
    },
  };
}

/** Targets as the task's loss takes them: 0/1 column (binary) or one-hot rows (categorical). */
export function labelTensor(y: Int32Array, numClasses: number): tf.Tensor {
  return tf.tidy(() =>
    taskFor(numClasses).kind === 'binary'
      ? tf.tensor2d(Float32Array.from(y), [y.length, 1])
      : tf.oneHot(tf.tensor1d(y, 'int32'), numClasses).toFloat(),
  );
}
