// The MLflow journal of a run: every record is appended to <runDir>/mlflow-journal.jsonl before it is sent,
// and a cursor file says how far delivery got (delivery.ts sends them).
import fs from 'node:fs';
import { isDiskFull } from '../util/disk.ts';
import os from 'node:os';
import path from 'node:path';
import { keepCredentials } from '../util/credentials.ts';
import { processAlive } from '../util/process.ts';
import type { DatasetInput, RunStatus } from './client.ts';

export const JOURNAL_FILE = 'mlflow-journal.jsonl';
export const CURSOR_FILE = 'mlflow-journal.cursor.json';

export type RecordBody =
  | {
      kind: 'run';
      experimentName: string;
      runName: string;
      startTime: number;
      runKey: string;
      tags: Record<string, string>;
      /** The server the run logs to, and the store when it is the embedded one (its address changes at each start). */
      uri?: string;
      store?: string;
      /** The process writing the journal: `xp sync` closes a run whose process is gone without an end record. */
      pid?: number;
      host?: string;
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

  // Records a full disk kept out of the file: delivered from memory, and written with the next record that fits.
  let unsaved: JournalRecord[] = [];

  function append(body: RecordBody): JournalRecord {
    const record = { seq: nextSeq++, ...body } as JournalRecord;
    fs.mkdirSync(runDir, { recursive: true });
    const lines = [...unsaved, record];
    const size = fs.statSync(file, { throwIfNoEntry: false })?.size ?? 0;
    try {
      fs.appendFileSync(file, lines.map((r) => `${JSON.stringify(r)}\n`).join(''));
      unsaved = [];
    } catch (error) {
      if (!isDiskFull(error)) throw error;
      // No line cut short: the next one would be glued to it.
      fs.truncateSync(file, size);
      unsaved = lines;
    }
    records.push(record);
    if (record.kind === 'run' || record.kind === 'resume') watchUntilEnd(journal);
    if (record.kind === 'end') openRuns.delete(journal);
    return record;
  }

  function saveCursor(next: Cursor) {
    cursor = next;
    const temporary = `${cursorFile}.tmp`;
    try {
      fs.writeFileSync(temporary, `${JSON.stringify(next)}\n`);
      fs.renameSync(temporary, cursorFile);
    } catch (error) {
      // A full disk: the cursor goes on in memory (a later \`xp sync\` looks for what it finds uncertain).
      if (!isDiskFull(error)) throw error;
      fs.rmSync(temporary, { force: true });
    }
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
      if (record.kind === 'run_id')
        return { runId: record.runId, experimentId: record.experimentId, artifactUri: record.artifactUri };
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
    lastStart: () =>
      last(
        (record): record is Extract<JournalRecord, { kind: 'run' | 'resume' }> =>
          record.kind === 'run' || record.kind === 'resume',
      ),
    /** The run's last start has its end journaled. */
    ended: () =>
      last((record) => record.kind === 'run' || record.kind === 'resume' || record.kind === 'end')?.kind === 'end',
    /** The status of the run's last journaled end. */
    endStatus: () => last((record): record is Extract<JournalRecord, { kind: 'end' }> => record.kind === 'end')?.status,
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

/**
 * The pid of the process that last started the journal's run (its creation or resumption) when that process ran
 * on this machine and is gone; undefined while it runs, or when the journal cannot tell (no pid, another host).
 */
export function goneWriter(journal: Journal): number | undefined {
  const start = journal.lastStart();
  if (start?.pid === undefined || (start.host !== undefined && start.host !== os.hostname())) return undefined;
  return processAlive(start.pid, start.host) ? undefined : start.pid;
}

/** The run folders under a runs root (runs/<experiment>/<run-id>) that hold a journal. */
export function journaledRunDirs(runsRoot: string): string[] {
  const dirs: string[] = [];
  const list = (dir: string) => {
    try {
      return fs.readdirSync(dir, { withFileTypes: true }).filter((entry) => entry.isDirectory());
    } catch {
      return [];
    }
  };
  for (const experiment of list(runsRoot)) {
    if (experiment.name === 'mlflow') continue; // the embedded store
    for (const run of list(path.join(runsRoot, experiment.name))) {
      const dir = path.join(runsRoot, experiment.name, run.name);
      if (fs.existsSync(path.join(dir, JOURNAL_FILE))) dirs.push(dir);
    }
  }
  return dirs;
}

/** Where a journal's run was logging: its server's URL, and the embedded store when it was the embedded server. */
export function recordedTarget(runDir: string): { uri?: string; store?: string } {
  const run = openJournal(runDir).runRecord();
  return { uri: run?.uri, store: run?.store };
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
      const record = JSON.parse(line) as JournalRecord;
      // A journal written before URLs were masked names its server with the password: known, and masked, here.
      if (record.kind === 'run') record.uri = keepCredentials(record.uri);
      records.push(record);
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
