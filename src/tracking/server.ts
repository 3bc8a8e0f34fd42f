// The embedded MLflow server: one `mlflow server` per store folder, started on demand and reused while it runs.
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { execa } from 'execa';
import { TrackingError } from '../errors.ts';
import { mlflowBin as projectMlflowBin } from '../paths.ts';

export { repoRoot } from '../paths.ts';

export interface ServerOptions {
  /** Folder of the store: mlflow.db, artifacts/, server.log, server.json. */
  storeDir: string;
  mlflowBin?: string;
  /** Default: a free port. */
  port?: number;
  /** How long to wait for /health. Default 120 s. */
  timeoutMs?: number;
}

export interface TrackingServer {
  url: string;
  /** True when the server was already running (or is not ours): stop() leaves it alone. */
  reused: boolean;
  /** Seconds from spawn to the first healthy answer; undefined when reused. */
  startSeconds?: number;
  stop(): Promise<void>;
}

interface ServerFile {
  pid: number;
  url: string;
  storeDir: string;
  startedAt: string;
}

const noop = async () => {};

export async function startServer(options: ServerOptions): Promise<TrackingServer> {
  const storeDir = path.resolve(options.storeDir);
  fs.mkdirSync(storeDir, { recursive: true });
  const serverFile = path.join(storeDir, 'server.json');
  const logFile = path.join(storeDir, 'server.log');

  const running = await runningServer(serverFile);
  if (running) return { url: running.url, reused: true, stop: noop };

  const mlflowBin = options.mlflowBin ?? projectMlflowBin();
  if (!fs.existsSync(mlflowBin)) {
    throw new TrackingError(`MLflow is not installed: ${mlflowBin} does not exist.`, {
      hint: 'run `npm run setup` to create the project virtual environment with MLflow, or set tracking.uri / MLFLOW_TRACKING_URI to a running server',
    });
  }
  const port = options.port ?? (await freePort());
  if (!(await portIsFree(port))) {
    throw new TrackingError(`Cannot start MLflow on port ${port}: the port is in use.`, {
      hint: 'choose another port or leave it out to use a free one',
    });
  }
  const url = `http://127.0.0.1:${port}`;
  const args = [
    'server',
    '--backend-store-uri', `sqlite:///${path.join(storeDir, 'mlflow.db')}`,
    '--artifacts-destination', path.join(storeDir, 'artifacts'),
    '--serve-artifacts',
    // MLflow 3 rejects Host headers outside localhost/private addresses: bind and call by 127.0.0.1.
    '--host', '127.0.0.1',
    '--port', String(port),
    // One worker: a local single-user store; the default 4 take ~30 s to boot on 2 cores instead of ~7 s.
    '--workers', '1',
    // uvicorn drops idle keep-alive connections after 5 s; epochs are longer, so Node's pooled socket would be stale.
    '--uvicorn-opts', '--timeout-keep-alive 600',
  ];

  // execa hands a descriptor number straight to spawn (no piping through this process); its types list only 3-9.
  const logFd = fs.openSync(logFile, 'a') as 3;
  fs.writeSync(logFd, `\n--- xp: ${new Date().toISOString()} ${mlflowBin} ${args.join(' ')}\n`);
  const started = performance.now();
  // Own process group: Ctrl-C of the CLI must not kill the server before the run is marked KILLED,
  // and stop() can end uvicorn and its workers together.
  const child = execa(mlflowBin, args, {
    detached: true,
    stdin: 'ignore',
    stdout: logFd,
    stderr: logFd,
    reject: false,
    // The job runner (GenAI evaluation jobs) adds several processes and seconds of start-up; xp needs none.
    env: { MLFLOW_SERVER_ENABLE_JOB_EXECUTION: 'false' },
  });
  fs.closeSync(logFd);
  let exit: string | undefined;
  const exited = child.then((result) => {
    exit = result.signal ? `signal ${result.signal}` : result.exitCode !== undefined ? `exit code ${result.exitCode}` : result.shortMessage;
  });
  child.unref();
  const pid = child.pid;
  if (pid === undefined) {
    await exited;
    throw new TrackingError(`Could not start ${mlflowBin}.`, { hint: `see ${logFile}` });
  }

  const killGroup = (signal: NodeJS.Signals) => {
    try {
      process.kill(-pid, signal);
    } catch {
      // already gone
    }
  };
  const onExit = () => killGroup('SIGTERM');
  process.once('exit', onExit);

  const timeoutMs = options.timeoutMs ?? 120_000;
  const deadline = Date.now() + timeoutMs;
  while (!(await isHealthy(url))) {
    if (exit !== undefined || Date.now() > deadline) {
      process.removeListener('exit', onExit);
      killGroup('SIGKILL');
      const why = exit !== undefined ? `exited (${exit})` : `did not answer ${url}/health within ${Math.round(timeoutMs / 1000)} s`;
      throw new TrackingError(`The MLflow server ${why}. Last lines of ${logFile}:\n${tail(logFile, 15)}`, {
        hint: `read ${logFile} for the cause`,
      });
    }
    await sleep(200);
  }
  const startSeconds = (performance.now() - started) / 1000;
  const record: ServerFile = { pid, url, storeDir, startedAt: new Date().toISOString() };
  fs.writeFileSync(serverFile, JSON.stringify(record, null, 2) + '\n');

  let stopped: Promise<void> | undefined;
  const stop = () => {
    stopped ??= (async () => {
      process.removeListener('exit', onExit);
      killGroup('SIGTERM');
      const graceful = await Promise.race([exited.then(() => true), sleep(10_000).then(() => false)]);
      if (!graceful) {
        killGroup('SIGKILL');
        await exited;
      }
      // Let no orphaned worker keep the port: the whole group must be gone.
      killGroup('SIGKILL');
      if (readServerFile(serverFile)?.pid === pid) fs.rmSync(serverFile, { force: true });
    })();
    return stopped;
  };
  return { url, reused: false, startSeconds, stop };
}

