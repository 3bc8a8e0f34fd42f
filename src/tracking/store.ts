// Runs read without starting a server: from the server that is running (given by URI, or the embedded one if it
// runs), else straight from the embedded store's SQLite file. `xp runs` and `xp run --dry-run` answer in a second.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { TrackingError } from '../errors.ts';
import { mlflowBin, repoRoot } from '../paths.ts';
import type { Run } from './client.ts';
import { listRuns, toRow, type RunRow } from './compare.ts';
import { goneWriter, JOURNAL_FILE, openJournal } from './journal.ts';
import { goneOwner } from './owner.ts';
import { runningServerUrl } from './server.ts';
import { quickClient } from './session.ts';

export interface StoredRuns {
  rows: RunRow[];
  /** Where they were read: a server URL, or the SQLite file. */
  from: string;
  /** Set when read from the file: no server serves links now. */
  offline: boolean;
}

/** Runs of the experiment (or of all) from the tracking URI, else the running embedded server, else its SQLite file. */
export async function storedRuns(options: {
  uri?: string;
  storeDir: string;
  experimentName?: string;
  includeSweeps?: boolean;
}): Promise<StoredRuns> {
  const uri = options.uri ?? (await runningServerUrl(options.storeDir));
  if (uri)
    return {
      rows: markGone(
        await listRuns({
          uri,
          experimentName: options.experimentName,
          includeSweeps: options.includeSweeps,
          client: quickClient(uri),
        }),
      ),
      from: uri,
      offline: false,
    };
  const db = path.join(options.storeDir, 'mlflow.db');
  const rows = fs.existsSync(db) ? await readSqliteStore(db, options.experimentName) : [];
  return {
    rows: markGone(options.includeSweeps ? rows : rows.filter((row) => row.tags['xp.kind'] !== 'sweep')),
    from: db,
    offline: true,
  };
}

/**
 * RUNNING runs whose process is gone (SIGKILL, power loss, an end MLflow never received): their run folder's
 * journal names the process that trains them, and how the run ended when it could say; a sweep's parent run names
 * it in its tags.
 */
function markGone(rows: RunRow[]): RunRow[] {
  for (const row of rows) {
    if (row.status !== 'RUNNING') continue;
    // A sweep's parent names its process in its tags (owner.ts).
    const owner = row.tags['xp.kind'] === 'sweep' ? goneOwner(row.tags) : undefined;
    if (owner !== undefined) row.gone = { pid: owner, status: 'KILLED' };
    if (!row.runDir || !fs.existsSync(path.join(row.runDir, JOURNAL_FILE))) continue;
    const journal = openJournal(row.runDir);
    if (journal.runRef()?.runId !== row.runId) continue; // the folder was reused, or is another run's
    const pid = goneWriter(journal);
    if (pid !== undefined) row.gone = { pid, status: (journal.ended() && journal.endStatus()) || 'KILLED' };
  }
  return rows;
}

// MLflow's SQL schema (runs, experiments, params, tags, latest_metrics), read-only, answered as runs/search would.
const READER = `
import json, sqlite3, sys
db = sqlite3.connect('file:' + sys.argv[1] + '?mode=ro', uri=True)
name = sys.argv[2] if len(sys.argv) > 2 else None
exps = {str(i): n for i, n in db.execute("select experiment_id, name from experiments where lifecycle_stage = 'active'") if name is None or n == name}
runs = {}
for r in db.execute("select run_uuid, experiment_id, name, status, start_time, end_time, artifact_uri from runs where lifecycle_stage = 'active' order by start_time desc"):
    if str(r[1]) in exps:
        runs[r[0]] = {'info': {'run_id': r[0], 'experiment_id': str(r[1]), 'run_name': r[2], 'status': r[3], 'start_time': r[4], 'end_time': r[5], 'artifact_uri': r[6]}, 'data': {'params': [], 'tags': [], 'metrics': []}}
for table, kind in (('params', 'params'), ('tags', 'tags')):
    for k, v, u in db.execute('select key, value, run_uuid from ' + table):
        if u in runs: runs[u]['data'][kind].append({'key': k, 'value': v})
for k, v, u in db.execute('select key, value, run_uuid from latest_metrics where is_nan = 0'):
    if u in runs: runs[u]['data']['metrics'].append({'key': k, 'value': v})
json.dump({'experiments': exps, 'runs': list(runs.values())}, sys.stdout)
`;

async function readSqliteStore(db: string, experimentName?: string): Promise<RunRow[]> {
  const python = path.join(path.dirname(mlflowBin()), 'python');
  try {
    const { stdout } = await promisify(execFile)(
      python,
      ['-c', READER, db, ...(experimentName ? [experimentName] : [])],
      { maxBuffer: 1 << 30 },
    );
    const answer = JSON.parse(stdout) as { experiments: Record<string, string>; runs: Run[] };
    return answer.runs.map((run) => toRow(run, answer.experiments[run.info.experiment_id] ?? '', undefined));
  } catch (error) {
    throw new TrackingError(
      `cannot read the MLflow store ${db}: ${(error as Error).message.split('\n').slice(-2).join(' ')}`,
      {
        cause: error,
        hint: `run \`xp ui\` to read it through the MLflow server, or \`npm run setup\` in ${repoRoot} if xp's environment is missing`,
      },
    );
  }
}
