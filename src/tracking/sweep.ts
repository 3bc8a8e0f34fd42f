// A sweep's tracking session: one parent run per sweep definition, found again on resume by the sweep's hash;
// trials FINISHED in MLflow are skipped; the best trial is chosen among every FINISHED trial of the sweep (this
// command's and the skipped ones); the parent is tagged with the best trial and the MLflow compare URL of all trials.
// The compare link is the sweep's view in the MLflow UI (sweep-view.ts), stored on the parent relative to the
// server. Tracking never holds up training: every request here is one short attempt, and a failure is said and
// passed over.
import crypto from 'node:crypto';
import { configHash, type LoadedExperiment, type ResolvedTrial } from '../config/load.ts';
import type { SweepConfig } from '../config/types.ts';
import { isBetter, metricGoal, type Goal } from '../config/metrics.ts';
import { headlineValue, loggedHeadlineValue, type EpochLogs, type RunEndInfo, type RunResult } from '../events.ts';
import { toKeyValues, type MlflowClient, type MlflowError } from './client.ts';
import { OWNER_PID, ownerTags } from './owner.ts';
import { listRuns, type RunRow } from './compare.ts';
import { compareRunsRoute, runUrl, uiLink } from './links.ts';
import { quickClient } from './session.ts';
import { storedRuns } from './store.ts';
import { trackingUriFromEnv } from './uri.ts';
import { chainTags, sourceTags, userName, xpVersion } from './provenance.ts';
import { sweepView } from './sweep-view.ts';

/** What the sweep needs of a trial trained by this command. */
export interface TrialResult {
  name: string;
  status: RunEndInfo['status'];
  history: EpochLogs[];
  result?: RunResult;
  mlflowRunId?: string;
  experimentId?: string;
}

export interface SweepSession {
  /** The sweep's definition: its metric and goal pick the best trial. */
  config: SweepConfig;
  /** Trials to train now (FINISHED ones left out unless rerun). */
  trials: ResolvedTrial[];
  /** FINISHED runs of trials of this sweep, by config hash (they compete for best). */
  finished: Map<string, RunRow>;
  parentRunId?: string;
  parentUrl?: string;
  /** The sweep's view in the MLflow UI, relative to the server (tag xp.compare_url). */
  compareRoute?: string;
}

export interface SweepEnd {
  best?: { name: string; runId?: string; value: number };
  compareUrl?: string;
}

type Log = (line: string) => void;

/** sha256 of what defines the sweep: the resolved base experiment and the sweep's definition. */
export function sweepHash(loaded: Pick<LoadedExperiment, 'base' | 'sweep'>): string {
  return crypto
    .createHash('sha256')
    .update(configHash(loaded.base))
    .update(JSON.stringify(loaded.sweep ?? {}))
    .digest('hex')
    .slice(0, 16);
}

/** The best candidate under the sweep's goal; candidates without a value do not compete; a tie goes to the earlier one. */
export function chooseBest<T extends { value?: number }>(
  candidates: T[],
  metric: string,
  goal = metricGoal(metric),
): (T & { value: number }) | undefined {
  let best: (T & { value: number }) | undefined;
  for (const candidate of candidates) {
    if (candidate.value === undefined || !Number.isFinite(candidate.value)) continue;
    if (!best || isBetter(candidate.value, best.value, goal)) best = candidate as T & { value: number };
  }
  return best;
}

/** FINISHED runs of the experiment with one of these config hashes, newest per hash. */
export function finishedByHash(rows: RunRow[], hashes: string[]): Map<string, RunRow> {
  const wanted = new Set(hashes);
  const found = new Map<string, RunRow>();
  for (const row of [...rows].sort((a, b) => (b.startTime ?? 0) - (a.startTime ?? 0))) {
    const hash = row.tags['xp.config_hash'];
    if (row.status === 'FINISHED' && hash && wanted.has(hash) && !found.has(hash)) found.set(hash, row);
  }
  return found;
}

