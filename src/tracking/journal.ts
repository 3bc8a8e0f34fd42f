// The MLflow journal of a run: every record is appended to <runDir>/mlflow-journal.jsonl before it is sent,
// and a cursor file says how far delivery got. Delivery is in order, resumable and free of duplicates.
import fs from 'node:fs';
import path from 'node:path';
import { processAlive } from '../util/process.ts';
import { createClient, credentialsFromEnv, MlflowError, toKeyValues, type DatasetInput, type MlflowClient, type RunStatus } from './client.ts';

export const JOURNAL_FILE = 'mlflow-journal.jsonl';
export const CURSOR_FILE = 'mlflow-journal.cursor.json';

export type RecordBody =
  | {
    kind: 'run'; experimentName: string; runName: string; startTime: number; runKey: string; tags: Record<string, string>;
    /** The server the run logs to, and the store when it is the embedded one (its address changes at each start). */
    uri?: string; store?: string;
    /** The process writing the journal: `xp sync` closes a run whose process is gone without an end record. */
    pid?: number; host?: string;
  }
  | { kind: 'params'; params: Record<string, string> }
  | { kind: 'tags'; tags: Record<string, string> }
  | { kind: 'inputs'; datasets: DatasetInput[] }
  | { kind: 'metrics'; step: number; timestamp: number; metrics: Record<string, number> }
  | { kind: 'artifact'; path: string }
  // An interrupted run resumed (xp run --resume): the same MLflow run is RUNNING again, by another process.
  | { kind: 'resume'; epoch: number; startTime: number; tags: Record<string, string>; pid?: number; host?: string }
  | { kind: 'end'; status: Exclude<RunStatus, 'RUNNING' | 'SCHEDULED'>; endTime: number; error?: string }
  // Bookkeeping, never sent: the MLflow run this journal writes to, so a later `xp sync` continues it.
  | { kind: 'run_id'; runId: string; experimentId: string; artifactUri: string };

export type JournalRecord = RecordBody & { seq: number };

export interface Cursor {
  /** Every record with seq <= delivered is in MLflow. */
  delivered: number;
  /** A record being sent: if set, MLflow may or may not have it (check before resending). */
  inflight?: number;
}

export interface RunRef {
  runId: string;
  experimentId: string;
  artifactUri: string;
}

export type Journal = ReturnType<typeof openJournal>;

export function openJournal(runDir: string) {
  const file = path.join(runDir, JOURNAL_FILE);
  const cursorFile = path.join(runDir, CURSOR_FILE);
  const records = readRecords(file);
  let nextSeq = records.reduce((max, record) => Math.max(max, record.seq), 0) + 1;
  let cursor = readCursor(cursorFile);

  function append(body: RecordBody): JournalRecord {
    const record = { seq: nextSeq++, ...body } as JournalRecord;
    fs.mkdirSync(runDir, { recursive: true });
    fs.appendFileSync(file, JSON.stringify(record) + '\n');
    records.push(record);
    if (record.kind === 'run' || record.kind === 'resume') watchUntilEnd(journal);
    if (record.kind === 'end') openRuns.delete(journal);
    return record;
  }

  function saveCursor(next: Cursor) {
    cursor = next;
    const temporary = `${cursorFile}.tmp`;
    fs.writeFileSync(temporary, JSON.stringify(next) + '\n');
    fs.renameSync(temporary, cursorFile);
  }

  function last<T extends JournalRecord>(match: (record: JournalRecord) => record is T): T | undefined;
  function last(match: (record: JournalRecord) => boolean): JournalRecord | undefined;
  function last(match: (record: JournalRecord) => boolean) {
    for (let index = records.length - 1; index >= 0; index--) if (match(records[index])) return records[index];
    return undefined;
  }

  const runRef = (): RunRef | undefined => {
    for (let index = records.length - 1; index >= 0; index--) {
      const record = records[index];
      if (record.kind === 'run_id') return { runId: record.runId, experimentId: record.experimentId, artifactUri: record.artifactUri };
    }
    return undefined;
  };

  const journal = {
    file,
    append,
    records: () => records as readonly JournalRecord[],
    cursor: () => cursor,
    saveCursor,
    runRef,
    runRecord: () => records.find((record): record is Extract<JournalRecord, { kind: 'run' }> => record.kind === 'run'),
    /** The run's last start: its creation, or its last resumption. */
    lastStart: () => last((record): record is Extract<JournalRecord, { kind: 'run' | 'resume' }> => record.kind === 'run' || record.kind === 'resume'),
    /** The run's last start has its end journaled. */
    ended: () => last((record) => record.kind === 'run' || record.kind === 'resume' || record.kind === 'end')?.kind === 'end',
    pending: () => records.filter((record) => record.seq > cursor.delivered && record.kind !== 'run_id'),
  };
  return journal;
}

