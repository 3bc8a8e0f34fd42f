// Sweeps across machines, as users run them: `xp server` on a PostgreSQL database, `xp worker`s in folders of their
// own standing in for machines, `xp run --queue` submitting, against a real Redis. Each trial must end exactly once
// FINISHED in MLflow, whatever happens to a worker or to the submitter.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { queueStatus } from '../../src/queue/admin.ts';
import { createClient, type Run } from '../../src/tracking/client.ts';
import { fromKeyValues } from '../../src/tracking/client.ts';
import {
  createDatabase,
  shared,
  startRedis,
  startWorker,
  startXpServer,
  removeTempDirs,
  stopWorkers,
  sweepFile,
  tempDir,
  until,
  xp,
  type TestWorker,
} from './helpers.ts';

const tmp = tempDir('test');
let redis: Awaited<ReturnType<typeof startRedis>>;
let db: Awaited<ReturnType<typeof createDatabase>>;
let server: Awaited<ReturnType<typeof startXpServer>>;
const workers: TestWorker[] = [];

const env = () => ({ MLFLOW_TRACKING_URI: server.url, XP_RUNS_DIR: path.join(tmp, 'submitter-runs') });
const ready = (w: TestWorker) => until(`${w.name} ready`, () => w.output().includes('waiting for jobs'), 120_000);

beforeAll(async () => {
  redis = await startRedis();
  db = await createDatabase(`xp_queue_test_${process.pid}`);
  server = await startXpServer(db.url, path.join(tmp, 'artifacts'));
}, 180_000);

afterAll(async () => {
  await stopWorkers(workers.splice(0));
  await server?.stop();
  await db?.drop();
  await redis?.stop();
  removeTempDirs();
}, 60_000);

/** The trials' runs of an experiment (the sweep's parent left out), with their tags. */
async function trialRuns(experimentName: string) {
  const client = createClient(server.url);
  const experiment = await client.getExperimentByName(experimentName);
  const runs = await client.searchRuns({ experimentIds: [experiment!.experiment_id] });
  return runs.map(tagged).filter((run) => run.tags['xp.kind'] !== 'sweep');
}

const tagged = (run: Run) => ({
  runId: run.info.run_id,
  status: run.info.status,
  name: run.info.run_name,
  tags: fromKeyValues(run.data.tags),
});

/** The sweep's parent run of an experiment. */
async function sweepParent(experimentName: string) {
  const client = createClient(server.url);
  const experiment = await client.getExperimentByName(experimentName);
  const runs = (await client.searchRuns({ experimentIds: [experiment!.experiment_id] }))
    .map(tagged)
    .filter((run) => run.tags['xp.kind'] === 'sweep');
  expect(runs).toHaveLength(1);
  return runs[0];
}

/** FINISHED runs per config hash. */
function finishedPerHash(runs: Awaited<ReturnType<typeof trialRuns>>): Map<string, number> {
  const count = new Map<string, number>();
  for (const run of runs.filter((r) => r.status === 'FINISHED'))
    count.set(run.tags['xp.config_hash'], (count.get(run.tags['xp.config_hash']) ?? 0) + 1);
  return count;
}

