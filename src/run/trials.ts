// Training a list of trials: groups that share a backbone pass, in this process one after another, or spread
// over child processes (`--parallel N`). Both hand back one outcome per trial, with its MLflow ids when tracked.
import os from 'node:os';
import path from 'node:path';
import type { LoadedExperiment, ResolvedTrial } from '../config/load.ts';
import type { Callbacks, PruneCheck, StopCheck } from '../events.ts';
import { LockError } from '../errors.ts';
import { repoRoot, runsRoot } from '../paths.ts';
import type { TrackingSession } from '../tracking/session.ts';
import { trialTags } from '../tracking/sweep-view.ts';
import type { PreparedData } from '../train/data.ts';
import type { Progress } from '../train/progress.ts';
import type { TrialOutcome } from '../train/run.ts';
import { damagedBackup, findResumable, type ResumableRun } from '../train/run-folder.ts';

export type Outcome = Pick<
  TrialOutcome,
  | 'name'
  | 'runDir'
  | 'status'
  | 'error'
  | 'history'
  | 'bestEpoch'
  | 'wallSeconds'
  | 'result'
  | 'earlyStopping'
  | 'prunedAt'
> & {
  mlflowRunId?: string;
  experimentId?: string;
  url?: string;
};

export interface TrialsContext {
  loaded: LoadedExperiment;
  file: string;
  progress: Progress;
  shouldStop: StopCheck;
  dataDir?: string;
  tracking?: TrackingSession;
  parentRunId?: string;
  /** Back up each run's state at every epoch end (xp run --no-backup turns it off). */
  backup: boolean;
  /** Interrupted runs to continue, by trial index (planResume). */
  resume?: Map<number, ResumableRun>;
  /** More callbacks for a trial, beside tracking's (a queue worker reports each epoch to the submitter). */
  observe?: (trial: ResolvedTrial) => Callbacks;
  /** A search's pruner for a trial, asked after each of its epochs but the last. */
  prune?: (trial: ResolvedTrial) => PruneCheck;
  /** Decoded data kept across calls (a search's rounds): reused while the data section is the same. */
  decoded?: DecodedData;
}

/** The data an earlier group decoded, with the data section it was decoded for. */
export interface DecodedData {
  current?: { config: unknown; prepared: PreparedData };
}

/** Without --resume: says which trials have an interrupted run that could go on (they train from the start). */
export function sayResumable(trials: ResolvedTrial[], file: string, log: (line: string) => void): void {
  const found = trials.map((t) => [t, findResumable(runsRoot(), t.experiment.name, t.configHash)] as const);
  const resumable = found.flatMap(([t, run]) =>
    run && !('damaged' in run) ? [`${t.name} (after epoch ${run.epoch}, ${shown(run.runDir)})`] : [],
  );
  if (resumable.length)
    log(
      `Training from the start; \`xp run ${file} --resume\` would continue the interrupted run of ${resumable.join('; ')}`,
    );
  for (const [t, run] of found)
    if (run && 'damaged' in run)
      log(
        `Training ${t.name} from the start; its latest interrupted run cannot be resumed: ${shown(run.backupDir)} holds a damaged backup (${run.damaged})`,
      );
}

/**
 * xp run --resume: each trial's latest interrupted run with a backup, or a fresh start where it has none (as
 * Keras' BackupAndRestore). A damaged backup is an error: starting over is the user's call. Trials of a group
 * train on one trajectory, so a group is split by the epoch its trials resume at: trials at the same epoch (or all
 * fresh) still share their backbone pass.
 */
export function planResume(
  groups: ResolvedTrial[][],
  log: (line: string) => void,
): { groups: ResolvedTrial[][]; resume: Map<number, ResumableRun> } {
  const resume = new Map<number, ResumableRun>();
  const split: ResolvedTrial[][] = [];
  for (const group of groups) {
    const byEpoch = new Map<number, ResolvedTrial[]>();
    for (const t of group) {
      const found = findResumable(runsRoot(), t.experiment.name, t.configHash);
      if (found && 'damaged' in found) throw damagedBackup(found.backupDir, found.damaged);
      if (found) {
        resume.set(t.index, found);
        log(`Resuming ${t.name} after epoch ${found.epoch} of ${t.experiment.training.epochs}: ${shown(found.runDir)}`);
      } else
        log(
          `Nothing to resume for ${t.name} (no KILLED or FAILED run of config ${t.configHash} with a backup in ${shown(path.join(runsRoot(), t.experiment.name))}): training from the start`,
        );
      const epoch = found?.epoch ?? 0;
      byEpoch.set(epoch, [...(byEpoch.get(epoch) ?? []), t]);
    }
    split.push(...byEpoch.values());
  }
  return { groups: split, resume };
}

