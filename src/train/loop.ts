// The training loop. A frozen backbone runs in inference mode outside the gradient tape; its features for each
// augmented batch are computed once and fed to every member's head, so a group of trials that differ only in the
// head, optimizer or epochs costs about one run. A single run is a group of one. Validation features are
// computed once per run and reused every epoch. Members that differ only in their number of epochs follow one
// trajectory (same seed, batches and dropout masks): the longest one trains, and each shorter one is its prefix,
// taking the trained weights when its last epoch ends. The parts: feeding (feed.ts), validation and scoring
// (validation.ts), each trial's checkpoint and early stopping (trial-state.ts), backups for resuming (backup.ts).
import { setImmediate } from 'node:timers/promises';
import * as tf from '@tensorflow/tfjs-node';
import type { Experiment } from '../config/types.ts';
import type { Backbone } from '../model/backbone.ts';
import { setDropoutSeed } from '../accel/index.ts';
import { createRng } from '../util/random.ts';
import type { EarlyStoppingReport, EpochLogs, PruneCheck, RunResult, StopCheck } from '../events.ts';
import type { PreparedData } from './data.ts';
import { backboneFeatures, createTrainingFeed, type TrainingFeed } from './feed.ts';
import {
  backedUpWeights,
  backupKey,
  backupTrial,
  backupWritten,
  linkBackup,
  resumeTrial,
  type Backup,
} from './backup.ts';
import type { Progress } from './progress.ts';
import {
  atLastEpoch,
  copyTrainerWeights,
  createTrials,
  describeEarlyStopping,
  observeEpoch,
  restoreSavedWeights,
  type Trial,
} from './trial-state.ts';
import { createValidationSet, type Part, type ValidationSet } from './validation.ts';
import { createMetrics, type MetricState, type PredictionTap } from './metrics.ts';
import { taskFor, type Task } from '../model/task.ts';
import { setLearningRate } from '../model/optimizer.ts';

export interface Member {
  label?: string;
  experiment: Experiment;
  /**
   * Compiled head: features -> probabilities (frozen backbone), or the whole model (fine-tuning). A member that
   * trains as the first epochs of a longer one may be given that one's model: it is done before the longer one
   * trains on, and reads the weights there.
   */
  model: tf.LayersModel;
  /** The weight of each class's samples in its training loss and accuracy (training.class_weight), if any. */
  classWeights?: number[];
  /** Hands over each step's predictions, for training.metrics; compiled into the model. */
  tap?: PredictionTap;
  onEpochEnd(epoch: number, logs: EpochLogs): Promise<void>;
  /** Where its state is backed up at each epoch end it trains on after (BackupAndRestore); none when undefined. */
  backupDir?: string;
  /** Its state after the epochs an interrupted run did: training goes on from there. Every member of a resumed group has one. */
  resume?: Backup;
  /** Asked after each epoch but its last (a search's pruner): a reason stops the member there, its run KILLED. */
  prune?: PruneCheck;
  /** The member is done (its epochs ran, it stopped early, or the run was interrupted); `model` holds its saved weights until this returns. */
  onDone(result: MemberResult): Promise<void>;
}

export interface MemberResult {
  history: EpochLogs[];
  /** The checkpoint's best epoch (training.checkpoint.monitor). */
  bestEpoch?: number;
  stoppedEarly: boolean;
  earlyStopping?: EarlyStoppingReport;
  /** numTensors at the end of each epoch, for leak checks. */
  tensorsPerEpoch: number[];
  /** The model as saved, on the whole validation set; absent when no epoch ran. */
  result?: RunResult;
  /** A search's pruner stopped the member after this epoch, for this reason. */
  prunedAt?: { epoch: number; reason: string };
}

export interface LoopOptions {
  data: PreparedData;
  backbone: Backbone;
  /** Inference function of the frozen backbone (BN folded); undefined when fine-tuning. */
  forward?: (x: tf.Tensor4D) => tf.Tensor;
  /** The frozen backbone's features of the validation set (computeValidationFeatures), which the group then owns. */
  validationFeatures?: tf.Tensor;
  progress: Progress;
  /** Whether to stop before the next step (a signal), or only before the next epoch (a worker told to finish it). */
  shouldStop: StopCheck;
}

