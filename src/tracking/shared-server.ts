// `xp server`: the one MLflow every worker and submitter of a queued sweep logs to, on a database server
// (PostgreSQL, as MLflow's production setup) with artifacts proxied through it (`--serve-artifacts`), so no worker
// needs access to the artifact folder. Runs in the foreground until stopped; MLflow creates or migrates the tables.
import { execa } from 'execa';
import fs from 'node:fs';
import path from 'node:path';
import { TrackingError } from '../errors.ts';
import { mlflowBin } from '../paths.ts';
import { withCredentials } from '../util/credentials.ts';
import { redactUrl } from '../util/url.ts';
import { isHealthy } from './server.ts';

export interface SharedServerOptions {
  backend: string;
  artifacts: string;
  host: string;
  port: number;
  log: (line: string) => void;
}

const BACKENDS = ['postgresql', 'postgresql+psycopg2', 'mysql', 'mysql+pymysql', 'mssql', 'sqlite'];

/** Starts MLflow and resolves with its exit code once it stops (SIGINT/SIGTERM are passed on). */
export async function serveShared(options: SharedServerOptions): Promise<number> {
  const scheme = /^([a-z0-9+]+):\/\//i.exec(options.backend)?.[1]?.toLowerCase();
  if (!scheme || !BACKENDS.includes(scheme)) {
    throw new TrackingError(
      `--backend must be a database URL MLflow can store runs in; got "${redactUrl(options.backend)}"`,
      {
        hint: 'e.g. postgresql://mlflow:secret@db-host:5432/mlflow (the database must exist: createdb mlflow)',
      },
    );
  }
  const bin = mlflowBin();
  if (!fs.existsSync(bin))
    throw new TrackingError(`MLflow is not installed: ${bin} does not exist.`, { hint: 'run `npm run setup`' });
  const artifacts = path.resolve(options.artifacts);
  fs.mkdirSync(artifacts, { recursive: true });
  const args = [
    'server',
    '--artifacts-destination',
    artifacts,
    '--serve-artifacts',
    '--host',
    options.host,
    '--port',
    String(options.port),
    // uvicorn drops idle keep-alive connections sooner than a worker's epochs end: keep them open as the embedded server does.
    '--uvicorn-opts',
    '--timeout-keep-alive 600',
  ];
  const child = execa(bin, args, {
    stdin: 'ignore',
    stdout: 'inherit',
    stderr: 'inherit',
    reject: false,
    // The database URL (with its password) goes by the environment: a command line is visible to every user (ps).
    env: { MLFLOW_SERVER_ENABLE_JOB_EXECUTION: 'false', MLFLOW_BACKEND_STORE_URI: withCredentials(options.backend) },
  });
  const forward = (signal: NodeJS.Signals) => child.kill(signal);
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, forward);
  const local = `http://${options.host === '0.0.0.0' || options.host === '::' ? '127.0.0.1' : options.host}:${options.port}`;
  let done = false;
  void child.finally(() => (done = true));
  void (async () => {
    while (!done && !(await isHealthy(local))) await new Promise((resolve) => setTimeout(resolve, 500));
    if (done) return;
    options.log(`MLflow for the queue: ${local} (backend ${redactUrl(options.backend)}, artifacts ${artifacts})`);
    options.log(
      `Workers and submitters on other machines: MLFLOW_TRACKING_URI=http://<this machine's address>:${options.port}`,
    );
  })();
  const result = await child;
  if (result.exitCode !== 0 && !result.isTerminated) {
    throw new TrackingError(`mlflow server exited with code ${result.exitCode}`, {
      hint: scheme.startsWith('postgresql')
        ? 'is the database there (createdb) and reachable, and is psycopg2 in .venv (`npm run setup`)?'
        : 'see its output above',
    });
  }
  return 0;
}
