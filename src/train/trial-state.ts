// What the loop keeps for each trial between epochs: its history, its checkpoint's best epoch, its early
// stopping (Keras EarlyStopping, to the letter), the model that trains for it, and the weights it ends with.
import * as tf from '@tensorflow/tfjs-node';
import { goalSign, metricGoal } from '../config/metrics.ts';
import type { EarlyStoppingConfig } from '../config/types.ts';
import type { EarlyStoppingReport, EpochLogs } from '../events.ts';
import { trainersOf } from './sharing.ts';
import { trainStep, type TrainStep } from '../accel/index.ts';
import type { Member } from './loop.ts';
import { createSchedule, type Schedule } from '../model/schedule.ts';

export interface Trial {
  member: Member;
  epochs: number;
  history: EpochLogs[];
  checkpoint: Checkpoint;
  earlyStopping?: EarlyStopping;
  /** Early stopping ended its training before its last epoch. */
  stoppedEarly: boolean;
  /** A search's pruner ended its training after this epoch. */
  prunedAt?: { epoch: number; reason: string };
  dropoutLayers: tf.layers.Layer[];
  seed: number;
  /** numTensors at the end of each epoch, for leak checks. */
  tensorsPerEpoch: number[];
  /** The trial whose model trains for this one: itself, or the longest trial with the same trajectory. */
  readonly trainer: Trial;
  step: TrainStep;
  /** The learning rate of each of its steps (optimizer.schedule; constant without one). */
  schedule: Schedule;
  /** A prefix trial with a model of its own has copied the trainer's weights (at its last epoch or an interruption). */
  copiedTrainerWeights: boolean;
  /**
   * The steps of the epoch after its last whole one that its model's weights hold: an interruption cut that epoch
   * short and no backup held the last whole epoch's weights to go back to.
   */
  cutAfterStep?: number;
}

export function createTrials(members: Member[], stepsPerEpoch: number): Trial[] {
  const trainers = trainersOf(members.map((m) => m.experiment));
  const trials: Trial[] = members.map((member, i) => {
    const t = member.experiment.training;
    return {
      member,
      epochs: t.epochs,
      history: [],
      checkpoint: createCheckpoint(t.checkpoint),
      earlyStopping: t.early_stopping && createEarlyStopping(t.early_stopping),
      stoppedEarly: false,
      dropoutLayers: flat(member.model).filter((l) => l.getClassName() === 'Dropout'),
      seed: t.seed,
      tensorsPerEpoch: [],
      // Another trial of this group, or this one: read once all of them exist.
      get trainer() {
        return trials[trainers[i]];
      },
      step: trainStep(member.model),
      schedule: createSchedule(member.experiment.optimizer, stepsPerEpoch, t.epochs),
      copiedTrainerWeights: false,
    };
  });
  return trials;
}

/** Whether the trial has run its last epoch: all of them, or early stopping ended it. */
export const atLastEpoch = (t: Trial): boolean => t.history.length === t.epochs || t.stoppedEarly;

/**
 * After an epoch: the checkpoint's and early stopping's view of the trial's own metrics, with snapshots taken
 * from the model that trains for it; early stopping may end the trial here.
 */
export function observeEpoch(t: Trial, epoch: number, logs: EpochLogs): void {
  const trained = t.trainer.member.model;
  t.checkpoint.observe(epoch, logs, trained);
  if (t.earlyStopping?.observe(epoch, logs, trained)) t.stoppedEarly = true;
  if (t.trainer === t) t.schedule.observe(logs); // ReduceLROnPlateau, after the logs took the epoch's rate
}

// A prefix trial's model takes a copy of the trainer's current weights (the trainer goes on updating its big
// kernel in place); one given the trainer's model has them.
export function copyTrainerWeights(t: Trial): void {
  if (t.copiedTrainerWeights || t.trainer === t || t.member.model === t.trainer.member.model) return;
  const weights = snapshot(t.trainer.member.model);
  t.member.model.setWeights(weights);
  tf.dispose(weights);
  t.copiedTrainerWeights = true;
}

