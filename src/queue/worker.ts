// `xp worker`: takes jobs from the queue one at a time and trains each as `xp run` trains a share group, logging to
// the job's MLflow server from here. Before training, a job's trials that MLflow has FINISHED are skipped (a job
// handed on by a dead worker may have done some), and the runs a dead attempt left RUNNING are closed FAILED.
// Stopping (SIGTERM) ends the current step, saves what --resume needs, and gives the job back to the queue.
import { usePin } from '../lock/pin.ts';
import { pinnedBy } from '../lock/lock.ts';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Job } from 'bullmq';
import type { ResolvedTrial } from '../config/load.ts';
import type { Experiment } from '../config/types.ts';
import { XpError } from '../errors.ts';
import { planResume, runInProcess, type Outcome } from '../run/trials.ts';
import { openTracking } from '../tracking/session.ts';
import type { Progress } from '../train/progress.ts';
import { connectionOf, lockMs, QUEUE_NAME } from './connection.ts';
import { cancelKey, type TrialJob } from './jobs.ts';
import { sweepRuns } from './runs.ts';

export interface WorkerOptions {
  url: string;
  name: string;
  progress: Progress;
  /** True once the worker is asked to stop (SIGTERM, Ctrl-C): the job in hand ends its epoch and is given back. */
  shouldStop: () => boolean;
  /** True when asked again: training stops at the end of the step. */
  stopNow?: () => boolean;
}

/** Outcome of a trial as the submitter receives it: which worker trained it. */
export type JobOutcome = Outcome & { worker: string };

/** Event a worker reports on its job (BullMQ progress), which `xp run --wait` prints. */
export type JobEvent =
  | { event: 'start'; trial: string; worker: string; attempt: number }
  | { event: 'epoch'; trial: string; epoch: number; epochs: number; logs: Record<string, number | undefined> };

/** Runs until asked to stop; then the job in hand is given back and the worker leaves the queue. */
export async function runWorker(options: WorkerOptions): Promise<void> {
  const { Worker } = await import('bullmq');
  const { progress, name } = options;
  const lock = lockMs();
  let redis: () => Promise<Redis> = () => Promise.reject(new Error('no worker yet'));
  let busy = 0;
  const worker: import('bullmq').Worker<TrialJob, JobOutcome[]> = new Worker<TrialJob, JobOutcome[]>(
    QUEUE_NAME,
    async (job, token) => {
      busy++;
      try {
        return await processJob(job, token!, options, redis);
      } finally {
        busy--;
      }
    },
    {
      connection: connectionOf(options.url),
      name,
      concurrency: 1,
      lockDuration: lock,
      stalledInterval: lock / 2,
      // A job is handed on when its worker dies; only a job that stalls this often is given up.
      maxStalledCount: 3,
    },
  );
  redis = () => worker.client;
  // ioredis retries for ever; one line per outage is enough.
  let outage: string | undefined;
  worker.on('error', (error) => {
    if (error.message !== outage) progress.line(`queue: ${error.message} (reconnecting)`);
    outage = error.message;
  });
  worker.on('ready', () => (outage = undefined));
  worker.on('failed', (job, error) => job && progress.line(`job ${job.id}: ${error.message}`));
  worker.on('completed', (job) => progress.line(`job ${job.id}: done`));
  progress.line(`xp worker ${name} (pid ${process.pid}) on ${os.hostname()}: waiting for jobs`);
  while (!options.shouldStop()) await sleep(250);
  progress.line(`xp worker ${name}: stopping`);
  // The job in hand stops at the end of its epoch (its step, when asked again) and is given back; a Redis that is gone is not waited for.
  const closed = worker.close();
  while (busy) await sleep(250);
  await Promise.race([closed, sleep(5000)]);
  await Promise.race([worker.disconnect().catch(() => {}), sleep(2000)]);
}

type Redis = Awaited<import('bullmq').Worker['client']>;

