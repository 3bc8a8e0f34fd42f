// What a run logs, as MLflow records: the resolved experiment as params, its data sets as inputs, its result and
// early stopping as metrics and tags, and its files as artifacts (hard-linked into the embedded store when they can be).
import fs from 'node:fs';
import path from 'node:path';
import type { RunEndInfo, RunStartInfo } from '../events.ts';
import type { DatasetInput } from './client.ts';

/** The resolved experiment as dotted params (sweep, tracking and description left out) plus the run's facts. */
export function runParams(
  info: Pick<RunStartInfo, 'experiment' | 'facts'>,
  log: (line: string) => void = () => {},
): Record<string, string> {
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
    for (const [key, child] of Object.entries(value))
      Object.assign(params, flattenParams(child, prefix ? `${prefix}.${key}` : key));
    return params;
  }
  params[prefix] = Array.isArray(value) ? JSON.stringify(value) : String(value);
  return params;
}

export function datasetInput(dataset: RunStartInfo['datasets'][number]): DatasetInput {
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

// The run's result as MLflow metrics (final_val_accuracy, final_val_loss, precision_<class>, recall_<class>,
// f1_<class>; class names kept to the characters MLflow accepts in a key) and early stopping as tags.
export function resultRecords(info: Pick<RunEndInfo, 'result' | 'earlyStopping' | 'prunedAt'>): {
  metrics: Record<string, number>;
  tags: Record<string, string>;
} {
  const metrics: Record<string, number> = {};
  const tags: Record<string, string> = {};
  const r = info.result;
  if (r) {
    metrics.final_val_accuracy = r.val_accuracy;
    if (Number.isFinite(r.val_loss)) metrics.final_val_loss = r.val_loss;
    for (const [name, c] of Object.entries(r.per_class)) {
      const key = name.replace(/[^\w.\- /]/g, '_');
      metrics[`precision_${key}`] = c.precision;
      metrics[`recall_${key}`] = c.recall;
      metrics[`f1_${key}`] = c.f1;
    }
    tags['xp.result_epoch'] = String(r.epoch);
    if (r.interrupted_after_step) tags['xp.result_interrupted_after_step'] = String(r.interrupted_after_step);
    tags['xp.result_images'] = String(r.images);
  }
  const es = info.earlyStopping;
  if (es) {
    tags['xp.early_stopping'] = es.stopped_epoch ? 'stopped' : 'not stopped';
    if (es.stopped_epoch) tags['xp.stopped_epoch'] = String(es.stopped_epoch);
    tags['xp.early_stopping_best_epoch'] = String(es.best_epoch);
    if (es.restored_epoch) tags['xp.restored_epoch'] = String(es.restored_epoch);
  }
  if (info.prunedAt) {
    tags['xp.pruned_at_epoch'] = String(info.prunedAt.epoch);
    tags['xp.pruned_reason'] = info.prunedAt.reason;
  }
  return { metrics, tags };
}

/** Files of the listed artifacts (folders walked), relative to runDir with '/' separators. */
export function artifactFiles(runDir: string, artifacts: string[], log: (line: string) => void): string[] {
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

/**
 * Hard-links the run's files into the store's folder of the run (mlflow-artifacts:/<exp>/<run>/artifacts maps to
 * <artifactStore>/<exp>/<run>/artifacts): the server lists and serves them like uploads. Returns the files linked;
 * the others (no run yet, another file system) are uploaded as usual.
 */
export function linkArtifacts(
  runDir: string,
  files: string[],
  artifactStore: string,
  run: { artifactUri: string } | undefined,
): Set<string> {
  const linked = new Set<string>();
  const proxied = run && /^mlflow-artifacts:(?:\/\/[^/]*)?\/?(.+)$/.exec(run.artifactUri)?.[1];
  if (!proxied) return linked;
  const root = path.resolve(artifactStore);
  for (const relative of files) {
    const target = path.resolve(root, proxied, relative);
    if (!target.startsWith(root + path.sep)) continue;
    try {
      fs.mkdirSync(path.dirname(target), { recursive: true });
      fs.rmSync(target, { force: true });
      fs.linkSync(path.join(runDir, relative), target);
      linked.add(relative);
    } catch {
      // not linkable here: the journal uploads it
    }
  }
  return linked;
}
