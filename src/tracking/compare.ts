// Runs side by side: what differs between them and how they scored.
import path from 'node:path';
import { goalSign, metricGoal, type Goal } from '../config/metrics.ts';
import { loggedHeadlineValue } from '../events.ts';
import {
  createClient,
  credentialsFromEnv,
  fromKeyValues,
  type MlflowClient,
  type Run,
  type RunStatus,
} from './client.ts';
import { runRoute, uiLink } from './links.ts';

export interface RunRow {
  runId: string;
  runName: string;
  status: RunStatus;
  experimentId: string;
  experimentName: string;
  startTime?: number;
  endTime?: number;
  params: Record<string, string>;
  /** Latest value of each metric. */
  metrics: Record<string, number>;
  tags: Record<string, string>;
  /** Local folder of the run (tag xp.run_dir), when logged by xp. */
  runDir?: string;
  parentRunId?: string;
  /** The run's page, relative to the tracking server. */
  route: string;
  /** The run's page on the server the row was read from; none when read from the store's file. */
  url?: string;
  /**
   * Set when MLflow says RUNNING but the run's process (pid, on this machine) is gone: how the run ended as its
   * journal has it (KILLED when the process died without saying). The next `xp run` or `xp sync` tells MLflow.
   */
  gone?: { pid: number; status: Exclude<RunStatus, 'RUNNING' | 'SCHEDULED'> };
}

export const TABLE_METRICS = ['val_accuracy', 'val_loss', 'accuracy', 'loss'] as const;

/** Runs of one experiment (or of all), newest first; sweep parents are left out unless asked for. */
export async function listRuns(options: {
  uri: string;
  experimentName?: string;
  includeSweeps?: boolean;
  env?: NodeJS.ProcessEnv;
  client?: MlflowClient;
}): Promise<RunRow[]> {
  const client = options.client ?? createClient(options.uri, credentialsFromEnv(options.env ?? process.env));
  const experiments = options.experimentName
    ? [await client.getExperimentByName(options.experimentName)].filter((experiment) => experiment !== undefined)
    : await client.searchExperiments();
  const names = new Map(experiments.map((experiment) => [experiment.experiment_id, experiment.name]));
  const rows: RunRow[] = [];
  // runs/search takes a bounded list of experiments: ask in groups.
  for (let index = 0; index < experiments.length; index += 100) {
    const ids = experiments.slice(index, index + 100).map((experiment) => experiment.experiment_id);
    const runs = await client.searchRuns({ experimentIds: ids, orderBy: ['attributes.start_time DESC'] });
    rows.push(...runs.map((run) => toRow(run, names.get(run.info.experiment_id) ?? '', options.uri)));
  }
  return options.includeSweeps ? rows : rows.filter((row) => row.tags['xp.kind'] !== 'sweep');
}

/** A run as a row; `uri`: the server it was read from (none for the store's file). */
export function toRow(run: Run, experimentName: string, uri: string | undefined): RunRow {
  const tags = fromKeyValues(run.data.tags);
  const route = runRoute(run.info.experiment_id, run.info.run_id);
  return {
    runId: run.info.run_id,
    runName: run.info.run_name ?? tags['mlflow.runName'] ?? run.info.run_id,
    status: run.info.status,
    experimentId: run.info.experiment_id,
    experimentName,
    startTime: numberOrUndefined(run.info.start_time),
    endTime: numberOrUndefined(run.info.end_time),
    params: fromKeyValues(run.data.params),
    metrics: Object.fromEntries((run.data.metrics ?? []).map((metric) => [metric.key, Number(metric.value)])),
    tags,
    runDir: tags['xp.run_dir'],
    parentRunId: tags['mlflow.parentRunId'],
    route,
    url: uri ? uiLink(uri, route) : undefined,
  };
}

/** The metric runs are ranked by unless asked otherwise. */
export const RANK_METRIC = 'val_accuracy';

/** Best run by a metric (default val_accuracy, direction from metricGoal); runs without the metric do not compete. */
export function bestRun(
  rows: RunRow[],
  options: { metric?: string; goal?: Goal } = {},
): { runId: string; runDir?: string; url?: string; value: number } | undefined {
  const metric = options.metric ?? RANK_METRIC;
  const [best] = stoppedLast(rankRuns(rows, metric, options.goal));
  const value = best ? loggedHeadlineValue(best.metrics, metric) : undefined;
  return best && value !== undefined ? { runId: best.runId, runDir: best.runDir, url: best.url, value } : undefined;
}

