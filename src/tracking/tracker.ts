// Training callbacks that log a run to MLflow through the run's journal: training never waits on or fails
// because of the server; what cannot be sent now is sent at the next callback, at the end, or by `xp sync`.
import { randomUUID } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { EPOCH_METRICS, type Callbacks, type EpochLogs, type RunEndInfo, type RunStartInfo } from '../events.ts';
import { createClient, credentialsFromEnv, type MlflowClient } from './client.ts';
import { runUrl } from './links.ts';
import { endOpenRuns, openJournal, type Journal, type JournalRecord } from './journal.ts';
import { deliver, describePending } from './delivery.ts';
import { chainTags, sourceTags, userName, xpVersion } from './provenance.ts';
import { artifactFiles, datasetInput, linkArtifacts, resultRecords, runParams } from './records.ts';
import { embeddedServerRuns, embeddedStore, isHealthy } from './server.ts';
import { secondsFromEnv } from '../util/env.ts';

type RunRecord = Extract<JournalRecord, { kind: 'run' }>;

export interface TrackerOptions {
  uri: string;
  experimentName: string;
  runDir: string;
  sourceFile?: string;
  parentRunId?: string;
  log?: (line: string) => void;
  env?: NodeJS.ProcessEnv;
  /**
   * The embedded server's artifact folder (its --artifacts-destination), on this machine: the run's files are
   * hard-linked there instead of uploaded, so a model is stored once. Remote servers get uploads.
   */
  artifactStore?: string;
  /** More tags for the run, e.g. the queue worker and attempt that trained it. */
  tags?: Record<string, string>;
}

export type MlflowTracker = Callbacks & {
  /** Waits for a delivery in progress; resolves to the number of records not yet in MLflow. */
  pending(): Promise<number>;
  runUrl(): string | undefined;
  mlflowRunId(): string | undefined;
  mlflowExperimentId(): string | undefined;
};

// --- Timing (faults) ---
/** Aborted by hurryTracking(): every tracker stops waiting on its server. */
const hurry = new AbortController();

/**
 * A second Ctrl-C: journal KILLED now (synchronously) for every run not ended yet, and stop waiting on MLflow,
 * so the process exits as soon as the files that exist are written. `xp sync` sends the rest later.
 */
export function hurryTracking(): number {
  hurry.abort();
  return endOpenRuns('interrupted twice: the run ended before its last step');
}

/** XP_TRACKING_END_TIMEOUT (seconds, default 15): how long a run's end waits for a server that makes no progress. */
function endBudgetMs(env: NodeJS.ProcessEnv): number {
  return secondsFromEnv(env, 'XP_TRACKING_END_TIMEOUT', 15) * 1000;
}

/**
 * XP_TRACKING_SLOW_TIMEOUT (seconds, default 120): how long deliveries may time out on a server that is alive before
 * the console hears of it. A local server starved of CPU (decoding, the backbone pass) answers late, not never.
 */
function slowBudgetMs(env: NodeJS.ProcessEnv): number {
  return secondsFromEnv(env, 'XP_TRACKING_SLOW_TIMEOUT', 120) * 1000;
}

/**
 * Evidence that a server whose request timed out is alive, only slow: the embedded server's process runs, or a
 * server's /health answers. A refused connection, an error answer or silence everywhere is not.
 */
async function aliveButSlow(uri: string, error: Error): Promise<boolean> {
  if ((error.cause as Error | undefined)?.name !== 'TimeoutError') return false;
  return embeddedServerRuns(uri) ?? (await isHealthy(uri));
}
// --- end of timing ---

