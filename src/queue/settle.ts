// A job's earlier attempts, as MLflow holds them: trials an attempt FINISHED are not trained again, and runs an
// attempt left RUNNING (its machine or training process died) end FAILED, tag `xp.attempt_end` saying why.
import type { ResolvedTrial } from '../config/load.ts';
import type { RunRow } from '../tracking/compare.ts';
import type { TrialJob } from './jobs.ts';
import { sweepRuns } from './runs.ts';

type Log = (line: string) => void;

/**
 * Before an attempt: trials FINISHED by this submission leave their groups (an earlier attempt did them), and runs
 * an earlier attempt left RUNNING end FAILED, unless they resume here.
 */
export async function settleEarlierAttempts(
  data: TrialJob,
  groups: ResolvedTrial[][],
  resumedRunDirs: string[],
  ctx: { name: string; attempt: number; log: Log },
): Promise<ResolvedTrial[][]> {
  const runs = await jobRuns(data, ctx.log, 'cannot tell which trials earlier attempts finished');
  if (!runs) return groups;
  // Runs FINISHED by another submission are not this job's: the submitter left those trials out, unless --rerun.
  const finished = new Set(
    runs.rows
      .filter((row) => row.status === 'FINISHED' && row.tags['xp.submission'] === data.submission)
      .map((row) => row.tags['xp.config_hash']),
  );
  const resumed = new Set(resumedRunDirs);
  const open = runs.rows.filter((r) => r.status === 'RUNNING' && !(r.runDir && resumed.has(r.runDir)));
  await failRuns(
    runs.client,
    open,
    (row) =>
      `attempt ${row.tags['xp.attempt'] ?? '?'} on ${row.tags['xp.worker'] ?? 'a worker'} ended without closing its run; attempt ${ctx.attempt} on ${ctx.name} follows`,
    ctx.log,
  );
  // A run this attempt resumes is no longer ended the way an earlier attempt's end says.
  for (const row of runs.rows.filter((r) => r.runDir && resumed.has(r.runDir) && r.tags['xp.attempt_end'])) {
    await runs.client.deleteTag(row.runId, 'xp.attempt_end').catch(() => {});
  }
  const kept = groups.map((g) => g.filter((t) => !finished.has(t.configHash))).filter((g) => g.length);
  const skipped = data.trials.filter((t) => finished.has(t.configHash));
  if (skipped.length)
    ctx.log(`Already FINISHED in MLflow, not trained again: ${skipped.map((t) => t.name).join('; ')}`);
  return kept;
}

/** After an attempt whose training process died: the runs it left RUNNING end FAILED, saying how it ended. */
export async function closeDeadAttempt(
  data: TrialJob,
  ctx: { jobId: string; attempt: number; how: string; log: Log },
): Promise<void> {
  const runs = await jobRuns(data, ctx.log, 'cannot close the runs of the training process that died');
  if (!runs) return;
  // Attempts of a job follow one another: a run of the job still RUNNING was this process's, even one it resumed
  // and had not tagged as its own yet.
  const open = runs.rows.filter((r) => r.status === 'RUNNING' && r.tags['xp.queue_job'] === ctx.jobId);
  await failRuns(runs.client, open, () => `the training process of attempt ${ctx.attempt} ${ctx.how}`, ctx.log);
}

/** The runs of the job's trials in MLflow, or undefined (said in one line) when it cannot be read. */
async function jobRuns(data: TrialJob, log: Log, what: string) {
  if (!data.tracking) return undefined;
  const runs = await sweepRuns(data.tracking).catch((error: Error) => {
    log(`MLflow: ${what} (${error.message})`);
    return undefined;
  });
  return (
    runs && {
      client: runs.client,
      rows: runs.rows.filter((row) => data.trials.some((t) => t.configHash === row.tags['xp.config_hash'])),
    }
  );
}

async function failRuns(
  client: Awaited<ReturnType<typeof sweepRuns>>['client'],
  rows: RunRow[],
  why: (row: RunRow) => string,
  log: Log,
) {
  for (const row of rows) {
    const what = why(row);
    await client.logBatch(row.runId, { tags: [{ key: 'xp.attempt_end', value: what }] }).catch(() => {});
    await client.updateRun(row.runId, { status: 'FAILED', endTime: Date.now() }).catch(() => {});
    log(`MLflow run ${row.runId} of ${row.runName}: FAILED (${what})`);
  }
}
