// Training callbacks that log a run to MLflow through the run's journal: training never waits on or fails
// because of the server; what cannot be sent now is sent at the next callback, at the end, or by `xp sync`.
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Callbacks, EpochLogs, RunEndInfo, RunStartInfo } from '../events.ts';
import { createClient, credentialsFromEnv, runUrl, type DatasetInput, type MlflowClient, type RunStatus } from './client.ts';
import { deliver, describePending, endOpenRuns, openJournal, type Journal } from './journal.ts';
import { repoRoot } from '../paths.ts';
import { embeddedStore } from './server.ts';

export { syncRunDir } from './journal.ts';

export interface TrackerOptions {
  uri: string;
  experimentName: string;
  runDir: string;
  sourceFile?: string;
  parentRunId?: string;
  log?: (line: string) => void;
  env?: NodeJS.ProcessEnv;
}

export type MlflowTracker = Callbacks & {
  /** Waits for a delivery in progress; resolves to the number of records not yet in MLflow. */
  pending(): Promise<number>;
  runUrl(): string | undefined;
  mlflowRunId(): string | undefined;
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
  const seconds = Number(env.XP_TRACKING_END_TIMEOUT);
  return (env.XP_TRACKING_END_TIMEOUT && Number.isFinite(seconds) && seconds >= 0 ? seconds : 15) * 1000;
}
// --- end of timing ---

const EPOCH_METRICS = ['loss', 'accuracy', 'val_loss', 'val_accuracy', 'learning_rate', 'epoch_seconds', 'images_per_second'] as const;

