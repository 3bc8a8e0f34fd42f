// training.metrics against Keras' own metric classes on fixed predictions (test/fixtures/keras/reference.py), fed
// in two batches as an epoch feeds them, without and with class weights (Keras' sample weights).
import { describe, expect, it } from 'vitest';
import { createMetrics } from '../../src/train/metrics.ts';
import { taskFor } from '../../src/model/task.ts';
import { EXTRA_METRICS } from '../../src/config/types.ts';
import { metricGoal } from '../../src/config/metrics.ts';
import reference from '../fixtures/keras/reference.json' with { type: 'json' };

describe('training.metrics', () => {
  for (const row of reference.metrics.values) {
    it(`equal keras.metrics on ${row.kind} predictions${row.weighted ? ' with class weights' : ''}`, () => {
      const kind = row.kind as 'binary' | 'categorical';
      const fixed = reference.metrics[kind];
      const task = taskFor(kind === 'binary' ? 2 : 4);
      // top_k_accuracy is not asked of a sigmoid head: xp check refuses it.
      const names = kind === 'binary' ? EXTRA_METRICS.filter((m) => m !== 'top_k_accuracy') : EXTRA_METRICS;
      const state = createMetrics(names, task, {
        k: reference.metrics.categorical.k,
        classWeights: row.weighted ? reference.metrics.class_weights : undefined,
      });
      const half = fixed.labels.length / 2;
      state?.update(fixed.p.slice(0, half * task.units), fixed.labels.slice(0, half));
      state?.update(fixed.p.slice(half * task.units), fixed.labels.slice(half));
      const results = state?.results() ?? {};
      for (const name of ['auc', 'precision', 'recall', 'top_k_accuracy'] as const)
        if (name in row) expect(results[name], name).toBeCloseTo(row[name as keyof typeof row] as number, 6);
    });
  }

  it('are maximized by checkpoints, early stopping and sweeps', () => {
    for (const name of EXTRA_METRICS) {
      expect(metricGoal(name), name).toBe('maximize');
      expect(metricGoal(`val_${name}`), name).toBe('maximize');
    }
  });

  it('are none when none are asked for', () => {
    expect(createMetrics(undefined, taskFor(2))).toBeUndefined();
    expect(createMetrics([], taskFor(2))).toBeUndefined();
  });
});
