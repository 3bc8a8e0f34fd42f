// The parts that need no server: params, batching, the runs table, UI links, pending summaries, server start-up
// errors.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, expect, test } from 'vitest';
import { TrackingError } from '../../src/errors.ts';
import { BATCH_LIMITS, chunkBatch } from '../../src/tracking/client.ts';
import { bestRun, formatRunsTable, rankRuns, type RunRow } from '../../src/tracking/compare.ts';
import { openJournal } from '../../src/tracking/journal.ts';
import { describePending } from '../../src/tracking/delivery.ts';
import { startServer } from '../../src/tracking/server.ts';
import { resolveTrackingUri } from '../../src/tracking/uri.ts';
import { bestTrial, chooseBest, sweepHash } from '../../src/tracking/sweep.ts';
import { compareRunsRoute, runRoute, runUrl, uiLink } from '../../src/tracking/links.ts';
import { sweepView, trialTags } from '../../src/tracking/sweep-view.ts';
import { headlineValue, loggedHeadlineValue } from '../../src/events.ts';
import { flattenParams, runParams } from '../../src/tracking/records.ts';
import { epochLogs, experiment, removeTempDirs, startInfo, tempDir } from './helpers.ts';

afterAll(removeTempDirs);

test('params are the resolved experiment in dotted keys, arrays as JSON, without sweep, tracking and description', () => {
  expect(
    flattenParams({ head: { dropout: 0.2, units: [1024, 512] }, zoom_range: [0.8, 1.2], skip: undefined }),
  ).toEqual({
    'head.dropout': '0.2',
    'head.units': '[1024,512]',
    zoom_range: '[0.8,1.2]',
  });
  const params = runParams(startInfo('/tmp/run'));
  expect(params['optimizer.learning_rate']).toBe('0.0001');
  expect(params['training.checkpoint.monitor']).toBe('val_loss');
  expect(params.class_names).toBe('["cats","dogs"]');
  expect(Object.keys(params).filter((key) => /^(sweep|tracking|description)\b/.test(key))).toEqual([]);
  expect(Object.keys(params).length).toBeGreaterThan(30);
});

test("the recipe's fields are params like any other: class weights, smoothing, metrics and the schedule", () => {
  const base = experiment();
  const info = {
    ...startInfo('/tmp/run'),
    experiment: {
      ...base,
      optimizer: { ...base.optimizer, schedule: { type: 'cosine' as const, warmup_epochs: 1, warmup_target: 0.001 } },
      training: { ...base.training, class_weight: { dogs: 2 }, label_smoothing: 0.1, metrics: ['auc' as const] },
    },
  };
  expect(runParams(info)).toMatchObject({
    'optimizer.schedule.type': 'cosine',
    'optimizer.schedule.warmup_epochs': '1',
    'optimizer.schedule.warmup_target': '0.001',
    'training.class_weight.dogs': '2',
    'training.label_smoothing': '0.1',
    'training.metrics': '["auc"]',
  });
});

test('batches are split within MLflow limits and keep every item once, in order', () => {
  const items = (prefix: string, count: number) =>
    Array.from({ length: count }, (_, index) => ({ key: `${prefix}${index}`, value: String(index) }));
  const metrics = Array.from({ length: 2345 }, (_, step) => ({ key: 'm', value: step, timestamp: step, step }));
  const chunks = chunkBatch({ metrics, params: items('p', 250), tags: items('t', 130) });
  for (const chunk of chunks) {
    expect(chunk.metrics.length).toBeLessThanOrEqual(BATCH_LIMITS.metrics);
    expect(chunk.params.length).toBeLessThanOrEqual(BATCH_LIMITS.params);
    expect(chunk.tags.length).toBeLessThanOrEqual(BATCH_LIMITS.tags);
    expect(chunk.metrics.length + chunk.params.length + chunk.tags.length).toBeLessThanOrEqual(BATCH_LIMITS.total);
  }
  expect(chunks.flatMap((chunk) => chunk.metrics)).toEqual(metrics);
  expect(chunks.flatMap((chunk) => chunk.params).map((param) => param.key)).toEqual(
    items('p', 250).map((param) => param.key),
  );
  expect(chunks.flatMap((chunk) => chunk.tags)).toHaveLength(130);
  expect(chunkBatch({ metrics: [], params: [], tags: [] })).toEqual([]);
});

