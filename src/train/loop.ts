// The training loop. A frozen backbone runs in inference mode outside the gradient tape; its features for each
// augmented batch are computed once and fed to every member's head, so a group of trials that differ only in the
// head, optimizer or epochs costs about one run. A single run is a group of one. Validation features are
// computed once per run and reused every epoch. Members that differ only in their number of epochs follow one
// trajectory (same seed, batches and dropout masks): the longest one trains, and each shorter one is its prefix,
// taking the trained weights when its last epoch ends.
import * as tf from '@tensorflow/tfjs-node';
import type { Experiment } from '../config/types.ts';
import { createIndexStream, gatherBatch } from '../data/batches.ts';
import { createAugmenter } from '../data/augment.ts';
import { preprocess, type Backbone } from '../model/backbone.ts';
import { trainersOf } from './sharing.ts';
import { predictor, trainStep, type TrainStep } from '../accel/index.ts';
import { createRng } from '../util/random.ts';
import type { EpochLogs } from '../events.ts';
import type { PreparedData, Split } from './data.ts';
import type { Progress } from './progress.ts';

export interface Member {
  label?: string;
  experiment: Experiment;
  /**
   * Compiled head: features -> probabilities (frozen backbone), or the whole model (fine-tuning). A member that
   * trains as the first epochs of a longer one may be given that one's model: it is done before the longer one
   * trains on, and reads the weights there.
   */
  model: tf.LayersModel;
  onEpochEnd(epoch: number, logs: EpochLogs): Promise<void>;
  /** The member is done (its epochs ran, it stopped early, or the run was interrupted); `model` holds its final weights until this returns. */
  onDone(result: MemberResult): Promise<void>;
}

export interface MemberResult {
  history: EpochLogs[];
  bestEpoch?: number;
  stoppedEarly: boolean;
  /** numTensors at the end of each epoch, for leak checks. */
  tensorsPerEpoch: number[];
  /** Confusion matrix on the whole validation set with the final weights: rows true class, columns predicted. */
  confusion: number[][];
}

export interface LoopOptions {
  data: PreparedData;
  backbone: Backbone;
  /** Inference function of the frozen backbone (BN folded); undefined when fine-tuning. */
  forward?: (x: tf.Tensor4D) => tf.Tensor;
  progress: Progress;
  shouldStop: () => boolean;
}

/** Images per backbone call when features are computed ahead (frozen backbone). */
const FEATURE_IMAGES = 100;

interface Batch {
  input: tf.Tensor;
  target: tf.Tensor;
  n: number;
}

interface State {
  member: Member;
  epochs: number;
  history: EpochLogs[];
  best?: { epoch: number; value: number; weights?: tf.Tensor[] };
  stop?: { monitor: string; patience: number; minDelta: number; sign: 1 | -1; bestValue: number; wait: number; bestWeights?: tf.Tensor[] };
  done: boolean;
  stoppedEarly: boolean;
  dropoutLayers: tf.layers.Layer[];
  tensorsPerEpoch: number[];
  seed: number;
  /** The member whose model trains for this one: itself, or the longest member with the same trajectory. */
  trainer: State;
  /** A prefix member has taken the trainer's weights (at its last epoch, early stop or interruption). */
  settled: boolean;
  step: TrainStep;
}

