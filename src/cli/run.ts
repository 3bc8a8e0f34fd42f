// `xp run`: parse the options, load and validate every trial, open the tracking (and a sweep's session), train
// the trials, and print a Keras-like summary with the MLflow URL of each run.
import path from 'node:path';
import type { LoadedExperiment, ResolvedTrial } from '../config/load.ts';
import { describeAccesses, type Decision } from '../permissions/check.ts';
import { untrustedOrigin, type SandboxOptions } from './sandbox.ts';
import { preflight } from './preflight.ts';
import { useLock, type LockOptions } from '../lock/lock.ts';
import { mlflowStoreDir, runsRoot } from '../paths.ts';
import { planResume, runInChildren, runInProcess, sayResumable, type Outcome } from '../run/trials.ts';
import { openTracking, type TrackingSession } from '../tracking/session.ts';
import { closeSweep, finishedTrials, openSweep, type SweepEnd } from '../tracking/sweep.ts';
import { createProgress, duration, type OutputMode, type Progress } from '../train/progress.ts';
import { groupTrials, trainersOf } from '../train/sharing.ts';
import { summaryLines } from '../train/summary.ts';
import { interruptible } from './interrupt.ts';
import { queueUrl } from '../queue/connection.ts';
import { isSearch, runsAsSearch } from '../config/sweep.ts';
import { searchPlan, studyPlan } from '../search/dry-run.ts';
import { XpError } from '../errors.ts';

export interface RunOptions {
  set?: string[];
  sweep?: string[];
  maxTrials?: number;
  track: boolean;
  dryRun: boolean;
  parallel: number;
  rerun: boolean;
  /** Continue each trial's latest interrupted run from its backup (Keras BackupAndRestore); fresh where there is none. */
  resume: boolean;
  /** Back up each run's state at every epoch end so that it can be resumed. */
  backup: boolean;
  share: boolean;
  dataDir?: string;
  output: OutputMode;
  /** Internal: run only these trial indexes (child processes of --parallel). */
  only?: number[];
  parentRunId?: string;
  verbose?: boolean;
  /** Leave the embedded MLflow server up after the run, so its links keep working (until `xp ui --stop`). */
  keepUi?: boolean;
  /** xp.lock: where and how remote bytes are pinned (the same in --parallel children). */
  lock: LockOptions;
  /** Fetch the remote files again instead of using the cache (never passed to --parallel's children: they use what this fetched). */
  reload?: boolean;
  /** What a file from the web may read, write and contact (Deno's flags). */
  sandbox?: SandboxOptions;
  /** Redis URL of the queue the trials go to (xp worker trains them); XP_QUEUE_URL when not given. */
  queue?: string;
  /** With a queue: follow the jobs to the end (default in a terminal). */
  wait?: boolean;
  /** With a queue: one job per trial instead of one per share group. */
  split?: boolean;
}

