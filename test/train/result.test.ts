// A run's result: the saved model scored on the whole validation set is what the run reports, whatever the
// epochs validated on; early stopping says what it did and its restored epoch is the result's; MLflow gets both.
import fs from 'node:fs';
import path from 'node:path';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { loadExperiment } from '../../src/config/load.ts';
import type { RunEndInfo } from '../../src/events.ts';
import { createClient, fromKeyValues } from '../../src/tracking/client.ts';
import { createMlflowTracker } from '../../src/tracking/tracker.ts';
import type { PreparedData } from '../../src/train/data.ts';
import { runGroup } from '../../src/train/run.ts';
import { summaryLines } from '../../src/train/summary.ts';
import { recordingProgress, savedWeights, scoreSavedModel, spec, tmp, writeExperiment } from './helpers.ts';
import { serverForFile } from '../tracking/helpers.ts';

const HEAD = `head: {pooling: avg, units: [16], dropout: 0.3}
optimizer: {name: adam, learning_rate: 0.001}`;

const mlflow = serverForFile();
let data: PreparedData | undefined;

/** Trains the experiment with its console recorded and an MLflow tracker; the run's end as the tracker saw it. */
async function train(name: string, training: string) {
  const { trials } = await loadExperiment(writeExperiment(name, `${HEAD}\ntraining: ${training}`));
  const { progress, text } = recordingProgress();
  const trial = spec(trials[0]);
  const runs = path.join(tmp, 'runs');
  let end: RunEndInfo | undefined;
  let tracker: ReturnType<typeof createMlflowTracker> | undefined;
  trial.callbacks = [
    {
      onRunStart: async (info) => {
        tracker = createMlflowTracker({
          uri: mlflow().url,
          experimentName: 'result',
          runDir: info.runDir,
          log: () => {},
        });
        await tracker.onRunStart!(info);
      },
      onEpochEnd: (epoch, logs) => tracker!.onEpochEnd!(epoch, logs),
      onRunEnd: async (info) => {
        end = info;
        await tracker!.onRunEnd!(info);
      },
    },
  ];
  const r = await runGroup([trial], { baseDir: tmp, runsRoot: runs, progress, shouldStop: () => false, data });
  data = r.data;
  const run = await createClient(mlflow().url).getRun(tracker!.mlflowRunId()!);
  const metrics = Object.fromEntries((run.data.metrics ?? []).map((m) => [m.key, m.value]));
  return { outcome: r.outcomes[0], end: end!, console: text(), metrics, tags: fromKeyValues(run.data.tags) };
}