/** Trains the group; each member's result goes to its onDone as soon as the member is done. */
export async function trainGroup(members: Member[], opts: LoopOptions): Promise<void> {
  const shared = members[0].experiment;
  const { data, backbone, progress } = opts;
  const size = shared.data.image_size;
  const batchSize = shared.data.batch_size;
  const rng = createRng(shared.training.seed);
  const trainStream = createIndexStream(data.train.count, batchSize, { shuffle: true, rng: rng.fork() });
  const validationStream = createIndexStream(data.validation.count, batchSize, { shuffle: true, rng: rng.fork() });
  const augmenter = createAugmenter(shared.augmentation, size, rng.fork());
  const steps = shared.training.steps_per_epoch ?? trainStream.batchesPerPass;
  const validationSteps = shared.training.validation_steps ?? validationStream.batchesPerPass;
  const states = members.map((member) => initialState(member));
  assignTrainers(states);
  const maxEpochs = Math.max(...states.map((s) => s.epochs));

  const features = (x: tf.Tensor4D) => tf.tidy(() => {
    const input = preprocess(x, backbone.preprocessing) as tf.Tensor4D;
    return opts.forward ? opts.forward(input) : input; // fine-tuning: the model takes preprocessed images
  });
  // The frozen backbone runs on ~100 images per call: on 2 cores InceptionV3 to mixed7 does ~100 images/s in
  // batches of 20 and ~130 in batches of 100. Each image's features are the same; the heads still train batch by batch.
  const featureBatches = opts.forward ? Math.max(1, Math.round(FEATURE_IMAGES / batchSize)) : 1;
  const validationFeatures = opts.forward ? cacheFeatures(data.validation, size, Math.max(batchSize, FEATURE_IMAGES), features) : undefined;
  // Cached features are evaluated in large chunks: every predict call reads the head's whole kernel (154 MB for
  // the reference head), so 20 rows at a time costs as much again as the arithmetic. Per-sample sums: same result.
  const evalChunk = validationFeatures ? 250 : batchSize;
  const validationInput = (idx: Int32Array): tf.Tensor =>
    validationFeatures
      ? tf.gather(validationFeatures, tf.tensor1d(idx, 'int32'))
      : features(imageTensor(gatherBatch(data.validation.images, data.validation.labels, idx, size).x, idx.length, size));

  // The next k training batches, augmented in order (the augmenter's random draws are the same as one at a time),
  // through the backbone in one call.
  const nextBatches = (k: number): Batch[] => {
    const labels: Int32Array[] = [];
    const all = tf.tidy(() => {
      const augmented = Array.from({ length: k }, () => {
        const { x, y } = gatherBatch(data.train.images, data.train.labels, trainStream.next(), size);
        labels.push(y);
        return augmenter.augment(tf.tensor4d(x, [y.length, size[0], size[1], 3], 'int32'));
      });
      return features(k === 1 ? augmented[0] : tf.concat(augmented));
    });
    const inputs = k === 1 ? [all] : tf.split(all, labels.map((y) => y.length));
    if (k > 1) all.dispose();
    return inputs.map((input, i) => ({ input, target: labelTensor(labels[i], data.numClasses), n: labels[i].length }));
  };

  // A member's end: its best weights restored where asked, its confusion matrix, its outputs (onDone).
  const completed = new Set<State>();
  const everything = Int32Array.from({ length: data.validation.count }, (_, i) => i);
  // Cached features go through in one call, as they are (a gather would copy them: 150 MB for the reference).
  const wholeValidation: [Int32Array, () => tf.Tensor][] = validationFeatures
    ? [[everything, () => validationFeatures]]
    : chunks(everything, evalChunk).map((idx) => [idx, () => validationInput(idx)]);
  const complete = async (s: State) => {
    if (completed.has(s)) return;
    completed.add(s);
    finish(s);
    const result: MemberResult = {
      history: s.history,
      bestEpoch: s.best?.epoch,
      stoppedEarly: s.stoppedEarly,
      tensorsPerEpoch: s.tensorsPerEpoch,
      confusion: confusionMatrix(s.member.model, data, wholeValidation),
    };
    await s.member.onDone(result);
  };

  let globalStep = 0;
  try {
    for (let epoch = 1; epoch <= maxEpochs && !opts.shouldStop(); epoch++) {
      const active = states.filter((s) => !s.done && epoch <= s.epochs);
      if (!active.length) break;
      const trainers = [...new Set(active.map((s) => s.trainer))];
      const label = members.length > 1 ? (trainers.length < active.length ? `${trainers.length} heads for ${active.length} trials` : `${active.length} heads`) : undefined;
      progress.epochStart(epoch, members.length > 1 ? maxEpochs : active[0].epochs, steps, label);
      const started = Date.now();
      const sums = new Map(trainers.map((t) => [t, { loss: 0, accuracy: 0, n: 0 }]));
      let images = 0;
      const queue: Batch[] = [];
      let queued = 0;
      for (let step = 1; step <= steps; step++) {
        // One batch ahead: a head's update prepares the next batch's matmul (step.ts) when it is known.
        if (queue.length < 2 && queued < steps) {
          const k = Math.min(featureBatches, steps - queued);
          queue.push(...nextBatches(k));
          queued += k;
        }
        const { input, target, n } = queue.shift()!;
        globalStep++;
        for (const t of trainers) {
          // Dropout masks from the trial's own seed and the step: identical whether it trains alone or in a group.
          for (const layer of t.dropoutLayers) (layer as unknown as { seed: number }).seed = (t.seed * 1_000_003 + globalStep) % 2 ** 31;
          const [loss, accuracy] = await t.step(input, target, queue[0]?.input);
          const sum = sums.get(t)!;
          sum.loss += loss * n;
          sum.accuracy += accuracy * n;
          sum.n += n;
        }
        tf.dispose([input, target]);
        images += n;
        const first = sums.get(trainers[0])!;
        progress.step(step, { loss: first.loss / first.n, accuracy: first.accuracy / first.n });
        if (opts.shouldStop()) break;
      }
      for (const b of queue) tf.dispose([b.input, b.target]); // computed ahead of an interruption
      if (opts.shouldStop()) break;
      const trainSeconds = (Date.now() - started) / 1000;
      const validationIndices = concat(Array.from({ length: validationSteps }, () => validationStream.next()));
      const validation = new Map<State, { loss: number; accuracy: number }>();
      // The epoch's validation inputs are gathered once for all the group's heads; when the epoch validates on
      // the whole set, on the cached features as they are (the sums do not depend on the order).
      const gathered = new Map<number, tf.Tensor>();
      const epochInput = (idx: Int32Array) => {
        let input = gathered.get(idx.byteOffset);
        if (!input) gathered.set(idx.byteOffset, (input = tf.keep(validationInput(idx))));
        return input;
      };
      const validationParts: [Int32Array, () => tf.Tensor][] =
        validationFeatures && isPermutation(validationIndices, data.validation.count)
          ? wholeValidation
          : chunks(validationIndices, evalChunk).map((idx) => [idx, () => epochInput(idx)]);
      try {
        for (const s of active) {
          const trained = s.trainer.member.model;
          let val = validation.get(s.trainer);
          if (!val) validation.set(s.trainer, (val = evaluate(trained, validationParts, data)));
          const sum = sums.get(s.trainer)!;
          const logs: EpochLogs = {
            loss: sum.loss / sum.n,
            accuracy: sum.accuracy / sum.n,
            val_loss: val.loss,
            val_accuracy: val.accuracy,
            learning_rate: s.member.experiment.optimizer.learning_rate,
            // In a group the epoch is shared: its wall time so far, as each trial saw it.
            epoch_seconds: (Date.now() - started) / 1000,
            images_per_second: images / trainSeconds,
          };
          s.history.push(logs);
          track(s, epoch, logs, trained);
          if (epoch === s.epochs || s.done) settle(s);
          s.tensorsPerEpoch.push(tf.memory().numTensors);
          progress.epochEnd(epoch, logs, s.member.label);
          await s.member.onEpochEnd(epoch, logs);
          if (epoch === s.epochs || s.done) await complete(s); // before its trainer trains on
        }
      } finally {
        tf.dispose([...gathered.values()]);
      }
    }
    for (const s of states) settle(s); // interrupted: prefixes take the weights a lone run would have had
    for (const s of [...states].sort((a, b) => Number(a.trainer === a) - Number(b.trainer === b))) await complete(s); // prefixes first
  } finally {
    for (const s of states) s.step.dispose();
    tf.dispose(validationFeatures);
  }
}