function row(name: string, params: Record<string, string>, metrics: Record<string, number>, runDir?: string): RunRow {
  return {
    runId: `id-${name}`,
    runName: name,
    status: 'FINISHED',
    experimentId: '1',
    experimentName: 'x',
    params,
    metrics,
    tags: {},
    runDir,
    route: `#/r/${name}`,
    url: `u/${name}`,
  };
}

test('the runs table marks the trials a search stopped early and lists them after every other run', () => {
  const stopped = { ...row('stopped', { 'head.dropout': '0.1' }, { val_accuracy: 0.95 }), status: 'KILLED' as const };
  stopped.tags = { 'xp.pruned_at_epoch': '2' };
  const rows = [
    stopped,
    row('finished', { 'head.dropout': '0.2' }, { val_accuracy: 0.7 }),
    row('failed', { 'head.dropout': '0.3' }, {}),
  ];
  const lines = formatRunsTable(rows, { cwd: '/' }).split('\n');
  expect(lines.slice(2).map((line) => line.split(/\s+/)[1])).toEqual(['finished', 'failed', 'stopped']);
  expect(lines[4]).toMatch(/^id-stopp\s+stopped\s+stopped after epoch 2\s+0\.1\s+0\.9500/);
  // --best: the best of the runs that trained to their end.
  expect(bestRun(rows)?.runId).toBe('id-finished');
});

test('the runs table shows only the params that differ, best val_accuracy first, with short run ids and folders', () => {
  const rows = [
    row(
      'low',
      { 'head.dropout': '0.2', 'backbone.name': 'inception_v3' },
      { val_accuracy: 0.7, val_loss: 0.6, accuracy: 0.8, loss: 0.4 },
      '/runs/a',
    ),
    row(
      'high',
      { 'head.dropout': '0.5', 'backbone.name': 'inception_v3' },
      { val_accuracy: 0.9123456, val_loss: 0.3, accuracy: 0.85, loss: 0.35 },
      '/runs/b',
    ),
    row('failed', { 'head.dropout': '0.3', 'backbone.name': 'inception_v3' }, {}),
  ];
  const lines = formatRunsTable(rows, { cwd: '/' }).split('\n');
  expect(lines[0]).toMatch(
    /^run\s+name\s+status\s+head\.dropout\s+val_accuracy\s+val_loss\s+accuracy\s+loss\s+folder$/,
  );
  expect(lines[0]).not.toMatch(/backbone/);
  expect(lines.slice(2).map((line) => line.split(/\s+/)[1])).toEqual(['high', 'low', 'failed']);
  // The first 8 characters of the run id, and the folder as typed from the current one.
  expect(lines[2]).toMatch(/^id-high\s+high\s+FINISHED\s+0\.5\s+0\.9123\s+0\.3000\s+0\.8500\s+0\.3500\s+runs\/b$/);
  expect(lines[4]).toMatch(/-\s+-\s+-\s+-\s+-$/);
  expect(formatRunsTable(rows, { cwd: '/elsewhere' }).split('\n')[2]).toMatch(/ \/runs\/b$/);
  // --wide: whole ids and each run's link.
  const long = { ...rows[1], runId: 'f'.repeat(32), runName: 'n'.repeat(40) };
  const wide = formatRunsTable([long], { wide: true }).split('\n');
  expect(wide[0]).toMatch(/ folder\s+link$/);
  expect(wide[2]).toMatch(new RegExp(`^${'f'.repeat(32)}  ${'n'.repeat(40)} .* u/high$`));
  expect(formatRunsTable([long]).split('\n')[2]).toMatch(new RegExp(`^ffffffff  ${'n'.repeat(31)}… `));
  expect(bestRun(rows)).toEqual({ runId: 'id-high', runDir: '/runs/b', url: 'u/high', value: 0.9123456 });
  expect(bestRun(rows, { metric: 'val_loss', goal: 'minimize' })?.runId).toBe('id-high');
  expect(bestRun([row('none', {}, {})])).toBeUndefined();
  expect(formatRunsTable([])).toBe('No runs.');
});

test('pending records are summed up in words', () => {
  const journal = openJournal(tempDir('pending'));
  for (const step of [3, 4, 5, 7]) journal.append({ kind: 'metrics', step, timestamp: 0, metrics: { loss: 1 } });
  journal.append({ kind: 'artifact', path: 'a' });
  journal.append({ kind: 'artifact', path: 'b' });
  journal.append({ kind: 'end', status: 'FINISHED', endTime: 0 });
  expect(describePending(journal.pending())).toBe('metrics of epochs 3-5, 7, 2 artifact file(s), the final run status');
  expect(journal.pending().map((record) => record.seq)).toEqual([1, 2, 3, 4, 5, 6, 7]);
  // A second opening continues the numbering.
  expect(openJournal(path.dirname(journal.file)).append({ kind: 'tags', tags: {} }).seq).toBe(8);
});

