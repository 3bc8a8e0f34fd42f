// `xp worker`: takes jobs from the queue one at a time and trains each as `xp run` trains a share group, in a
// training process of its own (job-process.ts) that logs to the job's MLflow server. Before training, a job's
// trials that MLflow has FINISHED are skipped (a job handed on by a dead worker may have done some), and the runs a
// dead attempt left RUNNING are closed FAILED (settle.ts). SIGTERM lets the current epoch end, keeps what --resume
// needs, and gives the job back to the queue. The worker that ends a sweep's last job closes the sweep (sweep-end.ts).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Job } from 'bullmq';
import type { ResolvedTrial } from '../config/load.ts';
import type { Experiment } from '../config/types.ts';
import { planResume, type Outcome } from '../run/trials.ts';
import type { Progress } from '../train/progress.ts';
import { connectionOf, letGo, lockMs, QUEUE_NAME } from './connection.ts';
import { cancelKey, type TrialJob } from './jobs.ts';
import { stopTrainer, trainInProcess, TrainerDied } from './job-process.ts';
import { closeDeadAttempt, settleEarlierAttempts } from './settle.ts';
import { closeIfLast } from './sweep-end.ts';

export interface WorkerOptions {
  url: string;
  name: string;
  progress: Progress;
  /**
   * How often the worker was asked to stop (SIGTERM, Ctrl-C): once, the job in hand ends its epoch and is given
   * back; twice, its training stops at the end of the step; three times, it stops waiting for MLflow.
   */
  stopLevel: () => number;
}

/** Outcome of a trial as the submitter receives it: which worker trained it. */
export type JobOutcome = Outcome & { worker: string };

/** Event a worker reports on its job (BullMQ progress), which `xp run --wait` prints. */
export type JobEvent =
  | { event: 'start'; trial: string; worker: string; attempt: number }
  | { event: 'epoch'; trial: string; epoch: number; epochs: number; logs: Record<string, number | undefined> };