// Runs of this process whose end is not journaled yet: however the process exits (a second Ctrl-C, a crash, its
// parent gone), their end is written first, synchronously, so `xp sync` can close them in MLflow.
const openRuns = new Set<Journal>();
let exitHooked = false;

function watchUntilEnd(journal: Journal) {
  openRuns.add(journal);
  if (exitHooked) return;
  exitHooked = true;
  process.on('exit', () => endOpenRuns('xp exited before the run ended'));
}

/** Journal KILLED now for every run of this process not ended yet; returns how many. */
export function endOpenRuns(reason: string): number {
  const runs = [...openRuns];
  for (const journal of runs) journal.append({ kind: 'end', status: 'KILLED', endTime: Date.now(), error: reason });
  return runs.length;
}

export interface DeliveryResult {
  sent: number;
  pending: number;
  /** Why delivery stopped early. */
  error?: Error;
}

/** Send pending records in order; stops at the first failure, leaving the rest pending. */
export async function deliver(journal: Journal, client: MlflowClient, runDir: string, log: (line: string) => void = () => {}): Promise<DeliveryResult> {
  let sent = 0;
  for (const record of journal.pending()) {
    const uncertain = journal.cursor().inflight === record.seq;
    journal.saveCursor({ delivered: journal.cursor().delivered, inflight: record.seq });
    try {
      await send(record, uncertain, journal, client, runDir, log);
    } catch (error) {
      return { sent, pending: journal.pending().length, error: error as Error };
    }
    journal.saveCursor({ delivered: record.seq });
    sent++;
  }
  return { sent, pending: journal.pending().length };
}

async function send(record: JournalRecord, uncertain: boolean, journal: Journal, client: MlflowClient, runDir: string, log: (line: string) => void) {
  if (record.kind === 'run') {
    if (journal.runRef()) return; // created before the cursor could say so
    const experiment = await client.getOrCreateExperiment(record.experimentName);
    // A create whose answer was lost may have made the run: find it by its key rather than make a twin.
    const [found] = uncertain
      ? await client.searchRuns({ experimentIds: [experiment.experiment_id], filter: `tags."xp.run_key" = '${record.runKey}'`, maxResults: 1 })
      : [];
    const run = found ?? (await client.createRun({
      experimentId: experiment.experiment_id,
      runName: record.runName,
      startTime: record.startTime,
      tags: { ...record.tags, 'xp.run_key': record.runKey },
    }));
    journal.append({ kind: 'run_id', runId: run.info.run_id, experimentId: run.info.experiment_id, artifactUri: run.info.artifact_uri });
    return;
  }
  if (record.kind === 'run_id') return;
  const run = journal.runRef();
  if (!run) throw new MlflowError('The journal has no MLflow run to send records to.', { errorCode: 'INVALID_STATE' });
  switch (record.kind) {
    case 'params': // logging a param again with the same value is accepted
      await client.logBatch(run.runId, { params: toKeyValues(record.params) });
      return;
    case 'tags': // tags overwrite
      await client.logBatch(run.runId, { tags: toKeyValues(record.tags) });
      return;
    case 'inputs': // MLflow keeps one link per dataset
      await client.logInputs(run.runId, record.datasets);
      return;
    case 'metrics': {
      // Metrics append: after an uncertain attempt send only the points MLflow does not have.
      let metrics = Object.entries(record.metrics).map(([key, value]) => ({ key, value, step: record.step, timestamp: record.timestamp }));
      if (uncertain) {
        const present = await Promise.all(metrics.map(async (metric) => (await client.getMetricHistory(run.runId, metric.key))
          .some((point) => point.step === metric.step && point.timestamp === metric.timestamp)));
        metrics = metrics.filter((_, index) => !present[index]);
      }
      if (metrics.length > 0) await client.logBatch(run.runId, { metrics });
      return;
    }
    case 'artifact': {
      const file = path.join(runDir, record.path);
      if (!fs.existsSync(file)) {
        log(`MLflow: artifact ${record.path} no longer exists in ${runDir}; skipped.`);
        return;
      }
      await client.uploadArtifact(run.artifactUri, record.path, { file });
      return;
    }
    case 'resume': {
      // The interrupted run's error no longer describes it; a tag already gone (a resent record) is fine.
      await client.deleteTag(run.runId, 'xp.error').catch((error: unknown) => {
        if ((error as MlflowError).errorCode !== 'RESOURCE_DOES_NOT_EXIST') throw error;
      });
      await client.logBatch(run.runId, { tags: toKeyValues(record.tags) });
      await client.updateRun(run.runId, { status: 'RUNNING' });
      return;
    }
    case 'end':
      if (record.error) await client.logBatch(run.runId, { tags: [{ key: 'xp.error', value: record.error.slice(0, 5000) }] });
      await client.updateRun(run.runId, { status: record.status, endTime: record.endTime });
      return;
  }
}

