// `xp queue`: a sweep's jobs as the queue holds them (waiting, running on which worker, done, failed), cancelling
// them (waiting ones removed, running ones stopped by their worker at the end of a step) and retrying failed ones.
import { letGo, openQueueOnce } from './connection.ts';
import { cancelKey, sweepJobs, type TrialJob } from './jobs.ts';

export interface JobRow {
  id: string;
  sweep: string;
  experiment: string;
  state: string;
  trials: string[];
  worker?: string;
  attempts: number;
  error?: string;
  /** When the job was queued, a worker started it, and it ended (ms since the epoch): the queue's overhead. */
  queuedAt: number;
  startedAt?: number;
  endedAt?: number;
}

type BullQueue = InstanceType<typeof import('bullmq').Queue>;

// An admin command fails fast on a dead Redis instead of waiting for it.
async function withQueue<T>(url: string, fn: (queue: BullQueue) => Promise<T>): Promise<T> {
  const queue = await openQueueOnce(url);
  try {
    return await fn(queue);
  } finally {
    await letGo([queue]);
  }
}

export async function queueStatus(url: string, sweep?: string): Promise<JobRow[]> {
  return withQueue(url, async (queue) => {
    const rows: JobRow[] = [];
    for (const job of await sweepJobs(queue, sweep)) {
      const data = job.data as TrialJob;
      rows.push({
        id: String(job.id),
        sweep: data.sweepId,
        experiment: data.sweepName,
        state: await job.getState(),
        trials: data.trials.map((t) => t.name),
        worker: job.processedBy,
        attempts: job.attemptsStarted,
        error: job.failedReason || undefined,
        queuedAt: job.timestamp,
        startedAt: job.processedOn,
        endedAt: job.finishedOn,
      });
    }
    return rows.sort(
      (a, b) => a.sweep.localeCompare(b.sweep) || a.id.localeCompare(b.id, undefined, { numeric: true }),
    );
  });
}

/** Waiting jobs removed, running ones told to stop; returns how many of each. */
export async function cancelSweep(url: string, sweep: string): Promise<{ removed: number; stopping: number }> {
  return withQueue(url, async (queue) => {
    let removed = 0;
    let stopping = 0;
    const redis = await queue.client;
    for (const job of await sweepJobs(queue, sweep)) {
      const state = await job.getState();
      if (state === 'active') {
        await redis.set(cancelKey((job.data as TrialJob).sweepId), '1');
        stopping++;
      } else if (state !== 'completed' && state !== 'failed') {
        await job.remove();
        removed++;
      }
    }
    return { removed, stopping };
  });
}

/** Failed jobs of the sweep run again (its cancel mark is lifted). */
export async function retrySweep(url: string, sweep: string): Promise<number> {
  return withQueue(url, async (queue) => {
    let retried = 0;
    const redis = await queue.client;
    for (const job of await sweepJobs(queue, sweep)) {
      if ((await job.getState()) !== 'failed') continue;
      await redis.del(cancelKey((job.data as TrialJob).sweepId));
      await job.retry('failed');
      retried++;
    }
    return retried;
  });
}
