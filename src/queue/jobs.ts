// A sweep's jobs on the queue: one job per share group (the trials that train on one backbone pass), or one per
// trial with --split. A job carries everything a worker needs: the resolved experiments, where relative paths
// start, and the tracking server and parent run. Job ids follow from the sweep and its trials, so submitting a
// sweep again never doubles a job that is waiting or running.
import type { ExperimentSource } from '../config/load.ts';
import crypto from 'node:crypto';
import os from 'node:os';
import type { Queue } from 'bullmq';
import type { ResolvedTrial } from '../config/load.ts';
import type { Goal } from '../config/metrics.ts';
import type { Experiment } from '../config/types.ts';

export interface JobTrial {
  index: number;
  name: string;
  configHash: string;
  experiment: Experiment;
}

export interface JobTracking {
  uri: string;
  experimentName: string;
  parentRunId?: string;
  /** The submitter's host when `uri` is its embedded server (a SQLite store only that machine can serve). */
  embeddedOn?: string;
  /** What the worker that ends the sweep's last job needs to close its parent run: how to pick the best trial, among which. */
  sweep?: { metric: string; goal?: Goal; trialHashes: string[] };
}

export interface TrialJob {
  /** The sweep's hash (tracking/sweep.ts sweepHash): what `xp queue` names a sweep by. */
  sweepId: string;
  /** The experiment's name, for people. */
  sweepName: string;
  /** The experiment file, as the submitter resolved it (runs' source tag). */
  file: string;
  /** The files it was composed of (runs' xp.source / xp.extends tags). */
  sources?: ExperimentSource[];
  /** The submitter's xp.lock entries: what a worker downloads by those URLs must match them. */
  pins?: Record<string, string>;
  trials: JobTrial[];
  tracking?: JobTracking;
  backup: boolean;
  submittedFrom: string;
  /**
   * This submission's id, which its runs carry (tag xp.submission): a FINISHED run with it is an earlier attempt's,
   * one without it is older (--rerun repeats those). An id, not a time: the machines' clocks need not agree.
   */
  submission: string;
}

/** How many times a job runs before it is FAILED for good (the retry waits JOB_BACKOFF_MS). */
export const JOB_ATTEMPTS = 2;
/** A failed job waits this long before its next try: a worker that ran out of memory gets time to recover. */
export const JOB_BACKOFF_MS = 10_000;

/** Same sweep and same trials: same id. BullMQ refuses ':' in ids. */
export const jobIdOf = (sweepId: string, trials: Pick<JobTrial, 'index'>[]) =>
  `${sweepId}-${trials.map((t) => t.index).join('.')}`;

export function jobsOf(
  groups: ResolvedTrial[][],
  common: Omit<TrialJob, 'trials' | 'submittedFrom' | 'submission'>,
): TrialJob[] {
  const submission = crypto.randomUUID();
  return groups.map((group) => ({
    ...common,
    trials: group.map((t) => ({ index: t.index, name: t.name, configHash: t.configHash, experiment: t.experiment })),
    submittedFrom: os.hostname(),
    submission,
  }));
}

export const LIVE = new Set(['waiting', 'active', 'delayed', 'prioritized', 'waiting-children']);

/**
 * Adds the jobs not already waiting or running; a job that ended (completed or failed) is replaced: its trials
 * were not FINISHED in MLflow, or the submitter would not have asked for them again.
 */
export async function enqueue(queue: Queue, jobs: TrialJob[]): Promise<{ added: string[]; kept: string[] }> {
  const added: string[] = [];
  const kept: string[] = [];
  // Submitting a sweep again lifts an earlier `xp queue cancel` of it.
  const redis = await queue.client;
  for (const sweepId of new Set(jobs.map((j) => j.sweepId))) await redis.del(cancelKey(sweepId));
  for (const data of jobs) {
    const id = jobIdOf(data.sweepId, data.trials);
    const existing = await queue.getJob(id);
    if (existing) {
      if (LIVE.has(await existing.getState())) {
        kept.push(id);
        continue;
      }
      await existing.remove();
    }
    await queue.add('trials', data, {
      jobId: id,
      attempts: JOB_ATTEMPTS,
      backoff: { type: 'exponential', delay: JOB_BACKOFF_MS },
      removeOnComplete: { age: 7 * 24 * 3600 },
      removeOnFail: { age: 7 * 24 * 3600 },
    });
    added.push(id);
  }
  return { added, kept };
}

/** Every job of a sweep still known to the queue (by sweep id or its first characters, or the experiment's name). */
export async function sweepJobs(queue: Queue, sweep?: string) {
  const jobs = await queue.getJobs(['waiting', 'prioritized', 'delayed', 'active', 'completed', 'failed']);
  return jobs.filter(
    (job) =>
      job && (!sweep || (job.data as TrialJob).sweepId.startsWith(sweep) || (job.data as TrialJob).sweepName === sweep),
  );
}

/** Set by `xp queue cancel`: workers stop the sweep's running jobs at the end of a step. */
export const cancelKey = (sweepId: string) => `xp:cancelled:${sweepId}`;
