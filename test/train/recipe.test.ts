// The practitioner's recipe in a tiny run (helpers.ts' pipeline): class weights and label smoothing change what
// training reports as Keras says they do, with numTensors flat from epoch to epoch.
import fs from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-node';
import { describe, expect, it } from 'vitest';
import { loadExperiment } from '../../src/config/load.ts';
import { runGroup, type TrialOutcome, type TrialSpec } from '../../src/train/run.ts';
import type { PreparedData } from '../../src/train/data.ts';
import { recordingProgress, spec, tmp, writeExperiment } from './helpers.ts';

let data: PreparedData | undefined;
async function run(name: string, body: string): Promise<TrialOutcome> {
  const { trials } = await loadExperiment(writeExperiment(name, body));
  const before = tf.memory().numTensors;
  const r = await runGroup(trials.map(spec), {
    baseDir: tmp,
    runsRoot: path.join(tmp, 'runs'),
    progress: recordingProgress().progress,
    shouldStop: () => false,
    data,
  });
  data = r.data;
  const [o] = r.outcomes;
  expect(o.status, o.error).toBe('FINISHED');
  expect(new Set(o.tensorsPerEpoch).size, `numTensors per epoch: ${o.tensorsPerEpoch}`).toBe(1);
  expect(tf.memory().numTensors).toBe(before);
  return o;
}

const head = 'head: {pooling: avg, units: [16], dropout: 0.2}\noptimizer: {name: adam, learning_rate: 0.001}';
const training = (more: string) => `training: {epochs: 2, steps_per_epoch: 3, validation_steps: 2, seed: 7${more}}`;

describe('class weights and label smoothing in training', () => {
  it('weigh the training loss and smooth the training and validation loss; balanced classes weigh 1', async () => {
    const plain = await run('recipe-plain', `${head}\n${training('')}`);
    // 16 images per class: balanced weighs each class 1, the same run as without class weights.
    const balanced = await run('recipe-balanced', `${head}\n${training(', class_weight: balanced')}`);
    expect(balanced.history[0].loss).toBeCloseTo(plain.history[0].loss, 5);
    // Dogs weigh 3: the first batch's loss (same weights, same batch) is larger, so is the epoch's.
    const weighted = await run('recipe-weighted', `${head}\n${training(', class_weight: {dogs: 3}')}`);
    expect(weighted.history[0].loss).toBeGreaterThan(plain.history[0].loss * 1.3);
    expect(weighted.history[0].val_loss).toBeDefined();
    // Smoothing raises the loss of confident predictions and of the validation set.
    const smoothed = await run('recipe-smoothed', `${head}\n${training(', label_smoothing: 0.2')}`);
    expect(smoothed.history[0].loss).not.toBeCloseTo(plain.history[0].loss, 3);
    expect(smoothed.result?.val_loss).not.toBeCloseTo(plain.result?.val_loss ?? 0, 3);
  });
});

describe('training.metrics in training', () => {
  it('logs auc, precision and recall on training and validation each epoch, monitored by early stopping', async () => {
    const o = await run(
      'recipe-metrics',
      `${head}\ntraining: {epochs: 2, steps_per_epoch: 3, seed: 7, metrics: [auc, precision, recall], early_stopping: {monitor: val_auc, patience: 5, restore_best_weights: false}}`,
    );
    for (const h of o.history)
      for (const key of ['auc', 'val_auc', 'precision', 'val_precision', 'recall', 'val_recall'] as const) {
        expect(h[key], key).toBeGreaterThanOrEqual(0);
        expect(h[key], key).toBeLessThanOrEqual(1);
      }
    expect(o.earlyStopping?.monitor).toBe('val_auc');
    // The last epoch validated on the whole set with the saved weights: Keras' precision and recall at 0.5 are the
    // result's for the positive class (dogs, label 1).
    const last = o.history.at(-1);
    expect(last?.val_precision).toBeCloseTo(o.result?.per_class.dogs.precision ?? -1, 6);
    expect(last?.val_recall).toBeCloseTo(o.result?.per_class.dogs.recall ?? -1, 6);
    const header = fs.readFileSync(path.join(o.runDir, 'history.csv'), 'utf8').split('\n')[0];
    expect(header).toBe(
      'epoch,loss,accuracy,val_loss,val_accuracy,auc,val_auc,precision,val_precision,recall,val_recall,learning_rate,epoch_seconds,images_per_second',
    );
  });
});