/** Before training: which trials are FINISHED already, and the sweep's parent run (reused when it exists). */
export async function openSweep(options: {
  uri: string;
  experimentName: string;
  loaded: LoadedExperiment;
  trials: ResolvedTrial[];
  /** The trials are asked as the sweep goes (a search, src/search): the parent opens with none known yet. */
  asked?: boolean;
  rerun: boolean;
  sourceFile: string;
  log: Log;
  env?: NodeJS.ProcessEnv;
  /**
   * This process trains the sweep: the parent is tagged with it, so that a parent left RUNNING by its death is told
   * (owner.ts). A queued sweep's submitter is no owner: workers train it after it exits.
   */
  owner?: boolean;
}): Promise<SweepSession> {
  const { loaded, log } = options;
  const config = loaded.sweep;
  if (!config) throw new Error(`openSweep: ${loaded.file} has no sweep`);
  const env = options.env ?? process.env;
  const client = quickClient(options.uri, env);
  const experimentName = env.MLFLOW_EXPERIMENT_NAME || options.experimentName;
  const hash = sweepHash(loaded);
  let rows: RunRow[] = [];
  try {
    rows = await listRuns({ uri: options.uri, experimentName, includeSweeps: true, client });
  } catch (error) {
    log(
      `MLflow: cannot tell which trials are FINISHED (${(error as Error).message}); running every trial; they are journaled as single runs for \`xp sync\`.`,
    );
    return { config, trials: options.trials, finished: new Map() };
  }
  const finished = finishedByHash(
    rows,
    loaded.trials.map((t) => t.configHash),
  );
  let trials = options.trials;
  if (!options.rerun) {
    const skipped = trials.filter((t) => finished.has(t.configHash));
    if (skipped.length)
      log(
        `Skipping ${skipped.length} trial(s) already FINISHED in MLflow (--rerun runs them again): ${skipped.map((t) => t.name).join('; ')}`,
      );
    trials = trials.filter((t) => !finished.has(t.configHash));
  }
  // A trial trained again competes with its new run only.
  for (const t of trials) finished.delete(t.configHash);
  const existing = rows.find((row) => row.tags['xp.kind'] === 'sweep' && row.tags['xp.sweep_hash'] === hash);
  if (!trials.length && !options.asked) {
    // Nothing left to train, but a parent left open (its closer could not reach MLflow) is closed now.
    if (existing?.status === 'RUNNING') {
      const end = await endSweep({
        uri: options.uri,
        parentRunId: existing.runId,
        metric: config.metric,
        goal: config.goal,
        candidates: [...finished.values()].map(
          candidateOf(config.metric, (row) =>
            loaded.trials.findIndex((t) => t.configHash === row.tags['xp.config_hash']),
          ),
        ),
        killed: false,
        log,
        env,
      });
      log(
        `Sweep parent run closed${end.best ? `: best trial ${end.best.name}` : ''}: ${runUrl(client.baseUrl, existing.experimentId, existing.runId)}`,
      );
    }
    return { config, trials, finished };
  }
  try {
    const owner = options.owner ?? false;
    const parent = existing
      ? await reopenParent(client, existing, owner)
      : await createParent(client, { ...options, sweep: config, experimentName, hash, env, owner });
    log(`Sweep parent run${existing ? ' (resumed)' : ''}: ${parent.url}`);
    const compareRoute = await publishView(client, parent, config, log);
    return { config, trials, finished, parentRunId: parent.runId, parentUrl: parent.url, compareRoute };
  } catch (error) {
    log(
      `MLflow: sweep parent run not created (${(error as Error).message}); the trials are journaled as single runs for \`xp sync\`.`,
    );
    return { config, trials, finished };
  }
}

async function reopenParent(client: MlflowClient, row: RunRow, owner: boolean) {
  if (owner) await client.logBatch(row.runId, { tags: toKeyValues(ownerTags()) });
  else if (row.tags[OWNER_PID])
    await client.deleteTag(row.runId, OWNER_PID).catch((error: unknown) => {
      if ((error as MlflowError).errorCode !== 'RESOURCE_DOES_NOT_EXIST') throw error;
    });
  await client.updateRun(row.runId, { status: 'RUNNING' });
  return { runId: row.runId, experimentId: row.experimentId, url: runUrl(client.baseUrl, row.experimentId, row.runId) };
}

/**
 * The sweep's view: an experiment tag MLflow's UI reads, and its route on the parent (written again on resume, so a
 * parent from before keeps a link that works). Its route, or undefined when MLflow did not take it.
 */