test('a missing or failing MLflow binary gives an error that says what to do', async () => {
  const storeDir = tempDir('store');
  await expect(startServer({ storeDir, mlflowBin: path.join(storeDir, 'no-mlflow') })).rejects.toThrow(
    /MLflow is not installed/,
  );
  const failing = path.join(storeDir, 'failing-mlflow');
  fs.writeFileSync(failing, '#!/bin/sh\necho "no such option" >&2\nexit 2\n', { mode: 0o755 });
  const error = await startServer({ storeDir, mlflowBin: failing }).catch((caught: unknown) => caught);
  expect(error).toBeInstanceOf(TrackingError);
  expect((error as Error).message).toMatch(/exited \(exit code 2\).*server\.log:\n[\s\S]*no such option/);
  expect(fs.existsSync(path.join(storeDir, 'server.json'))).toBe(false);
});

test('a tracking URI that is not http(s) is refused with advice', async () => {
  await expect(
    resolveTrackingUri({ experimentUri: 'sqlite:///mlflow.db', storeDir: tempDir('store') }),
  ).rejects.toThrow(/tracking\.uri must be an http\(s\) URL/);
});

test('the best trial and the runs ranking take their direction from metricGoal: losses smallest, accuracies largest', () => {
  const candidates = [
    { name: 'a', value: 0.4 },
    { name: 'b', value: 0.2 },
    { name: 'c', value: undefined },
    { name: 'd', value: Number.NaN },
  ];
  expect(chooseBest(candidates, 'val_loss')?.name).toBe('b');
  expect(chooseBest(candidates, 'val_accuracy')?.name).toBe('a');
  expect(chooseBest(candidates, 'val_accuracy', 'minimize')?.name).toBe('b');
  expect(chooseBest([{ value: undefined }], 'val_accuracy')).toBeUndefined();
  // Equal results: the first trial of the sweep wins, in whatever order its closer read them.
  const tied = [
    { name: 'third', value: 0.823, rank: 2 },
    { name: 'second', value: 0.823, rank: 1 },
    { name: 'first', value: 0.8, rank: 0 },
  ];
  expect(bestTrial(tied, 'val_accuracy')?.name).toBe('second');
  expect(bestTrial([...tied].reverse(), 'val_accuracy')?.name).toBe('second');
  expect(bestTrial(tied, 'val_accuracy', 'minimize')?.name).toBe('first');
  const row = (runId: string, metrics: Record<string, number>) => ({ runId, metrics }) as RunRow;
  const rows = [
    row('low', { val_loss: 0.1, val_accuracy: 0.7 }),
    row('none', {}),
    row('high', { val_loss: 0.9, val_accuracy: 0.9 }),
  ];
  expect(rankRuns(rows, 'val_loss').map((r) => r.runId)).toEqual(['low', 'high', 'none']);
  expect(rankRuns(rows).map((r) => r.runId)).toEqual(['high', 'low', 'none']);
  expect(bestRun(rows, { metric: 'val_loss' })?.runId).toBe('low');
});

test("a trial's headline value is read by one function, finite values only", () => {
  expect(headlineValue({ history: [epochLogs(1), epochLogs(2)] }, 'val_accuracy')).toBe(epochLogs(2).val_accuracy);
  expect(headlineValue({ history: [] }, 'val_accuracy')).toBeUndefined();
  expect(headlineValue({ history: [{ ...epochLogs(1), val_loss: Number.NaN }] }, 'val_loss')).toBeUndefined();
});

test("a sweep's hash changes with its base or its definition, not with tracking or description", () => {
  const base = experiment();
  const hash = sweepHash({ base, sweep: base.sweep });
  expect(
    sweepHash({
      base: { ...base, description: 'other', tracking: { enabled: true, experiment_name: 'x' } },
      sweep: base.sweep,
    }),
  ).toBe(hash);
  expect(sweepHash({ base: experiment({ learning_rate: 1e-3 }), sweep: base.sweep })).not.toBe(hash);
  expect(sweepHash({ base, sweep: { ...base.sweep!, parameters: { 'head.dropout': [0.2, 0.5, 0.7] } } })).not.toBe(
    hash,
  );
});