/**
 * Sets the weights the trial's model is saved with and frees the snapshots: the checkpoint's best epoch
 * (save_best_only), else early stopping's best epoch (restore_best_weights), else the last epoch's, or those of
 * the epoch an interruption cut short when nothing else was kept (`cut`). Returns the epoch whose weights the model
 * now holds (0 when none ran).
 */
export function restoreSavedWeights(t: Trial): { epoch: number; cut?: { interrupted_after_step: number } } {
  let saved: ReturnType<typeof restoreSavedWeights> = { epoch: t.history.length };
  const { checkpoint, earlyStopping } = t;
  if (checkpoint.bestWeights && checkpoint.bestEpoch) {
    t.member.model.setWeights(checkpoint.bestWeights);
    saved = { epoch: checkpoint.bestEpoch };
  } else if (earlyStopping?.bestWeights) {
    t.member.model.setWeights(earlyStopping.bestWeights);
    earlyStopping.restoredEpoch = earlyStopping.bestEpoch;
    saved = { epoch: earlyStopping.bestEpoch };
  } else if (t.cutAfterStep && t.history.length) {
    saved = { epoch: t.history.length + 1, cut: { interrupted_after_step: t.cutAfterStep } };
  }
  tf.dispose(checkpoint.bestWeights);
  tf.dispose(earlyStopping?.bestWeights);
  checkpoint.bestWeights = undefined;
  if (earlyStopping) earlyStopping.bestWeights = undefined;
  return saved;
}

/** Keras ModelCheckpoint's choice of the best epoch; with save_best_only, a snapshot of its weights. */
export interface Checkpoint {
  bestEpoch?: number;
  bestWeights?: tf.Tensor[];
  observe(epoch: number, logs: EpochLogs, trained: tf.LayersModel): void;
  /** What a backup keeps (besides the snapshot), and its restore. */
  state(): CheckpointState;
  restore(state: CheckpointState, bestWeights?: tf.Tensor[]): void;
}

export interface CheckpointState {
  bestEpoch?: number;
  /** The monitored value times its goal's sign (larger is better); null for -Infinity in JSON. */
  bestValue: number | null;
}

function createCheckpoint(config: { monitor: string; save_best_only: boolean }): Checkpoint {
  const sign = goalSign(metricGoal(config.monitor));
  let bestValue = -Infinity;
  const checkpoint: Checkpoint = {
    state: () => ({ bestEpoch: checkpoint.bestEpoch, bestValue: toJson(bestValue) }),
    restore(state, bestWeights) {
      checkpoint.bestEpoch = state.bestEpoch;
      bestValue = fromJson(state.bestValue);
      checkpoint.bestWeights = bestWeights;
    },
    observe(epoch, logs, trained) {
      const value = monitored(logs, config.monitor) * sign;
      if (checkpoint.bestEpoch !== undefined && !(value > bestValue)) return;
      bestValue = value;
      checkpoint.bestEpoch = epoch;
      if (config.save_best_only) {
        tf.dispose(checkpoint.bestWeights);
        checkpoint.bestWeights = snapshot(trained);
      }
    },
  };
  return checkpoint;
}

export interface EarlyStopping {
  bestEpoch: number;
  bestWeights?: tf.Tensor[];
  /** Set by restoreSavedWeights when these weights are the saved ones. */
  restoredEpoch?: number;
  /** Returns whether training stops after this epoch. */
  observe(epoch: number, logs: EpochLogs, trained: tf.LayersModel): boolean;
  report(): EarlyStoppingReport;
  /** What a backup keeps (besides the snapshot), and its restore. */
  state(): EarlyStoppingState;
  restore(state: EarlyStoppingState, bestWeights?: tf.Tensor[]): void;
}

export interface EarlyStoppingState {
  best: number | null;
  bestEpoch: number;
  wait: number;
}

