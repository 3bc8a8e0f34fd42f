// A queue that is not there, or goes away: `xp run --queue`, `xp worker` and `xp queue` on a port where nothing
// listens, on one that accepts and never answers, on a database the Redis does not have, and SIGTERM while they wait
// for a Redis that went away after they connected. Each must end within seconds, saying what is wrong; none may wait
// for ever. The Redis here is a redis-server of the test's own (16 databases, Redis' default).
import net from 'node:net';
import path from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bin, freePort, removeTempDirs, root, startRedis, sweepFile, tempDir, until } from '../queue/helpers.ts';

const tmp = tempDir('hostile');
let redis: Awaited<ReturnType<typeof startRedis>>;
/** Accepts connections and never answers (a firewall, a process that is not Redis): Redis' handshake never ends. */
let silent: net.Server;
let silentUrl: string;
const sockets = new Set<net.Socket>();

beforeAll(async () => {
  redis = await startRedis();
  silent = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => {});
  });
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
  silentUrl = `redis://127.0.0.1:${(silent.address() as net.AddressInfo).port}`;
}, 60_000);

afterAll(async () => {
  for (const proc of started) proc.kill('SIGKILL');
  for (const socket of sockets) socket.destroy();
  await new Promise((resolve) => silent?.close(resolve));
  await redis?.stop();
  removeTempDirs();
}, 30_000);

const env = { XP_RUNS_DIR: path.join(tmp, 'runs'), XP_QUEUE_URL: '' };
const file = sweepFile(
  tmp,
  'hostile-queue',
  'sweep: {head.dropout: [0.1, 0.2]}\ntraining: {epochs: 1, steps_per_epoch: 2}',
);

const started: ResultPromise[] = [];

/** Starts `xp args`, collecting its output. */
function start(args: string[]): { proc: ResultPromise; output: () => string } {
  let out = '';
  const proc = execa(process.execPath, [bin, ...args], {
    reject: false,
    cwd: root,
    env,
    forceKillAfterDelay: false,
    // A process that hangs is killed (its training process goes with it), not left behind by a failed test.
    timeout: 90_000,
    killSignal: 'SIGKILL',
  });
  started.push(proc);
  proc.stdout?.on('data', (chunk) => (out += chunk));
  proc.stderr?.on('data', (chunk) => (out += chunk));
  return { proc, output: () => out };
}

/** Sends SIGTERM and returns the exit code and how long the process took to end (90 s at most). */
async function terminate(proc: ResultPromise): Promise<{ code: number | undefined; ms: number }> {
  const sent = Date.now();
  proc.kill('SIGTERM');
  const result = await proc;
  return { code: result.exitCode, ms: Date.now() - sent };
}

const noStack = (text: string) => expect(text).not.toMatch(/\n\s+at /);

describe('a Redis that was never reachable: an error within seconds, no reconnecting for ever', () => {
  it('`xp run --queue` to a port where nothing listens exits 1 naming the queue', async () => {
    const url = `redis://127.0.0.1:${await freePort()}`;
    const { proc, output } = start(['run', file, '--queue', url, '--no-track', '--wait']);
    const result = await proc;
    expect(result.timedOut).toBe(false);
    expect(result.exitCode).toBe(1);
    expect(output()).toContain(`xp run: cannot reach the queue at ${url}: connect ECONNREFUSED`);
    expect(output()).toContain('Is Redis running there');
    expect(output()).not.toContain('reconnecting');
    noStack(output());
  }, 120_000);

  it('`xp worker` (and with --concurrency 2) to a port where nothing listens exits 1 naming the queue', async () => {
    const url = `redis://127.0.0.1:${await freePort()}`;
    for (const extra of [[], ['--concurrency', '2']]) {
      const started = Date.now();
      const { proc, output } = start(['worker', '--queue', url, ...extra]);
      const result = await proc;
      expect(result.timedOut).toBe(false);
      expect(Date.now() - started).toBeLessThan(30_000);
      expect(result.exitCode).toBe(1);
      expect(output()).toContain(`xp worker: cannot reach the queue at ${url}: connect ECONNREFUSED`);
      expect(output()).not.toContain('waiting for jobs');
      noStack(output());
    }
  }, 120_000);

  it('a Redis that accepts and never answers: `xp queue status` gives up after 10 s, naming it', async () => {
    const started = Date.now();
    const { proc, output } = start(['queue', 'status', '--queue', silentUrl]);
    const result = await proc;
    expect(Date.now() - started).toBeLessThan(25_000);
    expect(result.exitCode).toBe(1);
    expect(output()).toContain(`xp queue: cannot reach the queue at ${silentUrl}: no answer within 10 s`);
  }, 60_000);

  it('SIGTERM ends `xp run --queue` and `xp worker` while they wait for a Redis that never answers', async () => {
    for (const args of [
      ['run', file, '--queue', silentUrl, '--no-track', '--wait'],
      ['worker', '--queue', silentUrl],
    ]) {
      const { proc, output } = start(args);
      // Whatever it is doing by then (starting, checking the trials, connecting), SIGTERM ends it.
      await new Promise((resolve) => setTimeout(resolve, 6000));
      const { code, ms } = await terminate(proc);
      expect(ms, `${args[0]}: ${output()}`).toBeLessThan(5000);
      expect(code).not.toBe(0);
      noStack(output());
    }
  }, 120_000);
});

