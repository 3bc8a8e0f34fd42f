// The process that trains a worker's jobs (job-process.ts starts it and keeps it from one job to the next): it
// receives each job over IPC, trains its groups as `xp run` trains share groups, logging to the job's MLflow, and
// sends back each event and the outcomes. Signals are the worker's to handle: it passes on how far to stop, and a
// cancel.
import type { ResolvedTrial } from '../config/load.ts';
import { pinnedBy } from '../lock/lock.ts';
import { usePin } from '../lock/pin.ts';
import { XpError } from '../errors.ts';
import type { Experiment } from '../config/types.ts';
import { runInProcess, type Outcome } from '../run/trials.ts';
import { openTracking } from '../tracking/session.ts';
import { hurryTracking } from '../tracking/tracker.ts';
import type { ResumableRun } from '../train/run-folder.ts';
import { createProgress } from '../train/progress.ts';
import type { TrialJob } from './jobs.ts';
import type { JobEvent } from './worker.ts';

/** What the worker sends: the job, the groups left to train (settle.ts), and the backups to resume from. */
export interface JobRequest {
  type: 'job';
  data: TrialJob;
  groups: ResolvedTrial[][];
  resume: Map<number, ResumableRun>;
  worker: string;
  attempt: number;
  jobId: string;
}

/** 1: finish the epoch; 2: stop at the end of the step; 3: stop waiting for MLflow (the worker's signals, counted). */
export type ToTrainer = JobRequest | { type: 'stop'; level: number } | { type: 'cancel' };
export type FromTrainer =
  | { type: 'event'; event: JobEvent }
  | { type: 'done'; outcomes: Outcome[] }
  | { type: 'failed'; message: string };

/** The trainer's whole life: jobs one after another, until the worker closes the channel (or dies). */
export async function trainJobProcess(): Promise<number> {
  // Ctrl-C and SIGTERM reach the worker, which says how far to stop; its end ends this process.
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, () => {});
  process.on('disconnect', () => process.exit(0));
  // The worker's stop (its signals, counted) holds for every job; a cancel for the job in hand only.
  let level = 0;
  let cancelled = false;
  const waiting: JobRequest[] = [];
  let wake: (() => void) | undefined;
  process.on('message', (message: ToTrainer) => {
    if (message.type === 'job') {
      waiting.push(message);
      wake?.();
    } else if (message.type === 'cancel') cancelled = true;
    else if (message.type === 'stop') {
      if (message.level >= 3 && level < 3) hurryTracking();
      level = Math.max(level, message.level);
    }
  });
  for (;;) {
    let request = waiting.shift();
    while (!request) {
      await new Promise<void>((resolve) => {
        wake = resolve;
      });
      request = waiting.shift();
    }
    cancelled = false;
    let reply: FromTrainer;
    try {
      const outcomes = await trainJob(
        request,
        (at) => cancelled || level >= (at === 'epoch' ? 1 : 2),
        (event) => void send({ type: 'event', event }),
      );
      reply = { type: 'done', outcomes };
    } catch (error) {
      reply = {
        type: 'failed',
        message: `${(error as Error).message}${error instanceof XpError && error.hint ? ` (${error.hint})` : ''}`,
      };
    }
    await send(reply);
  }
}

async function trainJob(
  request: JobRequest,
  shouldStop: (at: 'step' | 'epoch') => boolean,
  report: (event: JobEvent) => void,
): Promise<Outcome[]> {
  const { data, worker, attempt } = request;
  const progress = createProgress('quiet');
  // Downloads by URL are checked against the submitter's xp.lock, as they would have been there.
  usePin(pinnedBy(data.pins ?? {}, `xp.lock of ${data.submittedFrom} (the submitter)`));
  const tags = {
    'xp.worker': worker,
    'xp.attempt': String(attempt),
    'xp.queue_job': request.jobId,
    'xp.submission': data.submission,
  };
  const tracking = data.tracking
    ? await openTracking(trackingBase(data.trials[0].experiment, data.tracking), (line) => progress.line(line), tags)
    : undefined;
  try {
    const trials: ResolvedTrial[] = data.trials.map((t) => ({ ...t, values: {} }));
    const outcomes = await runInProcess(request.groups, {
      loaded: {
        file: data.file,
        sources: data.sources ?? [],
        pinned: [],
        origin: () => 'the job',
        base: data.trials[0].experiment,
        trials,
        sweep: undefined,
      },
      file: data.file,
      progress,
      shouldStop,
      tracking,
      parentRunId: data.tracking?.parentRunId,
      backup: data.backup,
      resume: request.resume,
      observe: (t) => ({
        onRunStart: () => report({ event: 'start', trial: t.name, worker, attempt }),
        onEpochEnd: (epoch, logs) =>
          report({ event: 'epoch', trial: t.name, epoch, epochs: t.experiment.training.epochs, logs: { ...logs } }),
      }),
    });
    await tracking?.reportPending(outcomes.map((o) => o.runDir).filter(Boolean));
    return outcomes;
  } finally {
    await tracking?.close();
  }
}

/** The experiment as openTracking reads it: the job's server and experiment name. */
function trackingBase(base: Experiment, tracking: NonNullable<TrialJob['tracking']>): Experiment {
  return { ...base, tracking: { ...base.tracking, uri: tracking.uri, experiment_name: tracking.experimentName } };
}

const send = (message: FromTrainer) =>
  new Promise<void>((resolve, reject) => {
    if (!process.send) reject(new Error('the training process has no IPC channel: a queue worker starts it'));
    else process.send(message, undefined, {}, () => resolve());
  });