export async function runCommand(file: string, opts: RunOptions): Promise<number> {
  // Before anything is fetched: the experiment file itself may come from a URL.
  const lockFile = await useLock(file, opts.lock);
  let access: { decisions: Decision[]; trusted: boolean } | undefined;
  const sandbox = opts.sandbox && {
    ...opts.sandbox,
    report: opts.dryRun,
    decided: (decisions: Decision[], trusted: boolean) => {
      access = { decisions, trusted };
    },
  };
  const loaded = await preflight(file, {
    set: opts.set,
    sweep: opts.sweep,
    maxTrials: opts.maxTrials,
    reload: opts.reload,
    dataDir: opts.dataDir,
    sandbox,
  });
  const progress = createProgress(opts.output);
  const trials = loaded.trials.filter((t) => !opts.only || opts.only.includes(t.index));
  const tracked = opts.track && loaded.base.tracking.enabled;
  if (opts.dryRun) {
    const code = await dryRun(file, loaded, trials, { ...opts, track: tracked }, progress);
    if (access) {
      progress.line(
        access.trusted
          ? 'What the run reads, writes and contacts (a local file: every permission):'
          : `What the run reads, writes and contacts (${untrustedOrigin(loaded.sources)} runs in the sandbox):`,
      );
      for (const line of describeAccesses(access.decisions)) progress.line(line);
    }
    return code;
  }
  const search = runsAsSearch(loaded.sweep) ? loaded.sweep : undefined;
  if (search && (opts.parallel > 1 || opts.only || queueUrl(opts.queue)))
    throw new XpError(
      `${file}: a ${isSearch(search) ? `search (method: ${search.method})` : `sweep with early_terminate`} runs its rounds in this process`,
      {
        hint: '--parallel and --queue work with grid and random sweeps without early_terminate; run it without them',
        exitCode: 2,
      },
    );
  const queue = opts.only ? undefined : queueUrl(opts.queue);
  if (queue)
    return (await import('./run-queued.ts')).runQueued(
      file,
      loaded,
      { ...opts, track: tracked, queue, lockFile },
      progress,
    );

  // The acceleration policy is settled before any image is decoded: a bad XP_ACCEL fails here.
  const { accelPolicy, describePolicy } = await import('../accel/index.ts');
  const policy = accelPolicy();
  if (opts.verbose) progress.line(describePolicy(policy));
  const weighted = trials.some((t) => t.experiment.training.class_weight || t.experiment.training.label_smoothing);
  // The written-out backward pass (src/accel/tail.ts) knows the plain cross-entropies only.
  if (opts.verbose && policy.nativeKernels && weighted)
    progress.line(
      'class_weight or label_smoothing: a dense head trains with the native kernel, the layers after it differentiated under a gradient tape',
    );
  const stop = interruptible(progress);
  const log = (line: string) => progress.line(line);
  const tracking = tracked ? await openTracking(loaded.base, log) : undefined;
  try {
    // Runs a killed xp left RUNNING are closed before this one starts (a --parallel child leaves it to its parent).
    if (tracking && !opts.only) await tracking.closeAbandoned(runsRoot());
    // A child of --parallel trains what its parent gives it; the parent owns the sweep's session.
    const sweep =
      tracking && loaded.sweep && !opts.only
        ? await openSweep({
            uri: tracking.uri,
            experimentName: tracking.experimentName,
            loaded,
            // A search's trials are asked as it goes: none is known (or FINISHED) before it starts.
            trials: search ? [] : trials,
            asked: Boolean(search),
            rerun: opts.rerun,
            sourceFile: file,
            log,
            owner: true,
          })
        : undefined;
    const toRun = search ? [] : (sweep?.trials ?? trials);
    if (!toRun.length && !search) progress.line('Every trial of this sweep has FINISHED already.');
    if (!opts.resume && !opts.only) sayResumable(toRun, file, log);
    // A child of --parallel finds the same runs to resume as its parent, which has said which.
    const planned = opts.resume
      ? planResume(groupTrials(toRun, opts.share), opts.only ? () => {} : log)
      : { groups: groupTrials(toRun, opts.share), resume: undefined };
    const { groups } = planned;
    const ctx = {
      loaded,
      file,
      progress,
      shouldStop: stop.requested,
      dataDir: opts.dataDir,
      tracking,
      parentRunId: sweep?.parentRunId ?? opts.parentRunId,
      backup: opts.backup,
      resume: planned.resume,
    };
    const outcomes = search
      ? await (await import('../search/run.ts')).runSearch({ ...ctx, resume: opts.resume, share: opts.share })
      : opts.parallel > 1 && groups.length > 1
        ? await runInChildren(groups, { ...ctx, parallel: opts.parallel, args: childArgs(opts, lockFile) })
        : await runInProcess(groups, ctx);
    await tracking?.reportPending(outcomes.map((o) => o.runDir).filter(Boolean));
    const end =
      sweep && tracking
        ? await closeSweep({
            uri: tracking.uri,
            loaded,
            session: sweep,
            results: outcomes,
            killed: stop.requested(),
            log,
          })
        : undefined;
    summarize(outcomes, progress, opts.output);
    const registered =
      tracking && loaded.base.tracking.register && !stop.requested()
        ? await registerBest(loaded, outcomes, end, progress)
        : true;
    const kept = Boolean(opts.keepUi && tracking?.stopsWithCommand);
    if (kept) tracking?.keep();
    if (opts.output !== 'json') printLinks(end, loaded, tracking, progress, kept);
    if (stop.requested()) return 130;
    return outcomes.some((o) => o.status === 'FAILED') || !registered ? 1 : 0;
  } finally {
    stop.dispose();
    await tracking?.close();
  }
}

