// `xp run --queue`: the sweep's jobs go onto the queue (those already waiting or running stay as they are), and
// with --wait the submitter follows them to the end: a line per trial as a worker starts it, one per epoch, and
// each job's outcome. Jobs that vanish from the queue (a Redis restarted without persistence) are submitted again,
// unless MLflow has their trials FINISHED or RUNNING. Stopping the submitter (Ctrl-C) leaves the jobs queued.
import type { Progress } from '../train/progress.ts';
import type { Outcome } from '../run/trials.ts';
import { connectionOf, letGo, QUEUE_NAME, shownUrl } from './connection.ts';
import { enqueue, jobIdOf, type TrialJob } from './jobs.ts';
import { statusByHash, sweepRuns } from './runs.ts';
import type { JobEvent, JobOutcome } from './worker.ts';

export interface SubmitOptions {
  url: string;
  jobs: TrialJob[];
  wait: boolean;
  progress: Progress;
  /** Aborted when the submitter is stopped: whatever it waits on (a Redis gone, MLflow) is given up. */
  stop: AbortSignal;
}

/** Enqueues; with `wait`, resolves to every job's outcomes once all have ended (or the submitter is stopped). */
export async function submitJobs(options: SubmitOptions): Promise<{ outcomes: Outcome[]; ended: boolean }> {
  const { Queue, QueueEvents } = await import('bullmq');
  const { progress, jobs, stop } = options;
  const connection = connectionOf(options.url);
  const queue = new Queue(QUEUE_NAME, { connection });
  // ioredis retries for ever once connected; one line per outage is enough.
  let outage: string | undefined;
  queue.on('error', (error) => {
    if (error.message !== outage) progress.line(`queue: ${error.message} (reconnecting)`);
    outage = error.message;
  });
  let events: BullEvents | undefined;
  try {
    const { added, kept } = await unlessStopped(stop, enqueue(queue, jobs));
    const trials = jobs.reduce((n, j) => n + j.trials.length, 0);
    progress.line(
      `Queue ${shownUrl(options.url)}: sweep ${jobs[0]?.sweepId ?? '-'}, ${trials} trial(s) in ${jobs.length} job(s): ${added.length} submitted${kept.length ? `, ${kept.length} already waiting or running` : ''}`,
    );
    if (!options.wait) {
      const closer = jobs[0]?.tracking?.sweep ? '; the worker that ends the last one closes the sweep in MLflow' : '';
      progress.line(`Not waiting: \`xp queue status ${jobs[0]?.sweepId ?? ''}\` shows how the jobs go${closer}.`);
      return { outcomes: [], ended: false };
    }
    events = new QueueEvents(QUEUE_NAME, { connection });
    events.on('error', () => {});
    return await unlessStopped(stop, follow(queue, events, options));
  } catch (error) {
    if (stop.aborted) return { outcomes: [], ended: false };
    throw error;
  } finally {
    // Stopped, the submitter does not wait for a Redis that may be gone.
    await letGo(events ? [events, queue] : [queue], stop.aborted ? 200 : 2000);
  }
}

/** `work`, or when `stop` aborts first, a rejection at once (`work` is left to fail when its connection is dropped). */
function unlessStopped<T>(stop: AbortSignal, work: Promise<T>): Promise<T> {
  work.catch(() => {});
  return new Promise<T>((resolve, reject) => {
    const onStop = () => reject(new Error('stopped'));
    if (stop.aborted) return onStop();
    stop.addEventListener('abort', onStop, { once: true });
    work.then(resolve, reject).finally(() => stop.removeEventListener('abort', onStop));
  });
}

type BullQueue = InstanceType<typeof import('bullmq').Queue>;
type BullEvents = InstanceType<typeof import('bullmq').QueueEvents>;

async function follow(
  queue: BullQueue,
  events: BullEvents,
  options: SubmitOptions,
): Promise<{ outcomes: Outcome[]; ended: boolean }> {
  const { progress } = options;
  const byId = new Map(options.jobs.map((job) => [jobIdOf(job.sweepId, job.trials), job]));
  events.on('progress', ({ jobId, data }) => {
    if (byId.has(jobId)) progress.line(describe(data as JobEvent));
  });
  const ended = new Map<string, Outcome[]>();
  const last = new Map<string, string>();
  while (ended.size < byId.size && !options.stop.aborted) {
    for (const [id, data] of byId) {
      if (ended.has(id)) continue;
      const job = await queue.getJob(id);
      if (!job) {
        const seen = await inMlflow(data);
        if (seen === 'missing') {
          await enqueue(queue, [data]);
          progress.line(`job ${id} was gone from the queue (Redis restarted?): submitted again`);
        } else if (seen === 'finished') ended.set(id, []);
        continue;
      }
      const state = await job.getState();
      if (state !== last.get(id) && state === 'delayed')
        progress.line(`job ${id}: failed (${job.failedReason}); trying again`);
      last.set(id, state);
      if (state === 'completed') {
        const outcomes = (job.returnvalue ?? []) as JobOutcome[];
        for (const o of outcomes) progress.line(`[${o.name}] ${o.status} on ${o.worker}`);
        ended.set(id, outcomes);
      } else if (state === 'failed') {
        progress.line(`job ${id} FAILED after ${job.attemptsMade} attempt(s): ${job.failedReason}`);
        ended.set(
          id,
          data.trials.map((t) => ({
            name: t.name,
            status: 'FAILED',
            error: job.failedReason,
            history: [],
            runDir: '',
            wallSeconds: 0,
          })),
        );
      }
    }
    if (ended.size < byId.size) await sleep(1000);
  }
  return { outcomes: [...ended.values()].flat(), ended: ended.size === byId.size };
}

/**
 * Where a vanished job's trials are: all FINISHED in MLflow, some still RUNNING there (their worker goes on without
 * the queue), or missing (it goes on the queue again).
 */
async function inMlflow(data: TrialJob): Promise<'finished' | 'running' | 'missing'> {
  if (!data.tracking) return 'missing';
  const status = await sweepRuns(data.tracking).then(
    ({ rows }) => statusByHash(rows),
    () => new Map<string, string>(),
  );
  const states = data.trials.map((t) => status.get(t.configHash));
  if (states.every((s) => s === 'FINISHED')) return 'finished';
  return states.every((s) => s === 'FINISHED' || s === 'RUNNING') ? 'running' : 'missing';
}

function describe(event: JobEvent): string {
  if (event.event === 'start')
    return `[${event.trial}] started on ${event.worker}${event.attempt > 1 ? ` (attempt ${event.attempt})` : ''}`;
  const { logs } = event;
  const shown = ['loss', 'accuracy', 'val_loss', 'val_accuracy'].flatMap((k) => {
    const value = logs[k];
    return typeof value === 'number' ? [`${k} ${value.toFixed(4)}`] : []; // NaN comes through JSON as null
  });
  return `[${event.trial}] epoch ${event.epoch}/${event.epochs}: ${shown.join(' - ')}`;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