describe("a run's result", () => {
  it('is the saved model on all validation images, with per-class scores and a confusion image, when epochs validate on part of them', async () => {
    const { outcome, end, console, metrics, tags } = await train(
      'partial-validation',
      '{epochs: 2, steps_per_epoch: 3, validation_steps: 2, seed: 7}',
    );
    expect(console).toContain('(val on 16 of 1000 images)'); // 2 steps x 8
    const r = outcome.result!;
    expect(r).toBeDefined();
    expect(end.result).toEqual(r);
    expect(r.epoch).toBe(2);
    expect(r.images).toBe(1000);
    expect(r.confusion.flat().reduce((a, b) => a + b, 0)).toBe(1000);
    expect(r.val_accuracy).toBe((r.confusion[0][0] + r.confusion[1][1]) / 1000);
    expect(r.per_class.cats.support).toBe(500);
    expect(r.per_class.dogs.precision).toBeCloseTo(r.confusion[1][1] / (r.confusion[0][1] + r.confusion[1][1]), 12);
    expect(r.per_class.cats.recall).toBeCloseTo(r.confusion[0][0] / 500, 12);

    // The figure is the saved model's, as `xp predict` loads it, on every validation image.
    const saved = await scoreSavedModel(outcome.runDir, data!);
    expect(Math.abs(saved.accuracy - r.val_accuracy)).toBeLessThanOrEqual(0.003);
    expect(saved.loss).toBeCloseTo(r.val_loss, 3);

    const image = await sharp(path.join(outcome.runDir, 'confusion_matrix.png')).metadata();
    expect(image.format).toBe('png');
    expect(end.artifacts).toContain('confusion_matrix.png');
    const json = JSON.parse(fs.readFileSync(path.join(outcome.runDir, 'confusion_matrix.json'), 'utf8'));
    expect(json.matrix).toEqual(r.confusion);
    expect(json.per_class).toEqual(r.per_class);

    expect(summaryLines(outcome)[0]).toBe(
      `  result: val_accuracy ${r.val_accuracy.toFixed(4)} - val_loss ${r.val_loss.toFixed(4)} on all 1000 validation images, saved weights of epoch 2`,
    );
    expect(metrics.final_val_accuracy).toBeCloseTo(r.val_accuracy, 10);
    expect(metrics.final_val_loss).toBeCloseTo(r.val_loss, 10);
    for (const c of ['cats', 'dogs']) {
      expect(metrics[`precision_${c}`]).toBeCloseTo(r.per_class[c].precision, 10);
      expect(metrics[`recall_${c}`]).toBeCloseTo(r.per_class[c].recall, 10);
      expect(metrics[`f1_${c}`]).toBeCloseTo(r.per_class[c].f1, 10);
    }
    expect(tags['xp.result_epoch']).toBe('2');
  });

  it('after early stopping with restore_best_weights is the best epoch, whose weights were restored, and says so', async () => {
    // Epoch 1 is the best: epoch 2 cannot beat its val_loss by 100.
    const es = '{monitor: val_loss, patience: 1, min_delta: 100, restore_best_weights: true}';
    const { outcome, console, tags, metrics } = await train(
      'early-restore',
      `{epochs: 6, steps_per_epoch: 3, validation_steps: 2, seed: 7, early_stopping: ${es}}`,
    );
    expect(outcome.history).toHaveLength(2);
    expect(outcome.earlyStopping).toMatchObject({
      stopped_epoch: 2,
      best_epoch: 1,
      restored_epoch: 1,
      monitor: 'val_loss',
      patience: 1,
    });
    expect(outcome.earlyStopping!.best_value).toBe(outcome.history[0].val_loss);
    expect(outcome.result!.epoch).toBe(1);
    expect(console).toContain('Epoch 2: early stopping');
    expect(console).toContain('Restoring model weights from the end of the best epoch: 1.');
    expect(summaryLines(outcome).at(-1)).toContain('stopped at epoch 2');
    expect(tags['xp.stopped_epoch']).toBe('2');
    expect(tags['xp.restored_epoch']).toBe('1');
    expect(metrics.final_val_accuracy).toBeCloseTo(outcome.result!.val_accuracy, 10);

    // The best epoch's weights: those of the same run stopped by its epochs after epoch 1.
    const { outcome: one } = await train(
      'early-restore-1',
      '{epochs: 1, steps_per_epoch: 3, validation_steps: 2, seed: 7}',
    );
    expect(one.history[0]).toEqual({
      ...outcome.history[0],
      epoch_seconds: expect.any(Number),
      images_per_second: expect.any(Number),
    });
    const [restored, best] = await Promise.all([savedWeights(outcome.runDir), savedWeights(one.runDir)]);
    expect(restored.length).toBe(best.length);
    for (const [i, w] of restored.entries()) expect(Array.from(w)).toEqual(Array.from(best[i]));
    expect(outcome.result!.val_accuracy).toBe(one.result!.val_accuracy);
    expect(outcome.result!.val_loss).toBeCloseTo(one.result!.val_loss, 6);
  });

  it('with patience 0 stops at the first epoch without improvement and keeps its weights without restore_best_weights, as Keras', async () => {
    const es = '{monitor: val_loss, patience: 0, min_delta: 100, restore_best_weights: false}'; // xp's default is true
    const { outcome, console, tags } = await train(
      'early-patience-0',
      `{epochs: 4, steps_per_epoch: 3, validation_steps: 2, seed: 7, early_stopping: ${es}}`,
    );
    expect(outcome.history).toHaveLength(2); // Keras never stops after the first epoch
    expect(outcome.earlyStopping).toMatchObject({ stopped_epoch: 2, best_epoch: 1 });
    expect(outcome.earlyStopping!.restored_epoch).toBeUndefined();
    expect(outcome.result!.epoch).toBe(2);
    expect(console).toContain('Keeping the weights of epoch 2 (restore_best_weights is off).');
    expect(tags['xp.stopped_epoch']).toBe('2');
    expect(tags['xp.restored_epoch']).toBeUndefined();
  });

  it('restores the best weights at the end of training even when early stopping did not stop it (Keras 3 on_train_end)', async () => {
    // mode max on val_loss with min_delta 100: no epoch after the first improves; patience 5 never runs out in 2 epochs.
    const es = '{monitor: val_loss, mode: max, patience: 5, min_delta: 100, restore_best_weights: true}';
    const { outcome, console } = await train(
      'early-not-stopped',
      `{epochs: 2, steps_per_epoch: 3, validation_steps: 2, seed: 7, early_stopping: ${es}}`,
    );
    expect(outcome.history).toHaveLength(2);
    expect(outcome.earlyStopping).toMatchObject({ best_epoch: 1, restored_epoch: 1 });
    expect(outcome.earlyStopping!.stopped_epoch).toBeUndefined();
    expect(outcome.result!.epoch).toBe(1);
    expect(console).toContain('Restoring model weights from the end of the best epoch: 1.');
  });
});