/** Groups one after another in this process; the decoded data is reused while the data section is the same. */
export async function runInProcess(groups: ResolvedTrial[][], ctx: TrialsContext): Promise<Outcome[]> {
  const { runGroup } = await import('../train/run.ts');
  const { progress, tracking, parentRunId, loaded, file } = ctx;
  const outcomes: Outcome[] = [];
  const withIds = (o: Outcome) => ({ ...o, ...tracking?.ids(o.runDir) });
  const decoded = ctx.decoded ?? {};
  for (const [g, group] of groups.entries()) {
    const data = decoded.current;
    if (ctx.shouldStop('epoch')) break;
    const specs = group.map((t) => ({
      name: t.name,
      experiment: t.experiment,
      configHash: t.configHash,
      parentRunId,
      resume: ctx.resume?.get(t.index),
      prune: ctx.prune?.(t),
      callbacks: [
        ...(tracking ? [tracking.callbacks(file, parentRunId, parentRunId ? trialTags(t.index) : undefined)] : []),
        ...(ctx.observe ? [ctx.observe(t)] : []),
      ],
    }));
    if (group.length > 1)
      progress.line(
        `Training ${group.length} trials on one shared backbone pass: ${group.map((t) => t.name).join('; ')}`,
      );
    try {
      const r = await runGroup(specs, {
        // Paths in a loaded experiment are already absolute: config resolved them against the files that wrote them.
        baseDir: process.cwd(),
        sourceFile: file,
        sources: loaded.sources,
        runsRoot: runsRoot(),
        dataDir: ctx.dataDir,
        progress,
        shouldStop: ctx.shouldStop,
        backup: ctx.backup,
        data:
          data && JSON.stringify(data.config) === JSON.stringify(group[0].experiment.data) ? data.prepared : undefined,
      });
      if (r.data) decoded.current = { config: group[0].experiment.data, prepared: r.data };
      outcomes.push(...r.outcomes.map(withIds));
    } catch (error) {
      // A failing group ends FAILED (runGroup closes its runs first); a sweep goes on with the next group.
      if (!loaded.sweep) throw error;
      progress.line(`trial(s) ${group.map((t) => t.index).join(', ')} FAILED: ${(error as Error).message}`);
      // Bytes that disagree with xp.lock stop the sweep before any further training.
      if (error instanceof LockError) {
        if (error.hint) progress.line(`  ${error.hint}`);
        outcomes.push(
          ...groups
            .slice(g)
            .flat()
            .map((t) => failed(t, error.message)),
        );
        break;
      }
      // Trials of the group done before the failure stay FINISHED.
      const closed = (error as { outcomes?: Outcome[] }).outcomes;
      outcomes.push(...(closed?.map(withIds) ?? group.map((t) => failed(t, (error as Error).message))));
    }
  }
  return outcomes;
}

/**
 * --parallel N: groups spread over N child processes (`xp run --only ...`), TensorFlow's thread pools divided
 * between them. Children log to the same MLflow server under the same parent run and report back in JSON.
 */
export async function runInChildren(
  groups: ResolvedTrial[][],
  ctx: TrialsContext & { parallel: number; args: string[] },
): Promise<Outcome[]> {
  const { execa } = await import('execa');
  const n = Math.min(ctx.parallel, groups.length);
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
      const only = bucket
        .flat()
        .map((t) => t.index)
        .join(',');
      const args = [bin, 'run', ctx.file, '--json', '--only', only, ...ctx.args];
      if (ctx.parentRunId) args.push('--parent-run-id', ctx.parentRunId);
      const child = execa(process.execPath, args, {
        reject: false,
        stderr: 'inherit',
        // XP_PARENT_PID: a worker ends with this process, however it ends (bin/xp.js watches it).
        env: {
          XP_PARENT_PID: String(process.pid),
          TF_NUM_INTRAOP_THREADS: threads,
          TF_NUM_INTEROP_THREADS: '1',
          OMP_NUM_THREADS: threads,
          ...(ctx.tracking ? { MLFLOW_TRACKING_URI: ctx.tracking.uri } : {}),
        },
      });
      for await (const line of child.iterable()) {
        const event = parseEvent(String(line));
        if (event?.event === 'epoch')
          ctx.progress.line(
            `[${event.trial ?? `worker ${worker + 1}`}] epoch ${event.epoch}: loss ${num(event.loss)} - accuracy ${num(event.accuracy)} - val_loss ${num(event.val_loss)} - val_accuracy ${num(event.val_accuracy)}`,
          );
        else if (event?.event === 'summary') outcomes.push(...(event.runs as Outcome[]));
        else if (event?.event === 'log') ctx.progress.line(`[worker ${worker + 1}] ${event.message}`);
      }
      const result = await child;
      if (result.exitCode !== 0 && !outcomes.some((o) => bucket.flat().some((t) => t.name === o.name))) {
        outcomes.push(...bucket.flat().map((t) => failed(t, `worker exited with code ${result.exitCode}`)));
      }
    }),
  );
  return outcomes;
}

/** A path as the user gave the working directory: relative below it, absolute elsewhere. */
const shown = (p: string) =>
  path.relative(process.cwd(), p).startsWith('..') ? p : path.relative(process.cwd(), p) || '.';
const failed = (t: ResolvedTrial, error: string): Outcome => ({
  name: t.name,
  status: 'FAILED',
  error,
  history: [],
  runDir: '',
  wallSeconds: 0,
});
const cost = (g: ResolvedTrial[]) =>
  Math.max(...g.map((t) => t.experiment.training.epochs)) * (g[0].experiment.training.steps_per_epoch ?? 100);
const num = (v: unknown) => (typeof v === 'number' ? v.toFixed(4) : '-');

/** A child's JSON progress event; undefined for any other line. */
function parseEvent(line: string): Record<string, unknown> | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(line);
  } catch {
    return undefined;
  }
  return typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed)
    ? (parsed as Record<string, unknown>)
    : undefined;
}
