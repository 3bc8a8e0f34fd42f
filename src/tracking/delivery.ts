// Delivery of a run's journal to MLflow: records go in order from the cursor on, each at most once (a record
// whose answer was lost is looked for before it is sent again), and `xp sync` sends what a run left behind.
import fs from 'node:fs';
import path from 'node:path';
import { withFileLock } from '../lock/mutex.ts';
import { requestUrl } from '../util/credentials.ts';
import { secondsFromEnv } from '../util/env.ts';
import { processAlive } from '../util/process.ts';
import { goneOwner } from './owner.ts';
import {
  createClient,
  credentialsFromEnv,
  MlflowError,
  toKeyValues,
  type MlflowClient,
  type RunStatus,
} from './client.ts';
import {
  goneWriter,
  JOURNAL_FILE,
  journaledRunDirs,
  openJournal,
  type Journal,
  type JournalRecord,
  type RecordBody,
} from './journal.ts';

export interface DeliveryResult {
  sent: number;
  pending: number;
  /** Why delivery stopped early. */
  error?: Error;
}

/** Send pending records in order; stops at the first failure, leaving the rest pending. */
export async function deliver(
  journal: Journal,
  client: MlflowClient,
  runDir: string,
  log: (line: string) => void = () => {},
  onSent: () => void = () => {},
): Promise<DeliveryResult> {
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
    onSent();
  }
  return { sent, pending: journal.pending().length };
}

