// The embedded MLflow server: one `mlflow server` per store folder, started on demand and reused while it runs.
import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { processAlive } from '../util/process.ts';
import { freePort, portIsFree } from '../util/ports.ts';
import { TrackingError } from '../errors.ts';
import { mlflowBin as projectMlflowBin, repoRoot } from '../paths.ts';

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
  /** True when the server was already running (or is not ours). stop() ends an embedded server only when no
   *  other live process uses it, and never a server given by URL. */
  reused: boolean;
  /** Seconds from spawn to the first healthy answer; undefined when reused. */
  startSeconds?: number;
  stop(): Promise<void>;
  /** An embedded server stays up after this process ends (xp run --keep-ui), until `xp ui --stop`. */
  keep?(): void;
}

interface ServerFile {
  pid: number;
  url: string;
  storeDir: string;
  startedAt: string;
}

// Several xp processes may need the store at once: one of them starts its server while holding server.lock
// (created exclusively, holding its pid; a dead holder's lock is taken over); the others wait and reuse it.
// Each user registers under server.users/; the last one to stop ends the server, whoever started it.
export async function startServer(options: ServerOptions): Promise<TrackingServer> {
  const storeDir = path.resolve(options.storeDir);
  fs.mkdirSync(storeDir, { recursive: true });
  const serverFile = path.join(storeDir, 'server.json');
  const lockFile = path.join(storeDir, 'server.lock');
  const timeoutMs = options.timeoutMs ?? 120_000;
  const deadline = Date.now() + timeoutMs + 30_000;
  for (;;) {
    const running = await runningServer(serverFile);
    if (running) return share(storeDir, running, true);
    if (takeLock(lockFile)) {
      try {
        // Another process may have finished starting one between the check and the lock.
        const started = await runningServer(serverFile);
        if (started) return share(storeDir, started, true);
        const { record, startSeconds, exited } = await spawnServer(storeDir, options);
        return { ...share(storeDir, record, false, exited), startSeconds };
      } finally {
        fs.rmSync(lockFile, { force: true });
      }
    }
    if (Date.now() > deadline) {
      throw new TrackingError(
        `Another process (pid ${readPid(lockFile) ?? '?'}) has been starting the MLflow server of ${storeDir} for too long.`,
        {
          hint: `if no xp process is running, remove ${lockFile}`,
        },
      );
    }
    await sleep(250);
  }
}

// What this process must do to its servers when it ends: run on 'exit', and on a signal that would end it. Node
// ends a process on SIGINT, SIGTERM or SIGHUP without 'exit' when nothing listens for the signal, which left a
// server being started (its own process group, so the signal does not reach it) running with nobody to stop it.
const onDeath = new Set<() => void>();
const DEADLY: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

function whenProcessEnds(cleanup: () => void): () => void {
  if (onDeath.size === 0) {
    process.on('exit', runCleanups);
    for (const signal of DEADLY) process.on(signal, onDeadlySignal);
  }
  onDeath.add(cleanup);
  return () => {
    onDeath.delete(cleanup);
    if (onDeath.size > 0) return;
    process.removeListener('exit', runCleanups);
    for (const signal of DEADLY) process.removeListener(signal, onDeadlySignal);
  };
}

function runCleanups() {
  for (const cleanup of [...onDeath]) cleanup();
  onDeath.clear();
}

function onDeadlySignal(signal: NodeJS.Signals) {
  // Another listener (xp run's Ctrl-C, xp ui's wait) decides what the signal does, and stops its servers itself.
  if (process.listenerCount(signal) > 1) return;
  runCleanups();
  for (const s of DEADLY) process.removeListener(s, onDeadlySignal);
  process.removeListener('exit', runCleanups);
  // Ends as the signal would have ended it (exit status 128 + signal number).
  process.kill(process.pid, signal);
}

/** URL -> store folder of the embedded servers this process started or reused. */
const embedded = new Map<string, string>();

/** The store of the embedded server at `url`, when this process uses one there. */
export const embeddedStore = (url: string): string | undefined => embedded.get(url.replace(/\/+$/, ''));

let handles = 0;

