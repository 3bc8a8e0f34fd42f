// Which MLflow a run logs to, decided once: the experiment's `tracking.uri`, else MLFLOW_TRACKING_URI, else the
// embedded server on the local store (started when needed). The URL is the shown one: a password written in it is
// masked (and known to the client that logs there: util/credentials.ts).
import { TrackingError } from '../errors.ts';
import { keepCredentials } from '../util/credentials.ts';
import { startServer, type TrackingServer } from './server.ts';

const noop = async () => {};

export type TrackingSource = 'experiment' | 'env' | 'embedded';

export interface ResolveOptions {
  /** `tracking.uri` of the experiment. */
  experimentUri?: string;
  /** Store of the embedded server, e.g. <repo>/runs/mlflow. */
  storeDir: string;
  mlflowBin?: string;
  env?: NodeJS.ProcessEnv;
}

/** MLFLOW_TRACKING_URI as shown (its password masked, and kept for the requests made to it), if set. */
export function trackingUriFromEnv(env: NodeJS.ProcessEnv = process.env): string | undefined {
  return keepCredentials(env.MLFLOW_TRACKING_URI) || undefined;
}

/** Where to log: `tracking.uri`, else MLFLOW_TRACKING_URI, else the embedded server (started if needed). */
export async function resolveTrackingUri(
  options: ResolveOptions,
): Promise<TrackingServer & { source: TrackingSource }> {
  const env = options.env ?? process.env;
  const fromEnv = trackingUriFromEnv(env);
  const given = options.experimentUri
    ? { uri: keepCredentials(options.experimentUri), source: 'experiment' as const }
    : fromEnv
      ? { uri: fromEnv, source: 'env' as const }
      : undefined;
  if (given) return { url: httpUri(given.uri, given.source), reused: true, source: given.source, stop: noop };
  const server = await startServer({ storeDir: options.storeDir, mlflowBin: options.mlflowBin });
  return { ...server, source: 'embedded' };
}

function httpUri(uri: string, source: TrackingSource): string {
  const from = source === 'experiment' ? 'tracking.uri' : 'MLFLOW_TRACKING_URI';
  if (!/^https?:\/\//i.test(uri)) {
    throw new TrackingError(`${from} must be an http(s) URL of an MLflow server; got "${uri}".`, {
      hint: 'xp talks to MLflow over REST: use e.g. http://127.0.0.1:5000, or remove it to use the embedded server under runs/mlflow',
    });
  }
  return uri.replace(/\/+$/, '');
}
