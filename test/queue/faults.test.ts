// The queue under faults that need no second machine: a worker stopped with SIGTERM gives its job back (and the next
// worker resumes it from the shared run folder's backup), and a Redis restarted without persistence mid-sweep loses
// no trial and runs none twice to FINISHED.
import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { queueStatus } from '../../src/queue/admin.ts';
import { createClient, fromKeyValues } from '../../src/tracking/client.ts';
import {
  bin,
  root,
  shared,
  startRedis,
  startWorker,
  removeTempDirs,
  stopWorkers,
  sweepFile,
  tempDir,
  until,
  xp,
  type TestWorker,
} from './helpers.ts';
import { startTestServer } from '../tracking/helpers.ts';

const tmp = tempDir('faults');
let redis: Awaited<ReturnType<typeof startRedis>>;
let server: Awaited<ReturnType<typeof startTestServer>>;
const workers: TestWorker[] = [];
const env = () => ({ MLFLOW_TRACKING_URI: server.url, XP_RUNS_DIR: path.join(tmp, 'submitter-runs') });

beforeAll(async () => {
  redis = await startRedis();
  // The tracking store does not matter here (queue.test.ts runs on PostgreSQL): the embedded SQLite one starts faster.
  server = await startTestServer(path.join(tmp, 'mlflow'));
}, 180_000);

afterAll(async () => {
  await stopWorkers(workers.splice(0));
  await server?.stop();
  await redis?.stop();
  removeTempDirs();
}, 60_000);

/** The trials' runs of an experiment (the sweep's parent left out). */
async function runsOf(experimentName: string) {
  return (await allRunsOf(experimentName)).filter((run) => run.tags['xp.kind'] !== 'sweep');
}

async function allRunsOf(experimentName: string) {
  const client = createClient(server.url);
  const experiment = await client.getExperimentByName(experimentName);
  const runs = await client.searchRuns({ experimentIds: [experiment!.experiment_id] });
  return runs.map((run) => ({ runId: run.info.run_id, status: run.info.status, tags: fromKeyValues(run.data.tags) }));
}

test('SIGTERM: the worker finishes the epoch, gives the job back and exits; the next worker resumes it after that epoch from the shared run folder', async () => {
  const runs = path.join(tmp, 'shared-runs');
  const first = startWorker('t1', redis.url, { XP_RUNS_DIR: runs });
  workers.push(first); // stopped by the test, or after all
  // Epochs of some seconds: a stop at the end of the step would land inside the epoch the signal interrupts.
  const file = sweepFile(tmp, 'queue-term', 'training: {epochs: 3, steps_per_epoch: 500, validation_steps: 2}');
  const submitted = await xp(['run', file, '--queue', redis.url, '--no-wait'], env());
  expect(submitted.exitCode, submitted.all).toBe(0);
  await until('t1 in its second epoch', () => first.output().includes('Epoch 2/3'), 180_000);
  // The epoch under way when the signal is sent: the worker finishes it before giving the job back.
  const during = Math.max(...[...first.output().matchAll(/Epoch (\d)\/3/g)].map((m) => Number(m[1])));
  first.proc.kill('SIGTERM');
  const stopped = await first.proc;
  expect(stopped.exitCode, first.output()).toBe(0);
  expect(first.output()).toMatch(/given back to the queue/);
  const [job] = await queueStatus(redis.url, 'queue-term');
  expect(job.state).toBe('waiting');

  const second = startWorker('t2', redis.url, { XP_RUNS_DIR: runs });
  try {
    const followed = await xp(['run', file, '--queue', redis.url, '--wait', '--quiet'], env());
    expect(followed.exitCode, followed.all).toBe(0);
    // A loaded machine may finish more epochs before the signal lands: the epoch is read from the worker.
    const epoch = /Resuming trial 1 after epoch (\d)/.exec(second.output())?.[1];
    expect(epoch, second.output()).toBeDefined();
    expect(Number(epoch), `SIGTERM sent during epoch ${during}`).toBeGreaterThanOrEqual(during);
    // One MLflow run: KILLED by t1, continued and FINISHED by t2.
    const [run, ...others] = await runsOf('queue-term');
    expect(others).toEqual([]);
    expect(run.status).toBe('FINISHED');
    expect(run.tags['xp.resumed_at_epoch']).toBe(epoch);
  } finally {
    await stopWorkers([second]);
  }
}, 600_000);