/** Trains the group; each member's result goes to its onDone as soon as the member is done. */
export async function trainGroup(members: Member[], opts: LoopOptions): Promise<void> {
  const { data, progress, shouldStop } = opts;
  const shared = members[0].experiment;
  const rng = createRng(shared.training.seed);
  const [indexRng, validationRng, augmentRng] = [rng.fork(), rng.fork(), rng.fork()];
  const frozen = opts.forward !== undefined;
  const features = backboneFeatures(opts.backbone, opts.forward);
  const feed = createTrainingFeed(data, shared, features, { frozen, indexRng, augmentRng });
  const validation = createValidationSet(data, shared, features, {
    frozen,
    rng: validationRng,
    cached: opts.validationFeatures,
  });
  const trials = createTrials(members, feed.steps);
  const maxEpochs = Math.max(...trials.map((t) => t.epochs));
  const task = taskFor(data.numClasses);
  const ended = new Set<Trial>();
  const end = async (t: Trial) => {
    if (ended.has(t)) return;
    ended.add(t);
    await endTrial(t, validation, progress);
  };
  const step = { global: 0 };
  let cut = 0; // steps of the epoch an interruption cut short: the trained weights are that far past the history
  try {
    const epochsDone = await resumeGroup(trials, feed, validation, step);
    for (let epoch = epochsDone + 1; epoch <= maxEpochs && !shouldStop('epoch'); epoch++) {
      const active = trials.filter((t) => !t.stoppedEarly && !t.prunedAt && epoch <= t.epochs);
      if (!active.length) break;
      const trainers = [...new Set(active.map((t) => t.trainer))];
      const label =
        members.length > 1
          ? trainers.length < active.length
            ? `${trainers.length} heads for ${active.length} trials`
            : `${active.length} heads`
          : undefined;
      progress.epochStart(epoch, members.length > 1 ? maxEpochs : active[0].epochs, feed.steps, label);
      const started = Date.now();
      const { sums, steps } = await trainEpoch(trainers, feed, step, opts, task);
      if (shouldStop('step')) {
        cut = steps;
        break;
      }
      const trainSeconds = (Date.now() - started) / 1000;
      const epochValidation = validation.nextEpoch();
      const scores = new Map<Trial, Scores>();
      try {
        for (const t of active) {
          const val = scores.get(t.trainer) ?? evaluate(validation, t.trainer, epochValidation.parts, task);
          scores.set(t.trainer, val);
          const sum = sums.get(t.trainer);
          if (!sum) throw new Error(`${t.member.label ?? 'the trial'}: its trainer did not train in epoch ${epoch}`);
          const logs = epochLogs(t, sum, val, step.global - 1, started, trainSeconds);
          t.history.push(logs);
          observeEpoch(t, epoch, logs);
          if (atLastEpoch(t)) copyTrainerWeights(t);
          t.tensorsPerEpoch.push(tf.memory().numTensors);
          progress.epochEnd(epoch, logs, t.member.label, { images: epochValidation.images, of: validation.count });
          await t.member.onEpochEnd(epoch, logs);
          if (atLastEpoch(t))
            await end(t); // before its trainer trains on
          else if (await pruned(t, epoch, logs, active)) await end(t); // its head leaves the shared pass now
        }
      } finally {
        epochValidation.dispose();
      }
      await backupEpoch(
        active.flatMap((t) => (t.member.backupDir && !ended.has(t) ? [{ trial: t, dir: t.member.backupDir }] : [])),
      );
    }
    // An interrupted trial's last backup is on disk before its run ends (KILLED: resumable from there).
    for (const t of trials) if (t.member.backupDir && !ended.has(t)) await backupWritten(t.member.backupDir);
    const unended = trials.filter((t) => !ended.has(t));
    if (cut) rewindCutEpoch(unended, cut);
    for (const t of trials) copyTrainerWeights(t); // interrupted: prefixes take the weights a lone run would have had
    for (const t of [...trials].sort((a, b) => Number(a.trainer === a) - Number(b.trainer === b))) await end(t); // prefixes first
  } catch (error) {
    // The members' epochs done, for the runs the failure ends: their history says what they trained.
    throw Object.assign(error as Error, { histories: trials.map((t) => [...t.history]) });
  } finally {
    await Promise.allSettled(trials.map((t) => t.member.backupDir && backupWritten(t.member.backupDir)));
    for (const t of trials) t.step.dispose();
    validation.dispose();
  }
}

