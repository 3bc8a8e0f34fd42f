// Shared by the queue tests: a Redis of their own (a redis-server on a free port, so that a test may stop and
// restart it), a PostgreSQL database of their own on the machine's server, `xp server` on it, and `xp worker`
// processes in separate folders standing in for machines.
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { isHealthy } from '../../src/tracking/server.ts';

export const root = path.resolve(import.meta.dirname, '../..');
export const bin = path.join(root, 'bin', 'xp.js');
export const shared = path.resolve(root, '../shared/datasets/cats_and_dogs_filtered');
/** The machine's PostgreSQL (trust authentication for postgres on 127.0.0.1, as on these machines and CI). */
export const POSTGRES = process.env.XP_TEST_POSTGRES_URL || 'postgresql://postgres@127.0.0.1:5432';

const tempDirs: string[] = [];

export function tempDir(prefix: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `xp-queue-${prefix}-`));
  tempDirs.push(dir);
  return dir;
}

/** For afterAll: the folders this test file made (workers', Redis', its own) go away. */
export function removeTempDirs(): void {
  for (const dir of tempDirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export async function until<T>(
  what: string,
  probe: () => T | undefined | Promise<T | undefined>,
  timeoutMs = 120_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(250);
  }
}

/** redis-server on a free port, keeping nothing on disk (as the machine's own); restart() keeps the port. */
export async function startRedis() {
  const port = await freePort();
  const dir = tempDir('redis');
  let proc: ResultPromise | undefined;
  const start = async () => {
    proc = execa(
      'redis-server',
      ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir],
      { reject: false, stdout: 'ignore', stderr: 'ignore' },
    );
    await until(
      'redis-server',
      async () => (await execa('redis-cli', ['-p', String(port), 'ping'], { reject: false })).stdout === 'PONG',
      20_000,
    );
  };
  await start();
  return {
    url: `redis://127.0.0.1:${port}`,
    async stop() {
      proc?.kill('SIGKILL');
      await proc;
    },
    restart: start,
  };
}

/** A database of this test's own on the machine's PostgreSQL, dropped by drop(). */
export async function createDatabase(name: string) {
  const psql = (sql: string) => execa('psql', [`${POSTGRES}/postgres`, '-v', 'ON_ERROR_STOP=1', '-qc', sql]);
  await psql(`DROP DATABASE IF EXISTS ${name}`);
  await psql(`CREATE DATABASE ${name}`);
  return { url: `${POSTGRES}/${name}`, drop: () => psql(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`) };
}

/** `xp server` on the database, as a user starts it; resolves once MLflow answers. */
export async function startXpServer(backend: string, artifacts: string) {
  const port = await freePort();
  const proc = execa(
    process.execPath,
    [bin, 'server', '--backend', backend, '--artifacts', artifacts, '--host', '127.0.0.1', '--port', String(port)],
    { reject: false, cwd: root, all: true },
  );
  const url = `http://127.0.0.1:${port}`;
  await until(
    'xp server',
    async () => {
      if (proc.exitCode !== null) throw new Error(`xp server exited: ${(await proc).all}`);
      return isHealthy(url);
    },
    120_000,
  );
  return {
    url,
    async stop() {
      proc.kill('SIGTERM');
      await proc;
    },
  };
}

export interface TestWorker {
  name: string;
  dir: string;
  output: () => string;
  /** The worker's process (bin/xp.js runs the command in a child of its own), whose death takes its training process along. */
  trainerPid: () => Promise<number>;
  proc: ResultPromise;
}

/**
 * `xp worker` in a folder of its own (its runs and caches), one TensorFlow thread: one of several machines. Its lock
 * is short, so that a killed worker's job moves on quickly, yet longer than a loaded CI machine holds the event loop.
 */
export function startWorker(
  name: string,
  queue: string,
  env: Record<string, string> = {},
  args: string[] = [],
): TestWorker {
  const dir = tempDir(`worker-${name}`);
  let out = '';
  const proc = execa(process.execPath, [bin, 'worker', '--queue', queue, '--name', name, ...args], {
    reject: false,
    // A stopped worker finishes its epoch first: no SIGKILL 5 s after a SIGTERM (execa's default).
    forceKillAfterDelay: false,
    cwd: dir,
    env: {
      XP_RUNS_DIR: path.join(dir, 'runs'),
      XP_CACHE_DIR: path.join(dir, 'cache'),
      TF_NUM_INTRAOP_THREADS: '1',
      XP_QUEUE_LOCK_SECONDS: '15',
      ...env,
    },
  });
  proc.stdout?.on('data', (chunk) => (out += chunk));
  proc.stderr?.on('data', (chunk) => (out += chunk));
  return {
    name,
    dir,
    proc,
    output: () => out,
    trainerPid: () => until(`${name}'s pid`, () => Number(/\(pid (\d+)\)/.exec(out)?.[1]) || undefined, 60_000),
  };
}

export async function stopWorkers(workers: TestWorker[]): Promise<void> {
  for (const w of workers) w.proc.kill('SIGTERM');
  await Promise.all(workers.map((w) => w.proc));
}

/** A sweep file on the shared data set, small enough to train in seconds. */
export function sweepFile(
  dir: string,
  name: string,
  body: string,
  data = `{train: ${shared}/train, validation: ${shared}/validation, image_size: [96, 96], batch_size: 8, max_per_class: 12}`,
): string {
  const file = path.join(dir, `${name}.yaml`);
  fs.writeFileSync(
    file,
    `name: ${name}
data: ${data}
backbone: {name: mobilenet_v2, weights: nsfwjs, cut_layer: block_2_add}
head: {pooling: avg, units: [8]}
optimizer: {name: adam, learning_rate: 0.001}
${body}
`,
  );
  return file;
}

export function xp(args: string[], env: Record<string, string>, cwd = root) {
  return execa(process.execPath, [bin, ...args], {
    reject: false,
    cwd,
    env: { MLFLOW_HTTP_REQUEST_MAX_RETRIES: '1', ...env },
    all: true,
  });
}