test('Redis restarted without persistence mid-sweep: the waiting submitter puts back what was lost; each trial FINISHED once', async () => {
  const worker = startWorker('r1', redis.url);
  try {
    await restartMidSweep(worker);
  } finally {
    await stopWorkers([worker]);
  }
}, 600_000);

async function restartMidSweep(worker: TestWorker) {
  await until('r1 ready', () => worker.output().includes('waiting for jobs'), 120_000);
  const file = sweepFile(
    tmp,
    'queue-restart',
    `training: {epochs: 3, steps_per_epoch: 4, validation_steps: 2}
sweep:
  head.dropout: [0.1, 0.3]`,
  );
  const submitter = execa(process.execPath, [bin, 'run', file, '--queue', redis.url, '--split', '--wait', '--quiet'], {
    reject: false,
    cwd: root,
    env: env(),
    all: true,
  });
  await until('r1 in its second epoch', () => worker.output().includes('Epoch 2/3'), 180_000);
  await redis.stop();
  await redis.restart();
  const done = await submitter;
  expect(done.exitCode, done.all).toBe(0);
  expect(done.all).toMatch(/was gone from the queue \(Redis restarted\?\): submitted again/);
  const finished = (await runsOf('queue-restart'))
    .filter((run) => run.status === 'FINISHED')
    .map((run) => run.tags['xp.config_hash']);
  expect(finished).toHaveLength(2);
  expect(new Set(finished).size).toBe(2);
}

test("a job logging to another machine's embedded MLflow is refused at once, saying what to do", async () => {
  const { Queue } = await import('bullmq');
  const { connectionOf, QUEUE_NAME } = await import('../../src/queue/connection.ts');
  const { enqueue } = await import('../../src/queue/jobs.ts');
  const { loadExperiment } = await import('../../src/config/load.ts');
  const file = sweepFile(tmp, 'queue-foreign', 'training: {epochs: 1, steps_per_epoch: 2, validation_steps: 2}');
  const loaded = await loadExperiment(file);
  const queue = new Queue(QUEUE_NAME, { connection: connectionOf(redis.url) });
  const trial = loaded.trials[0];
  await enqueue(queue, [
    {
      sweepId: 'f0f0f0f0f0f0f0f0',
      sweepName: 'queue-foreign',
      file,
      trials: [{ index: 1, name: trial.name, configHash: trial.configHash, experiment: trial.experiment }],
      tracking: { uri: 'http://127.0.0.1:5000', experimentName: 'queue-foreign', embeddedOn: 'laptop-of-someone' },
      backup: true,
      submittedFrom: 'laptop-of-someone',
      submission: 'test-submission',
    },
  ]);
  await queue.close();
  const worker = startWorker('e1', redis.url);
  try {
    const [job] = await until(
      'the job refused',
      async () =>
        (await queueStatus(redis.url, 'queue-foreign')).filter((j) => j.state === 'failed').at(0) &&
        queueStatus(redis.url, 'queue-foreign'),
      120_000,
    );
    expect(job.attempts).toBe(1);
    expect(job.error).toMatch(
      /^the job logs to http:\/\/127\.0\.0\.1:5000, the embedded MLflow \(SQLite store\) of laptop-of-someone, which worker e1 on .+ cannot reach: serve one MLflow to every machine \(`xp server --backend postgresql:\/\/\.\.\.`\) and submit with MLFLOW_TRACKING_URI set to it$/,
    );
  } finally {
    await stopWorkers([worker]);
  }
}, 300_000);