export type TrackingSource = 'experiment' | 'env' | 'embedded';

export interface ResolveOptions {
  /** `tracking.uri` of the experiment. */
  experimentUri?: string;
  /** Store of the embedded server, e.g. <repo>/runs/mlflow. */
  storeDir: string;
  mlflowBin?: string;
  env?: NodeJS.ProcessEnv;
}

/** Where to log: `tracking.uri`, else MLFLOW_TRACKING_URI, else the embedded server (started if needed). */
export async function resolveTrackingUri(options: ResolveOptions): Promise<TrackingServer & { source: TrackingSource }> {
  const env = options.env ?? process.env;
  const given = options.experimentUri ? { uri: options.experimentUri, source: 'experiment' as const }
    : env.MLFLOW_TRACKING_URI ? { uri: env.MLFLOW_TRACKING_URI, source: 'env' as const }
    : undefined;
  if (given) return { url: httpUri(given.uri, given.source), reused: true, source: given.source, stop: noop };
  const server = await startServer({ storeDir: options.storeDir, mlflowBin: options.mlflowBin });
  return { ...server, source: 'embedded' };
}

export const serverFromEnv = resolveTrackingUri;

function httpUri(uri: string, source: TrackingSource): string {
  const from = source === 'experiment' ? 'tracking.uri' : 'MLFLOW_TRACKING_URI';
  if (!/^https?:\/\//i.test(uri)) {
    throw new TrackingError(`${from} must be an http(s) URL of an MLflow server; got "${uri}".`, {
      hint: 'xp talks to MLflow over REST: use e.g. http://127.0.0.1:5000, or remove it to use the embedded server under runs/mlflow',
    });
  }
  return uri.replace(/\/+$/, '');
}

async function runningServer(serverFile: string): Promise<ServerFile | undefined> {
  const record = readServerFile(serverFile);
  if (!record || !isAlive(record.pid)) return undefined;
  return (await isHealthy(record.url)) ? record : undefined;
}

function readServerFile(file: string): ServerFile | undefined {
  try {
    const record = JSON.parse(fs.readFileSync(file, 'utf8')) as ServerFile;
    return typeof record.pid === 'number' && typeof record.url === 'string' ? record : undefined;
  } catch {
    return undefined;
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export async function isHealthy(url: string): Promise<boolean> {
  try {
    const response = await fetch(`${url}/health`, { signal: AbortSignal.timeout(2000) });
    await response.body?.cancel();
    return response.ok;
  } catch {
    return false;
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

function portIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.unref();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

function tail(file: string, lines: number): string {
  try {
    return fs.readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** URL of the embedded server running on this store, if one is (never starts one). */
export async function runningServerUrl(storeDir: string): Promise<string | undefined> {
  return (await runningServer(path.join(path.resolve(storeDir), 'server.json')))?.url;
}
