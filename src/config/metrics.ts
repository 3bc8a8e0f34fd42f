// Which direction is better for a metric, decided here once: checkpoints, early stopping, a sweep's best trial
// and `xp runs` all ask this function. Keras' `mode: auto` rule: accuracy-like metrics (training.metrics' auc,
// precision, recall and top_k_accuracy among them, with their val_) are maximized, the rest (losses) minimized.
export type Goal = 'maximize' | 'minimize';

export function metricGoal(metric: string, mode: 'auto' | 'min' | 'max' = 'auto'): Goal {
  if (mode === 'max') return 'maximize';
  if (mode === 'min') return 'minimize';
  return /acc|precision|recall|f1|auc/.test(metric) && !metric.endsWith('loss') ? 'maximize' : 'minimize';
}

/** +1 when larger is better, -1 when smaller is: multiply a value by it and compare with `>`. */
export const goalSign = (goal: Goal): 1 | -1 => (goal === 'maximize' ? 1 : -1);

/** Whether `a` is better than `b` under `goal` (NaN is never better). */
export const isBetter = (a: number, b: number, goal: Goal): boolean => (goal === 'maximize' ? a > b : a < b);
