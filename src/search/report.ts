// The sweep's parent run is the search: the study's best trial as metric and tags, its trial table and Optuna's two
// plots (optimization history, parameter importances) as artifacts under search/. Files are written beside the
// study first, so they stay with it when MLflow cannot be reached.
import path from 'node:path';
import { quickClient } from '../tracking/session.ts';
import type { Search, StudySummary } from './search.ts';

export interface ReportTarget {
  uri: string;
  parentRunId: string;
  metric: string;
}

/** Writes the study's summary beside its journal and logs it to the parent run; a failure to log is said, not thrown. */
export async function reportStudy(
  search: Search,
  studyFile: string,
  target: ReportTarget | undefined,
  log: (line: string) => void,
): Promise<StudySummary> {
  const dir = path.join(path.dirname(studyFile), 'report');
  const summary = await search.summary(dir);
  for (const [file, why] of Object.entries(summary.skipped)) log(`Search plot ${file} left out: ${why}`);
  if (!target) return summary;
  const client = quickClient(target.uri);
  try {
    const { best } = summary;
    const tags = [
      { key: 'xp.study', value: studyFile },
      ...(best
        ? [
            { key: 'xp.study_best_trial', value: String(best.index) },
            // One tag per parameter, as MLflow shows params: best.head.dropout = 0.12
            ...Object.entries(best.params).map(([name, value]) => ({
              key: `best.${name}`,
              value: JSON.stringify(value),
            })),
          ]
        : []),
    ];
    const metrics = best
      ? [{ key: `study_best_${target.metric}`, value: best.value, timestamp: Date.now(), step: 0 }]
      : [];
    await client.logBatch(target.parentRunId, { tags, metrics });
    const run = await client.getRun(target.parentRunId);
    for (const file of summary.files)
      await client.uploadArtifact(run.info.artifact_uri, `search/${file}`, { file: path.join(dir, file) });
  } catch (error) {
    log(`MLflow: could not log the study to the sweep's parent run (${(error as Error).message}); it is in ${dir}`);
  }
  return summary;
}