const predictors = new WeakMap<tf.LayersModel, (x: tf.Tensor) => tf.Tensor>();
function predict(model: tf.LayersModel): (x: tf.Tensor) => tf.Tensor {
  let p = predictors.get(model);
  if (!p) predictors.set(model, (p = predictor(model)));
  return p;
}

/** Over the given parts of the validation set: sample indices and their inputs. */
function confusionMatrix(model: tf.LayersModel, data: PreparedData, parts: [Int32Array, () => tf.Tensor][]): number[][] {
  const k = data.numClasses;
  const matrix = Array.from({ length: k }, () => new Array<number>(k).fill(0));
  for (const [part, input] of parts) {
    const predicted = tf.tidy(() => {
      const p = predict(model)(input());
      return (k === 2 ? tf.greater(p, 0.5).reshape([-1]).toInt() : tf.argMax(p, 1)).dataSync();
    });
    part.forEach((i, j) => matrix[data.validation.labels[i]][predicted[j]]++);
  }
  return matrix;
}

function initialState(member: Member): State {
  const t = member.experiment.training;
  const es = t.early_stopping;
  const sign = (monitor: string, mode = 'auto') => (mode === 'max' || (mode === 'auto' && monitor.includes('accuracy')) ? 1 : -1);
  return {
    member,
    epochs: t.epochs,
    history: [],
    done: false,
    stoppedEarly: false,
    dropoutLayers: flat(member.model).filter((l) => l.getClassName() === 'Dropout'),
    tensorsPerEpoch: [],
    seed: t.seed,
    trainer: undefined as unknown as State, // assignTrainers sets it
    settled: false,
    step: trainStep(member.model),
    stop: es && { monitor: es.monitor, patience: es.patience, minDelta: es.min_delta, sign: sign(es.monitor, es.mode), bestValue: -Infinity, wait: 0 },
  };
}