describe('optimizer.schedule in training', () => {
  it("sets the rate of every step and logs the epoch's last one as learning_rate", async () => {
    const o = await run(
      'recipe-cosine',
      `head: {pooling: flatten, units: [32], dropout: 0.2}
optimizer: {name: rmsprop, learning_rate: 0.0001, schedule: {type: cosine, warmup_epochs: 1, warmup_target: 0.001, alpha: 0.1}}
training: {epochs: 3, steps_per_epoch: 3, validation_steps: 2, seed: 7}`,
    );
    // Warmup over epoch 1's 3 steps (step 2 at 1e-4 + 2/3 of the way to 1e-3), then the decay over 6 steps.
    const decay = (step: number) => 0.001 * (0.9 * 0.5 * (1 + Math.cos((Math.PI * step) / 6)) + 0.1);
    const expected = [0.0001 + (2 / 3) * 0.0009, decay(2), decay(5)];
    for (const [i, h] of o.history.entries()) expect(h.learning_rate, `epoch ${i + 1}`).toBeCloseTo(expected[i], 9);
  });
});

describe('the recipe across an interruption', () => {
  it("a run resumed after epoch 2 of 4 ends as the uninterrupted one: plateau's rate, metrics, class weights", async () => {
    const body = `head: {pooling: flatten, units: [32], dropout: 0.2}
optimizer: {name: rmsprop, learning_rate: 0.001, schedule: {type: plateau, monitor: val_auc, patience: 0, factor: 0.5, min_delta: 1}}
training: {epochs: 4, steps_per_epoch: 3, validation_steps: 2, seed: 11, class_weight: {dogs: 2}, label_smoothing: 0.1, metrics: [auc, recall]}`;
    const { trials } = await loadExperiment(writeExperiment('recipe-resume', body));
    const uninterrupted = await run('recipe-resume', body);
    // min_delta 1: no AUC after the first improves on it by more, so the rate halves at the end of every epoch from
    // the second on; an epoch logs the rate it trained with, as Keras does.
    expect(uninterrupted.history.map((h) => h.learning_rate)).toEqual([0.001, 0.001, 0.0005, 0.00025]);
    let stop = false;
    const first = spec(trials[0]);
    first.callbacks = [
      {
        onEpochEnd: (epoch) => {
          stop = epoch === 2;
        },
      },
    ];
    const train = async (trial: TrialSpec, shouldStop: () => boolean) => {
      const options = { baseDir: tmp, runsRoot: path.join(tmp, 'runs'), shouldStop, backup: true, data };
      const [outcome] = (await runGroup([trial], { ...options, progress: recordingProgress().progress })).outcomes;
      return outcome;
    };
    const killed = await train(first, () => stop);
    expect(killed.status).toBe('KILLED');
    const resumed = await train(
      { ...spec(trials[0]), resume: { runId: killed.runId, runDir: killed.runDir } },
      () => false,
    );
    expect(resumed.status).toBe('FINISHED');
    for (const [i, h] of resumed.history.entries()) {
      const u = uninterrupted.history[i];
      for (const k of [
        'loss',
        'accuracy',
        'val_loss',
        'auc',
        'val_auc',
        'recall',
        'val_recall',
        'learning_rate',
      ] as const)
        expect(h[k], `epoch ${i + 1} ${k}`).toBeCloseTo(u[k] ?? NaN, 6);
    }
  });
});