async function processJob(job: Job<TrialJob>, token: string, options: WorkerOptions, client: () => Promise<Redis>): Promise<JobOutcome[]> {
  const { UnrecoverableError, WaitingError } = await import('bullmq');
  const { progress, name } = options;
  const data = job.data;
  const attempt = job.attemptsStarted;
  progress.line(`job ${job.id} (attempt ${attempt}): ${data.trials.map((t) => t.name).join('; ')}`);
  const refused = refusal(data, name);
  if (refused) throw new UnrecoverableError(refused);
  // Downloads by URL are checked against the submitter's xp.lock, as they would have been there.
  usePin(pinnedBy(data.pins ?? {}, `xp.lock of ${data.submittedFrom} (the submitter)`));

  let cancelled = false;
  const redis = await client();
  const watch = setInterval(() => void redis.get(cancelKey(data.sweepId)).then((v) => (cancelled ||= v !== null), () => {}), 2000);
  const shouldStop = (at: 'step' | 'epoch') => cancelled || (at === 'epoch' ? options.shouldStop() : (options.stopNow ?? options.shouldStop)());
  const report = (event: JobEvent) => void job.updateProgress(event).catch(() => {});
  const tracking = data.tracking
    ? await openTracking(trackingBase(data), (line) => progress.line(line), { 'xp.worker': name, 'xp.attempt': String(attempt), 'xp.queue_job': String(job.id) })
    : undefined;
  try {
    const trials: ResolvedTrial[] = data.trials.map((t) => ({ ...t, values: {} }));
    // Resumes where an earlier attempt's backup is in this worker's run folders (a shared folder); fresh otherwise.
    const planned = planResume([trials], () => {});
    for (const [index, run] of planned.resume) progress.line(`Resuming trial ${index} after epoch ${run.epoch}: ${run.runDir}`);
    const toRun = await settleEarlierAttempts(data, planned.groups, planned.resume, { name, attempt, log: (line) => progress.line(line) });
    let outcomes: Outcome[] = [];
    if (toRun.length) {
      outcomes = await runInProcess(toRun, {
        loaded: { file: data.file, sources: data.sources ?? [], pinned: [], origin: () => 'the job', base: data.trials[0].experiment, trials, sweep: undefined },
        file: data.file,
        progress,
        shouldStop,
        tracking,
        parentRunId: data.tracking?.parentRunId,
        backup: data.backup,
        resume: planned.resume,
        observe: (t) => ({
          onRunStart: () => report({ event: 'start', trial: t.name, worker: name, attempt }),
          onEpochEnd: (epoch, logs) => report({ event: 'epoch', trial: t.name, epoch, epochs: t.experiment.training.epochs, logs: { ...logs } }),
        }),
      }).catch((error: Error) => {
        throw new Error(`${error.message}${error instanceof XpError && error.hint ? ` (${error.hint})` : ''}`);
      });
    }
    await tracking?.reportPending(outcomes.map((o) => o.runDir).filter(Boolean));
    if (options.shouldStop() && !cancelled && outcomes.some((o) => o.status !== 'FINISHED')) {
      // Given back: another worker (or this one, restarted) continues it, from its backup where it can see it.
      await job.moveToWait(token);
      progress.line(`job ${job.id}: given back to the queue`);
      throw new WaitingError();
    }
    if (cancelled) throw new UnrecoverableError('cancelled by `xp queue cancel`');
    const failed = outcomes.filter((o) => o.status === 'FAILED');
    if (failed.length) throw new Error(`${failed.length} trial(s) FAILED: ${failed.map((o) => `${o.name}: ${o.error ?? 'failed'}`).join('; ')}`);
    return outcomes.map((o) => ({ ...o, worker: name }));
  } finally {
    clearInterval(watch);
    await tracking?.close();
  }
}

/**
 * Trials FINISHED in MLflow since the submission leave their group (an earlier attempt did them); runs an earlier
 * attempt left RUNNING (its worker died) end FAILED, `xp.attempt_end` naming the attempt that follows, unless they
 * resume here.
 */
