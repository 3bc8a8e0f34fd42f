// `xp run`: load and validate every trial, connect the tracker, group trials that can share a backbone pass,
// train, and print a Keras-like summary with the MLflow URL of each run.
import path from 'node:path';
import { loadExperiment, type ResolvedTrial } from '../config/load.ts';
import type { Experiment } from '../config/types.ts';
import { XpError } from '../errors.ts';
import type { Callbacks } from '../train/callbacks.ts';
import { createProgress, duration, type OutputMode, type Progress } from '../train/progress.ts';
import { repoRoot } from '../tracking/server.ts';

export interface RunOptions {
  set?: string[];
  sweep?: string[];
  track: boolean;
  dryRun: boolean;
  parallel: number;
  rerun: boolean;
  share: boolean;
  dataDir?: string;
  output: OutputMode;
  /** Internal: run only these trial indexes (child processes of --parallel). */
  only?: number[];
  parentRunId?: string;
}

export const runsRoot = () => process.env.XP_RUNS_DIR || path.join(repoRoot, 'runs');

export async function runCommand(file: string, opts: RunOptions): Promise<number> {
  const loaded = await loadExperiment(file, { set: opts.set, sweep: opts.sweep });
  const progress = createProgress(opts.output);
  let trials = loaded.trials.filter((t) => !opts.only || opts.only.includes(t.index));
  const groups = groupTrials(trials, opts.share);

  if (opts.dryRun) {
    progress.line(`${file}: ${trials.length} trial${trials.length === 1 ? '' : 's'} in ${groups.length} group${groups.length === 1 ? '' : 's'} (trials in a group share one backbone pass)`);
    for (const [g, group] of groups.entries()) {
      for (const t of group) progress.line(`  [group ${g + 1}] trial ${t.index}: ${t.name}  (config ${t.configHash})`);
    }
    return 0;
  }

  const stop = interruptible(progress);
  const tracking = opts.track && loaded.base.tracking.enabled ? await connectTracking(loaded.base, progress) : undefined;
  try {
    let parentRunId = opts.parentRunId;
    if (tracking && loaded.sweep && !parentRunId) {
      if (!opts.rerun) {
        const done = await tracking.finished(trials.map((t) => t.configHash));
        const skipped = trials.filter((t) => done.has(t.configHash));
        if (skipped.length) progress.line(`Skipping ${skipped.length} trial(s) already FINISHED in MLflow (--rerun runs them again): ${skipped.map((t) => t.name).join('; ')}`);
        trials = trials.filter((t) => !done.has(t.configHash));
      }
      if (!trials.length) {
        progress.line('Every trial of this sweep has FINISHED already.');
        return 0;
      }
      parentRunId = await tracking.startParent(loaded, file);
    }

    const { runGroup } = await import('../train/run.ts');
    const outcomes = [];
    let data;
    let failed = 0;
    for (const group of groupTrials(trials, opts.share)) {
      if (stop.requested()) break;
      const specs = group.map((t) => ({
        name: t.name,
        experiment: t.experiment,
        configHash: t.configHash,
        parentRunId,
        callbacks: tracking ? [tracking.callbacks(t, file, parentRunId)] : ([] as Callbacks[]),
      }));
      if (group.length > 1) progress.line(`Training ${group.length} trials on one shared backbone pass: ${group.map((t) => t.name).join('; ')}`);
      try {
        const sameData = data && JSON.stringify(data.config) === JSON.stringify(group[0].experiment.data);
        const r = await runGroup(specs, {
          baseDir: loaded.baseDir,
          sourceFile: file,
          runsRoot: runsRoot(),
          dataDir: opts.dataDir,
          progress,
          shouldStop: stop.requested,
          data: sameData ? data!.prepared : undefined,
        });
        data = { config: group[0].experiment.data, prepared: r.data };
        outcomes.push(...r.outcomes);
      } catch (error) {
        // A failing group ends FAILED (its runs are closed by runGroup); a sweep goes on with the next group.
        failed += group.length;
        if (!loaded.sweep) throw error;
        progress.line(`trials ${group.map((t) => t.index).join(', ')} FAILED: ${(error as Error).message}`);
        outcomes.push(...group.map((t) => ({ name: t.name, status: 'FAILED' as const, error: (error as Error).message, history: [], runDir: '', runId: '', wallSeconds: 0, tensorsPerEpoch: [] })));
      }
    }
    const urls = tracking ? await tracking.finish(outcomes, parentRunId, loaded, stop.requested()) : new Map<string, string>();
    summarize(outcomes, urls, progress, opts.output);
    if (stop.requested()) return 130;
    return failed ? 1 : 0;
  } finally {
    stop.dispose();
    await tracking?.close();
  }
}