function share(storeDir: string, record: ServerFile, reused: boolean, exited?: Promise<void>): TrackingServer {
  embedded.set(record.url, storeDir);
  const users = path.join(storeDir, 'server.users');
  fs.mkdirSync(users, { recursive: true });
  // One entry per handle (`<pid>-<n>`): two handles of one process count as two users.
  const me = path.join(users, `${process.pid}-${++handles}`);
  fs.writeFileSync(me, '');
  const serverFile = path.join(storeDir, 'server.json');
  // The last user ends the server; a process that exits without stop() still leaves (synchronously).
  const leave = (): boolean => {
    fs.rmSync(me, { force: true });
    const others = fs.readdirSync(users).filter((name) => processAlive(Number.parseInt(name, 10)));
    if (others.length > 0) return false;
    killGroup(record.pid, 'SIGTERM');
    return true;
  };
  const forget = whenProcessEnds(() => void leave());
  let stopped: Promise<void> | undefined;
  const stop = () => {
    stopped ??= (async () => {
      forget();
      if (!leave()) return;
      const graceful = await Promise.race([
        (exited ?? untilDead(record.pid)).then(() => true),
        sleep(10_000).then(() => false),
      ]);
      if (!graceful) killGroup(record.pid, 'SIGKILL');
      await exited;
      // Let no orphaned worker keep the port: the whole group must be gone.
      killGroup(record.pid, 'SIGKILL');
      if (readServerFile(serverFile)?.pid === record.pid) fs.rmSync(serverFile, { force: true });
    })();
    return stopped;
  };
  // The keeper entry is named after the server's own pid: it counts as a user for as long as the server runs.
  const keep = () => fs.writeFileSync(path.join(users, `${record.pid}-kept`), '');
  return { url: record.url, reused, stop, keep };
}

/** Ends the embedded server a `--keep-ui` left up, unless another live process still uses it; returns its URL. */
export async function stopKeptServer(storeDir: string): Promise<{ url: string; stopped: boolean } | undefined> {
  const record = await runningServer(path.join(path.resolve(storeDir), 'server.json'));
  if (!record) return undefined;
  const users = path.join(path.resolve(storeDir), 'server.users');
  for (const name of fs.readdirSync(users))
    if (name.endsWith('-kept')) fs.rmSync(path.join(users, name), { force: true });
  if (fs.readdirSync(users).some((name) => processAlive(Number.parseInt(name, 10))))
    return { url: record.url, stopped: false };
  killGroup(record.pid, 'SIGTERM');
  const graceful = await Promise.race([untilDead(record.pid).then(() => true), sleep(10_000).then(() => false)]);
  if (!graceful) killGroup(record.pid, 'SIGKILL');
  fs.rmSync(path.join(path.resolve(storeDir), 'server.json'), { force: true });
  return { url: record.url, stopped: true };
}