/** The trials and their groups; with tracking, the ones MLflow has FINISHED are marked (read without a server). */
async function dryRun(
  file: string,
  loaded: LoadedExperiment,
  trials: ResolvedTrial[],
  opts: RunOptions,
  progress: Progress,
): Promise<number> {
  if (loaded.sweep && isSearch(loaded.sweep)) {
    for (const line of await searchPlan(file, loaded, loaded.sweep)) progress.line(line);
    return 0;
  }
  const groups = groupTrials(trials, opts.share);
  progress.line(
    `${file}: ${trials.length} trial${trials.length === 1 ? '' : 's'} in ${groups.length} group${groups.length === 1 ? '' : 's'} (trials in a group share one backbone pass)`,
  );
  if (loaded.pinned.length)
    progress.line(
      `  pinned by ${loaded.pinned.join(', ')}: the file sweeps ${loaded.pinned.length === 1 ? 'that field' : 'those fields'}, this run does not`,
    );
  let finished = new Set<string>();
  if (loaded.sweep && opts.track && !opts.rerun) {
    finished = await finishedTrials(loaded, mlflowStoreDir()).then(
      (found) => new Set(found.keys()),
      (error: Error) => {
        progress.line(`(cannot tell which trials MLflow has FINISHED: ${error.message})`);
        return new Set<string>();
      },
    );
  }
  for (const [g, group] of groups.entries()) {
    const trainers = trainersOf(group.map((t) => t.experiment));
    group.forEach((t, i) => {
      const prefix = trainers[i] === i ? '' : `, trained as the first epochs of trial ${group[trainers[i]].index}`;
      const skip = finished.has(t.configHash) ? '  [FINISHED in MLflow: skipped, --rerun runs it]' : '';
      progress.line(`  [group ${g + 1}] trial ${t.index}: ${t.name}  (config ${t.configHash}${prefix})${skip}`);
    });
  }
  if (finished.size)
    progress.line(`${trials.filter((t) => finished.has(t.configHash)).length} trial(s) would be skipped.`);
  if (opts.resume) planResume(groups, (line) => progress.line(`  --resume: ${line}`));
  if (loaded.sweep?.early_terminate) for (const line of await studyPlan(loaded, loaded.sweep)) progress.line(line);
  return 0;
}

/** Options a --parallel child repeats (it loads the same file with the same overrides). */
function childArgs(opts: RunOptions, lockFile: string | undefined): string[] {
  const args = [...(opts.set ?? []).flatMap((x) => ['--set', x]), ...(opts.sweep ?? []).flatMap((x) => ['--sweep', x])];
  if (opts.maxTrials) args.push('--max-trials', String(opts.maxTrials));
  if (!opts.track) args.push('--no-track');
  if (!opts.share) args.push('--no-share');
  if (opts.resume) args.push('--resume');
  if (!opts.backup) args.push('--no-backup');
  if (opts.dataDir) args.push('--data-dir', opts.dataDir);
  if (opts.lock.mode === 'off') args.push('--no-lock');
  else
    args.push(
      `--lock=${lockFile}`,
      ...(opts.lock.mode === 'write' ? ['--lock-write'] : opts.lock.mode === 'frozen' ? ['--frozen'] : []),
    );
  // This process checked every trial's accesses (flags and answers) before starting any child.
  args.push('--allow-all');
  return args;
}