export function createMlflowTracker(options: TrackerOptions): MlflowTracker {
  const env = options.env ?? process.env;
  const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const uri = options.uri.replace(/\/+$/, '');
  const credentials = credentialsFromEnv(env);
  // --- Timing (faults): delivery runs beside training and never holds it; the end waits a bounded time. ---
  const giveUp = new AbortController();
  const signal = AbortSignal.any([giveUp.signal, hurry.signal]);
  // During training one attempt per delivery: a down server costs an epoch nothing, the next callback retries.
  const quick = createClient(uri, {
    ...credentials,
    maxRetries: 0,
    timeoutMs: Math.min(credentials.timeoutMs ?? 120_000, 15_000),
    warn: log,
    signal,
  });
  const runDir = path.resolve(options.runDir);
  let journal: Journal | undefined;
  let chain: Promise<unknown> = Promise.resolve();
  let delivering = false;
  let again = false;
  // Deliveries failing since `since`; `said` once the console was told (once per outage, not at every epoch).
  let outage: { since: number; said: boolean } | undefined;

  const flush = (client: MlflowClient, final = false) => {
    const next = chain.then(async () => {
      if (!journal) return;
      const before = journal.pending().length;
      const result = await deliver(journal, client, runDir, log);
      if (result.error) {
        const reason = result.error.message;
        outage ??= { since: Date.now(), said: false };
        const kept = `${result.pending} record(s) kept in ${journal.file}, retrying at the next epoch`;
        // After a second Ctrl-C the end's message says what is kept and how to send it. A server that is alive
        // but slow is not reported until it has been so for long.
        if (!outage.said && !final && !hurry.signal.aborted) {
          const slowFor = Date.now() - outage.since;
          if (!(await aliveButSlow(uri, result.error))) log(`MLflow: cannot deliver to ${uri} (${reason}); ${kept}.`);
          else if (slowFor >= slowBudgetMs(env))
            log(
              `MLflow: ${uri} runs but has not answered in time for ${Math.round(slowFor / 1000)} s (${reason}); ${kept}.`,
            );
          else return;
          outage.said = true;
        }
        if (final) log(`MLflow: cannot deliver to ${uri} (${reason}).`);
      } else if (outage) {
        if (outage.said) log(`MLflow: reachable again, delivered ${before} pending record(s).`);
        outage = undefined;
      }
    });
    chain = next.catch((error: unknown) => log(`MLflow: delivery failed: ${(error as Error).message}`));
    return chain;
  };

  /** Start delivering in the background; records journaled meanwhile go with the next pass, not a queue of them. */
  const flushSoon = () => {
    if (delivering) {
      again = true;
      return;
    }
    delivering = true;
    void flush(quick).then(() => {
      delivering = false;
      if (again && !outage) {
        again = false;
        flushSoon();
      }
      again = false;
    });
  };

  /** The end's delivery, with MLflow's retries, given up after `endBudgetMs` without progress. */
  const flushAtEnd = async () => {
    const budget = endBudgetMs(env);
    let deadline = Date.now() + budget;
    let delivered = journal?.cursor().delivered ?? 0;
    const watchdog = setInterval(() => {
      const now = journal?.cursor().delivered ?? 0;
      if (now !== delivered) {
        delivered = now;
        deadline = Date.now() + budget;
      } else if (Date.now() > deadline) giveUp.abort();
    }, 100);
    try {
      const patient = createClient(uri, { ...credentials, warn: log, signal, deadline: () => deadline });
      await flush(patient, true);
    } finally {
      clearInterval(watchdog);
    }
  };
  // --- end of timing ---

  const guard =
    <A extends unknown[]>(name: string, body: (...args: A) => Promise<void>) =>
    async (...args: A) => {
      try {
        await body(...args);
      } catch (error) {
        log(`MLflow: ${name} not recorded: ${(error as Error).message}`);
      }
    };

  const runRef = () => journal?.runRef();
  /** Epoch metrics the journal holds already, as `key@step`: a resumed run logs each epoch's value once. */
  const logged = new Set<string>();

  /** An epoch's finite metrics not journaled yet; NaN and Inf said and left out. */
  const epochMetrics = (epoch: number, logs: EpochLogs) => {
    const metrics: Record<string, number> = {};
    const skipped: string[] = [];
    for (const key of EPOCH_METRICS) {
      const value = logs[key];
      if (value === undefined || logged.has(`${key}@${epoch}`)) continue;
      if (Number.isFinite(value)) metrics[key] = value;
      else skipped.push(`${key}=${value}`);
    }
    if (skipped.length > 0)
      log(`MLflow: epoch ${epoch}: ${skipped.join(', ')} not logged (MLflow cannot chart NaN or Inf).`);
    return metrics;
  };

  /** A resumed run continues the MLflow run its journal writes to: RUNNING again, then the epochs after `resumedAt`. */
  const resume = (j: Journal, info: RunStartInfo, resumedAt: number, was: RunRecord) => {
    for (const r of j.records())
      if (r.kind === 'metrics') for (const key of Object.keys(r.metrics)) logged.add(`${key}@${r.step}`);
    // The process that resumes it tags it as its own (a queue worker's name and attempt).
    const tags = { ...options.tags, 'xp.resumed_at_epoch': String(resumedAt), 'xp.accel': info.accel };
    j.append({
      kind: 'resume',
      epoch: resumedAt,
      startTime: Date.now(),
      tags,
      pid: process.pid,
      host: os.hostname(),
    });
    log(`MLflow: continuing the interrupted run's MLflow run after epoch ${resumedAt}.`);
    // Its MLflow run lives where it was logging: another server has no such run, and `xp sync` sends there later.
    const store = embeddedStore(uri);
    if (was.uri !== undefined && (was.store ?? was.uri) !== (store ?? uri)) {
      log(
        `MLflow: this run was logging to ${was.store ? `the embedded store ${was.store}` : was.uri}, not ${store ? `the embedded store ${store}` : uri}; its records wait in ${j.file} for \`xp sync ${runDir}\`.`,
      );
    }
    flushSoon();
  };

  return {
    onRunStart: guard('run start', async (info: RunStartInfo) => {
      journal = openJournal(runDir);
      // A run tracked before it was interrupted goes on in its MLflow run; one that was not starts one now.
      const was = journal.runRecord();
      if (info.resumedAt !== undefined && was) return resume(journal, info, info.resumedAt, was);
      const sourceFile = info.sourceFile ?? options.sourceFile;
      const parentRunId = options.parentRunId ?? info.parentRunId;
      const tags: Record<string, string> = {
        'mlflow.runName': info.runName,
        ...sourceTags(sourceFile),
        ...chainTags(info.sources),
        'mlflow.user': userName(env),
        'xp.config_hash': info.configHash,
        'xp.version': xpVersion(),
        'xp.run_id': info.runId,
        'xp.run_dir': runDir,
        'xp.accel': info.accel,
        ...options.tags,
      };
      if (info.resumedAt !== undefined) tags['xp.resumed_at_epoch'] = String(info.resumedAt);
      if (info.experiment.description) tags['mlflow.note.content'] = info.experiment.description.slice(0, 5000);
      if (parentRunId) tags['mlflow.parentRunId'] = parentRunId;
      journal.append({
        kind: 'run',
        experimentName: env.MLFLOW_EXPERIMENT_NAME || options.experimentName,
        runName: info.runName,
        startTime: Date.now(),
        runKey: randomUUID(),
        tags,
        uri,
        store: embeddedStore(uri),
        pid: process.pid,
        host: os.hostname(),
      });
      journal.append({ kind: 'params', params: runParams(info, log) });
      if (info.datasets.length > 0) journal.append({ kind: 'inputs', datasets: info.datasets.map(datasetInput) });
      // A run resumed with tracking that was not tracked before: its MLflow run starts with the epochs done.
      for (const [i, logs] of (info.resumedHistory ?? []).entries()) {
        const metrics = epochMetrics(i + 1, logs);
        if (Object.keys(metrics).length)
          journal.append({ kind: 'metrics', step: i + 1, timestamp: Date.now(), metrics });
      }
      flushSoon();
    }),

    onEpochEnd: guard('epoch', async (epoch: number, logs: EpochLogs) => {
      if (!journal) return;
      const metrics = epochMetrics(epoch, logs);
      if (Object.keys(metrics).length) journal.append({ kind: 'metrics', step: epoch, timestamp: Date.now(), metrics });
      flushSoon();
      // One turn of the event loop: the delivery's I/O (and a Ctrl-C) get their chance even when training never
      // waits on anything else.
      await new Promise((resolve) => setImmediate(resolve));
    }),

    onRunEnd: guard('run end', async (info: RunEndInfo) => {
      if (!journal) return;
      // The run's result (saved model, whole validation set) and what early stopping did.
      const result = resultRecords(info);
      if (Object.keys(result.metrics).length)
        journal.append({
          kind: 'metrics',
          step: info.result?.epoch ?? 0,
          timestamp: Date.now(),
          metrics: result.metrics,
        });
      if (Object.keys(result.tags).length) journal.append({ kind: 'tags', tags: result.tags });
      const files = artifactFiles(runDir, info.artifacts, log);
      const linked = options.artifactStore
        ? linkArtifacts(runDir, files, options.artifactStore, await chain.then(runRef))
        : new Set<string>();
      for (const relative of files) if (!linked.has(relative)) journal.append({ kind: 'artifact', path: relative });
      // A second Ctrl-C journaled the end already (KILLED): the files written since still go with it.
      if (!journal.ended())
        journal.append({ kind: 'end', status: info.status, endTime: Date.now(), error: info.error });
      const count = journal.pending().length;
      if (outage?.said && count > 0)
        log(
          `MLflow: sending ${count} pending record(s) to ${uri} (giving up after ${endBudgetMs(env) / 1000} s without progress)...`,
        );
      if (!hurry.signal.aborted) await flushAtEnd();
      const left = journal.pending();
      if (left.length > 0) {
        log(
          `MLflow: NOT delivered yet: ${describePending(left)} (${left.length} record(s)). They are kept in ${journal.file}; ` +
            `send them with \`xp sync ${runDir}\` once ${uri} is reachable.`,
        );
      }
    }),

    pending: async () => {
      // A delivery pass may start another as it ends (records journaled meanwhile): wait for the last one.
      for (let seen: Promise<unknown> | undefined; seen !== chain; ) {
        seen = chain;
        await seen;
      }
      return journal?.pending().length ?? 0;
    },
    runUrl: () => {
      const run = runRef();
      return run ? runUrl(uri, run.experimentId, run.runId) : undefined;
    },
    mlflowRunId: () => runRef()?.runId,
    mlflowExperimentId: () => runRef()?.experimentId,
  };
}