test('a sweep of 6 trials on two workers ends with each trial FINISHED exactly once in MLflow on PostgreSQL; submitting it again queues nothing', async () => {
  const pair = [startWorker('m1', redis.url), startWorker('m2', redis.url)];
  workers.push(...pair);
  await Promise.all(pair.map(ready));
  const file = sweepFile(
    tmp,
    'queue-six',
    `training: {epochs: 2, steps_per_epoch: 2, validation_steps: 2}
sweep:
  head.dropout: [0.1, 0.3, 0.5]
  training.epochs: [1, 2]`,
  );
  const r = await xp(['run', file, '--queue', redis.url, '--split', '--wait', '--quiet'], env());
  expect(r.exitCode, r.all).toBe(0);
  expect(r.all).toMatch(/6 trial\(s\) in 6 job\(s\): 6 submitted/);
  expect(r.all).toMatch(/Best trial: /);

  const runs = await trialRuns('queue-six');
  const finished = finishedPerHash(runs);
  expect(finished.size).toBe(6);
  expect([...finished.values()].every((n) => n === 1)).toBe(true);
  expect(runs.filter((run) => run.status !== 'FINISHED')).toEqual([]);
  expect(new Set(runs.map((run) => run.tags['xp.worker']))).toEqual(new Set(['m1', 'm2']));
  // A worker's training process stays warm from one job to the next.
  expect(pair.map((w) => w.output()).join('')).toMatch(/training in process \d+ \(warm from the last job\)/);

  const jobs = await queueStatus(redis.url, 'queue-six');
  expect(jobs.map((j) => j.state)).toEqual(Array(6).fill('completed'));
  // The queue's overhead per job: from queued to started, and from a worker's end of one job to its next start.
  const pickup = jobs.map((j) => j.startedAt! - j.queuedAt);
  const gaps = ['m1', 'm2'].flatMap((w) => {
    const mine = jobs.filter((j) => j.worker === w).sort((a, b) => a.startedAt! - b.startedAt!);
    return mine.slice(1).map((j, i) => j.startedAt! - mine[i].endedAt!);
  });
  console.log(
    `queue overhead: queued -> started ${pickup.join(', ')} ms (the first jobs wait for a free worker); end -> next start on a worker ${gaps.join(', ')} ms`,
  );
  expect(Math.min(...gaps)).toBeLessThan(5000);

  const again = await xp(['run', file, '--queue', redis.url, '--split', '--wait', '--quiet'], env());
  expect(again.exitCode, again.all).toBe(0);
  expect(again.all).toMatch(/nothing to queue/);
  expect(await queueStatus(redis.url, 'queue-six')).toHaveLength(6);
  await stopWorkers(pair);
}, 420_000);

test('a worker killed with SIGKILL mid-trial: its job goes to another worker, the dead attempt ends FAILED, each trial FINISHED once', async () => {
  const doomed = startWorker('k1', redis.url);
  workers.push(doomed);
  await ready(doomed);
  const file = sweepFile(
    tmp,
    'queue-kill',
    `training: {epochs: 6, steps_per_epoch: 8, validation_steps: 2}
sweep:
  head.dropout: [0.1, 0.3]`,
  );
  const submitted = await xp(['run', file, '--queue', redis.url, '--split', '--no-wait'], env());
  expect(submitted.exitCode, submitted.all).toBe(0);
  expect(submitted.all).toMatch(/xp queue status [0-9a-f]{16}/);

  await until('k1 in its second epoch', () => doomed.output().includes('Epoch 2/6'), 180_000);
  // Its run is in MLflow (tracking goes on beside training, so under load it may arrive later).
  await until(
    "k1's run in MLflow",
    async () =>
      (await trialRuns('queue-kill').catch(() => [])).some(
        (run) => run.status === 'RUNNING' && run.tags['xp.worker'] === 'k1',
      ),
    60_000,
  );
  const pid = await doomed.trainerPid();
  // The whole machine goes: the training process and the command that started it, with no chance to clean up.
  process.kill(pid, 'SIGKILL');
  doomed.proc.kill('SIGKILL');
  await doomed.proc;

  const rescuer = startWorker('k2', redis.url);
  workers.push(rescuer);
  // The submitter comes back and follows the sweep to its end.
  const followed = await xp(['run', file, '--queue', redis.url, '--split', '--wait', '--quiet'], env());
  expect(followed.exitCode, followed.all).toBe(0);
  expect(followed.all).toMatch(/already waiting or running/);

  const runs = await trialRuns('queue-kill');
  const finished = finishedPerHash(runs);
  expect(finished.size).toBe(2);
  expect([...finished.values()]).toEqual([1, 1]);
  const dead = runs.filter((run) => run.status === 'FAILED');
  expect(dead).toHaveLength(1);
  expect(dead[0].tags['xp.worker']).toBe('k1');
  expect(dead[0].tags['xp.attempt_end']).toMatch(
    /attempt 1 on k1 ended without closing its run; attempt 2 on k2 follows/,
  );
  const redone = runs.find(
    (run) => run.status === 'FINISHED' && run.tags['xp.config_hash'] === dead[0].tags['xp.config_hash'],
  );
  expect(redone?.tags['xp.worker']).toBe('k2');
  expect(redone?.tags['xp.attempt']).toBe('2');
  await stopWorkers([rescuer]);
}, 600_000);