/** Trials that differ only in head, optimizer or epochs (same data, backbone, augmentation, seed) share a pass. */
export function groupTrials(trials: ResolvedTrial[], share: boolean): ResolvedTrial[][] {
  const groups = new Map<string, ResolvedTrial[]>();
  for (const t of trials) {
    const e = t.experiment;
    const fineTuned = e.backbone.trainable || e.backbone.trainable_from !== undefined;
    const key = share && !fineTuned ? JSON.stringify(sharedPart(e)) : `${t.index}`;
    groups.set(key, [...(groups.get(key) ?? []), t]);
  }
  return [...groups.values()];
}

function sharedPart(e: Experiment) {
  const { steps_per_epoch, validation_steps, seed } = e.training;
  return { data: e.data, backbone: e.backbone, augmentation: e.augmentation, steps_per_epoch, validation_steps, seed };
}

function interruptible(progress: Progress) {
  let count = 0;
  const onSignal = () => {
    count++;
    if (count === 1) progress.line('\nInterrupted: finishing the current step, saving what exists and closing the runs (Ctrl-C again to quit now)');
    else process.exit(130);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return {
    requested: () => count > 0,
    dispose: () => {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    },
  };
}

async function connectTracking(base: Experiment, progress: Progress) {
  const { resolveTrackingUri } = await import('../tracking/server.ts');
  const tracker = await import('../tracking/tracker.ts');
  const server = await resolveTrackingUri({ experimentUri: base.tracking.uri, storeDir: path.join(runsRoot(), 'mlflow') }).catch((error) => {
    throw new XpError(`cannot reach or start MLflow: ${error.message}`, { cause: error, hint: 'run with --no-track to train without tracking, or set MLFLOW_TRACKING_URI to a running server' });
  });
  const uri = server.url;
  const experimentName = base.tracking.experiment_name ?? base.name;
  progress.line(`MLflow: ${uri} (${server.source === 'embedded' ? `embedded, store ${path.relative(process.cwd(), path.join(runsRoot(), 'mlflow')) || '.'}` : server.source})`);
  const trackers = new Map<string, ReturnType<typeof tracker.createMlflowTracker>>();
  return {
    finished: (hashes: string[]) => tracker.findFinishedRunsByConfigHash(uri, experimentName, hashes),
    async startParent(loaded: Awaited<ReturnType<typeof loadExperiment>>, file: string) {
      const parent = await tracker.startParentRun({
        uri,
        experimentName,
        runName: `sweep ${Object.keys(loaded.sweep!.parameters).join(' x ')}`,
        sourceFile: file,
        sweepDefinition: {
          params: { sweep: loaded.sweep, trials: loaded.trials.length },
          tags: { 'xp.sweep.trials': String(loaded.trials.length), ...(loaded.base.description ? { 'mlflow.note.content': loaded.base.description } : {}) },
        },
      });
      progress.line(`Sweep parent run: ${parent.url}`);
      return parent.runId;
    },
    callbacks(t: ResolvedTrial, file: string, parentRunId?: string): Callbacks {
      let created: ReturnType<typeof tracker.createMlflowTracker> | undefined;
      return {
        onRunStart(info) {
          created = tracker.createMlflowTracker({ uri, experimentName, runDir: info.runDir, sourceFile: file, parentRunId, log: (l) => progress.line(l) });
          trackers.set(info.runDir, created);
          return created.onRunStart?.(info);
        },
        onEpochEnd: (epoch, logs) => created?.onEpochEnd?.(epoch, logs),
        onRunEnd: (info) => created?.onRunEnd?.(info),
      };
    },
    async finish(outcomes: { runDir: string; status: string; history: { val_accuracy?: number; val_loss?: number }[] }[], parentRunId: string | undefined, loaded: Awaited<ReturnType<typeof loadExperiment>>, killed: boolean) {
      const urls = new Map<string, string>();
      for (const o of outcomes) {
        const t = trackers.get(o.runDir);
        if (!t) continue;
        const pending = await t.pending();
        const url = t.runUrl();
        if (url) urls.set(o.runDir, url);
        if (pending) progress.line(`${pending} tracking record(s) of ${o.runDir} not yet in MLflow; \`xp sync ${o.runDir}\` sends them`);
      }
      if (parentRunId && loaded.sweep) {
        const { metric, goal } = loaded.sweep;
        const scored = outcomes
          .filter((o) => o.status === 'FINISHED' && o.history.length)
          .map((o) => ({ o, value: (o.history.at(-1) as Record<string, number>)[metric] }))
          .filter((x) => Number.isFinite(x.value))
          .sort((a, b) => (goal === 'maximize' ? b.value - a.value : a.value - b.value));
        const best = scored[0];
        const bestRunId = best ? trackers.get(best.o.runDir)?.mlflowRunId() : undefined;
        await tracker.finishParentRun(parentRunId, {
          uri,
          status: killed ? 'KILLED' : outcomes.some((o) => o.status === 'FAILED') && !scored.length ? 'FAILED' : 'FINISHED',
          bestRunId,
          bestMetric: best ? { key: metric, value: best.value } : undefined,
        }).catch((error) => progress.line(`could not close the sweep's parent run: ${error.message}`));
      }
      return urls;
    },
    close: () => server.stop(),
  };
}

function summarize(
  outcomes: { name: string; runDir: string; status: string; error?: string; history: Record<string, number | undefined>[]; bestEpoch?: number; wallSeconds: number }[],
  urls: Map<string, string>,
  progress: Progress,
  mode: OutputMode,
): void {
  if (mode === 'json') {
    process.stdout.write(`${JSON.stringify({ event: 'summary', runs: outcomes.map((o) => ({ ...o, final: o.history.at(-1), mlflow_url: urls.get(o.runDir) })) })}\n`);
    return;
  }
  progress.line('');
  for (const o of outcomes) {
    const last = o.history.at(-1);
    const best = o.bestEpoch ? o.history[o.bestEpoch - 1] : undefined;
    const imagesPerSecond = o.history.length ? o.history.reduce((a, h) => a + (h.images_per_second ?? 0), 0) / o.history.length : 0;
    progress.line(`${o.status === 'FINISHED' ? 'Run' : `Run ${o.status}`}: ${o.name}${o.error ? ` (${o.error})` : ''}`);
    if (last) {
      progress.line(`  final:  loss ${fmt(last.loss)} - accuracy ${fmt(last.accuracy)} - val_loss ${fmt(last.val_loss)} - val_accuracy ${fmt(last.val_accuracy)} (${o.history.length} epochs)`);
      if (best) progress.line(`  best:   epoch ${o.bestEpoch} - val_accuracy ${fmt(best.val_accuracy)} - val_loss ${fmt(best.val_loss)}`);
      progress.line(`  time:   ${duration(o.wallSeconds)} wall, ${imagesPerSecond.toFixed(1)} training images/s`);
    }
    if (o.runDir) progress.line(`  output: ${path.relative(process.cwd(), o.runDir) || o.runDir}`);
    const url = urls.get(o.runDir);
    if (url) progress.line(`  MLflow: ${url}`);
  }
}

const fmt = (v: number | undefined) => (v === undefined ? '-' : v.toFixed(4));