test('`xp queue cancel` removes the waiting jobs and stops the running one at the end of a step', async () => {
  const worker = startWorker('c1', redis.url);
  try {
    // Long enough not to end by itself before the cancel lands: the cancel stops it early.
    const file = sweepFile(
      tmp,
      'queue-cancel',
      `training: {epochs: 40, steps_per_epoch: 8, validation_steps: 2}
sweep:
  head.dropout: [0.1, 0.3, 0.5]`,
    );
    const submitted = await xp(['run', file, '--queue', redis.url, '--split', '--no-wait'], env());
    const sweepId = /xp queue status ([0-9a-f]{16})/.exec(submitted.all)![1];
    await until('c1 in its second epoch', () => worker.output().includes('Epoch 2/40'), 180_000);
    const cancelled = await xp(['queue', 'cancel', sweepId, '--queue', redis.url], {});
    expect(cancelled.all, worker.output()).toBe(
      '2 waiting job(s) removed; 1 running job(s) stop at the end of their step',
    );
    const jobs = await until(
      'the running job ended',
      async () => {
        const left = await queueStatus(redis.url, sweepId);
        return left.every((j) => j.state === 'failed') ? left : undefined;
      },
      120_000,
    );
    expect(jobs, worker.output()).toHaveLength(1);
    expect(jobs[0].error).toBe('cancelled by `xp queue cancel`');
    const runs = await runsOf('queue-cancel');
    expect(runs.map((run) => run.status)).toEqual(['KILLED']);
    // The worker that ended the sweep's last job closed its parent, as cancelled.
    const parent = await until(
      'the parent closed by the worker',
      async () => {
        const all = await allRunsOf('queue-cancel');
        const sweep = all.find((run) => run.tags['xp.kind'] === 'sweep');
        return sweep && sweep.status !== 'RUNNING' ? sweep : undefined;
      },
      30_000,
    );
    expect(parent.status).toBe('KILLED');
  } finally {
    await stopWorkers([worker]);
  }
}, 300_000);

test('a trial that fails for its own reason is tried once more, then FAILED, without holding up the other trials', async () => {
  const good = path.join(tmp, 'good-train');
  const bad = path.join(tmp, 'bad-train');
  for (const dir of [good, bad]) {
    for (const cls of ['cats', 'dogs']) {
      fs.mkdirSync(path.join(dir, cls), { recursive: true });
      for (const image of fs
        .readdirSync(path.join(shared, 'train', cls))
        .sort()
        .slice(0, 8))
        fs.copyFileSync(path.join(shared, 'train', cls, image), path.join(dir, cls, image));
    }
  }
  const file = sweepFile(
    tmp,
    'queue-own-fault',
    `training: {epochs: 1, steps_per_epoch: 2, validation_steps: 2}
sweep:
  data.train: [${good}, ${bad}]`,
    `{train: ${good}, validation: ${shared}/validation, image_size: [96, 96], batch_size: 8}`,
  );
  const submitted = await xp(['run', file, '--queue', redis.url, '--no-wait'], env());
  expect(submitted.exitCode, submitted.all).toBe(0);
  // After the checks at submission, the images of one trial are cut short (their headers intact, so the scan before
  // decoding takes them): its training fails on any worker.
  for (const cls of ['cats', 'dogs'])
    for (const image of fs.readdirSync(path.join(bad, cls))) fs.truncateSync(path.join(bad, cls, image), 200);
  const worker = startWorker('o1', redis.url);
  try {
    const followed = await xp(['run', file, '--queue', redis.url, '--wait', '--quiet'], env());
    expect(followed.exitCode, followed.all).toBe(1);
    expect(followed.all).toMatch(/failed \(None of the 16 images could be read .*\); trying again/);
    expect(followed.all).toMatch(/FAILED after 2 attempt\(s\): None of the 16 images could be read/);
    const runs = await runsOf('queue-own-fault');
    expect(runs.filter((run) => run.status === 'FINISHED').map((run) => run.tags['mlflow.runName'])).toEqual([
      `train=${good}`,
    ]);
    // A failed attempt may leave TensorFlow's state behind: the retry trains in a fresh process.
    const sweepId = /xp queue status ([0-9a-f]{16})/.exec(submitted.all)![1];
    const pids = [...worker.output().matchAll(new RegExp(`job ${sweepId}-2: training in process (\\d+)`, 'g'))].map(
      (m) => m[1],
    );
    expect(pids).toHaveLength(2);
    expect(pids[1]).not.toBe(pids[0]);
  } finally {
    await stopWorkers([worker]);
  }
}, 300_000);