export function createMlflowTracker(options: TrackerOptions): MlflowTracker {
  const env = options.env ?? process.env;
  const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const uri = options.uri.replace(/\/+$/, '');
  const credentials = credentialsFromEnv(env);
  // --- Timing (faults): delivery runs beside training and never holds it; the end waits a bounded time. ---
  const giveUp = new AbortController();
  const signal = AbortSignal.any([giveUp.signal, hurry.signal]);
  // During training one attempt per delivery: a down server costs an epoch nothing, the next callback retries.
  const quick = createClient(uri, { ...credentials, maxRetries: 0, timeoutMs: Math.min(credentials.timeoutMs ?? 120_000, 15_000), warn: log, signal });
  const runDir = path.resolve(options.runDir);
  let journal: Journal | undefined;
  let chain: Promise<unknown> = Promise.resolve();
  let delivering = false;
  let again = false;
  let outage = false; // said once per outage, not at every epoch

  const flush = (client: MlflowClient, final = false) => {
    const next = chain.then(async () => {
      if (!journal) return;
      const before = journal.pending().length;
      const result = await deliver(journal, client, runDir, log);
      if (result.error) {
        const reason = result.error.message;
        // After a second Ctrl-C the end's message says what is kept and how to send it.
        if (!outage && !final && !hurry.signal.aborted) log(`MLflow: cannot deliver to ${uri} (${reason}); ${result.pending} record(s) kept in ${journal.file}, retrying at the next epoch.`);
        if (final) log(`MLflow: cannot deliver to ${uri} (${reason}).`);
        outage = true;
      } else if (outage) {
        log(`MLflow: reachable again, delivered ${before} pending record(s).`);
        outage = false;
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

  const guard = <A extends unknown[]>(name: string, body: (...args: A) => Promise<void>) => async (...args: A) => {
    try {
      await body(...args);
    } catch (error) {
      log(`MLflow: ${name} not recorded: ${(error as Error).message}`);
    }
  };

  const runRef = () => journal?.runRef();

  return {
    onRunStart: guard('run start', async (info: RunStartInfo) => {
      journal = openJournal(runDir);
      const sourceFile = info.sourceFile ?? options.sourceFile;
      const parentRunId = options.parentRunId ?? info.parentRunId;
      const commit = gitCommit(sourceFile ? path.dirname(path.resolve(sourceFile)) : process.cwd());
      const tags: Record<string, string> = {
        'mlflow.runName': info.runName,
        'mlflow.source.name': sourceFile ? path.resolve(sourceFile) : 'xp',
        'mlflow.source.type': 'LOCAL',
        'mlflow.user': userName(env),
        'xp.config_hash': info.configHash,
        'xp.version': xpVersion(),
        'xp.run_id': info.runId,
        'xp.run_dir': runDir,
      };
      if (commit) tags['mlflow.source.git.commit'] = commit;
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
      flushSoon();
    }),

    onEpochEnd: guard('epoch', async (epoch: number, logs: EpochLogs) => {
      if (!journal) return;
      const metrics: Record<string, number> = {};
      const skipped: string[] = [];
      for (const key of EPOCH_METRICS) {
        const value = logs[key];
        if (value === undefined) continue;
        if (Number.isFinite(value)) metrics[key] = value;
        else skipped.push(`${key}=${value}`);
      }
      if (skipped.length > 0) log(`MLflow: epoch ${epoch}: ${skipped.join(', ')} not logged (MLflow cannot chart NaN or Inf).`);
      journal.append({ kind: 'metrics', step: epoch, timestamp: Date.now(), metrics });
      flushSoon();
      // One turn of the event loop: the delivery's I/O (and a Ctrl-C) get their chance even when training never
      // waits on anything else.
      await new Promise((resolve) => setImmediate(resolve));
    }),

    onRunEnd: guard('run end', async (info: RunEndInfo) => {
      if (!journal) return;
      for (const relative of artifactFiles(runDir, info.artifacts, log)) journal.append({ kind: 'artifact', path: relative });
      // A second Ctrl-C journaled the end already (KILLED): the files written since still go with it.
      if (!journal.ended()) journal.append({ kind: 'end', status: info.status, endTime: Date.now(), error: info.error });
      const count = journal.pending().length;
      if (outage && count > 0) log(`MLflow: sending ${count} pending record(s) to ${uri} (giving up after ${endBudgetMs(env) / 1000} s without progress)...`);
      if (!hurry.signal.aborted) await flushAtEnd();
      const left = journal.pending();
      if (left.length > 0) {
        log(`MLflow: NOT delivered yet: ${describePending(left)} (${left.length} record(s)). They are kept in ${journal.file}; `
          + `send them with \`xp sync ${runDir}\` once ${uri} is reachable.`);
      }
    }),

    pending: async () => {
      // A delivery pass may start another as it ends (records journaled meanwhile): wait for the last one.
      for (let seen; seen !== chain; ) await (seen = chain);
      return journal?.pending().length ?? 0;
    },
    runUrl: () => {
      const run = runRef();
      return run ? runUrl(uri, run.experimentId, run.runId) : undefined;
    },
    mlflowRunId: () => runRef()?.runId,
  };
}

/** The resolved experiment as dotted params (sweep, tracking and description left out) plus the run's facts. */
export function runParams(info: Pick<RunStartInfo, 'experiment' | 'facts'>, log: (line: string) => void = () => {}): Record<string, string> {
  const { sweep: _sweep, tracking: _tracking, description: _description, ...experiment } = info.experiment;
  const params = { ...flattenParams(experiment), ...flattenParams(info.facts) };
  for (const [key, value] of Object.entries(params)) {
    if (value.length > 6000) {
      log(`MLflow: param ${key} is ${value.length} characters; logged truncated to MLflow's 6000.`);
      params[key] = value.slice(0, 6000);
    }
  }
  return params;
}

/** { head: { dropout: 0.2, units: [1024] } } -> { 'head.dropout': '0.2', 'head.units': '[1024]' } */
export function flattenParams(value: unknown, prefix = ''): Record<string, string> {
  const params: Record<string, string> = {};
  if (value === undefined || value === null) return params;
  if (typeof value === 'object' && !Array.isArray(value)) {
    for (const [key, child] of Object.entries(value)) Object.assign(params, flattenParams(child, prefix ? `${prefix}.${key}` : key));
    return params;
  }
  params[prefix] = Array.isArray(value) ? JSON.stringify(value) : String(value);
  return params;
}

function datasetInput(dataset: RunStartInfo['datasets'][number]): DatasetInput {
  return {
    tags: [{ key: 'mlflow.data.context', value: dataset.context }],
    dataset: {
      name: dataset.name,
      digest: dataset.digest.slice(0, 36),
      source_type: 'local',
      source: JSON.stringify({ uri: dataset.source }),
    },
  };
}

/** Files of the listed artifacts (folders walked), relative to runDir with '/' separators. */
function artifactFiles(runDir: string, artifacts: string[], log: (line: string) => void): string[] {
  const files: string[] = [];
  const walk = (relative: string) => {
    const absolute = path.join(runDir, relative);
    const stat = fs.statSync(absolute, { throwIfNoEntry: false });
    if (!stat) return log(`MLflow: artifact ${relative} not found in ${runDir}; skipped.`);
    if (!stat.isDirectory()) return files.push(relative.split(path.sep).join('/'));
    for (const entry of fs.readdirSync(absolute).sort()) walk(path.join(relative, entry));
  };
  for (const artifact of artifacts) walk(path.normalize(artifact).replace(/[\\/]+$/, ''));
  return files;
}

function userName(env: NodeJS.ProcessEnv): string {
  try {
    return os.userInfo().username;
  } catch {
    return env.USER ?? env.USERNAME ?? 'unknown';
  }
}

let version: string | undefined;
function xpVersion(): string {
  try {
    version ??= (JSON.parse(fs.readFileSync(path.join(repoRoot, 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    version = 'unknown';
  }
  return version;
}

/** HEAD commit of the git repository holding `start`, read from .git without running git. */
export function gitCommit(start: string): string | undefined {
  try {
    for (let dir = path.resolve(start); ; dir = path.dirname(dir)) {
      const dotGit = path.join(dir, '.git');
      if (fs.existsSync(dotGit)) return headCommit(dotGit);
      if (path.dirname(dir) === dir) return undefined;
    }
  } catch {
    return undefined;
  }
}

function headCommit(dotGit: string): string | undefined {
  const read = (file: string) => fs.readFileSync(file, 'utf8').trim();
  let gitDir = dotGit;
  if (fs.statSync(dotGit).isFile()) gitDir = path.resolve(path.dirname(dotGit), read(dotGit).replace(/^gitdir:\s*/, '')); // worktree
  const commonDir = fs.existsSync(path.join(gitDir, 'commondir')) ? path.resolve(gitDir, read(path.join(gitDir, 'commondir'))) : gitDir;
  const head = read(path.join(gitDir, 'HEAD'));
  if (/^[0-9a-f]{40}$/.test(head)) return head;
  const ref = /^ref:\s*(.+)$/.exec(head)?.[1];
  if (!ref) return undefined;
  for (const dir of [gitDir, commonDir]) {
    if (fs.existsSync(path.join(dir, ref))) return read(path.join(dir, ref));
  }
  const packed = fs.existsSync(path.join(commonDir, 'packed-refs')) ? read(path.join(commonDir, 'packed-refs')) : '';
  return packed.split('\n').map((line) => line.split(' ')).find(([, name]) => name === ref)?.[0];
}

// Sweeps: a parent run per sweep, trials nest under it by the mlflow.parentRunId tag.

export async function startParentRun(options: {
  uri: string;
  experimentName: string;
  runName: string;
  sweepDefinition: { params?: Record<string, unknown>; tags?: Record<string, string> };
  sourceFile?: string;
  env?: NodeJS.ProcessEnv;
}): Promise<{ runId: string; experimentId: string; url: string }> {
  const env = options.env ?? process.env;
  const client = createClient(options.uri, credentialsFromEnv(env));
  const experiment = await client.getOrCreateExperiment(env.MLFLOW_EXPERIMENT_NAME || options.experimentName);
  const commit = gitCommit(options.sourceFile ? path.dirname(path.resolve(options.sourceFile)) : process.cwd());
  const run = await client.createRun({
    experimentId: experiment.experiment_id,
    runName: options.runName,
    tags: {
      'mlflow.runName': options.runName,
      'mlflow.user': userName(env),
      'mlflow.source.name': options.sourceFile ? path.resolve(options.sourceFile) : 'xp',
      'mlflow.source.type': 'LOCAL',
      ...(commit ? { 'mlflow.source.git.commit': commit } : {}),
      'xp.version': xpVersion(),
      'xp.kind': 'sweep',
      ...options.sweepDefinition.tags,
    },
  });
  const params = flattenParams(options.sweepDefinition.params ?? {});
  await client.logBatch(run.info.run_id, { params: Object.entries(params).map(([key, value]) => ({ key, value: value.slice(0, 6000) })) });
  return { runId: run.info.run_id, experimentId: run.info.experiment_id, url: runUrl(options.uri, run.info.experiment_id, run.info.run_id) };
}

export async function finishParentRun(runId: string, options: {
  uri: string;
  status: Exclude<RunStatus, 'RUNNING' | 'SCHEDULED'>;
  bestRunId?: string;
  /** Logged as metric best_<key>. */
  bestMetric?: { key: string; value: number };
  env?: NodeJS.ProcessEnv;
}): Promise<void> {
  const client = createClient(options.uri, credentialsFromEnv(options.env ?? process.env));
  await client.logBatch(runId, {
    tags: options.bestRunId ? [{ key: 'xp.best_run_id', value: options.bestRunId }] : [],
    metrics: options.bestMetric ? [{ key: `best_${options.bestMetric.key}`, value: options.bestMetric.value, timestamp: Date.now(), step: 0 }] : [],
  });
  await client.updateRun(runId, { status: options.status, endTime: Date.now() });
}

/** Finished runs of the experiment whose xp.config_hash is one of `hashes` (newest run per hash), to skip redoing them. */
export async function findFinishedRunsByConfigHash(uri: string, experimentName: string, hashes: string[], env: NodeJS.ProcessEnv = process.env): Promise<Map<string, string>> {
  const found = new Map<string, string>();
  if (hashes.length === 0) return found;
  const client = createClient(uri, credentialsFromEnv(env));
  const experiment = await client.getExperimentByName(env.MLFLOW_EXPERIMENT_NAME || experimentName);
  if (!experiment) return found;
  const wanted = new Set(hashes);
  // MLflow's filter has no OR and no IN on tags: one hash filters server-side, several filter here.
  const filter = hashes.length === 1 ? `attributes.status = 'FINISHED' AND tags."xp.config_hash" = '${quote(hashes[0])}'` : `attributes.status = 'FINISHED'`;
  const runs = await client.searchRuns({ experimentIds: [experiment.experiment_id], filter, orderBy: ['attributes.start_time DESC'] });
  for (const run of runs) {
    const hash = run.data.tags?.find((tag) => tag.key === 'xp.config_hash')?.value;
    if (hash && wanted.has(hash) && !found.has(hash)) found.set(hash, run.info.run_id);
  }
  return found;
}

const quote = (value: string) => value.replace(/'/g, "\\'");
