// A queued sweep ends with its last job: the worker that ends that job closes the sweep's parent run in MLflow
// (its best trial, the compare URL, FINISHED; KILLED when cancelled), as `xp run` closes a sweep it trains itself.
// A sweep submitted without --wait has nobody else to close it.
import type { Queue } from 'bullmq';
import { closeSweepFromRuns } from '../tracking/sweep.ts';
import { cancelKey, LIVE, sweepJobs, type TrialJob } from './jobs.ts';

/** Closes the parent when no job of the sweep is waiting, running or due for a retry; says so in one line. */
export async function closeIfLast(queue: Queue, data: TrialJob, log: (line: string) => void): Promise<void> {
  const tracking = data.tracking;
  if (!tracking?.parentRunId || !tracking.sweep) return;
  const jobs = await sweepJobs(queue, data.sweepId);
  const states = await Promise.all(
    jobs.filter((job) => (job.data as TrialJob).sweepId === data.sweepId).map((job) => job.getState()),
  );
  if (states.some((state) => LIVE.has(state))) return;
  const killed = (await (await queue.client).get(cancelKey(data.sweepId))) !== null;
  const end = await closeSweepFromRuns({
    uri: tracking.uri,
    experimentName: tracking.experimentName,
    parentRunId: tracking.parentRunId,
    ...tracking.sweep,
    killed,
    log,
  });
  const best = end.best
    ? `best trial ${end.best.name} (${tracking.sweep.metric} ${end.best.value.toFixed(4)})`
    : 'no trial FINISHED';
  log(`sweep ${data.sweepId} ended${killed ? ' (cancelled)' : ''}: ${best}; its parent run is closed`);
}
