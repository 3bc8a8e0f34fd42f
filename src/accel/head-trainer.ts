// What the training loop asks of a model it trains: a step on a batch, predictions, a copy of the weights, and
// cleaning up. The reference trainer is plain tfjs (trainOnBatch, predict); the accelerated one (dense-head.ts)
// gives the same numbers faster where the policy and the model allow it. The loop never knows which it has.
import * as tf from '@tensorflow/tfjs-node';
import { densePredictor, denseHeadStep } from './dense-head.ts';
import { accelPolicy, type AccelPolicy } from './policy.ts';

export interface HeadTrainer {
  /** 'dense-head' when the first Dense kernel is updated in one pass (native kernels), else 'trainOnBatch'. */
  readonly kind: 'dense-head' | 'trainOnBatch';
  /** For a dense head: the layers after the large Dense written out (tail.ts), or under a gradient tape. */
  readonly backprop?: 'written-out' | 'tape';
  /**
   * One training step on a batch: [loss, ...metrics] as trainOnBatch returns them ([loss, accuracy] for xp's
   * models). `next`: the next batch's input when it is already known, for the one-pass step to prepare its matmul.
   */
  step(input: tf.Tensor, target: tf.Tensor, next?: tf.Tensor): Promise<number[]>;
  /** Predictions in inference mode, as model.predict gives them. */
  predict(x: tf.Tensor): tf.Tensor;
  /** Copies of every weight, in model.getWeights() order: copies, not clones, which share buffers that a step may update in place. */
  snapshot(): tf.Tensor[];
  /** Frees what the trainer prepared for a next batch that did not come (an interrupted epoch). */
  dispose(): void;
}

const snapshot = (model: tf.LayersModel) => () =>
  tf.tidy(() => model.getWeights().map((w) => tf.mul(w, tf.scalar(1, w.dtype))));

/** Plain tfjs: model.trainOnBatch and model.predict, whatever the policy. */
export function referenceTrainer(model: tf.LayersModel): HeadTrainer {
  return {
    kind: 'trainOnBatch',
    step: async (x, y) => [(await model.trainOnBatch(x, y)) as number[]].flat(),
    predict: (x) => model.predict(x) as tf.Tensor,
    snapshot: snapshot(model),
    dispose: () => {},
  };
}

/** The trainer the policy gives this model: the accelerated one's parts where they apply, else the reference's. */
export function headTrainer(model: tf.LayersModel, policy: AccelPolicy = accelPolicy()): HeadTrainer {
  const reference = referenceTrainer(model);
  if (!policy.nativeKernels) return reference;
  const dense = denseHeadStep(model);
  return {
    kind: dense ? 'dense-head' : 'trainOnBatch',
    backprop: dense?.backprop,
    step: dense?.step ?? reference.step,
    predict: densePredictor(model) ?? reference.predict,
    snapshot: reference.snapshot,
    dispose: dense?.dispose ?? reference.dispose,
  };
}

/** A training step as a function (the loop's view of a HeadTrainer). */
export interface TrainStep {
  (x: tf.Tensor, y: tf.Tensor, next?: tf.Tensor): Promise<number[]>;
  dispose(): void;
  kind: HeadTrainer['kind'];
  backprop?: HeadTrainer['backprop'];
}

export function trainStep(model: tf.LayersModel, policy: AccelPolicy = accelPolicy()): TrainStep {
  const trainer = headTrainer(model, policy);
  return Object.assign((x: tf.Tensor, y: tf.Tensor, next?: tf.Tensor) => trainer.step(x, y, next), {
    dispose: () => trainer.dispose(),
    kind: trainer.kind,
    backprop: trainer.backprop,
  });
}

/** Predictions of a model in inference mode, as model.predict gives them. */
export function predictor(model: tf.LayersModel, policy: AccelPolicy = accelPolicy()): (x: tf.Tensor) => tf.Tensor {
  return (policy.nativeKernels && densePredictor(model)) || ((x) => model.predict(x) as tf.Tensor);
}
