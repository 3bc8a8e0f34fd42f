// Per-class scores of a run's result, from its confusion matrix, and their MLflow names.
import { describe, expect, it } from 'vitest';
import { resultRecords } from '../../src/tracking/records.ts';
import { classScores } from '../../src/train/validation.ts';

describe('per-class scores', () => {
  // rows: true class, columns: predicted class
  const confusion = [
    [5, 1, 0],
    [2, 3, 1],
    [0, 1, 0],
  ];

  it('are precision, recall and F1 of each class, 0 where undefined (as scikit-learn)', () => {
    const s = classScores(confusion, ['cat', 'dog', 'fox']);
    expect(s.cat).toEqual({
      precision: 5 / 7,
      recall: 5 / 6,
      f1: (2 * (5 / 7) * (5 / 6)) / (5 / 7 + 5 / 6),
      support: 6,
    });
    expect(s.dog.precision).toBeCloseTo(3 / 5, 12);
    expect(s.dog.recall).toBeCloseTo(3 / 6, 12);
    expect(s.dog.support).toBe(6);
    expect(s.fox).toEqual({ precision: 0, recall: 0, f1: 0, support: 1 }); // predicted once, wrongly
  });

  it('go to MLflow under names it accepts, with the headline and early stopping as tags', () => {
    const per_class = classScores(confusion, ['big cat+', 'dog', 'fox/kit']);
    const { metrics, tags } = resultRecords({
      result: {
        epoch: 3,
        images: 13,
        val_accuracy: 8 / 13,
        val_loss: 0.5,
        per_class,
        confusion,
        class_names: ['big cat+', 'dog', 'fox/kit'],
      },
      earlyStopping: {
        monitor: 'val_loss',
        patience: 2,
        min_delta: 0,
        stopped_epoch: 5,
        best_value: 0.5,
        best_epoch: 3,
        restored_epoch: 3,
      },
    });
    for (const key of Object.keys(metrics)) expect(key).toMatch(/^[/\w.\- ]*$/);
    expect(metrics).toMatchObject({
      final_val_accuracy: 8 / 13,
      final_val_loss: 0.5,
      'precision_big cat_': 5 / 7,
      'recall_fox/kit': 0,
    });
    expect(tags).toMatchObject({ 'xp.result_epoch': '3', 'xp.stopped_epoch': '5', 'xp.restored_epoch': '3' });
  });
});
