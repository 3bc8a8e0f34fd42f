// Cross-field checks of the training recipe that need nothing but the experiment: a monitored metric must be one
// the run computes (training.metrics), a schedule's fields must fit the training (schedule-checks.ts).
import type { Experiment } from './types.ts';
import { EXTRA_METRICS } from './types.ts';
import type { FieldProblem } from './validate.ts';

/** Where a metric is named: the field's path and its value. */
const monitors = (e: Experiment): { path: string[]; metric: string }[] =>
  [
    { path: ['training', 'early_stopping', 'monitor'], metric: e.training?.early_stopping?.monitor },
    { path: ['training', 'checkpoint', 'monitor'], metric: e.training?.checkpoint?.monitor },
    { path: ['sweep', 'metric'], metric: e.sweep?.metric },
  ].filter((m): m is { path: string[]; metric: string } => typeof m.metric === 'string');

export function recipeChecks(e: Experiment): FieldProblem[] {
  const computed = new Set<string>(e.training?.metrics ?? []);
  const problems: FieldProblem[] = [];
  for (const { path, metric } of monitors(e)) {
    const name = metric.replace(/^val_/, '');
    if ((EXTRA_METRICS as readonly string[]).includes(name) && !computed.has(name))
      problems.push({
        path,
        message: `${path.join('.')} is ${metric}, which the run does not compute; add ${name} to training.metrics`,
      });
  }
  return problems;
}
