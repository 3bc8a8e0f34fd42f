// What a search prints of its trials: one line as each ends, and the line it ends with, from its study.
import type { ResolvedTrial } from '../config/load.ts';
import { trialName } from '../config/sweep.ts';
import { headlineValue, type RunResult } from '../events.ts';
import type { StudySummary } from './search.ts';

/**
 * The search's last line, from its study (this run's trials and earlier runs'):
 * `best of 24: trial 7, dropout=0.1 ..., val_accuracy 0.8120 (16 stopped early, after 1-3 epochs); the study holds ...`
 */
export function endLine(
  summary: StudySummary,
  counts: { complete: number; pruned: number; fail: number; running: number },
  metric: string,
): string {
  const told = counts.complete + counts.pruned + counts.fail;
  const study = `the study holds ${counts.complete} finished, ${counts.pruned} stopped, ${counts.fail} failed${counts.running ? `, ${counts.running} interrupted` : ''}`;
  if (!told) return `Nothing finished: ${study}`;
  const stopped = summary.pruned_epochs;
  const [low, high] = [Math.min(...stopped), Math.max(...stopped)];
  const after = !stopped.length
    ? ''
    : `, after ${low === high ? `${low} epoch${low === 1 ? '' : 's'}` : `${low}-${high} epochs`}`;
  const { best } = summary;
  const head = best
    ? `best of ${told}: trial ${best.index}, ${trialName(best.params)}, ${metric} ${best.value.toFixed(4)}`
    : `no trial of ${told} finished`;
  return `${head} (${stopped.length} stopped early${after}); ${study}`;
}

/** A trial's line as it ends: its values, the epochs it trained, its metric, and whether the search stopped it. */
export function trialEndLine(
  t: ResolvedTrial,
  info: { status: string; prunedAt?: { epoch: number }; history: unknown[]; result?: RunResult; error?: string },
  metric: string,
): string {
  const epochs = t.experiment.training.epochs;
  const trained = info.history.length;
  const value = headlineValue(info as Parameters<typeof headlineValue>[0], metric);
  const figure = value === undefined ? '' : `, ${metric} ${value.toFixed(4)}`;
  const how = info.prunedAt
    ? `stopped after epoch ${info.prunedAt.epoch} of ${epochs}`
    : info.status === 'FINISHED'
      ? `${trained} of ${epochs} epochs`
      : info.status === 'FAILED'
        ? `FAILED after ${trained} of ${epochs} epochs${info.error ? ` (${info.error})` : ''}`
        : `interrupted after ${trained} of ${epochs} epochs (asked again when the search goes on)`;
  return `trial ${t.index} ended: ${t.name}: ${how}${figure}`;
}