/** Whether a search's pruner stops the trial after this epoch; a trial that trains for another goes on. */
async function pruned(t: Trial, epoch: number, logs: EpochLogs, active: Trial[]): Promise<boolean> {
  if (!t.member.prune || active.some((o) => o !== t && o.trainer === t)) return false;
  const reason = await t.member.prune(epoch, logs);
  if (reason !== undefined) t.prunedAt = { epoch, reason };
  return reason !== undefined;
}

/** Backs up the trials that train on; a prefix trial whose state is its trainer's shares the trainer's files. */
async function backupEpoch(backups: { trial: Trial; dir: string }[]): Promise<void> {
  for (const { trial: t, dir } of backups) if (t.trainer === t) await backupTrial(t, dir);
  for (const { trial: t, dir } of backups) {
    if (t.trainer === t) continue;
    const trainer = backups.find((b) => b.trial === t.trainer);
    if (trainer && backupKey(t) === backupKey(t.trainer)) linkBackup(t, trainer.dir, dir);
    else await backupTrial(t, dir);
  }
}

/** A trainer's validation figures of the epoch: loss, accuracy and training.metrics (val_auc, ...). */
type Scores = { loss: number; accuracy: number; extra: Record<string, number> };

function evaluate(validation: ValidationSet, trainer: Trial, parts: Part[], task: Task): Scores {
  const metrics = trialMetrics(trainer, task, false);
  const { loss, accuracy } = validation.evaluate(trainer.member.model, parts, {
    labelSmoothing: labelSmoothing(trainer),
    metrics,
  });
  const extra = Object.fromEntries(Object.entries(metrics?.results() ?? {}).map(([k, v]) => [`val_${k}`, v]));
  return { loss, accuracy, extra };
}

/** The state of a trial's training.metrics for an epoch's training batches (class-weighted) or its validation. */
const trialMetrics = (t: Trial, task: Task, training: boolean) =>
  createMetrics(t.member.experiment.training.metrics, task, {
    k: t.member.experiment.training.top_k,
    classWeights: training ? t.member.classWeights : undefined,
  });

/** A trial's metrics of the epoch: its trainer's training sums and validation scores. */
function epochLogs(
  t: Trial,
  sum: TrainingSums,
  val: Scores,
  lastStep: number,
  started: number,
  trainSeconds: number,
): EpochLogs {
  return {
    loss: sum.loss / sum.n,
    accuracy: sum.accuracy / sum.weight,
    val_loss: val.loss,
    val_accuracy: val.accuracy,
    ...sum.metrics?.results(),
    ...val.extra,
    learning_rate: t.trainer.schedule.rate(lastStep), // the epoch's last step's, as Keras 3 logs it
    // In a group the epoch is shared: its wall time so far, as each trial saw it.
    epoch_seconds: (Date.now() - started) / 1000,
    images_per_second: sum.n / trainSeconds,
  };
}

/** A resumed group's trials where their backups left them, and the batches of the epochs done drawn; returns those epochs. */
async function resumeGroup(
  trials: Trial[],
  feed: TrainingFeed,
  validation: ValidationSet,
  step: { global: number },
): Promise<number> {
  const epochs = new Set(trials.map((t) => t.member.resume?.epoch));
  if (epochs.size !== 1)
    throw new Error(`a resumed group needs every trial's backup at the same epoch (got ${[...epochs].join(', ')})`);
  const [done] = epochs;
  if (!done) return 0;
  // One epoch for all, and it is not undefined: every trial has a backup.
  for (const t of trials) if (t.member.resume) await resumeTrial(t, t.member.resume);
  feed.skip(done * feed.steps);
  validation.skipEpochs(done);
  step.global = done * feed.steps;
  return done;
}

/**
 * Per trainer, an epoch's sums as Keras keeps them: the loss weighted by batch size, the accuracy by the batch's
 * summed sample weights (its size without class weights).
 */
interface TrainingSums {
  loss: number;
  accuracy: number;
  n: number;
  weight: number;
  /** training.metrics over the epoch's batches. */
  metrics?: MetricState;
}