test("every UI link opens the UI's model-training side; routes are relative to the server, links put them on one", () => {
  expect(runRoute('1', 'abc')).toBe('#/experiments/1/runs/abc?workflowType=machine_learning');
  expect(runUrl('http://127.0.0.1:5000/', '1', 'abc')).toBe(
    'http://127.0.0.1:5000/#/experiments/1/runs/abc?workflowType=machine_learning',
  );
  const compare = compareRunsRoute(['1', '1'], ['a', 'b']);
  expect(compare).toBe(
    '#/compare-runs?runs=%5B%22a%22%2C%22b%22%5D&experiments=%5B%221%22%5D&workflowType=machine_learning',
  );
  expect(JSON.parse(new URLSearchParams(compare.split('?')[1]).get('runs')!)).toEqual(['a', 'b']);
  // A link stored absolute by an older xp takes today's server.
  expect(uiLink('http://127.0.0.1:6000', `http://127.0.0.1:5000/${compare}`)).toBe(`http://127.0.0.1:6000/${compare}`);
});

test("a sweep's view is MLflow's shared-view state: its trials, the sweep's metric in every chart, named by its sha256", () => {
  const input = {
    experimentId: '3',
    parentRunId: 'p1',
    metric: 'val_accuracy',
    goal: 'maximize' as const,
    parameters: ['head.dropout', 'training.epochs'],
  };
  const view = sweepView(input);
  const key = view.tag.key.slice('mlflow.sharedViewState.'.length);
  expect(key).toMatch(/^[0-9a-f]{64}$/);
  expect(view.route).toBe(
    `#/experiments/3/runs?viewStateShareKey=${key}&compareRunsMode=CHART&workflowType=machine_learning`,
  );
  const state = JSON.parse(view.tag.value);
  expect(state.searchFilter).toBe("tags.mlflow.parentRunId = 'p1'");
  expect([state.orderByKey, state.orderByAsc]).toEqual(['metrics.`final_val_accuracy`', false]);
  const charts = Object.fromEntries(state.compareRunCharts.map((c: { type: string }) => [c.type, c]));
  expect(charts.PARALLEL).toMatchObject({ selectedParams: input.parameters, selectedMetrics: ['final_val_accuracy'] });
  expect(charts.LINE.metricKey).toBe('val_accuracy');
  expect(charts.BAR.metricKey).toBe('final_val_accuracy');
  // The same sweep gives the same view; a loss is sorted smallest first, a metric without a result is its own.
  expect(sweepView(input)).toEqual(view);
  const loss = JSON.parse(sweepView({ ...input, metric: 'loss', goal: 'minimize' }).tag.value);
  expect([loss.orderByKey, loss.orderByAsc]).toEqual(['metrics.`loss`', true]);
});

test("a sweep's first ten trials have ten colours in the UI, by their place in the sweep", () => {
  const colors = Array.from({ length: 10 }, (_, i) => trialTags(i + 1)['mlflow.runColor']);
  expect(new Set(colors).size).toBe(10);
  for (const color of colors) expect(color).toMatch(/^#[0-9a-f]{6}$/);
  expect(trialTags(11)).toEqual(trialTags(1));
});

test("a run's figure for val_accuracy and val_loss is its result (the saved model on the whole validation set), for other metrics its last epoch's", () => {
  const history = [epochLogs(1), epochLogs(2)];
  const result = {
    epoch: 1,
    images: 1000,
    val_accuracy: 0.838,
    val_loss: 0.356,
    per_class: {},
    confusion: [],
    class_names: [],
  };
  expect(headlineValue({ history, result }, 'val_accuracy')).toBe(0.838);
  expect(headlineValue({ history, result }, 'val_loss')).toBe(0.356);
  expect(headlineValue({ history, result }, 'loss')).toBe(epochLogs(2).loss);
  expect(loggedHeadlineValue({ val_accuracy: 0.885, final_val_accuracy: 0.838 }, 'val_accuracy')).toBe(0.838);
  expect(loggedHeadlineValue({ val_accuracy: 0.885 }, 'val_accuracy')).toBe(0.885);
  const rows = [
    { runId: 'a', metrics: { val_accuracy: 0.9, final_val_accuracy: 0.8 } },
    { runId: 'b', metrics: { val_accuracy: 0.85, final_val_accuracy: 0.84 } },
  ] as unknown as Parameters<typeof rankRuns>[0];
  expect(rankRuns(rows, 'val_accuracy').map((r) => r.runId)).toEqual(['b', 'a']);
});