async function publishView(
  client: MlflowClient,
  parent: { runId: string; experimentId: string },
  sweep: SweepConfig | undefined,
  log: Log,
): Promise<string | undefined> {
  if (!sweep) return undefined;
  const { metric, goal, parameters } = sweep;
  const view = sweepView({
    experimentId: parent.experimentId,
    parentRunId: parent.runId,
    metric,
    goal,
    parameters: Object.keys(parameters),
  });
  try {
    await client.setExperimentTag(parent.experimentId, view.tag.key, view.tag.value);
    await client.logBatch(parent.runId, { tags: [{ key: 'xp.compare_url', value: view.route }] });
    return view.route;
  } catch (error) {
    log(`MLflow: the sweep's view in the MLflow UI not recorded (${(error as Error).message}).`);
    return undefined;
  }
}

async function createParent(
  client: MlflowClient,
  options: {
    loaded: LoadedExperiment;
    sweep: SweepConfig;
    experimentName: string;
    hash: string;
    sourceFile: string;
    env: NodeJS.ProcessEnv;
    owner: boolean;
  },
) {
  const { loaded, sweep, sourceFile, env } = options;
  const experiment = await client.getOrCreateExperiment(options.experimentName);
  const runName = `sweep ${Object.keys(sweep.parameters).join(' x ')}`;
  const run = await client.createRun({
    experimentId: experiment.experiment_id,
    runName,
    tags: {
      'mlflow.runName': runName,
      'mlflow.user': userName(env),
      ...sourceTags(sourceFile),
      ...chainTags(loaded.sources),
      ...(loaded.base.description ? { 'mlflow.note.content': loaded.base.description.slice(0, 5000) } : {}),
      'xp.version': xpVersion(),
      'xp.kind': 'sweep',
      'xp.sweep_hash': options.hash,
      'xp.sweep.trials': String(loaded.trials.length),
      'xp.sweep_metric': sweep.metric,
      ...(options.owner ? ownerTags() : {}),
    },
  });
  const params = Object.entries({
    'sweep.method': sweep.method,
    'sweep.metric': sweep.metric,
    'sweep.goal': sweep.goal,
    trials: loaded.trials.length,
    ...prefixed(sweep.parameters),
  });
  await client.logBatch(run.info.run_id, {
    params: params.map(([key, value]) => ({
      key,
      value: (typeof value === 'string' ? value : JSON.stringify(value)).slice(0, 6000),
    })),
  });
  return {
    runId: run.info.run_id,
    experimentId: run.info.experiment_id,
    url: runUrl(client.baseUrl, run.info.experiment_id, run.info.run_id),
  };
}

const prefixed = (parameters: Record<string, unknown>) =>
  Object.fromEntries(Object.entries(parameters).map(([key, value]) => [`parameters.${key}`, value]));

/**
 * After training: the best FINISHED trial of the whole sweep and the parent closed; the compare URL is the sweep's
 * view, or MLflow's compare-runs page of the trials when the sweep has no parent run.
 */
export async function closeSweep(options: {
  uri: string;
  loaded: LoadedExperiment;
  session: SweepSession;
  results: TrialResult[];
  killed: boolean;
  log: Log;
  env?: NodeJS.ProcessEnv;
}): Promise<SweepEnd> {
  const { loaded, session } = options;
  const { metric, goal } = session.config;
  const ranThisTime = new Set(options.results.map((r) => r.mlflowRunId).filter(Boolean));
  const order = new Map(loaded.trials.map((t, i) => [t.name, i]));
  const rank = (name: string) => order.get(name) ?? order.size;
  const candidates = [
    ...options.results
      .filter((r) => r.status === 'FINISHED')
      .map((r) => ({
        name: r.name,
        runId: r.mlflowRunId,
        experimentId: r.experimentId,
        value: headlineValue(r, metric),
        rank: rank(r.name),
      })),
    ...[...session.finished.values()]
      .filter((row) => !ranThisTime.has(row.runId))
      .map(candidateOf(metric, (row) => rank(row.runName))),
  ];
  const end = await endSweep({ ...options, parentRunId: session.parentRunId, metric, goal, candidates });
  const tracked = candidates.flatMap(({ runId, experimentId }) =>
    runId && experimentId ? [{ runId, experimentId }] : [],
  );
  const route =
    session.compareRoute ??
    (tracked.length
      ? compareRunsRoute(
          tracked.map((c) => c.experimentId),
          tracked.map((c) => c.runId),
        )
      : undefined);
  return { ...end, compareUrl: route && uiLink(options.uri, route) };
}