async function send(
  record: JournalRecord,
  uncertain: boolean,
  journal: Journal,
  client: MlflowClient,
  runDir: string,
  log: (line: string) => void,
) {
  if (record.kind === 'run') {
    if (journal.runRef()) return; // created before the cursor could say so
    const experiment = await client.getOrCreateExperiment(record.experimentName);
    // A create whose answer was lost may have made the run: find it by its key rather than make a twin.
    const [found] = uncertain
      ? await client.searchRuns({
          experimentIds: [experiment.experiment_id],
          filter: `tags."xp.run_key" = '${record.runKey}'`,
          maxResults: 1,
        })
      : [];
    const run =
      found ??
      (await client.createRun({
        experimentId: experiment.experiment_id,
        runName: record.runName,
        startTime: record.startTime,
        tags: { ...record.tags, 'xp.run_key': record.runKey },
      }));
    journal.append({
      kind: 'run_id',
      runId: run.info.run_id,
      experimentId: run.info.experiment_id,
      artifactUri: run.info.artifact_uri,
    });
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
      let metrics = Object.entries(record.metrics).map(([key, value]) => ({
        key,
        value,
        step: record.step,
        timestamp: record.timestamp,
      }));
      if (uncertain) {
        const present = await Promise.all(
          metrics.map(async (metric) =>
            (await client.getMetricHistory(run.runId, metric.key)).some(
              (point) => point.step === metric.step && point.timestamp === metric.timestamp,
            ),
          ),
        );
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
      if (record.error)
        await client.logBatch(run.runId, { tags: [{ key: 'xp.error', value: record.error.slice(0, 5000) }] });
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

/**
 * XP_SYNC_TIMEOUT (seconds, default 120, MLflow's own request timeout): how long `xp sync` waits for a server that
 * makes no progress. MLflow's retry policy alone (7 attempts of 120 s, with backoff) holds a server that accepts the
 * connection and never answers for about 20 minutes.
 */
export function syncBudgetMs(env: NodeJS.ProcessEnv = process.env): number {
  return secondsFromEnv(env, 'XP_SYNC_TIMEOUT', 120) * 1000;
}

/**
 * `xp sync`: send what a run's journal still holds to the MLflow server at `uri` (the same run continues). A run
 * whose process is gone without journaling its end (killed) is closed as KILLED, at the journal's last write. It
 * gives up once the server has taken no record for `budgetMs`.
 */
export async function syncRunDir(
  runDir: string,
  options: { uri: string; log?: (line: string) => void; budgetMs?: number },
): Promise<{ sent: number; pending: number; closed?: boolean }> {
  const journal = openJournal(runDir);
  if (journal.records().length === 0) {
    throw new MlflowError(`${path.join(runDir, JOURNAL_FILE)} does not exist or is empty: nothing to sync.`, {
      errorCode: 'RESOURCE_DOES_NOT_EXIST',
      hint: 'pass the folder of a run made with tracking enabled (runs/<experiment>/<run-id>)',
    });
  }
  const log = options.log ?? (() => {});
  const budgetMs = options.budgetMs ?? syncBudgetMs();
  // Renewed by every record the server takes: a long upload that progresses goes on, silence does not.
  let deadline = Date.now() + budgetMs;
  const client = createClient(options.uri, { ...credentialsFromEnv(), warn: log, deadline: () => deadline });
  const closed = closeAbandoned(journal, log, await endedInMlflow(journal, client));
  const result = await deliver(journal, client, runDir, log, () => {
    deadline = Date.now() + budgetMs;
  });
  if (result.error) {
    const { errorCode, hint } = result.error as Partial<MlflowError>;
    if (Date.now() >= deadline)
      throw new MlflowError(
        `Sent ${result.sent} record(s) of ${runDir}; ${result.pending} still pending: MLflow at ${options.uri} took no record within ${budgetMs / 1000} s (XP_SYNC_TIMEOUT).`,
        {
          errorCode: 'UNREACHABLE',
          cause: result.error,
          hint: `check that the server answers (curl ${requestUrl(options.uri)}/health); for a slow one, raise XP_SYNC_TIMEOUT (seconds); \`xp sync\` sends the rest later`,
        },
      );
    throw new MlflowError(
      `Sent ${result.sent} record(s) of ${runDir}; ${result.pending} still pending: ${result.error.message}`,
      {
        errorCode: errorCode ?? 'UNREACHABLE',
        cause: result.error,
        hint,
      },
    );
  }
  return { sent: result.sent, pending: result.pending, ...(closed ? { closed } : {}) };
}

/**
 * How MLflow ended a run whose journal has no end: its process sent the end, and a full disk kept the record out
 * of the journal. Undefined when MLflow has it RUNNING, or cannot say.
 */
async function endedInMlflow(journal: Journal, client: MlflowClient): Promise<EndedRun | undefined> {
  const ref = journal.runRef();
  if (!ref || journal.ended()) return undefined;
  const info = await client.getRun(ref.runId).then(
    (run) => run.info,
    () => undefined,
  );
  if (!info || info.status === 'RUNNING' || info.status === 'SCHEDULED') return undefined;
  return { status: info.status, endTime: Number(info.end_time) || Date.now() };
}

type EndedRun = { status: Exclude<RunStatus, 'RUNNING' | 'SCHEDULED'>; endTime: number };

/**
 * A run without an end record whose process no longer runs was killed: journal that, once; or the end MLflow
 * already has (`ended`), which is not news.
 */
function closeAbandoned(journal: Journal, log: (line: string) => void, ended?: EndedRun): boolean {
  const run = journal.lastStart();
  // Journals older than the pid record cannot tell a live run from a dead one: they are left as they are.
  if (!run || run.pid === undefined || journal.ended()) return false;
  if (processAlive(run.pid, run.host)) {
    log(`the run is still going on in process ${run.pid}: sending what it journaled so far, leaving it RUNNING.`);
    return false;
  }
  if (ended) {
    journal.append({ kind: 'end', ...ended });
    return false;
  }
  const endTime = Math.round(fs.statSync(journal.file).mtimeMs);
  journal.append({
    kind: 'end',
    status: 'KILLED',
    endTime,
    error: 'the process ended without closing the run (closed by xp sync)',
  });
  log(
    `the run's process${run.pid ? ` (${run.pid})` : ''} ended without closing it: closing it as KILLED at ${new Date(endTime).toISOString()}.`,
  );
  return true;
}

/**
 * What the next `xp run` does for runs a killed process left RUNNING in MLflow (SIGKILL, power loss, a process that
 * journaled its end on the way out but could not send it): each run folder under `runsRoot` whose journal's process
 * ran on this machine and is gone, whose end MLflow has not received, and that logs to this server (`target`), is
 * closed as `xp sync` closes it (KILLED at the journal's last write when no end is journaled) and sent, one attempt
 * per record within `budgetMs` in all. What is not sent then waits for `xp sync`.
 */
export async function closeAbandonedRuns(
  runsRoot: string,
  target: { uri: string; store?: string },
  log: (line: string) => void,
  budgetMs = 10_000,
): Promise<void> {
  const uri = target.uri.replace(/\/+$/, '');
  const deadline = Date.now() + budgetMs;
  const client = createClient(uri, {
    ...credentialsFromEnv(),
    maxRetries: 0,
    timeoutMs: 10_000,
    deadline: () => deadline,
    warn: () => {},
  });
  const unclosed = (journal: Journal) => !journal.ended() || journal.pending().some((record) => record.kind === 'end');
  for (const runDir of journaledRunDirs(runsRoot)) {
    const journal = openJournal(runDir);
    const run = journal.runRecord();
    const sameServer = run?.store !== undefined ? run.store === target.store : run?.uri === uri;
    if (!sameServer || !unclosed(journal) || goneWriter(journal) === undefined) continue;
    // Another xp closing the same run at once would journal its end twice: one of them does it.
    const result = await withFileLock(
      journal.file,
      async () => {
        const fresh = openJournal(runDir);
        const pid = goneWriter(fresh);
        if (pid === undefined || !unclosed(fresh)) return undefined;
        const ended = await endedInMlflow(fresh, client);
        closeAbandoned(fresh, () => {}, ended);
        const delivery = await deliver(fresh, client, runDir);
        return ended ? undefined : { pid, status: fresh.endStatus(), delivery };
      },
      { timeoutMs: 1000 },
    ).catch(() => undefined);
    if (!result) continue;
    const closed = `closed as ${result.status}: its process (${result.pid}) ended before MLflow heard of it`;
    if (!result.delivery.error) {
      log(`MLflow: the run in ${runDir} ${closed}.`);
      continue;
    }
    log(
      `MLflow: the run in ${runDir} is to be ${closed}, but MLflow cannot be told now (${result.delivery.error.message}); \`xp sync ${runDir}\` tells it.`,
    );
    return;
  }
  await closeAbandonedSweeps(client, log);
}

/**
 * Sweep parents a killed process left RUNNING on this server (their owner's pid gone, owner.ts) are closed KILLED,
 * at the last end of their trials; the next run of the same sweep reopens its parent as it reopens any.
 */
async function closeAbandonedSweeps(client: MlflowClient, log: (line: string) => void): Promise<void> {
  try {
    const experimentIds = (await client.searchExperiments()).map((experiment) => experiment.experiment_id);
    if (!experimentIds.length) return;
    const parents = await client.searchRuns({
      experimentIds,
      filter: `tags."xp.kind" = 'sweep' and attributes.status = 'RUNNING'`,
    });
    for (const parent of parents) {
      const tags = Object.fromEntries((parent.data.tags ?? []).map((tag) => [tag.key, tag.value]));
      const pid = goneOwner(tags);
      if (pid === undefined) continue;
      const trials = await client.searchRuns({
        experimentIds: [parent.info.experiment_id],
        filter: `tags."mlflow.parentRunId" = '${parent.info.run_id}'`,
      });
      const ends = trials.map((trial) => Number(trial.info.end_time ?? trial.info.start_time ?? 0));
      const endTime = Math.max(Number(parent.info.start_time ?? 0), ...ends.filter(Number.isFinite));
      await client.logBatch(parent.info.run_id, {
        tags: [{ key: 'xp.error', value: 'the process ended without closing the sweep (closed by the next xp run)' }],
      });
      await client.updateRun(parent.info.run_id, { status: 'KILLED', endTime });
      log(
        `MLflow: the sweep parent run ${parent.info.run_id} (${parent.info.run_name ?? tags['mlflow.runName']}) closed as KILLED: its process (${pid}) ended before MLflow heard of it.`,
      );
    }
  } catch (error) {
    log(`MLflow: sweep parent runs left RUNNING by a killed xp not closed now (${(error as Error).message}).`);
  }
}