/** Best first by the metric under its goal (metricGoal unless given); runs without it last. */
export function rankRuns(rows: RunRow[], metric = RANK_METRIC, goal: Goal = metricGoal(metric)): RunRow[] {
  const score = (row: RunRow) => {
    const value = loggedHeadlineValue(row.metrics, metric);
    return value === undefined ? -Infinity : goalSign(goal) * value;
  };
  return [...rows].sort((a, b) => score(b) - score(a));
}

/** Characters of an MLflow run id `xp runs` shows (as git shows 7 of a commit's): enough to tell runs apart. */
export const SHORT_RUN_ID = 8;

/**
 * Names and params that differ between the runs, then each run's figures (headlineValue: val_* are its result) and
 * its folder (what `xp predict` and `xp evaluate` take); best first. `wide`: whole ids and names, and each run's
 * link when a server serves them.
 */
export function formatRunsTable(rows: RunRow[], options: { wide?: boolean; cwd?: string } = {}): string {
  if (rows.length === 0) return 'No runs.';
  const { wide = false, cwd = process.cwd() } = options;
  const sorted = stoppedLast(rankRuns(rows));
  const keys = [...new Set(rows.flatMap((row) => Object.keys(row.params)))].sort();
  const differing = keys.filter((key) => new Set(rows.map((row) => row.params[key] ?? '')).size > 1);
  const links = wide && rows.some((row) => row.url);
  const header = ['run', 'name', 'status', ...differing, ...TABLE_METRICS, 'folder', ...(links ? ['link'] : [])];
  const shorten = (cell: string) => (wide ? cell : clip(cell, 32));
  const body = sorted.map((row) => [
    wide ? row.runId : row.runId.slice(0, SHORT_RUN_ID),
    shorten(row.runName),
    statusCell(row),
    ...differing.map((key) => shorten(row.params[key] ?? '-')),
    ...TABLE_METRICS.map((metric) => {
      const v = loggedHeadlineValue(row.metrics, metric);
      return v === undefined ? '-' : formatNumber(v);
    }),
    row.runDir ? shownPath(row.runDir, cwd) : '-',
    ...(links ? [row.url ?? '-'] : []),
  ]);
  const firstMetric = header.indexOf(TABLE_METRICS[0]);
  const numeric = header.map((_, column) => column >= firstMetric && column < firstMetric + TABLE_METRICS.length);
  const widths = header.map((title, column) => Math.max(title.length, ...body.map((cells) => cells[column].length)));
  const line = (cells: string[]) =>
    cells
      .map((cell, column) => (numeric[column] ? cell.padStart(widths[column]) : cell.padEnd(widths[column])))
      .join('  ')
      .trimEnd();
  return [line(header), line(widths.map((width) => '-'.repeat(width))), ...body.map(line)].join('\n');
}

/** A path as typed from `cwd`: relative below it, absolute elsewhere. */
function shownPath(file: string, cwd: string): string {
  const relative = path.relative(cwd, file);
  return relative && !relative.startsWith('..') && !path.isAbsolute(relative) ? relative : file;
}

/**
 * Trials a search stopped early are scored on fewer epochs than the rest: in the table and for --best they follow
 * every run that trained to its end, each group in its own order.
 */
const stoppedLast = (ranked: RunRow[]): RunRow[] => [
  ...ranked.filter((row) => !stoppedAt(row)),
  ...ranked.filter(stoppedAt),
];

/** The epoch a search's pruner stopped the run after (tag xp.pruned_at_epoch), if it did; rows ranked for their metrics alone may carry no tags. */
export const stoppedAt = (row: RunRow): string | undefined => row.tags?.['xp.pruned_at_epoch'];

/**
 * MLflow's status, or what the run folder knows when MLflow has not heard it: `KILLED, MLflow: RUNNING`; a trial
 * the search stopped: `stopped after epoch 2`.
 */
export const statusCell = (row: RunRow): string =>
  row.gone
    ? `${row.gone.status}, MLflow: ${row.status}`
    : stoppedAt(row)
      ? `stopped after epoch ${stoppedAt(row)}`
      : row.status;

const formatNumber = (value: number) => (Number.isInteger(value) ? String(value) : value.toFixed(4));
const clip = (text: string, width: number) => (text.length > width ? `${text.slice(0, width - 1)}…` : text);
const numberOrUndefined = (value: unknown) => (value === undefined || value === null ? undefined : Number(value));