const labelSmoothing = (t: Trial) => t.member.experiment.training.label_smoothing;

/** The summed class weights of a batch's samples; its size without class weights. */
function batchWeight(labels: Int32Array, classWeights: number[] | undefined): number {
  if (!classWeights) return labels.length;
  let w = 0;
  for (const label of labels) w += classWeights[label];
  return w;
}

/** One epoch's training steps for every trainer on the same batches; per trainer, sample-weighted sums. */
async function trainEpoch(
  trainers: Trial[],
  feed: TrainingFeed,
  step: { global: number },
  opts: LoopOptions,
  task: Task,
) {
  const sums = new Map(
    trainers.map((t): [Trial, TrainingSums] => [
      t,
      { loss: 0, accuracy: 0, n: 0, weight: 0, metrics: trialMetrics(t, task, true) },
    ]),
  );
  const [first] = sums.values(); // an epoch trains at least one trainer
  const batches = feed.epoch();
  let s = 0;
  try {
    while (s < feed.steps) {
      s++;
      // A turn of the event loop each step: signals, tracking deliveries and a queue's lock renewals wait for one.
      await setImmediate();
      const { batch, upcoming } = batches.next();
      step.global++;
      for (const [t, sum] of sums) {
        // Dropout masks from the trial's own seed and the step: identical whether it trains alone or in a group.
        for (const layer of t.dropoutLayers) setDropoutSeed(layer, (t.seed * 1_000_003 + step.global) % 2 ** 31);
        // The optimizer's iterations before this step: the step the schedule's rate is of.
        if (t.member.model.optimizer) setLearningRate(t.member.model.optimizer, t.schedule.rate(step.global - 1));
        const [loss, accuracy] = await t.step(batch.input, batch.target, upcoming);
        const predictions = t.member.tap?.take();
        if (predictions) {
          sum.metrics?.update(predictions.dataSync(), batch.labels);
          predictions.dispose();
        }
        const weight = batchWeight(batch.labels, t.member.classWeights);
        sum.loss += loss * batch.n;
        sum.accuracy += accuracy * weight;
        sum.n += batch.n;
        sum.weight += weight;
      }
      tf.dispose([batch.input, batch.target]);
      opts.progress.step(s, { loss: first.loss / first.n, accuracy: first.accuracy / first.weight });
      if (opts.shouldStop('step')) break;
    }
  } finally {
    batches.dispose();
  }
  return { sums, steps: s };
}

/**
 * An interruption cut the epoch after the trials' last whole one short: their trainers' weights go back to that
 * epoch's, from the backup taken at its end, so that the model saved is the epoch its result names (as the backup
 * resumes from it). Without a backup the weights stay, and the result says how far into the cut epoch they are.
 */
function rewindCutEpoch(trials: Trial[], steps: number): void {
  for (const trainer of new Set(trials.map((t) => t.trainer))) {
    const epoch = trainer.history.length;
    if (!epoch) continue; // nothing is saved of a run interrupted in its first epoch
    const weights = trainer.member.backupDir ? backedUpWeights(trainer.member.backupDir, epoch) : undefined;
    if (weights) {
      trainer.member.model.setWeights(weights);
      tf.dispose(weights);
    } else for (const t of trials) if (t.trainer === trainer) t.cutAfterStep = steps;
  }
}

/** A trial's end: its saved weights set, what early stopping did said, the saved model scored, its outputs (onDone). */
async function endTrial(t: Trial, validation: ValidationSet, progress: Progress): Promise<void> {
  const saved = restoreSavedWeights(t);
  const earlyStopping = t.earlyStopping?.report();
  if (earlyStopping && t.history.length) {
    for (const line of describeEarlyStopping(earlyStopping, t.history.length))
      progress.line(t.member.label ? `  ${t.member.label}: ${line}` : line);
  }
  await t.member.onDone({
    history: t.history,
    bestEpoch: t.checkpoint.bestEpoch,
    stoppedEarly: t.stoppedEarly,
    earlyStopping,
    tensorsPerEpoch: t.tensorsPerEpoch,
    prunedAt: t.prunedAt,
    result: saved.epoch
      ? { ...validation.score(t.member.model, saved.epoch, labelSmoothing(t)), ...saved.cut }
      : undefined,
  });
}