test("a training process killed as the kernel's OOM killer kills it fails its job, which is tried once more from the dead attempt's backup, then FAILED; the worker lives on and trains the other trial", async () => {
  const worker = startWorker('m1', redis.url);
  try {
    const file = sweepFile(
      tmp,
      'queue-oom',
      `training: {epochs: 300, steps_per_epoch: 8, validation_steps: 2}
sweep:
  training.epochs: [300, 1]`,
    );
    const submitted = await xp(['run', file, '--queue', redis.url, '--split', '--no-wait'], env());
    expect(submitted.exitCode, submitted.all).toBe(0);
    const sweepId = /xp queue status ([0-9a-f]{16})/.exec(submitted.all)![1];
    const doomed = `${sweepId}-1`;
    /** The long trial's run in MLflow once it is RUNNING for the attempt. */
    const running = async (attempt: number) =>
      (await runsOf('queue-oom')).find(
        (run) =>
          run.tags['mlflow.runName'] === 'epochs=300' &&
          run.status === 'RUNNING' &&
          run.tags['xp.attempt'] === String(attempt),
      );
    // Each attempt at the long trial: its training process is killed once its run is under way in MLflow.
    const killed: number[] = [];
    for (const attempt of [1, 2]) {
      const pid = await until(
        `attempt ${attempt}'s training process`,
        () => {
          const pids = [...worker.output().matchAll(new RegExp(`job ${doomed}: training in process (\\d+)`, 'g'))].map(
            (m) => Number(m[1]),
          );
          return pids.length === attempt ? pids[attempt - 1] : undefined;
        },
        180_000,
      );
      // The trainer may be warm from the other job: what it printed since it took this attempt. By the third
      // epoch the first epoch's backup is on disk (a backup waits for the one before it).
      const since = () => worker.output().split(`job ${doomed}: training in process ${pid}`)[1] ?? '';
      if (attempt === 1) await until('attempt 1 in its third epoch', () => since().includes('Epoch 3/300'), 180_000);
      else await until('attempt 2 training', () => /Epoch \d+\/300/.test(since()), 180_000);
      const run = await until(`attempt ${attempt}'s run RUNNING in MLflow`, () => running(attempt), 60_000);
      // How the attempt before ended no longer describes the run it resumes.
      expect(run.tags['xp.attempt_end']).toBeUndefined();
      process.kill(pid, 'SIGKILL');
      killed.push(pid);
    }
    const jobs = await until(
      'both jobs ended',
      async () => {
        const all = await queueStatus(redis.url, sweepId);
        return all.length === 2 && all.every((j) => j.state === 'completed' || j.state === 'failed') ? all : undefined;
      },
      180_000,
    );
    const failed = jobs.find((j) => j.id === doomed)!;
    expect(failed.state).toBe('failed');
    expect(failed.attempts).toBe(2);
    expect(failed.error).toMatch(
      /^the training process \(m1 on .+\) ended by SIGKILL \(out of memory\? the kernel log says\) before its job did$/,
    );
    expect(jobs.find((j) => j.id !== doomed)!.state).toBe('completed');
    // The worker lived through both: same process, still taking jobs.
    expect(worker.proc.exitCode).toBeNull();
    // The retry went on from the first attempt's backup, in the same MLflow run, which it tagged as its own.
    expect(worker.output()).toMatch(/Resuming trial \d+ after epoch \d+: /);
    const runs = await runsOf('queue-oom');
    expect(runs.filter((run) => run.status === 'FINISHED')).toHaveLength(1);
    const dead = runs.filter((run) => run.status === 'FAILED');
    expect(dead).toHaveLength(1);
    expect(dead[0].tags['xp.attempt']).toBe('2');
    expect(dead[0].tags['xp.resumed_at_epoch']).toMatch(/^[1-9]\d*$/);
    expect(dead[0].tags['xp.attempt_end']).toMatch(/^the training process of attempt 2 ended by SIGKILL/);
    // The sweep's parent is closed by the worker once the last job ended: the one FINISHED trial is best.
    const parent = await until(
      'the parent closed',
      async () =>
        (await allRunsOf('queue-oom')).find((run) => run.tags['xp.kind'] === 'sweep' && run.status !== 'RUNNING'),
      30_000,
    );
    expect(parent.status).toBe('FINISHED');
    expect(killed).toHaveLength(2);
  } finally {
    await stopWorkers([worker]);
  }
}, 600_000);

