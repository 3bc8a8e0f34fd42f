// `xp run` of a sweep on the embedded store, end to end: one parent run found again on resume, the best among all
// FINISHED trials, the compare URL, models stored once, `--dry-run` marks, `xp runs` without a server, links that work.
import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { createClient, fromKeyValues, type Run } from '../../src/tracking/client.ts';
import { removeTempDirs, SERVER_TIMEOUT, startTestServer, tempDir } from './helpers.ts';

const root = path.resolve(import.meta.dirname, '../..');
const bin = path.join(root, 'bin', 'xp.js');
const shared = path.resolve(root, '../shared/datasets/cats_and_dogs_filtered');
const tmp = tempDir('sweep-cli');
const runs = path.join(tmp, 'runs');
let server: Awaited<ReturnType<typeof startTestServer>> | undefined;

// The embedded store of XP_RUNS_DIR, no tracking URI: what a user gets by default.
const xp = (args: string[]) =>
  execa(process.execPath, [bin, ...args], {
    reject: false,
    cwd: root,
    env: { XP_RUNS_DIR: runs, MLFLOW_TRACKING_URI: '', MLFLOW_HTTP_REQUEST_MAX_RETRIES: '1' },
  });

function experimentFile(name: string, extra: string): string {
  const file = path.join(tmp, `${name}.yaml`);
  fs.writeFileSync(
    file,
    `name: ${name}
data: {train: ${shared}/train, validation: ${shared}/validation, image_size: [96, 96], batch_size: 8, max_per_class: 12}
backbone: {name: mobilenet_v2, weights: nsfwjs, cut_layer: block_2_add}
head: {pooling: avg, units: [8], dropout: 0.2}
optimizer: {name: adam, learning_rate: 0.001}
training: {epochs: 1, steps_per_epoch: 2, validation_steps: 2}
${extra}`,
  );
  return file;
}

beforeAll(async () => {
  server = await startTestServer(path.join(runs, 'mlflow'));
}, SERVER_TIMEOUT);

afterAll(async () => {
  await server?.stop();
  removeTempDirs();
}, 30_000);

const tags = (run: Run) => fromKeyValues(run.data.tags);
const metric = (run: Run, key: string) => Number(run.data.metrics?.find((m) => m.key === key)?.value);