/**
 * A queued sweep's end, closed by the worker that ends its last job: the candidates are the FINISHED runs MLflow
 * holds for the sweep's trials (the newest of each, as openSweep counts them), whichever machine trained them.
 */
export async function closeSweepFromRuns(options: {
  uri: string;
  experimentName: string;
  parentRunId: string;
  metric: string;
  goal?: Goal;
  trialHashes: string[];
  killed: boolean;
  log: Log;
  env?: NodeJS.ProcessEnv;
}): Promise<SweepEnd> {
  const client = quickClient(options.uri, options.env);
  const rows = await listRuns({
    uri: options.uri,
    experimentName: options.experimentName,
    includeSweeps: true,
    client,
  });
  const candidates = [...finishedByHash(rows, options.trialHashes).values()].map(
    candidateOf(options.metric, (row) => options.trialHashes.indexOf(row.tags['xp.config_hash'])),
  );
  return endSweep({ ...options, candidates });
}

/** A FINISHED run as a candidate for best; `rank` is its trial's place in the sweep, which breaks ties. */
const candidateOf = (metric: string, rank: (row: RunRow) => number) => (row: RunRow) => ({
  name: row.runName,
  runId: row.runId as string | undefined,
  experimentId: row.experimentId as string | undefined,
  value: loggedHeadlineValue(row.metrics, metric),
  rank: rank(row),
});

type Candidate = { name: string; runId?: string; experimentId?: string; value?: number; rank: number };

/** Whoever closes a sweep (the command that trained it, the worker of its last job) picks the same best: a tie goes to the first trial. */
export function bestTrial<T extends { value?: number; rank: number }>(candidates: T[], metric: string, goal?: Goal) {
  return chooseBest(
    [...candidates].sort((a, b) => a.rank - b.rank),
    metric,
    goal ?? metricGoal(metric),
  );
}

/** The best candidate, on the parent, which ends FINISHED (FAILED without a best, KILLED when stopped). */
async function endSweep(options: {
  uri: string;
  parentRunId?: string;
  metric: string;
  goal?: Goal;
  candidates: Candidate[];
  killed: boolean;
  log: Log;
  env?: NodeJS.ProcessEnv;
}): Promise<SweepEnd> {
  const { metric, candidates } = options;
  const best = bestTrial(candidates, metric, options.goal);
  if (options.parentRunId) {
    const client = quickClient(options.uri, options.env);
    const tags = best?.runId ? [{ key: 'xp.best_run_id', value: best.runId }] : [];
    const metrics = best ? [{ key: `best_${metric}`, value: best.value, timestamp: Date.now(), step: 0 }] : [];
    try {
      await client.logBatch(options.parentRunId, { tags, metrics });
      await client.updateRun(options.parentRunId, {
        status: options.killed ? 'KILLED' : best ? 'FINISHED' : 'FAILED',
        endTime: Date.now(),
      });
    } catch (error) {
      options.log(
        `MLflow: could not close the sweep's parent run (${(error as Error).message}); the next run of this sweep closes it.`,
      );
    }
  }
  return { best: best && { name: best.name, runId: best.runId, value: best.value } };
}

/** For --dry-run: the trials MLflow has FINISHED (they would be skipped), read without starting a server. */
export async function finishedTrials(
  loaded: LoadedExperiment,
  storeDir: string,
  env: NodeJS.ProcessEnv = process.env,
): Promise<Map<string, RunRow>> {
  const experimentName = env.MLFLOW_EXPERIMENT_NAME || loaded.base.tracking.experiment_name || loaded.base.name;
  const { rows } = await storedRuns({
    uri: loaded.base.tracking.uri ?? trackingUriFromEnv(env),
    storeDir,
    experimentName,
  });
  return finishedByHash(
    rows,
    loaded.trials.map((t) => t.configHash),
  );
}