function assignTrainers(states: State[]): void {
  const trainers = trainersOf(states.map((s) => s.member.experiment));
  states.forEach((s, i) => (s.trainer = states[trainers[i]]));
}

// A prefix member's model takes a copy of the trainer's current weights (the trainer goes on updating its big
// kernel in place); one given the trainer's model has them.
function settle(s: State): void {
  if (s.settled || s.trainer === s || s.member.model === s.trainer.member.model) return;
  const weights = snapshot(s.trainer.member.model);
  s.member.model.setWeights(weights);
  tf.dispose(weights);
  s.settled = true;
}

// Best epoch for the checkpoint, and early stopping, both on the member's own metrics; snapshots come from the
// model that trains for it.
function track(s: State, epoch: number, logs: EpochLogs, trained: tf.LayersModel): void {
  const { checkpoint } = s.member.experiment.training;
  const value = monitored(logs, checkpoint.monitor) * (checkpoint.monitor.includes('accuracy') ? 1 : -1);
  if (!s.best || value > s.best.value) {
    tf.dispose(s.best?.weights);
    s.best = { epoch, value, weights: checkpoint.save_best_only ? snapshot(trained) : undefined };
  }
  const stop = s.stop;
  if (!stop) return;
  const v = monitored(logs, stop.monitor) * stop.sign;
  if (v - stop.minDelta > stop.bestValue) {
    stop.bestValue = v;
    stop.wait = 0;
    if (s.member.experiment.training.early_stopping?.restore_best_weights) {
      tf.dispose(stop.bestWeights);
      stop.bestWeights = snapshot(trained);
    }
  } else if (++stop.wait >= stop.patience) {
    s.done = true;
    s.stoppedEarly = true;
  }
}

function finish(s: State): void {
  const saveBest = s.member.experiment.training.checkpoint.save_best_only;
  const restore = saveBest ? s.best?.weights : s.stoppedEarly ? s.stop?.bestWeights : undefined;
  if (restore) s.member.model.setWeights(restore);
  tf.dispose(s.stop?.bestWeights);
  tf.dispose(s.best?.weights);
}