test('MLflow unreachable while a worker trains: the runs journal on the worker, `xp sync` delivers them under the sweep, and submitting again closes the sweep', async () => {
  const file = sweepFile(
    tmp,
    'queue-dark',
    `training: {epochs: 1, steps_per_epoch: 2, validation_steps: 2}
sweep:
  head.dropout: [0.1, 0.3]`,
  );
  const submitted = await xp(['run', file, '--queue', redis.url, '--split', '--no-wait'], env());
  expect(submitted.exitCode, submitted.all).toBe(0);
  const sweepId = /xp queue status ([0-9a-f]{16})/.exec(submitted.all)![1];
  const [parent] = (await allRunsOf('queue-dark')).filter((run) => run.tags['xp.kind'] === 'sweep');
  const { storeDir, url } = server;
  await server.stop();

  const worker = startWorker('d1', redis.url);
  try {
    const jobs = await until(
      'both jobs done',
      async () => {
        const all = await queueStatus(redis.url, sweepId);
        return all.length === 2 && all.every((j) => j.state === 'completed') ? all : undefined;
      },
      240_000,
    );
    expect(jobs).toHaveLength(2);
    expect(worker.output()).toMatch(/xp sync/);
    // The worker tries to close the sweep after the last job is marked completed, so the line comes a moment later.
    await until(
      'the worker says the parent is not closed',
      () => new RegExp(`sweep ${sweepId}: its parent run is not closed`).test(worker.output()),
      30_000,
    );
  } finally {
    await stopWorkers([worker]);
    // The server comes back where it was, whatever happened above, for the tests after this one; the worker's journal knows where its runs go.
    const { startServer } = await import('../../src/tracking/server.ts');
    server = { ...(await startServer({ storeDir, port: Number(new URL(url).port) })), storeDir };
  }
  const synced = await xp(['sync'], { XP_RUNS_DIR: path.join(worker.dir, 'runs') }, worker.dir);
  expect(synced.exitCode, synced.all).toBe(0);
  const runs = await runsOf('queue-dark');
  expect(runs.map((run) => run.status)).toEqual(['FINISHED', 'FINISHED']);
  expect(runs.map((run) => run.tags['mlflow.parentRunId'])).toEqual([parent.runId, parent.runId]);

  const again = await xp(['run', file, '--queue', redis.url, '--split', '--wait', '--quiet'], env());
  expect(again.exitCode, again.all).toBe(0);
  expect(again.all).toMatch(/nothing to queue/);
  expect(again.all).toMatch(/Sweep parent run closed: best trial /);
  const closed = (await allRunsOf('queue-dark')).find((run) => run.runId === parent.runId)!;
  expect(closed.status).toBe('FINISHED');
  expect(runs.map((run) => run.runId)).toContain(closed.tags['xp.best_run_id']);
}, 600_000);

test('`xp worker --concurrency 2` trains two jobs at once, in two workers with a training process each', async () => {
  const worker = startWorker('p', redis.url, {}, ['--concurrency', '2']);
  try {
    await until('both workers waiting', () => (worker.output().match(/waiting for jobs/g) ?? []).length === 2, 120_000);
    const file = sweepFile(
      tmp,
      'queue-pair',
      `training: {epochs: 2, steps_per_epoch: 4, validation_steps: 2}
sweep:
  head.dropout: [0.1, 0.3]`,
    );
    const done = await xp(['run', file, '--queue', redis.url, '--split', '--wait', '--quiet'], env());
    expect(done.exitCode, done.all).toBe(0);
    const runs = await runsOf('queue-pair');
    expect(runs.map((run) => run.status)).toEqual(['FINISHED', 'FINISHED']);
    expect(new Set(runs.map((run) => run.tags['xp.worker']))).toEqual(new Set(['p-1', 'p-2']));
    expect(new Set([...worker.output().matchAll(/training in process (\d+)/g)].map((m) => m[1])).size).toBe(2);
  } finally {
    await stopWorkers([worker]);
  }
}, 300_000);