/** Runs until asked to stop; then the job in hand is given back and the worker leaves the queue. */
export async function runWorker(options: WorkerOptions): Promise<void> {
  const { Queue, Worker } = await import('bullmq');
  const { progress, name } = options;
  const lock = lockMs();
  let redis: () => Promise<Redis> = () => Promise.reject(new Error('no worker yet'));
  let busy = 0;
  const worker: import('bullmq').Worker<TrialJob, JobOutcome[]> = new Worker<TrialJob, JobOutcome[]>(
    QUEUE_NAME,
    async (job, token) => {
      if (!token) throw new Error(`job ${job.id} came without its lock token`);
      busy++;
      try {
        return await processJob(job, token, options, redis);
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
  // The worker that ends a sweep's last job closes the sweep (its parent run) in MLflow.
  const queue = new Queue<TrialJob>(QUEUE_NAME, { connection: connectionOf(options.url) });
  queue.on('error', () => {});
  // A worker that stops lets the closes it started end first: the sweep would otherwise stay open with nobody to close it.
  const closing = new Set<Promise<void>>();
  const ended = (job: Job<TrialJob>) => {
    const close = closeIfLast(queue, job.data, (line) => progress.line(line))
      .catch((error: Error) =>
        progress.line(`sweep ${job.data.sweepId}: its parent run is not closed (${error.message})`),
      )
      .finally(() => closing.delete(close));
    closing.add(close);
  };
  worker.on('failed', (job, error) => {
    if (!job) return;
    progress.line(`job ${job.id}: ${error.message}`);
    ended(job);
  });
  worker.on('completed', (job) => {
    progress.line(`job ${job.id}: done`);
    ended(job);
  });
  progress.line(`xp worker ${name} (pid ${process.pid}) on ${os.hostname()}: waiting for jobs`);
  while (!options.stopLevel()) await sleep(250);
  progress.line(`xp worker ${name}: stopping`);
  // The job in hand stops at the end of its epoch (its step, when asked again) and is given back; a Redis that is gone is not waited for.
  const closed = worker.close();
  while (busy) await sleep(250);
  await Promise.race([closed, sleep(5000)]);
  await Promise.race([Promise.all(closing), sleep(15_000)]);
  await Promise.race([worker.disconnect().catch(() => {}), sleep(2000)]);
  await letGo([queue]);
  await stopTrainer();
}

type Redis = Awaited<import('bullmq').Worker['client']>;

/** How long a stopping worker waits for Redis to take its job back. */
const GIVE_BACK_MS = 10_000;

async function processJob(
  job: Job<TrialJob>,
  token: string,
  options: WorkerOptions,
  client: () => Promise<Redis>,
): Promise<JobOutcome[]> {
  const { UnrecoverableError, WaitingError } = await import('bullmq');
  const { progress, name } = options;
  const data = job.data;
  const attempt = job.attemptsStarted;
  const jobId = String(job.id);
  progress.line(`job ${jobId} (attempt ${attempt}): ${data.trials.map((t) => t.name).join('; ')}`);
  const refused = refusal(data, name);
  if (refused) throw new UnrecoverableError(refused);

  let cancelled = false;
  const redis = await client();
  const watch = setInterval(
    () =>
      void redis.get(cancelKey(data.sweepId)).then(
        (v) => (cancelled ||= v !== null),
        () => {},
      ),
    2000,
  );
  const log = (line: string) => progress.line(line);
  try {
    const trials: ResolvedTrial[] = data.trials.map((t) => ({ ...t, values: {} }));
    // Resumes where an earlier attempt's backup is in this worker's run folders (a shared folder); fresh otherwise.
    const planned = planResume([trials], () => {});
    for (const [index, run] of planned.resume) log(`Resuming trial ${index} after epoch ${run.epoch}: ${run.runDir}`);
    const groups = await settleEarlierAttempts(
      data,
      planned.groups,
      [...planned.resume.values()].map((r) => r.runDir),
      { name, attempt, log },
    );
    const outcomes = groups.length
      ? await trainInProcess(
          { data, groups, resume: planned.resume, worker: name, attempt, jobId },
          {
            stopLevel: options.stopLevel,
            cancelled: () => cancelled,
            report: (event) => void job.updateProgress(event).catch(() => {}),
            log,
          },
        ).catch(async (error: Error) => {
          if (error instanceof TrainerDied) await closeDeadAttempt(data, { jobId, attempt, how: error.how, log });
          throw error;
        })
      : [];
    if (options.stopLevel() > 0 && !cancelled && outcomes.some((o) => o.status !== 'FINISHED')) {
      // Given back: another worker (or this one, restarted) continues it, from its backup where it can see it. A
      // Redis that is gone is not waited for: the job's lock runs out there and the stalled-job check hands it on.
      const given = await Promise.race([
        job.moveToWait(token).then(
          () => true,
          () => false,
        ),
        sleep(GIVE_BACK_MS).then(() => false),
      ]);
      log(
        given
          ? `job ${jobId}: given back to the queue`
          : `job ${jobId}: Redis does not answer; the job goes to another worker once its lock runs out`,
      );
      throw new WaitingError();
    }
    if (cancelled) throw new UnrecoverableError('cancelled by `xp queue cancel`');
    const failed = outcomes.filter((o) => o.status === 'FAILED');
    if (failed.length)
      throw new Error(
        `${failed.length} trial(s) FAILED: ${failed.map((o) => `${o.name}: ${o.error ?? 'failed'}`).join('; ')}`,
      );
    return outcomes.map((o) => ({ ...o, worker: name }));
  } finally {
    clearInterval(watch);
  }
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
    const missing = localPaths(t.experiment)
      .map((p) => path.resolve(p))
      .find((p) => !fs.existsSync(p));
    if (missing)
      return `${t.name}: ${missing} does not exist on worker ${worker} (${host}); local paths must be the same on every worker (a shared folder), or give data.url`;
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

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