const monitored = (logs: EpochLogs, key: string) => (logs as unknown as Record<string, number>)[key] ?? NaN;

// Copies, not clones: a clone shares its buffer, and the dense-head step updates its kernel in place (step.ts).
function snapshot(model: tf.LayersModel): tf.Tensor[] {
  return tf.tidy(() => model.getWeights().map((w) => tf.mul(w, tf.scalar(1, w.dtype))));
}

function flat(model: tf.LayersModel): tf.layers.Layer[] {
  return model.layers.flatMap((l) => (l instanceof tf.LayersModel ? flat(l) : [l]));
}

function imageTensor(x: Uint8Array, n: number, size: [number, number]): tf.Tensor4D {
  return tf.tidy(() => tf.tensor4d(x, [n, size[0], size[1], 3], 'int32').toFloat());
}

export function labelTensor(y: Int32Array, numClasses: number): tf.Tensor {
  return tf.tidy(() => (numClasses === 2 ? tf.tensor2d(Float32Array.from(y), [y.length, 1]) : tf.oneHot(tf.tensor1d(y, 'int32'), numClasses).toFloat()));
}

function cacheFeatures(split: Split, size: [number, number], batchSize: number, features: (x: tf.Tensor4D) => tf.Tensor): tf.Tensor {
  const chunks: tf.Tensor[] = [];
  const all = Int32Array.from({ length: split.count }, (_, i) => i);
  for (let start = 0; start < split.count; start += batchSize) {
    const idx = all.subarray(start, Math.min(start + batchSize, split.count));
    const { x } = gatherBatch(split.images, split.labels, idx, size);
    chunks.push(tf.tidy(() => features(imageTensor(x, idx.length, size))));
  }
  const out = tf.concat(chunks);
  tf.dispose(chunks);
  return out;
}

/** Loss and accuracy over the given validation samples, Keras-style (sample-weighted means). */
function evaluate(model: tf.LayersModel, parts: [Int32Array, () => tf.Tensor][], data: PreparedData): { loss: number; accuracy: number } {
  let loss = 0;
  let correct = 0;
  let n = 0;
  for (const [idx, input] of parts) {
    const [l, c] = tf.tidy(() => {
      const y = data.validation.labels;
      const labels = Int32Array.from(idx, (i) => y[i]);
      const p = predict(model)(input());
      return batchLossAndCorrect(p, labels, data.numClasses);
    });
    loss += l;
    correct += c;
    n += idx.length;
  }
  return { loss: loss / n, accuracy: correct / n };
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
  return Array.from({ length: Math.ceil(idx.length / size) }, (_, i) => idx.subarray(i * size, Math.min((i + 1) * size, idx.length)));
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

export function batchLossAndCorrect(p: tf.Tensor, labels: Int32Array, numClasses: number): [number, number] {
  return tf.tidy(() => {
    const eps = 1e-7; // Keras backend epsilon, as its cross-entropy clips
    const clipped = tf.clipByValue(p, eps, 1 - eps);
    if (numClasses === 2) {
      const y = tf.tensor2d(Float32Array.from(labels), [labels.length, 1]);
      const loss = tf.neg(tf.add(tf.mul(y, tf.log(clipped)), tf.mul(tf.sub(1, y), tf.log(tf.sub(1, clipped))))).sum();
      const correct = tf.equal(tf.greater(p, 0.5).toFloat(), y).toFloat().sum();
      return [loss.dataSync()[0], correct.dataSync()[0]];
    }
    const y = tf.oneHot(tf.tensor1d(labels, 'int32'), numClasses).toFloat();
    const loss = tf.neg(tf.mul(y, tf.log(clipped)).sum()).sum();
    const correct = tf.equal(tf.argMax(p, 1), tf.tensor1d(labels, 'int32')).toFloat().sum();
    return [loss.dataSync()[0], correct.dataSync()[0]];
  });
}