describe('a database the Redis does not have', () => {
  it('`xp queue status`, `xp run --queue` and `xp worker` on /99 of a Redis with 16 databases exit 1 naming it', async () => {
    const url = `${redis.url}/99`;
    for (const [command, args] of [
      ['queue', ['queue', 'status', '--queue', url]],
      ['run', ['run', file, '--queue', url, '--no-track', '--wait']],
      ['worker', ['worker', '--queue', url]],
    ] as const) {
      const { proc, output } = start([...args]);
      const result = await proc;
      expect(result.timedOut).toBe(false);
      expect(result.exitCode, output()).toBe(1);
      expect(output()).toContain(
        `xp ${command}: the queue's database 99 does not exist on ${redis.url} (it has 16: 0 to 15)`,
      );
      expect(output()).not.toMatch(/No job|waiting for jobs|submitted/);
      noStack(output());
    }
  }, 120_000);
});

describe('a Redis that goes away after connecting', () => {
  it('SIGTERM ends the submitter following its jobs and an idle worker within seconds; the jobs stay queued', async () => {
    // Each on a Redis of its own: the worker must not take the submitter's jobs.
    const [forSubmitter, forWorker] = [await startRedis(), await startRedis()];
    const submitter = start(['run', file, '--queue', forSubmitter.url, '--no-track', '--wait']);
    const worker = start(['worker', '--queue', forWorker.url, '--name', 'idle']);
    try {
      await until('the jobs queued', () => / submitted/.test(submitter.output()), 60_000);
      await until('the worker waiting', () => /waiting for jobs/.test(worker.output()), 60_000);
    } finally {
      await forSubmitter.stop();
      await forWorker.stop();
    }
    await new Promise((resolve) => setTimeout(resolve, 2000));
    const followed = await terminate(submitter.proc);
    expect(followed.ms, submitter.output()).toBeLessThan(5000);
    expect(followed.code).toBe(130);
    expect(submitter.output()).toContain('the jobs stay on the queue');
    expect(submitter.output()).not.toContain('Interrupted: finishing the current step');
    const idle = await terminate(worker.proc);
    expect(idle.ms, worker.output()).toBeLessThan(10_000);
    noStack(submitter.output() + worker.output());
  }, 180_000);

  it('SIGTERM ends a worker training a job after Redis went away: the epoch ends, the give-back is not waited for', async () => {
    const gone = await startRedis();
    const slow = sweepFile(
      tmp,
      'hostile-queue-slow',
      'training: {epochs: 3, steps_per_epoch: 300, validation_steps: 1}',
    );
    const submitted = await execa(
      process.execPath,
      [bin, 'run', slow, '--queue', gone.url, '--no-track', '--no-wait'],
      {
        reject: false,
        cwd: root,
        env,
      },
    );
    expect(submitted.exitCode, submitted.all).toBe(0);
    const worker = start(['worker', '--queue', gone.url, '--name', 'busy']);
    try {
      await until('the first epoch', () => worker.output().includes('Epoch 1/3'), 120_000);
    } finally {
      await gone.stop();
    }
    const { code, ms } = await terminate(worker.proc);
    expect(ms, worker.output()).toBeLessThan(60_000);
    expect(code).toBe(0);
    expect(worker.output()).toContain('Redis does not answer; the job goes to another worker once its lock runs out');
    noStack(worker.output());
  }, 180_000);
});
