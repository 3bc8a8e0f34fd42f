// What `xp run --dry-run` says of a sweep that runs through a study: the rungs its pruner stops trials at, the most
// trial-epochs it can cost, and where its study lives. Nothing is asked or trained.
import type { LoadedExperiment } from '../config/load.ts';
import type { SweepConfig } from '../config/types.ts';
import { studyPlace } from './run.ts';

/** A search's plan: it asks its trials as it goes, so there is no list to show. */
export function searchPlan(file: string, loaded: LoadedExperiment, sweep: SweepConfig): string[] {
  const trials = sweep.trials ?? 10;
  return [
    `${file}: a ${sweep.method} search of ${trials} trials by ${sweep.metric}, rounds of ${sweep.batch ?? 'auto'} trial(s) (auto: computed from memory when it runs)`,
    `  parameters: ${Object.keys(sweep.parameters).join(', ')}`,
    ...stoppingPlan(loaded, sweep, trials),
  ];
}

/** The pruner's rungs, the most the sweep can cost, and its study (a listed sweep with early_terminate too). */
export function stoppingPlan(loaded: LoadedExperiment, sweep: SweepConfig, trials = loaded.trials.length): string[] {
  const epochs = loaded.base.training.epochs;
  const stop = sweep.early_terminate;
  const lines: string[] = [];
  if (stop) {
    const rungs = [];
    for (let r = stop.min_epochs; r < epochs; r *= stop.eta) rungs.push(r);
    lines.push(
      stop.type === 'median'
        ? `  early_terminate median: after each epoch from ${stop.min_epochs}, a trial below the finished trials' median stops`
        : `  early_terminate ${stop.type}: rungs after epoch ${rungs.join(', ')}; 1/${stop.eta} of a rung's trials go on`,
    );
  }
  lines.push(`  at most ${trials * epochs} trial-epochs (${trials} trials x ${epochs} epochs)`);
  lines.push(`  study: ${studyPlace(loaded).file} (running the file again continues it)`);
  return lines;
}