test('an interrupted sweep resumes under its one parent run, and the best is chosen among all FINISHED trials', async () => {
  const file = experimentFile('sweep-resume', 'sweep:\n  head.dropout: [0.1, 0.3]\n');
  const first = await xp(['run', file, '--quiet']);
  expect(first.exitCode, first.stderr + first.stdout).toBe(0);
  expect(first.stdout).toMatch(
    new RegExp(
      `Compare the trials in MLflow: ${server!.url}/#/experiments/\\d+/runs\\?viewStateShareKey=[0-9a-f]{64}&`,
    ),
  );

  const client = createClient(server!.url);
  const experiment = await client.getExperimentByName('sweep-resume');
  const search = () => client.searchRuns({ experimentIds: [experiment!.experiment_id] });
  let all = await search();
  const [parent] = all.filter((run) => tags(run)['xp.kind'] === 'sweep');
  const trials = all.filter((run) => tags(run)['mlflow.parentRunId'] === parent.info.run_id);
  expect(trials).toHaveLength(2);
  expect(tags(parent)['xp.sweep_hash']).toMatch(/^[0-9a-f]{16}$/);
  const route = tags(parent)['xp.compare_url'];
  expect(first.stdout.split('\n')).toContain(`Compare the trials in MLflow: ${server!.url}/${route}`);

  // A model is stored once: the store's artifact files are the run folder's files, hard-linked.
  for (const run of trials) {
    const weights = fs.readdirSync(path.join(tags(run)['xp.run_dir'], 'model')).find((name) => name.endsWith('.bin'))!;
    const inRunDir = fs.statSync(path.join(tags(run)['xp.run_dir'], 'model', weights));
    const inStore = fs.statSync(
      path.join(runs, 'mlflow', 'artifacts', experiment!.experiment_id, run.info.run_id, 'artifacts', 'model', weights),
    );
    expect(inStore.ino).toBe(inRunDir.ino);
  }

  // As if interrupted during the second trial: it and the parent are KILLED.
  const killed = trials.find((run) => run.info.run_name === 'dropout=0.3')!;
  await client.updateRun(killed.info.run_id, { status: 'KILLED' });
  await client.updateRun(parent.info.run_id, { status: 'KILLED' });

  const dry = await xp(['run', file, '--dry-run']);
  expect(dry.stdout).toMatch(/trial 1: dropout=0\.1 .*\[FINISHED in MLflow: skipped/);
  expect(dry.stdout).not.toMatch(/trial 2: .*FINISHED in MLflow/);

  const second = await xp(['run', file, '--quiet']);
  expect(second.exitCode, second.stderr + second.stdout).toBe(0);
  expect(second.stdout).toContain('Skipping 1 trial(s) already FINISHED');
  expect(second.stdout).toContain('Sweep parent run (resumed)');
  all = await search();
  const parents = all.filter((run) => tags(run)['xp.kind'] === 'sweep');
  expect(parents.map((run) => run.info.run_id)).toEqual([parent.info.run_id]);
  expect(parents[0].info.status).toBe('FINISHED');
  const finished = all.filter(
    (run) => tags(run)['mlflow.parentRunId'] === parent.info.run_id && run.info.status === 'FINISHED',
  );
  expect(finished.map((run) => run.info.run_name).sort()).toEqual(['dropout=0.1', 'dropout=0.3']);
  // The best is the highest result of both: final_val_accuracy, the saved model on the whole validation set
  // (a tie may go either way).
  const top = Math.max(...finished.map((run) => metric(run, 'final_val_accuracy')));
  const best = finished.find((run) => run.info.run_id === tags(parents[0])['xp.best_run_id'])!;
  expect(metric(best, 'final_val_accuracy')).toBe(top);
  expect(metric(parents[0], 'best_val_accuracy')).toBe(top);
  expect(second.stdout).toContain(`Best trial: ${best.info.run_name} (val_accuracy ${top.toFixed(4)})`);
  // The resumed sweep keeps its view: the same link, which selects the trials by their parent.
  expect(tags(parents[0])['xp.compare_url']).toBe(route);
  expect(second.stdout.split('\n')).toContain(`Compare the trials in MLflow: ${server!.url}/${route}`);
});

test('a sweep over schedules with training.metrics logs them each epoch and picks its best by val_auc', async () => {
  const file = experimentFile(
    'sweep-recipe',
    `sweep:
  metric: val_auc
  training.metrics: [[auc, recall]]
  training.epochs: [2]
  optimizer.schedule: [{type: exponential, decay_rate: 0.5, decay_epochs: 1}, {type: piecewise, boundaries: [1], values: [0.01, 0.0001]}]
`,
  );
  const run = await xp(['run', file, '--quiet']);
  expect(run.exitCode, run.stderr + run.stdout).toBe(0);
  const client = createClient(server!.url);
  const experiment = await client.getExperimentByName('sweep-recipe');
  const all = await client.searchRuns({ experimentIds: [experiment!.experiment_id] });
  const [parent] = all.filter((r) => tags(r)['xp.kind'] === 'sweep');
  const trials = all.filter((r) => tags(r)['mlflow.parentRunId'] === parent.info.run_id);
  expect(trials.map((r) => fromKeyValues(r.data.params)['optimizer.schedule.type']).sort()).toEqual([
    'exponential',
    'piecewise',
  ]);
  for (const trial of trials) {
    for (const key of ['auc', 'val_auc', 'recall', 'val_recall', 'learning_rate']) {
      const history = await client.getMetricHistory(trial.info.run_id, key);
      expect(history.map((point) => Number(point.step)).sort(), key).toEqual([1, 2]);
    }
    // Each epoch logs the rate of its last step (2 steps an epoch here: steps 1 and 3 of decay_steps 2).
    const rates = (await client.getMetricHistory(trial.info.run_id, 'learning_rate'))
      .sort((a, b) => Number(a.step) - Number(b.step))
      .map((point) => point.value);
    const type = fromKeyValues(trial.data.params)['optimizer.schedule.type'];
    const expected = type === 'exponential' ? [0.001 * 0.5 ** (1 / 2), 0.001 * 0.5 ** (3 / 2)] : [0.01, 0.0001];
    for (const [i, rate] of rates.entries()) expect(rate, `${type} epoch ${i + 1}`).toBeCloseTo(expected[i], 9);
  }
  // val_auc is not a result metric: a trial's figure is its last epoch's, and the best is the highest.
  const top = Math.max(...trials.map((r) => metric(r, 'val_auc')));
  expect(metric(parent, 'best_val_auc')).toBe(top);
  expect(metric(trials.find((r) => r.info.run_id === tags(parent)['xp.best_run_id'])!, 'val_auc')).toBe(top);
});

test('with no server running, `xp runs` and `--dry-run` read the store in seconds; a run prints how to open its links again', async () => {
  await server!.stop();
  server = undefined;
  const started = Date.now();
  const listed = await xp(['runs', 'sweep-resume']);
  expect(listed.exitCode, listed.stderr).toBe(0);
  expect(Date.now() - started).toBeLessThan(8_000);
  expect(listed.stdout).toMatch(/dropout=0\.1\s+FINISHED/);
  expect(listed.stdout).toMatch(/dropout=0\.3\s+KILLED/);
  expect(listed.stdout).toMatch(/3 run\(s\) in .*mlflow\.db/);
  const dry = await xp(['run', experimentFile('sweep-resume', 'sweep:\n  head.dropout: [0.1, 0.3]\n'), '--dry-run']);
  expect(dry.stdout).toContain('2 trial(s) would be skipped.');

  // A command that starts the embedded server stops it at the end: it says how to serve the same links again, and
  // `xp ui` serves them on the same port.
  const links = experimentFile('links', '');
  const single = await xp(['run', links, '--quiet']);
  expect(single.exitCode, single.stderr + single.stdout).toBe(0);
  const link = single.stdout.match(/MLflow: (http:\/\/127\.0\.0\.1:(\d+))\/#\/experiments\/\d+\/runs\/(\w+)\S*/)!;
  const again = single.stdout.match(
    /stops with this command: `XP_RUNS_DIR=\S+ xp ui (\S+)` serves it again \(port (\d+) while free\)/,
  )!;
  expect(again.slice(1)).toEqual([links, link[2]]);
  const runDir = path.resolve(root, single.stdout.match(/output: (\S+)/)![1]);
  const ui = execa(process.execPath, [bin, 'ui', runDir], {
    reject: false,
    cwd: root,
    env: { XP_RUNS_DIR: runs, MLFLOW_TRACKING_URI: '' },
  });
  try {
    const printed = await new Promise<string>((resolve, reject) => {
      let out = '';
      ui.stdout!.on('data', (d) => {
        out += d;
        if (out.includes('Press Ctrl-C')) resolve(out);
      });
      ui.on('exit', () => reject(new Error(`xp ui exited: ${out}`)));
    });
    expect(printed).toContain(`MLflow UI at ${link[1]}:`);
    expect(printed).toMatch(new RegExp(`run \\S+: +${link[0].slice('MLflow: '.length).replace(/[?.]/g, '\\$&')}\n`));
    expect((await createClient(link[1]).getRun(link[3])).info.status).toBe('FINISHED');
  } finally {
    ui.kill('SIGINT');
    await ui;
  }
});
