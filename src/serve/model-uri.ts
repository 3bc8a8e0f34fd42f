// models:/NAME/VERSION and models:/NAME@ALIAS, MLflow's names of a registered model, to the run folder xp serves:
// the model version's source run (MLflow's registry REST API) and that run's tag xp.run_dir.
import fs from 'node:fs';
import { XpError } from '../errors.ts';
import { mlflowStoreDir } from '../paths.ts';
import { identityFromEnv, mlflowAuthorization } from '../tracking/auth.ts';
import { createClient } from '../tracking/client.ts';
import { resolveTrackingUri } from '../tracking/uri.ts';
import { requestUrl } from '../util/credentials.ts';

export async function runDirOfModel(uri: string): Promise<string> {
  const m = /^models:\/([^/@]+)(?:\/(\d+)|@([\w-]+))\/?$/.exec(uri);
  if (!m)
    throw new XpError(`${uri} is not models:/NAME/VERSION or models:/NAME@ALIAS`, {
      hint: 'e.g. models:/cats-vs-dogs/1 or models:/cats-vs-dogs@champion',
    });
  const [, name, version, alias] = m;
  const tracking = await resolveTrackingUri({ storeDir: mlflowStoreDir() });
  try {
    const endpoint = version
      ? `model-versions/get?name=${encodeURIComponent(name)}&version=${version}`
      : `registered-models/alias?name=${encodeURIComponent(name)}&alias=${encodeURIComponent(alias)}`;
    const url = `${requestUrl(tracking.url).replace(/\/+$/, '')}/api/2.0/mlflow/${endpoint}`;
    const authorization = mlflowAuthorization(tracking.url, identityFromEnv());
    const response = await fetch(url, { headers: authorization ? { authorization } : {} }).catch((error) => {
      throw new XpError(`cannot reach MLflow at ${tracking.url}: ${error.message}`, { cause: error });
    });
    const answer = (await response.json().catch(() => ({}))) as {
      model_version?: { run_id?: string; version?: string };
      message?: string;
    };
    if (!response.ok || !answer.model_version)
      throw new XpError(`MLflow (${tracking.url}) has no ${uri}: ${answer.message ?? `HTTP ${response.status}`}`, {
        hint: 'xp register <run-dir> NAME registers a run; the MLflow UI lists the registered models',
      });
    const runId = answer.model_version.run_id;
    if (!runId) throw new XpError(`${uri} (version ${answer.model_version.version}) names no run`);
    const run = await createClient(tracking.url).getRun(runId);
    const runDir = run.data.tags?.find((t) => t.key === 'xp.run_dir')?.value;
    if (!runDir || !fs.existsSync(runDir))
      throw new XpError(
        `${uri} is run ${runId}, which has no run folder on this machine${runDir ? ` (${runDir})` : ''}`,
        {
          hint: 'serve it on the machine that trained it, or copy its run folder here and give that folder',
        },
      );
    return runDir;
  } finally {
    await tracking.stop();
  }
}