// Keras 3's EarlyStopping.on_epoch_end: `wait` counts epochs since the last improvement (by more than
// min_delta); training stops once wait >= patience, never after the first epoch; with restore_best_weights the
// first epoch's weights are kept until an epoch beats them, and the best weights are restored at the end of
// training whether or not it stopped early (on_train_end).
function createEarlyStopping(config: EarlyStoppingConfig): EarlyStopping {
  const sign = goalSign(metricGoal(config.monitor, config.mode));
  let best = -Infinity;
  let wait = 0;
  let stoppedEpoch: number | undefined;
  const es: EarlyStopping = {
    bestEpoch: 0,
    state: () => ({ best: toJson(best), bestEpoch: es.bestEpoch, wait }),
    restore(state, bestWeights) {
      best = fromJson(state.best);
      es.bestEpoch = state.bestEpoch;
      wait = state.wait;
      es.bestWeights = bestWeights;
    },
    observe(epoch, logs, trained) {
      const current = monitored(logs, config.monitor) * sign;
      const improved = current - config.min_delta > best;
      wait++;
      if (improved || (config.restore_best_weights && !es.bestWeights)) {
        es.bestEpoch = epoch;
        if (config.restore_best_weights) {
          tf.dispose(es.bestWeights);
          es.bestWeights = snapshot(trained);
        }
      }
      if (improved) {
        best = current;
        wait = 0;
        return false;
      }
      if (wait >= config.patience && epoch > 1) stoppedEpoch = epoch;
      return stoppedEpoch !== undefined;
    },
    report: () => ({
      monitor: config.monitor,
      patience: config.patience,
      min_delta: config.min_delta,
      stopped_epoch: stoppedEpoch,
      best_value: best * sign,
      best_epoch: es.bestEpoch,
      restored_epoch: es.restoredEpoch,
    }),
  };
  return es;
}

/** What early stopping did, in Keras' words where Keras prints them. */
export function describeEarlyStopping(r: EarlyStoppingReport, lastEpoch: number): string[] {
  const best = `best ${r.monitor} ${r.best_value.toFixed(4)} at epoch ${r.best_epoch}`;
  const lines = [
    r.stopped_epoch
      ? `Epoch ${r.stopped_epoch}: early stopping: ${r.monitor} did not improve${r.min_delta ? ` by more than ${r.min_delta}` : ''} for ${r.stopped_epoch - r.best_epoch} epoch(s) (patience ${r.patience}); ${best}.`
      : `Early stopping did not stop the run (${best}, patience ${r.patience}).`,
  ];
  if (r.restored_epoch) lines.push(`Restoring model weights from the end of the best epoch: ${r.restored_epoch}.`);
  else if (r.stopped_epoch) lines.push(`Keeping the weights of epoch ${lastEpoch} (restore_best_weights is off).`);
  return lines;
}

// JSON has no infinities or NaN: -Infinity (nothing seen yet) and NaN are written as null.
const toJson = (v: number): number | null => (Number.isFinite(v) ? v : null);
const fromJson = (v: number | null): number => v ?? -Infinity;

// A key the logs lack (val_loss when there is no validation) reads NaN.
const isLogged = (logs: EpochLogs, key: string): key is keyof EpochLogs => key in logs;
const monitored = (logs: EpochLogs, key: string): number => (isLogged(logs, key) ? (logs[key] ?? NaN) : NaN);

// Copies, not clones: a clone shares its buffer, and the dense-head step updates its kernel in place (step.ts).
function snapshot(model: tf.LayersModel): tf.Tensor[] {
  return tf.tidy(() => model.getWeights().map((w) => tf.mul(w, tf.scalar(1, w.dtype))));
}

function flat(model: tf.LayersModel): tf.layers.Layer[] {
  return model.layers.flatMap((l) => (l instanceof tf.LayersModel ? flat(l) : [l]));
}
