// Who xp is to an MLflow server, decided once and as MLflow's Python client decides it (mlflow/utils/credentials.py,
// mlflow/utils/rest_utils.py, and requests under them): the user and password of the tracking URI's user info
// (requests sends them and they replace any other Authorization); else MLFLOW_TRACKING_USERNAME and
// MLFLOW_TRACKING_PASSWORD, each else from ~/.mlflow/credentials, as Basic when both are set; else
// MLFLOW_TRACKING_TOKEN as Bearer.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { authorizationFor, keepCredentials } from '../util/credentials.ts';

export interface Identity {
  username?: string;
  password?: string;
  token?: string;
}

/** MLflow's credentials from the environment (and ~/.mlflow/credentials); an empty variable counts as unset. */
export function identityFromEnv(env: NodeJS.ProcessEnv = process.env, home = os.homedir()): Identity {
  // A password written in MLFLOW_TRACKING_URI is known for that server, whichever URL the run ends up using.
  keepCredentials(env.MLFLOW_TRACKING_URI);
  const file = credentialsFile(home);
  return {
    username: env.MLFLOW_TRACKING_USERNAME || file.mlflow_tracking_username || undefined,
    password: env.MLFLOW_TRACKING_PASSWORD || file.mlflow_tracking_password || undefined,
    token: env.MLFLOW_TRACKING_TOKEN || undefined,
  };
}

/** The Authorization header for requests to the MLflow server at `url` (shown form: its password masked), if any. */
export function mlflowAuthorization(url: string, identity: Identity): string | undefined {
  const fromUrl = authorizationFor(url);
  if (fromUrl) return fromUrl;
  if (identity.username && identity.password)
    return `Basic ${Buffer.from(`${identity.username}:${identity.password}`).toString('base64')}`;
  return identity.token ? `Bearer ${identity.token}` : undefined;
}

// The [mlflow] section of ~/.mlflow/credentials (configparser's `key = value` or `key: value`, keys lowercased).
function credentialsFile(home: string): Record<string, string> {
  let text: string;
  try {
    text = fs.readFileSync(path.join(home, '.mlflow', 'credentials'), 'utf8');
  } catch {
    return {};
  }
  const values: Record<string, string> = {};
  let section = '';
  for (const line of text.split(/\r?\n/)) {
    const header = /^\s*\[([^\]]*)\]\s*$/.exec(line);
    if (header) section = header[1].trim();
    else if (section === 'mlflow' && !/^\s*[#;]/.test(line)) {
      const pair = /^\s*([^=:]+?)\s*[=:]\s*(.*?)\s*$/.exec(line);
      if (pair) values[pair[1].toLowerCase()] = pair[2];
    }
  }
  return values;
}