/** What is still pending, in words: "metrics of epochs 3-4, 2 artifacts, the run status". */
export function describePending(records: readonly JournalRecord[]): string {
  const steps = records.flatMap((record) => (record.kind === 'metrics' ? [record.step] : []));
  const count = (kind: RecordBody['kind']) => records.filter((record) => record.kind === kind).length;
  const parts = [
    count('run') ? 'the run itself' : '',
    count('resume') ? 'its resumption' : '',
    count('params') ? 'params' : '',
    count('tags') ? 'tags' : '',
    count('inputs') ? 'dataset inputs' : '',
    steps.length ? `metrics of ${steps.length === 1 ? 'epoch' : 'epochs'} ${ranges(steps)}` : '',
    count('artifact') ? `${count('artifact')} artifact file(s)` : '',
    count('end') ? 'the final run status' : '',
  ];
  return parts.filter(Boolean).join(', ');
}

function ranges(numbers: number[]): string {
  const sorted = [...new Set(numbers)].sort((a, b) => a - b);
  const parts: string[] = [];
  for (let index = 0; index < sorted.length; index++) {
    const start = sorted[index];
    while (sorted[index + 1] === sorted[index] + 1) index++;
    parts.push(start === sorted[index] ? `${start}` : `${start}-${sorted[index]}`);
  }
  return parts.join(', ');
}

/** Where a journal's run was logging: its server's URL, and the embedded store when it was the embedded server. */
export function recordedTarget(runDir: string): { uri?: string; store?: string } {
  const run = openJournal(runDir).runRecord();
  return { uri: run?.uri, store: run?.store };
}

/**
 * `xp sync`: send what a run's journal still holds to the MLflow server at `uri` (the same run continues). A run
 * whose process is gone without journaling its end (killed) is closed as KILLED, at the journal's last write.
 */
export async function syncRunDir(runDir: string, options: { uri: string; log?: (line: string) => void }): Promise<{ sent: number; pending: number; closed?: boolean }> {
  const journal = openJournal(runDir);
  if (journal.records().length === 0) {
    throw new MlflowError(`${path.join(runDir, JOURNAL_FILE)} does not exist or is empty: nothing to sync.`, {
      errorCode: 'RESOURCE_DOES_NOT_EXIST',
      hint: 'pass the folder of a run made with tracking enabled (runs/<experiment>/<run-id>)',
    });
  }
  const log = options.log ?? (() => {});
  const closed = closeAbandoned(journal, log);
  const client = createClient(options.uri, { ...credentialsFromEnv(), warn: log });
  const result = await deliver(journal, client, runDir, log);
  if (result.error) {
    const { errorCode, hint } = result.error as Partial<MlflowError>;
    throw new MlflowError(`Sent ${result.sent} record(s) of ${runDir}; ${result.pending} still pending: ${result.error.message}`, {
      errorCode: errorCode ?? 'UNREACHABLE', cause: result.error, hint,
    });
  }
  return { sent: result.sent, pending: result.pending, ...(closed ? { closed } : {}) };
}

/** A run without an end record whose process no longer runs was killed: journal that, once. */
function closeAbandoned(journal: Journal, log: (line: string) => void): boolean {
  const run = journal.lastStart();
  // Journals older than the pid record cannot tell a live run from a dead one: they are left as they are.
  if (!run || run.pid === undefined || journal.ended()) return false;
  if (processAlive(run.pid, run.host)) {
    log(`the run is still going on in process ${run.pid}: sending what it journaled so far, leaving it RUNNING.`);
    return false;
  }
  const endTime = Math.round(fs.statSync(journal.file).mtimeMs);
  journal.append({ kind: 'end', status: 'KILLED', endTime, error: 'the process ended without closing the run (closed by xp sync)' });
  log(`the run's process${run.pid ? ` (${run.pid})` : ''} ended without closing it: closing it as KILLED at ${new Date(endTime).toISOString()}.`);
  return true;
}


function readRecords(file: string): JournalRecord[] {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return [];
  }
  const records: JournalRecord[] = [];
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    try {
      records.push(JSON.parse(line) as JournalRecord);
    } catch {
      // a line cut short by a crash: it was never sent, since sending follows the append
    }
  }
  return records;
}

function readCursor(file: string): Cursor {
  try {
    const cursor = JSON.parse(fs.readFileSync(file, 'utf8')) as Cursor;
    return typeof cursor.delivered === 'number' ? cursor : { delivered: 0 };
  } catch {
    return { delivered: 0 };
  }
}