async function spawnServer(
  storeDir: string,
  options: ServerOptions,
): Promise<{ record: ServerFile; startSeconds: number; exited: Promise<void> }> {
  const serverFile = path.join(storeDir, 'server.json');
  const logFile = path.join(storeDir, 'server.log');
  const mlflowBin = options.mlflowBin ?? projectMlflowBin();
  if (!fs.existsSync(mlflowBin)) {
    throw new TrackingError(`MLflow is not installed: ${mlflowBin} does not exist.`, {
      hint: `run \`npm run setup\` in ${repoRoot} to create xp's virtual environment with MLflow, or set tracking.uri / MLFLOW_TRACKING_URI to a running server`,
    });
  }
  const port = options.port ?? (await lastPort(storeDir)) ?? (await freePort());
  if (!(await portIsFree(port))) {
    throw new TrackingError(`Cannot start MLflow on port ${port}: the port is in use.`, {
      hint: 'choose another port or leave it out to use a free one',
    });
  }
  const url = `http://127.0.0.1:${port}`;
  const args = [
    'server',
    '--backend-store-uri',
    `sqlite:///${path.join(storeDir, 'mlflow.db')}`,
    '--artifacts-destination',
    path.join(storeDir, 'artifacts'),
    '--serve-artifacts',
    // MLflow 3 rejects Host headers outside localhost/private addresses: bind and call by 127.0.0.1.
    '--host',
    '127.0.0.1',
    '--port',
    String(port),
    // One worker: a local single-user store; the default 4 take ~30 s to boot on 2 cores instead of ~7 s.
    '--workers',
    '1',
    // uvicorn drops idle keep-alive connections after 5 s; epochs are longer, so Node's pooled socket would be stale.
    '--uvicorn-opts',
    '--timeout-keep-alive 600',
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
    exit = result.signal
      ? `signal ${result.signal}`
      : result.exitCode !== undefined
        ? `exit code ${result.exitCode}`
        : result.shortMessage;
  });
  child.unref();
  const pid = child.pid;
  if (pid === undefined) {
    await exited;
    throw new TrackingError(`Could not start ${mlflowBin}.`, { hint: `see ${logFile}` });
  }
  // Until it is shared, a server that fails to start (or a process that exits or is stopped by a signal meanwhile)
  // takes its group along.
  const forget = whenProcessEnds(() => killGroup(pid, 'SIGTERM'));
  try {
    const timeoutMs = options.timeoutMs ?? 120_000;
    const deadline = Date.now() + timeoutMs;
    while (!(await isHealthy(url))) {
      if (exit !== undefined || Date.now() > deadline) {
        killGroup(pid, 'SIGKILL');
        const why =
          exit !== undefined
            ? `exited (${exit})`
            : `did not answer ${url}/health within ${Math.round(timeoutMs / 1000)} s`;
        throw new TrackingError(`The MLflow server ${why}. Last lines of ${logFile}:\n${tail(logFile, 15)}`, {
          hint: `read ${logFile} for the cause`,
        });
      }
      await sleep(200);
    }
  } finally {
    forget();
  }
  const record: ServerFile = { pid, url, storeDir, startedAt: new Date().toISOString() };
  fs.writeFileSync(serverFile, `${JSON.stringify(record, null, 2)}\n`);
  fs.writeFileSync(path.join(storeDir, PORT_FILE), `${port}\n`);
  return { record, startSeconds: (performance.now() - started) / 1000, exited };
}

// The store's server comes back on the port it had (when free): links printed before open again, and the browser
// keeps what it remembers of the UI's origin (MLflow keeps its choices, such as a closed panel, per origin).
const PORT_FILE = 'server.port';

async function lastPort(storeDir: string): Promise<number | undefined> {
  let port: number;
  try {
    port = Number(fs.readFileSync(path.join(storeDir, PORT_FILE), 'utf8').trim());
  } catch {
    return undefined;
  }
  return Number.isInteger(port) && port > 0 && port < 65536 && (await portIsFree(port)) ? port : undefined;
}

/** Create the lock exclusively; a lock whose holder is dead is removed and taken. */
function takeLock(lockFile: string): boolean {
  try {
    fs.writeFileSync(lockFile, String(process.pid), { flag: 'wx' });
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
  }
  const holder = readPid(lockFile);
  // A lock being written has no pid yet: wait for it rather than take it.
  if (holder !== undefined && !processAlive(holder) && readPid(lockFile) === holder)
    fs.rmSync(lockFile, { force: true });
  return false;
}

function readPid(file: string): number | undefined {
  try {
    const pid = Number(fs.readFileSync(file, 'utf8'));
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

function killGroup(pid: number, signal: NodeJS.Signals) {
  try {
    process.kill(-pid, signal);
  } catch {
    // already gone
  }
}

async function untilDead(pid: number): Promise<void> {
  while (processAlive(pid)) await sleep(100);
}

async function runningServer(serverFile: string): Promise<ServerFile | undefined> {
  const record = readServerFile(serverFile);
  if (!record || !processAlive(record.pid)) return undefined;
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

/**
 * Whether the embedded server at `url` (started or reused by this process) still runs: its process is alive,
 * however slowly it answers. Undefined for a server that is not embedded.
 */
export function embeddedServerRuns(url: string): boolean | undefined {
  const store = embeddedStore(url);
  if (store === undefined) return undefined;
  const record = readServerFile(path.join(store, 'server.json'));
  return record?.url === url.replace(/\/+$/, '') && processAlive(record.pid);
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
