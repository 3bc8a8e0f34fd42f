// What MLflow says of a queued sweep's trials: the runs under its parent run (or, without one, every run of the
// experiment), read with one short attempt so that a dead server costs seconds.
import { toRow, type RunRow } from '../tracking/compare.ts';
import { quickClient } from '../tracking/session.ts';
import type { JobTracking } from './jobs.ts';

export async function sweepRuns(tracking: JobTracking) {
  const client = quickClient(tracking.uri);
  const experiment = await client.getExperimentByName(tracking.experimentName);
  if (!experiment) return { client, rows: [] as RunRow[] };
  const filter = tracking.parentRunId ? `tags.mlflow.parentRunId = '${tracking.parentRunId}'` : undefined;
  const runs = await client.searchRuns({ experimentIds: [experiment.experiment_id], filter });
  return { client, rows: runs.map((run) => toRow(run, tracking.experimentName, tracking.uri)) };
}

/** Status of each config hash's latest run (FINISHED wins over any other). */
export function statusByHash(rows: RunRow[]): Map<string, RunRow['status']> {
  const found = new Map<string, RunRow['status']>();
  for (const row of rows) {
    const hash = row.tags['xp.config_hash'];
    if (hash && found.get(hash) !== 'FINISHED') found.set(hash, row.status);
  }
  return found;
}