test('a trial whose data is missing on the worker fails at once naming the path and the worker, the others go on; `xp queue retry` runs it again, --rerun all of them', async () => {
  // Two small copies of the training set: the sweep runs one trial on each.
  const copies = ['trainA', 'trainB'].map((name) => path.join(tmp, name));
  for (const dir of copies) {
    for (const cls of ['cats', 'dogs']) {
      fs.mkdirSync(path.join(dir, cls), { recursive: true });
      for (const image of fs
        .readdirSync(path.join(shared, 'train', cls))
        .sort()
        .slice(0, 12))
        fs.copyFileSync(path.join(shared, 'train', cls, image), path.join(dir, cls, image));
    }
  }
  const file = sweepFile(
    tmp,
    'queue-fail',
    `training: {epochs: 1, steps_per_epoch: 2, validation_steps: 2}
sweep:
  data.train: [${copies.join(', ')}]`,
    `{train: ${copies[0]}, validation: ${shared}/validation, image_size: [96, 96], batch_size: 8}`,
  );
  const submitted = await xp(['run', file, '--queue', redis.url, '--no-wait'], env());
  expect(submitted.exitCode, submitted.all).toBe(0);
  const sweepId = /xp queue status ([0-9a-f]{16})/.exec(submitted.all)![1];
  expect(submitted.all).toMatch(/the worker that ends the last one closes the sweep in MLflow/);
  fs.renameSync(copies[1], `${copies[1]}.away`);

  const worker = startWorker('f1', redis.url);
  workers.push(worker);
  const ended = await until(
    'both jobs ended',
    async () => {
      const jobs = await queueStatus(redis.url, sweepId);
      return jobs.every((j) => j.state === 'completed' || j.state === 'failed') ? jobs : undefined;
    },
    300_000,
  );
  expect(ended.map((j) => j.state).sort()).toEqual(['completed', 'failed']);
  const failed = ended.find((j) => j.state === 'failed')!;
  expect(failed.error).toContain(
    `${copies[1]} does not exist on worker f1 (${os.hostname()}); local paths must be the same on every worker`,
  );
  expect(failed.attempts).toBe(1); // no retry can help: failed at once
  // Nobody waits for this sweep: the worker that ended its last job closed the parent, the one FINISHED trial best.
  const parent = await until(
    'the parent closed by the worker',
    async () => {
      const run = await sweepParent('queue-fail');
      return run.status !== 'RUNNING' ? run : undefined;
    },
    30_000,
  );
  const [done] = (await trialRuns('queue-fail')).filter((run) => run.status === 'FINISHED');
  expect(parent.status).toBe('FINISHED');
  expect(parent.tags['xp.best_run_id']).toBe(done.runId);
  // The worker prints its line once the parent is closed: a moment after the parent shows FINISHED.
  await until(
    'the worker says the sweep ended',
    () => worker.output().includes(`sweep ${sweepId} ended: best trial ${done.name} (val_accuracy `),
    30_000,
  );

  const status = await xp(['queue', 'status', sweepId, '--queue', redis.url], {});
  expect(status.all).toMatch(/2 job\(s\): 0 waiting, 0 running, 1 done, 1 failed/);
  fs.renameSync(`${copies[1]}.away`, copies[1]);
  const retried = await xp(['queue', 'retry', sweepId, '--queue', redis.url], {});
  expect(retried.all).toMatch(/1 failed job\(s\) of [0-9a-f]+ queued again/);
  const followed = await xp(['run', file, '--queue', redis.url, '--wait', '--quiet'], env());
  expect(followed.exitCode, followed.all).toBe(0);
  const finished = finishedPerHash(await trialRuns('queue-fail'));
  expect([...finished.values()]).toEqual([1, 1]);
  // --rerun trains FINISHED trials again: the worker skips only what was FINISHED since this submission.
  const rerun = await xp(['run', file, '--queue', redis.url, '--wait', '--quiet', '--rerun'], env());
  expect(rerun.exitCode, rerun.all).toBe(0);
  expect([...finishedPerHash(await trialRuns('queue-fail')).values()]).toEqual([2, 2]);
  await stopWorkers([worker]);
}, 600_000);