/** tracking.register: the run, or the sweep's best trial, registered as `xp register` does; false when it failed. */
async function registerBest(
  loaded: LoadedExperiment,
  outcomes: Outcome[],
  end: SweepEnd | undefined,
  progress: Progress,
): Promise<boolean> {
  const name = loaded.base.tracking.register as string;
  const finished = outcomes.filter((o) => o.status === 'FINISHED' && o.runDir);
  const chosen = loaded.sweep ? finished.find((o) => o.mlflowRunId === end?.best?.runId) : finished[0];
  if (!chosen?.runDir) {
    progress.line(
      `tracking.register: no finished ${loaded.sweep ? 'best trial of this run' : 'run'} to register as ${name}`,
    );
    return true;
  }
  try {
    const { championLine, registerRun } = await import('../export/register.ts');
    const r = await registerRun({
      runDir: chosen.runDir,
      name,
      metric: loaded.sweep?.metric,
      log: (line) => progress.line(line),
    });
    progress.line(
      `Registered ${chosen.name} as ${name} version ${r.version} (${r.metric} ${r.value.toFixed(4)}); ${championLine(r)}`,
    );
    return true;
  } catch (error) {
    progress.line(`tracking.register: could not register ${chosen.name} as ${name}: ${(error as Error).message}`);
    return false;
  }
}

/** The sweep's best trial and compare URL; how to open the links once the embedded server has stopped. */
export function printLinks(
  end: SweepEnd | undefined,
  loaded: LoadedExperiment,
  tracking: TrackingSession | undefined,
  progress: Progress,
  kept: boolean,
): void {
  if (end?.best && loaded.sweep)
    progress.line(`Best trial: ${end.best.name} (${loaded.sweep.metric} ${end.best.value.toFixed(4)})`);
  if (end?.compareUrl) progress.line(`Compare the trials in MLflow: ${end.compareUrl}`);
  const store = process.env.XP_RUNS_DIR ? `XP_RUNS_DIR=${process.env.XP_RUNS_DIR} ` : '';
  if (kept && tracking)
    progress.line(
      `The embedded MLflow server stays up at ${tracking.uri}, so these links keep working; \`${store}xp ui --stop\` ends it`,
    );
  else if (tracking?.stopsWithCommand) {
    // The store's server comes back on its port while that is free (tracking/server.ts): the links stay the same.
    progress.line(
      `The embedded MLflow server stops with this command: \`${store}xp ui ${loaded.file}\` serves it again (port ${new URL(tracking.uri).port} while free) and prints these links`,
    );
    progress.line(`(\`xp ui <output folder>\` prints one run's; \`xp run --keep-ui\` leaves the server up)`);
  }
}

export function summarize(outcomes: Outcome[], progress: Progress, mode: OutputMode): void {
  if (mode === 'json') {
    process.stdout.write(`${JSON.stringify({ event: 'summary', runs: outcomes })}\n`);
    return;
  }
  progress.line('');
  for (const o of outcomes) {
    const imagesPerSecond = o.history.length
      ? o.history.reduce((a, h) => a + h.images_per_second, 0) / o.history.length
      : 0;
    const status = o.prunedAt ? `stopped by the search after epoch ${o.prunedAt.epoch}` : o.status;
    progress.line(`${o.status === 'FINISHED' ? 'Run' : `Run ${status}`}: ${o.name}${o.error ? ` (${o.error})` : ''}`);
    for (const line of summaryLines(o)) progress.line(line);
    if (o.history.length)
      progress.line(`  time: ${duration(o.wallSeconds)} wall, ${imagesPerSecond.toFixed(1)} training images/s`);
    if (o.runDir) progress.line(`  output: ${path.relative(process.cwd(), o.runDir) || o.runDir}`);
    if (o.url) progress.line(`  MLflow: ${o.url}`);
  }
}
