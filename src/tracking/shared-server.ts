// `xp server`: the one MLflow every worker and submitter of a queued sweep logs to, on a database server
// (PostgreSQL, as MLflow's production setup) with artifacts proxied through it (`--serve-artifacts`), so no worker
// needs access to the artifact folder. Runs in the foreground until stopped; MLflow creates the tables. A PostgreSQL
// backend is checked first (backend-check.ts), and MLflow must answer within START_SECONDS: nothing waits for ever.
import { execa } from 'execa';
import fs from 'node:fs';
import path from 'node:path';
import { TrackingError } from '../errors.ts';
import { mlflowBin } from '../paths.ts';
import { withCredentials } from '../util/credentials.ts';
import { redactUrl } from '../util/url.ts';
import { checkBackend } from './backend-check.ts';
import { isHealthy } from './server.ts';

export interface SharedServerOptions {
  backend: string;
  /** Create the backend's database when it does not exist (PostgreSQL). */
  createDb: boolean;
  artifacts: string;
  host: string;
  port: number;
  log: (line: string) => void;
}

/** Seconds MLflow may take to answer once started: each of its four workers imports MLflow, slowly on a small machine. */
const START_SECONDS = 180;

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
  if (scheme.startsWith('postgresql')) {
    const done = await checkBackend(options.backend, { createDb: options.createDb });
    if (done) options.log(done);
  } else if (options.createDb)
    throw new TrackingError('--create-db creates PostgreSQL databases only', {
      hint: 'Create the database yourself, or leave --create-db out.',
    });
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
  let late = false;
  void child.finally(() => (done = true));
  void (async () => {
    const deadline = Date.now() + START_SECONDS * 1000;
    while (!done && !(await isHealthy(local))) {
      if (Date.now() > deadline) {
        late = true;
        child.kill('SIGTERM');
        return;
      }
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
    if (done) return;
    options.log(`MLflow for the queue: ${local} (backend ${redactUrl(options.backend)}, artifacts ${artifacts})`);
    options.log(
      `Workers and submitters on other machines: MLFLOW_TRACKING_URI=http://<this machine's address>:${options.port}`,
    );
  })();
  const result = await child;
  if (late)
    throw new TrackingError(`mlflow server did not answer ${local}/health within ${START_SECONDS} s; it was stopped`, {
      hint: 'Its output above says why.',
    });
  if (result.exitCode !== 0 && !result.isTerminated) {
    throw new TrackingError(`mlflow server exited with code ${result.exitCode}`, { hint: 'See its output above.' });
  }
  return 0;
}
