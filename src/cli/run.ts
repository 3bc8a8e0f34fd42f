// `xp run`: load and validate every trial, connect the tracker, group trials that can share a backbone pass,
// train, and print a Keras-like summary with the MLflow URL of each run.
import os from 'node:os';
import path from 'node:path';
import { loadExperiment, type LoadedExperiment, type ResolvedTrial } from '../config/load.ts';
import type { Experiment } from '../config/types.ts';
import { XpError } from '../errors.ts';
import type { Callbacks } from '../events.ts';
import type { TrialOutcome } from '../train/run.ts';
import type { PreparedData } from '../train/data.ts';
import { createProgress, duration, type OutputMode, type Progress } from '../train/progress.ts';
import { groupTrials, trainersOf } from '../train/sharing.ts';
import { mlflowStoreDir, repoRoot, runsRoot } from '../paths.ts';
import { hurryTracking } from '../tracking/tracker.ts';

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

export async function runCommand(file: string, opts: RunOptions): Promise<number> {
  const loaded = await loadExperiment(file, { set: opts.set, sweep: opts.sweep });
  const progress = createProgress(opts.output);
  let trials = loaded.trials.filter((t) => !opts.only || opts.only.includes(t.index));

  if (opts.dryRun) {
    const groups = groupTrials(trials, opts.share);
    progress.line(`${file}: ${trials.length} trial${trials.length === 1 ? '' : 's'} in ${groups.length} group${groups.length === 1 ? '' : 's'} (trials in a group share one backbone pass)`);
    for (const [g, group] of groups.entries()) {
      const trainers = trainersOf(group.map((t) => t.experiment));
      group.forEach((t, i) => {
        const prefix = trainers[i] === i ? '' : `, trained as the first epochs of trial ${group[trainers[i]].index}`;
        progress.line(`  [group ${g + 1}] trial ${t.index}: ${t.name}  (config ${t.configHash}${prefix})`);
      });
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

    const groups = groupTrials(trials, opts.share);
    const outcomes =
      opts.parallel > 1 && groups.length > 1
        ? await runInChildren(file, groups, opts, { parentRunId, uri: tracking?.uri, progress, stop })
        : await runInProcess(groups, loaded, file, opts, { parentRunId, tracking, progress, stop });
    if (tracking) await tracking.finish(outcomes, parentRunId, loaded, stop.requested());
    summarize(outcomes, progress, opts.output);
    if (stop.requested()) return 130;
    return outcomes.some((o) => o.status === 'FAILED') ? 1 : 0;
  } finally {
    stop.dispose();
    await tracking?.close();
  }
}

type Outcome = Pick<TrialOutcome, 'name' | 'runDir' | 'status' | 'error' | 'history' | 'bestEpoch' | 'wallSeconds'> & { mlflowRunId?: string; url?: string };
type Tracking = Awaited<ReturnType<typeof connectTracking>>;
type Stop = ReturnType<typeof interruptible>;

async function runInProcess(
  groups: ResolvedTrial[][],
  loaded: LoadedExperiment,
  file: string,
  opts: RunOptions,
  ctx: { parentRunId?: string; tracking?: Tracking; progress: Progress; stop: Stop },
): Promise<Outcome[]> {
  const { runGroup } = await import('../train/run.ts');
  const { progress, tracking, parentRunId } = ctx;
  const outcomes: Outcome[] = [];
  let data: { config: unknown; prepared: PreparedData } | undefined;
  for (const group of groups) {
    if (ctx.stop.requested()) break;
    const specs = group.map((t) => ({
      name: t.name,
      experiment: t.experiment,
      configHash: t.configHash,
      parentRunId,
      callbacks: tracking ? [tracking.callbacks(file, parentRunId)] : ([] as Callbacks[]),
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
        shouldStop: ctx.stop.requested,
        data: sameData ? data!.prepared : undefined,
      });
      data = { config: group[0].experiment.data, prepared: r.data };
      outcomes.push(...r.outcomes.map((o) => ({ ...o, ...tracking?.ids(o.runDir) })));
    } catch (error) {
      // A failing group ends FAILED (runGroup closes its runs first); a sweep goes on with the next group.
      if (!loaded.sweep) throw error;
      progress.line(`trial(s) ${group.map((t) => t.index).join(', ')} FAILED: ${(error as Error).message}`);
      // Trials of the group done before the failure stay FINISHED.
      const closed = (error as { outcomes?: Outcome[] }).outcomes;
      outcomes.push(
        ...(closed?.map((o) => ({ ...o, ...tracking?.ids(o.runDir) })) ??
          group.map((t) => ({ name: t.name, status: 'FAILED' as const, error: (error as Error).message, history: [], runDir: '', wallSeconds: 0 }))),
      );
    }
  }
  return outcomes;
}

/**
 * --parallel N: groups spread over N child processes (`xp run --only ...`), TensorFlow's thread pools divided
 * between them. Children log to the same MLflow server under the same parent run and report back in JSON.
 */
async function runInChildren(
  file: string,
  groups: ResolvedTrial[][],
  opts: RunOptions,
  ctx: { parentRunId?: string; uri?: string; progress: Progress; stop: Stop },
): Promise<Outcome[]> {
  const { execa } = await import('execa');
  const n = Math.min(opts.parallel, groups.length);
  const buckets: ResolvedTrial[][][] = Array.from({ length: n }, () => []);
  const load = new Array<number>(n).fill(0);
  // Longest first, each to the least loaded process: work is about steps x the group's longest epochs.
  for (const g of [...groups].sort((a, b) => cost(b) - cost(a))) {
    const i = load.indexOf(Math.min(...load));
    buckets[i].push(g);
    load[i] += cost(g);
  }
  const threads = String(Math.max(1, Math.floor(os.cpus().length / n)));
  ctx.progress.line(`Running ${groups.length} group(s) in ${n} processes, ${threads} TensorFlow thread(s) each`);
  const bin = path.join(repoRoot, 'bin', 'xp.js');
  const outcomes: Outcome[] = [];
  await Promise.all(
    buckets.map(async (bucket, worker) => {
      const only = bucket.flat().map((t) => t.index).join(',');
      const args = [bin, 'run', file, '--json', '--only', only, ...(opts.set ?? []).flatMap((x) => ['--set', x]), ...(opts.sweep ?? []).flatMap((x) => ['--sweep', x])];
      if (ctx.parentRunId) args.push('--parent-run-id', ctx.parentRunId);
      if (!opts.track) args.push('--no-track');
      if (!opts.share) args.push('--no-share');
      if (opts.dataDir) args.push('--data-dir', opts.dataDir);
      const child = execa(process.execPath, args, {
        reject: false,
        stderr: 'inherit',
        env: { TF_NUM_INTRAOP_THREADS: threads, TF_NUM_INTEROP_THREADS: '1', OMP_NUM_THREADS: threads, ...(ctx.uri ? { MLFLOW_TRACKING_URI: ctx.uri } : {}) },
      });
      for await (const line of child.iterable()) {
        const event = parseEvent(String(line));
        if (event?.event === 'epoch') ctx.progress.line(`[${event.trial ?? `worker ${worker + 1}`}] epoch ${event.epoch}: loss ${num(event.loss)} - accuracy ${num(event.accuracy)} - val_loss ${num(event.val_loss)} - val_accuracy ${num(event.val_accuracy)}`);
        else if (event?.event === 'summary') outcomes.push(...(event.runs as Outcome[]));
        else if (event?.event === 'log') ctx.progress.line(`[worker ${worker + 1}] ${event.message}`);
      }
      const result = await child;
      if (result.exitCode !== 0 && !outcomes.some((o) => bucket.flat().some((t) => t.name === o.name))) {
        outcomes.push(...bucket.flat().map((t) => ({ name: t.name, status: 'FAILED' as const, error: `worker exited with code ${result.exitCode}`, history: [], runDir: '', wallSeconds: 0 })));
      }
    }),
  );
  return outcomes;
}

const cost = (g: ResolvedTrial[]) => Math.max(...g.map((t) => t.experiment.training.epochs)) * (g[0].experiment.training.steps_per_epoch ?? 100);
const num = (v: unknown) => (typeof v === 'number' ? v.toFixed(4) : '-');

function parseEvent(line: string): Record<string, any> | undefined {
  try {
    return JSON.parse(line);
  } catch {
    return undefined;
  }
}

/**
 * SIGINT, SIGTERM and SIGHUP: the first stops training at the end of the step, writes what exists and closes the
 * runs; the second journals every open run's end (KILLED) at once and stops waiting on MLflow, so the process exits
 * as soon as its files are written; the third exits now (the runs' end is journaled on the way out).
 */
function interruptible(progress: Progress) {
  let count = 0;
  const onSignal = () => {
    count++;
    if (count === 1) progress.line('\nInterrupted: finishing the current step, saving what exists and closing the runs (again to stop waiting for MLflow)');
    else if (count === 2) {
      const ended = hurryTracking();
      progress.line(`\nInterrupted again: ${ended ? `${ended} run(s) journaled as KILLED; ` : ''}not waiting for MLflow (\`xp sync\` sends the rest); once more to quit now`);
    } else process.exit(130);
  };
  const signals = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
  for (const signal of signals) process.on(signal, onSignal);
  return {
    requested: () => count > 0,
    dispose: () => {
      for (const signal of signals) process.off(signal, onSignal);
    },
  };
}

async function connectTracking(base: Experiment, progress: Progress) {
  const { resolveTrackingUri } = await import('../tracking/server.ts');
  const tracker = await import('../tracking/tracker.ts');
  const server = await resolveTrackingUri({ experimentUri: base.tracking.uri, storeDir: mlflowStoreDir() }).catch((error) => {
    throw new XpError(`cannot reach or start MLflow: ${error.message}`, { cause: error, hint: 'run with --no-track to train without tracking, or set MLFLOW_TRACKING_URI to a running server' });
  });
  const uri = server.url;
  const experimentName = base.tracking.experiment_name ?? base.name;
  progress.line(`MLflow: ${uri} (${server.source === 'embedded' ? `embedded, store ${path.relative(process.cwd(), mlflowStoreDir()) || '.'}` : server.source})`);
  const trackers = new Map<string, ReturnType<typeof tracker.createMlflowTracker>>();
  return {
    uri,
    /** MLflow run id and URL of a local run directory logged by this process. */
    ids(runDir: string) {
      const t = trackers.get(runDir);
      return { mlflowRunId: t?.mlflowRunId(), url: t?.runUrl() };
    },
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
    callbacks(file: string, parentRunId?: string): Callbacks {
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
    async finish(outcomes: Outcome[], parentRunId: string | undefined, loaded: LoadedExperiment, killed: boolean) {
      for (const o of outcomes) {
        const pending = await trackers.get(o.runDir)?.pending();
        if (pending) progress.line(`${pending} tracking record(s) of ${o.runDir} not yet in MLflow; \`xp sync ${o.runDir}\` sends them`);
      }
      if (!parentRunId || !loaded.sweep || outcomes.length === 0) return;
      const { metric, goal } = loaded.sweep;
      const scored = outcomes
        .filter((o) => o.status === 'FINISHED' && o.history.length)
        .map((o) => ({ o, value: (o.history.at(-1) as unknown as Record<string, number>)[metric] }))
        .filter((x) => Number.isFinite(x.value))
        .sort((a, b) => (goal === 'maximize' ? b.value - a.value : a.value - b.value));
      const best = scored[0];
      await tracker
        .finishParentRun(parentRunId, {
          uri,
          status: killed ? 'KILLED' : scored.length ? 'FINISHED' : 'FAILED',
          bestRunId: best?.o.mlflowRunId,
          bestMetric: best ? { key: metric, value: best.value } : undefined,
        })
        .catch((error) => progress.line(`could not close the sweep's parent run: ${error.message}`));
      if (best) progress.line(`Best trial: ${best.o.name} (${metric} ${best.value.toFixed(4)})`);
    },
    close: () => server.stop(),
  };
}

function summarize(outcomes: Outcome[], progress: Progress, mode: OutputMode): void {
  if (mode === 'json') {
    process.stdout.write(`${JSON.stringify({ event: 'summary', runs: outcomes })}\n`);
    return;
  }
  progress.line('');
  for (const o of outcomes) {
    const last = o.history.at(-1);
    const best = o.bestEpoch ? o.history[o.bestEpoch - 1] : undefined;
    const imagesPerSecond = o.history.length ? o.history.reduce((a, h) => a + h.images_per_second, 0) / o.history.length : 0;
    progress.line(`${o.status === 'FINISHED' ? 'Run' : `Run ${o.status}`}: ${o.name}${o.error ? ` (${o.error})` : ''}`);
    if (last) {
      progress.line(`  final:  loss ${fmt(last.loss)} - accuracy ${fmt(last.accuracy)} - val_loss ${fmt(last.val_loss)} - val_accuracy ${fmt(last.val_accuracy)} (${o.history.length} epochs)`);
      if (best) progress.line(`  best:   epoch ${o.bestEpoch} - val_accuracy ${fmt(best.val_accuracy)} - val_loss ${fmt(best.val_loss)}`);
      progress.line(`  time:   ${duration(o.wallSeconds)} wall, ${imagesPerSecond.toFixed(1)} training images/s`);
    }
    if (o.runDir) progress.line(`  output: ${path.relative(process.cwd(), o.runDir) || o.runDir}`);
    if (o.url) progress.line(`  MLflow: ${o.url}`);
  }
}

const fmt = (v: number | undefined) => (v === undefined ? '-' : v.toFixed(4));
