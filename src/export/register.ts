// `xp register`: a tracked run's model as a real MLflow model under its run (python_function flavor around its
// checked Keras export, src/export/xp_pyfunc.py) and a new version of a registered model, which takes the alias
// `champion` only when its metric beats the champion's. MLflow's own client does the logging (register_model.py).
import path from 'node:path';
import { execa } from 'execa';
import { metricGoal } from '../config/metrics.ts';
import { TrackingError, XpError } from '../errors.ts';
import { loggedHeadlineValue, resultMetricKey } from '../events.ts';
import { mlflowStoreDir } from '../paths.ts';
import { ensureKerasVenv } from '../python/keras-env.ts';
import { createClient, fromKeyValues } from '../tracking/client.ts';
import { openJournal, recordedTarget } from '../tracking/journal.ts';
import { startServer } from '../tracking/server.ts';
import { resolveTrackingUri } from '../tracking/uri.ts';
import { currentExport, exportRun, METADATA_FILE } from './export.ts';

const SCRIPT = path.join(import.meta.dirname, 'register_model.py');

export interface RegisterOptions {
  runDir: string;
  name: string;
  /** The metric the champion is chosen by (a run's result, `final_<metric>` in MLflow); default val_accuracy. */
  metric?: string;
  images?: string;
  log: (line: string) => void;
}

export interface Registered {
  name: string;
  version: string;
  modelUri: string;
  metric: string;
  value: number;
  champion: boolean;
  previous?: { version: string; value: number };
  trackingUri: string;
  /** The embedded server, stopped when xp register ends: `xp ui` serves it again. */
  embedded: boolean;
}

export async function registerRun(opts: RegisterOptions): Promise<Registered> {
  const { runDir, name, log } = opts;
  const metric = opts.metric ?? 'val_accuracy';
  if (!/^[\w.\- ]+$/.test(name))
    throw new XpError(`"${name}" is not a model name MLflow takes`, {
      hint: 'use letters, digits, spaces, dots, dashes and underscores',
    });
  const run = openJournal(runDir).runRef();
  if (!run)
    throw new XpError(`${runDir} is not a run folder that reached MLflow`, {
      hint: 'register a tracked run (xp run without --no-track); `xp sync <run-dir>` sends one that could not reach MLflow',
    });
  const exported =
    (opts.images === undefined ? currentExport(runDir, 'keras') : undefined) ??
    (await exportRun({ runDir, format: 'keras', images: opts.images, log }));
  log(
    `Keras export, checked on ${exported.check.images} images (at most ${exported.check.maxDifference.toExponential(1)} from xp predict): ${exported.model}`,
  );

  const { store, uri } = recordedTarget(runDir);
  const server = store
    ? await startServer({ storeDir: store })
    : uri
      ? { url: uri, stop: async () => {} }
      : await resolveTrackingUri({ storeDir: mlflowStoreDir() });
  try {
    const logged = await createClient(server.url).getRun(run.runId);
    const metrics = Object.fromEntries((logged.data.metrics ?? []).map((m) => [m.key, m.value]));
    const value = loggedHeadlineValue(metrics, metric);
    if (value === undefined)
      throw new TrackingError(`run ${run.runId} has no ${resultMetricKey(metric) ?? metric} in MLflow`, {
        hint: 'register a run that finished (its result is logged when it ends), or choose --metric',
      });
    const tags = fromKeyValues(logged.data.tags);
    const versionTags = {
      'xp.experiment_id': logged.info.experiment_id,
      ...(tags['xp.sweep_hash'] ? { 'xp.sweep_hash': tags['xp.sweep_hash'] } : {}),
      ...(tags['mlflow.parentRunId'] ? { 'xp.sweep_run_id': tags['mlflow.parentRunId'] } : {}),
      'xp.run_dir': path.resolve(runDir),
    };
    const { scanClasses } = await import('../data/scan.ts');
    const example = (await scanClasses(exported.check.folder)).files[0].path;
    log(`Logging the MLflow model under run ${run.runId} and registering it as ${name} ...`);
    const r = await execa(
      await ensureKerasVenv(),
      [
        SCRIPT,
        ...['--keras', exported.model, '--metadata', path.join(exported.out, METADATA_FILE)],
        ...['--run-id', run.runId, '--name', name, '--example', example],
        ...['--metric', resultMetricKey(metric) ?? metric, '--value', String(value)],
        ...['--direction', metricGoal(metric)],
        ...Object.entries(versionTags).flatMap(([k, v]) => ['--tag', `${k}=${v}`]),
      ],
      { reject: false, stdin: 'ignore', env: { MLFLOW_TRACKING_URI: server.url, TF_CPP_MIN_LOG_LEVEL: '2' } },
    );
    const answer = r.exitCode === 0 ? parseAnswer(r.stdout) : undefined;
    if (!answer) {
      const tail = String(r.stderr).trim().split('\n').slice(-4).join('\n');
      throw new TrackingError(`MLflow could not register the model (exit ${r.exitCode}): ${tail}`, {
        hint: `is ${server.url} an MLflow server with a model registry that this machine reaches?`,
      });
    }
    return { name, metric, value, trackingUri: server.url, embedded: Boolean(store), ...answer };
  } finally {
    await server.stop();
  }
}

function parseAnswer(stdout: string) {
  try {
    const a = JSON.parse(stdout.trim().split('\n').at(-1) ?? '');
    return {
      version: String(a.version),
      modelUri: String(a.model_uri),
      champion: Boolean(a.champion),
      previous: a.previous ?? undefined,
    } as Pick<Registered, 'version' | 'modelUri' | 'champion' | 'previous'>;
  } catch {
    return undefined;
  }
}

/** What happened to the alias champion, in words: `alias champion -> version 3 (it beats version 1, ...)`. */
export function championLine(r: Registered): string {
  const previous = r.previous ? `version ${r.previous.version}, ${r.metric} ${r.previous.value.toFixed(4)}` : undefined;
  return r.champion
    ? `alias champion -> version ${r.version}${previous ? ` (it beats ${previous})` : ' (the first with this metric)'}`
    : `alias champion stays on ${previous} (not beaten)`;
}