async function settleEarlierAttempts(
  data: TrialJob,
  groups: ResolvedTrial[][],
  resume: Map<number, { runDir: string }>,
  ctx: { name: string; attempt: number; log: (line: string) => void },
): Promise<ResolvedTrial[][]> {
  if (!data.tracking) return groups;
  const runs = await sweepRuns(data.tracking).catch((error: Error) => {
    ctx.log(`MLflow: cannot tell which trials earlier attempts finished (${error.message}); training them all`);
    return undefined;
  });
  if (!runs) return groups;
  const rows = runs.rows.filter((row) => data.trials.some((t) => t.configHash === row.tags['xp.config_hash']));
  // Runs FINISHED before the submission are not this job's: the submitter left those trials out, unless --rerun.
  const finished = new Set(rows.filter((row) => row.status === 'FINISHED' && (row.startTime ?? 0) >= data.submittedAt).map((row) => row.tags['xp.config_hash']));
  const resumed = new Set([...resume.values()].map((r) => r.runDir));
  for (const row of rows.filter((r) => r.status === 'RUNNING' && !(r.runDir && resumed.has(r.runDir)))) {
    const what = `attempt ${row.tags['xp.attempt'] ?? '?'} on ${row.tags['xp.worker'] ?? 'a worker'} ended without closing its run; attempt ${ctx.attempt} on ${ctx.name} follows`;
    await runs.client.logBatch(row.runId, { tags: [{ key: 'xp.attempt_end', value: what }] }).catch(() => {});
    await runs.client.updateRun(row.runId, { status: 'FAILED', endTime: Date.now() }).catch(() => {});
    ctx.log(`MLflow run ${row.runId} of ${row.runName}: FAILED (${what})`);
  }
  const kept = groups.map((g) => g.filter((t) => !finished.has(t.configHash))).filter((g) => g.length);
  const skipped = data.trials.filter((t) => finished.has(t.configHash));
  if (skipped.length) ctx.log(`Already FINISHED in MLflow, not trained again: ${skipped.map((t) => t.name).join('; ')}`);
  return kept;
}

/** Why this worker cannot take the job at all (no retry helps), or undefined. */
function refusal(data: TrialJob, worker: string): string | undefined {
  const host = os.hostname();
  const uri = data.tracking?.uri;
  const from = data.submittedFrom;
  if (uri && from !== host && (data.tracking?.embeddedOn || isLoopback(uri))) {
    return `the job logs to ${uri}, ${data.tracking?.embeddedOn ? `the embedded MLflow (SQLite store) of ${from}` : `a loopback address of ${from}`}, which worker ${worker} on ${host} cannot reach: serve one MLflow to every machine (\`xp server --backend postgresql://...\`) and submit with MLFLOW_TRACKING_URI set to it`;
  }
  for (const t of data.trials) {
    const missing = localPaths(t.experiment).map((p) => path.resolve(p)).find((p) => !fs.existsSync(p));
    if (missing) return `${t.name}: ${missing} does not exist on worker ${worker} (${host}); local paths must be the same on every worker (a shared folder), or give data.url`;
  }
  return undefined;
}

/** Files and folders an experiment names on disk (data given by url is fetched by the worker itself). */
function localPaths(e: Experiment): string[] {
  const paths = e.data.url ? [] : [e.data.train, e.data.validation];
  if (!['nsfwjs', 'imagenet'].includes(e.backbone.weights)) paths.push(e.backbone.weights);
  return paths;
}

const isLoopback = (uri: string) => /^(localhost|127\.|\[::1\])/.test(new URL(uri).hostname);

/** The experiment as openTracking reads it: the job's server and experiment name. */
function trackingBase(data: TrialJob): Experiment {
  const base = data.trials[0].experiment;
  return { ...base, tracking: { ...base.tracking, uri: data.tracking!.uri, experiment_name: data.tracking!.experimentName } };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
