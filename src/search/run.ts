// A search as xp runs it: ask a round of trials from the study, train the round with the sweep machinery (trials
// that can share a backbone pass on one), report each trial's metric at every epoch end so that the pruner can
// stop its head, tell the study how each trial ended, and ask again until the study holds `trials` trials. A grid
// or random sweep with early_terminate runs here too: the study hands out its listed trials, in their order.
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { configHash, resolveTrial, type LoadedExperiment, type ResolvedTrial } from '../config/load.ts';
import { isSearch } from '../config/sweep.ts';
import { headlineValue, type EpochLogs } from '../events.ts';
import { runsRoot } from '../paths.ts';
import { planResume, runInProcess, type DecodedData, type Outcome, type TrialsContext } from '../run/trials.ts';
import { groupTrials } from '../train/sharing.ts';
import { headBytes, roundSize } from './batch.ts';
import { openOptunaSearch, SearchError, type StudyPlace } from './optuna.ts';
import { reportStudy } from './report.ts';
import type { Search } from './search.ts';
import { endLine, trialEndLine } from './lines.ts';

export interface SearchOptions extends Omit<TrialsContext, 'resume' | 'observe' | 'prune'> {
  /** Continue the interrupted trials a round asks again from their backups (xp run --resume). */
  resume: boolean;
  share: boolean;
}

/**
 * Where a search's study lives: beside the runs of its experiment, named by what defines the search (the base
 * experiment and the sweep but its trials and batch, so that asking for more trials continues the same study).
 */
export function studyPlace(loaded: Pick<LoadedExperiment, 'base' | 'sweep'>): StudyPlace {
  const { trials: _t, batch: _b, ...definition } = loaded.sweep ?? {};
  const hash = crypto
    .createHash('sha256')
    .update(configHash(loaded.base))
    .update(JSON.stringify(definition))
    .digest('hex')
    .slice(0, 16);
  const dir = path.join(runsRoot(), loaded.base.name, `search-${hash}`);
  return { file: path.join(dir, 'study.journal'), name: `${loaded.base.name}-${hash}` };
}

export async function runSearch(opts: SearchOptions): Promise<Outcome[]> {
  const { loaded, progress } = opts;
  const sweep = loaded.sweep;
  if (!sweep) throw new Error(`${opts.file} has no sweep to search`);
  const log = (line: string) => progress.line(line);
  const place = studyPlace(loaded);
  fs.mkdirSync(path.dirname(place.file), { recursive: true });
  // A grid or random sweep with early_terminate: its listed trials go through the study, in their order.
  const listed = isSearch(sweep) ? undefined : loaded.trials;
  const search = openOptunaSearch(sweep, loaded.base.training.epochs, place, listed);
  const outcomes: Outcome[] = [];
  // Rounds train one after another on the same images: decoded once, for every round.
  const decoded: DecodedData = {};
  try {
    const before = await search.counts();
    const told = before.complete + before.pruned + before.fail;
    log(
      `${listed ? `Sweep (${sweep.method}, stopped early by ${sweep.early_terminate?.type})` : `Search: ${sweep.method}`}, ${listed ? listed.length : (sweep.trials ?? 10)} trials by ${sweep.metric} (${sweep.goal}), study ${shown(place.file)}${told + before.running ? ` continued: ${told} trial(s) done, ${before.running} interrupted` : ''}`,
    );
    const auto = sweep.batch === undefined || sweep.batch === 'auto';
    const { batch, why } = roundSize(sweep, auto ? await largestHead(loaded) : 0, listed?.length);
    log(`Rounds of ${batch} trial(s): ${why}`);
    for (let round = 1; !opts.shouldStop('epoch'); round++) {
      const asked = await search.ask(batch);
      if (!asked.length) break;
      const trials = asked.map(
        (a) => listed?.find((t) => t.index === a.index) ?? resolveTrial(loaded, a.index, a.values),
      );
      log(
        `Round ${round}: ${trials.map((t, i) => `trial ${t.index}${asked[i].again ? ' (interrupted before, again)' : ''}: ${t.name}`).join('; ')}`,
      );
      const numbers = new Map(trials.map((t, i) => [t.index, asked[i].number]));
      const numberOf = (t: ResolvedTrial) => numbers.get(t.index) ?? t.index - 1;
      const grouped = groupTrials(trials, opts.share);
      const planned = opts.resume ? planResume(grouped, log) : { groups: grouped, resume: undefined };
      outcomes.push(
        ...(await runInProcess(planned.groups, {
          ...opts,
          resume: planned.resume,
          decoded,
          prune: (t) => (epoch, logs) => report(search, numberOf(t), t, epoch, logs, sweep.metric, log),
          observe: (t) => ({
            onRunEnd: async (info) => {
              await tell(search, numberOf(t), info, sweep.metric);
              log(trialEndLine(t, info, sweep.metric));
            },
          }),
        })),
      );
    }
    const { tracking, parentRunId } = opts;
    const summary = await reportStudy(
      search,
      place.file,
      tracking && parentRunId ? { uri: tracking.uri, parentRunId, metric: sweep.metric } : undefined,
      log,
    );
    const after = await search.counts();
    log(endLine(summary, after, sweep.metric));
  } catch (error) {
    // The Optuna process knows the study, this command the file that continues it.
    if (error instanceof SearchError && error.hint) error.hint = error.hint.replace('<file>', opts.file);
    throw error;
  } finally {
    await search.close();
  }
  return outcomes;
}

/** The trial's metric after an epoch, to the study; the line that says why its pruner stops it. */
async function report(
  search: Search,
  number: number,
  t: ResolvedTrial,
  epoch: number,
  logs: EpochLogs,
  metric: string,
  log: (line: string) => void,
): Promise<string | undefined> {
  const value = (logs as unknown as Record<string, unknown>)[metric];
  if (typeof value !== 'number') return undefined;
  const reason = await search.report(number, epoch, value);
  if (reason) log(`trial ${t.index} stopped after epoch ${epoch}: ${metric} ${value.toFixed(3)}, ${reason}`);
  return reason;
}

/** How a trial ended, to the study; an interrupted one stays RUNNING there, to be asked again. */
async function tell(
  search: Search,
  number: number,
  info: Parameters<typeof headlineValue>[0] & { status: string; prunedAt?: unknown },
  metric: string,
): Promise<void> {
  if (info.prunedAt) return search.tell(number, { state: 'pruned' });
  if (info.status === 'FAILED') return search.tell(number, { state: 'fail' });
  if (info.status !== 'FINISHED') return;
  const value = headlineValue(info, metric);
  await search.tell(number, value === undefined ? { state: 'fail' } : { state: 'complete', value });
}

/**
 * The largest head the sweep can ask for (each parameter at its bounds: loaded.trials are a search's probes), in
 * bytes, on the cut backbone's features (the backbone is loaded once for its feature shape).
 */
async function largestHead(loaded: LoadedExperiment): Promise<number> {
  const { loadBackbone } = await import('../model/backbone.ts');
  const backbone = await loadBackbone(loaded.base.backbone, loaded.base.data.image_size);
  const shape = backbone.featureShape;
  for (const w of backbone.model.weights) w.dispose();
  return Math.max(...loaded.trials.map((t) => headBytes(shape, t.experiment.head, t.experiment.optimizer)));
}

const shown = (p: string) =>
  path.relative(process.cwd(), p).startsWith('..') ? p : path.relative(process.cwd(), p) || '.';
