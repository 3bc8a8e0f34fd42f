// Cross-field checks of the training recipe that need nothing but the experiment: a monitored metric must be one
// the run computes (training.metrics), a schedule's fields must be its type's and fit the training.
import type { Experiment, ScheduleConfig } from './types.ts';
import { EXTRA_METRICS, SCHEDULE_FIELDS } from './types.ts';
import type { FieldProblem } from './validate.ts';

/** Where a metric is named: the field's path and its value. */
const monitors = (e: Experiment): { path: string[]; metric: string }[] =>
  [
    { path: ['training', 'early_stopping', 'monitor'], metric: e.training?.early_stopping?.monitor },
    { path: ['training', 'checkpoint', 'monitor'], metric: e.training?.checkpoint?.monitor },
    { path: ['sweep', 'metric'], metric: e.sweep?.metric },
    { path: ['optimizer', 'schedule', 'monitor'], metric: e.optimizer?.schedule?.monitor },
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
  const schedule = e.optimizer?.schedule;
  if (schedule) problems.push(...scheduleChecks(schedule, e.training?.epochs ?? 1));
  return problems;
}

function scheduleChecks(s: ScheduleConfig, epochs: number): FieldProblem[] {
  const at = (field: string, message: string): FieldProblem => ({
    path: ['optimizer', 'schedule', field],
    message: `optimizer.schedule.${field} ${message}`,
  });
  const fields: readonly string[] = SCHEDULE_FIELDS[s.type];
  const problems: FieldProblem[] = Object.keys(s)
    .filter((k) => k !== 'type' && !fields.includes(k))
    .map((k) => ({
      ...at(k, `is not a field of a ${s.type} schedule; its fields are ${fields.join(', ')}`),
      atKey: true,
    }));
  const required = { exponential: ['decay_rate', 'decay_epochs'], piecewise: ['boundaries', 'values'] };
  for (const k of required[s.type as keyof typeof required] ?? [])
    if (!(k in s)) problems.push({ path: ['optimizer', 'schedule'], message: `a ${s.type} schedule needs ${k}` });
  const warmup = s.warmup_epochs ?? 0;
  if (s.type === 'cosine' && warmup > 0 && s.warmup_target === undefined)
    problems.push(at('warmup_epochs', 'needs warmup_target, the rate the warmup reaches (Keras ignores it without)'));
  if (s.type === 'cosine' && warmup >= epochs)
    problems.push(at('warmup_epochs', `must be below training.epochs (${epochs}), which leaves no epoch to decay`));
  const boundaries = s.boundaries ?? [];
  if (s.type === 'piecewise' && boundaries.some((b, i) => i > 0 && b <= boundaries[i - 1]))
    problems.push(at('boundaries', `must increase (got ${boundaries.join(', ')})`));
  if (s.type === 'piecewise' && s.values && s.boundaries && s.values.length !== boundaries.length + 1)
    problems.push(
      at(
        'values',
        `must hold one rate more than boundaries: ${boundaries.length + 1} for ${boundaries.length} boundaries (got ${s.values.length})`,
      ),
    );
  return problems;
}
