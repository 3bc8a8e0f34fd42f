// Against a real MLflow server (started once for this file): the client, the tracker, sweeps, listing runs.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { TrackingError } from '../../src/errors.ts';
import { createClient, fromKeyValues, type MlflowClient, MlflowError } from '../../src/tracking/client.ts';
import { bestRun, formatRunsTable, listRuns } from '../../src/tracking/compare.ts';
import { CURSOR_FILE, JOURNAL_FILE } from '../../src/tracking/journal.ts';
import { isHealthy, startServer, type TrackingServer } from '../../src/tracking/server.ts';
import { resolveTrackingUri } from '../../src/tracking/uri.ts';
import { closeSweep, openSweep, sweepHash } from '../../src/tracking/sweep.ts';
import { createMlflowTracker } from '../../src/tracking/tracker.ts';
import { gitCommit } from '../../src/tracking/provenance.ts';
import type { LoadedExperiment } from '../../src/config/load.ts';
import {
  epochLogs,
  experiment,
  quietLog,
  runDirWithFiles,
  removeTempDirs,
  SERVER_TIMEOUT,
  startInfo,
  startTestServer,
  tempDir,
} from './helpers.ts';

let server: TrackingServer & { storeDir: string };
let client: MlflowClient;

beforeAll(async () => {
  server = await startTestServer();
  client = createClient(server.url);
}, SERVER_TIMEOUT);

afterAll(async () => {
  await server?.stop();
  removeTempDirs();
}, 30_000);

/** Drive a whole synthetic run through the callbacks. */
async function fakeRun(options: {
  experimentName: string;
  runName?: string;
  dropout?: number;
  configHash?: string;
  parentRunId?: string;
  epochs?: number;
  status?: 'FINISHED' | 'FAILED' | 'KILLED';
  error?: string;
  valAccuracyBoost?: number;
}) {
  const { runDir } = runDirWithFiles();
  const { log, lines } = quietLog();
  const tracker = createMlflowTracker({
    uri: server.url,
    experimentName: options.experimentName,
    runDir,
    parentRunId: options.parentRunId,
    log,
  });
  await tracker.onRunStart!(startInfo(runDir, options));
  const history = [];
  for (let epoch = 1; epoch <= (options.epochs ?? 2); epoch++) {
    const logs = {
      ...epochLogs(epoch),
      val_accuracy: epochLogs(epoch).val_accuracy! + (options.valAccuracyBoost ?? 0),
    };
    history.push(logs);
    await tracker.onEpochEnd!(epoch, logs);
  }
  await tracker.onRunEnd!({
    status: options.status ?? 'FINISHED',
    error: options.error,
    history,
    artifacts: ['experiment.yaml'],
    wallSeconds: 1,
  });
  return { tracker, runDir, lines, runId: tracker.mlflowRunId()! };
}

describe('tracker', () => {
  test('a run driven through the callbacks has every epoch, params, tags, inputs and artifacts', async () => {
    const { runDir, weights } = runDirWithFiles();
    const { log, lines } = quietLog();
    const tracker = createMlflowTracker({ uri: server.url, experimentName: 'callbacks', runDir, log });
    const info = startInfo(runDir, { runName: 'dropout=0.2' });
    await tracker.onRunStart!(info);
    for (let epoch = 1; epoch <= 4; epoch++) await tracker.onEpochEnd!(epoch, epochLogs(epoch));
    await tracker.onRunEnd!({
      status: 'FINISHED',
      history: [1, 2, 3, 4].map(epochLogs),
      artifacts: ['experiment.yaml', 'history.csv', 'model/', 'curves.png'],
      wallSeconds: 120,
    });

    expect(await tracker.pending()).toBe(0);
    const runId = tracker.mlflowRunId()!;
    const run = await client.getRun(runId);
    expect(tracker.runUrl()).toBe(
      `${server.url}/#/experiments/${run.info.experiment_id}/runs/${runId}?workflowType=machine_learning`,
    );
    expect(run.info.status).toBe('FINISHED');
    expect(Number(run.info.end_time)).toBeGreaterThanOrEqual(Number(run.info.start_time));

    for (const key of [
      'loss',
      'accuracy',
      'val_loss',
      'val_accuracy',
      'learning_rate',
      'epoch_seconds',
      'images_per_second',
    ] as const) {
      const history = await client.getMetricHistory(runId, key);
      expect(history.map((point) => Number(point.step)).sort()).toEqual([1, 2, 3, 4]);
      for (const point of history) expect(point.value).toBeCloseTo(epochLogs(Number(point.step))[key]!, 10);
    }

    const params = fromKeyValues(run.data.params);
    expect(params).toMatchObject({
      name: 'cats-vs-dogs',
      'head.dropout': '0.2',
      'head.units': '[1024]',
      'optimizer.learning_rate': '0.0001',
      'data.image_size': '[150,150]',
      'backbone.cut_layer': 'mixed7',
      'augmentation.horizontal_flip': 'true',
      total_params: '47512353',
      trainable_params: '38537217',
      train_images: '2000',
      validation_images: '1000',
      class_names: '["cats","dogs"]',
    });
    expect(Object.keys(params).filter((key) => key.startsWith('sweep.') || key.startsWith('tracking.'))).toEqual([]);

    const tags = fromKeyValues(run.data.tags);
    expect(tags).toMatchObject({
      'mlflow.runName': 'dropout=0.2',
      'mlflow.source.name': info.sourceFile,
      'xp.config_hash': info.configHash,
      'xp.version': expect.stringMatching(/^\d+\.\d+\.\d+/),
      'xp.run_dir': runDir,
      'xp.accel': 'native',
      'mlflow.note.content': info.experiment.description,
      'mlflow.user': expect.any(String),
    });
    expect(tags['mlflow.source.git.commit']).toBe(gitCommit(path.dirname(info.sourceFile!)));
    expect(tags['mlflow.parentRunId']).toBeUndefined();

    const inputs = run.inputs?.dataset_inputs ?? [];
    expect(
      inputs
        .map((input) => [
          input.dataset.name,
          fromKeyValues(input.tags)['mlflow.data.context'],
          input.dataset.digest.length,
        ])
        .sort(),
    ).toEqual([
      ['train', 'train', 36],
      ['validation', 'eval', 36],
    ]);

    const root = await client.listArtifacts(run.info.artifact_uri);
    expect(root.map((file) => `${file.path}${file.is_dir ? '/' : ''}`).sort()).toEqual([
      'experiment.yaml',
      'history.csv',
      'model/',
    ]);
    const model = await client.listArtifacts(run.info.artifact_uri, 'model');
    expect(model.map((file) => file.path).sort()).toEqual(['model/model.json', 'model/weights.bin']);
    expect(await client.downloadArtifact(run.info.artifact_uri, 'model/weights.bin')).toEqual(weights);
    expect((await client.downloadArtifact(run.info.artifact_uri, 'history.csv')).toString()).toBe(
      'epoch,loss\n1,0.5\n',
    );
    expect(lines.join('\n')).toMatch(/curves\.png not found/);

    // The journal holds every record once, in order, with the MLflow run id; the cursor says all is delivered.
    const records = fs
      .readFileSync(path.join(runDir, JOURNAL_FILE), 'utf8')
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line));
    expect(records.map((record) => record.seq)).toEqual(records.map((_, index) => index + 1));
    expect(records.find((record) => record.kind === 'run_id')?.runId).toBe(runId);
    expect(records.filter((record) => record.kind === 'metrics').map((record) => record.step)).toEqual([1, 2, 3, 4]);
    expect(JSON.parse(fs.readFileSync(path.join(runDir, CURSOR_FILE), 'utf8'))).toEqual({
      delivered: Math.max(...records.filter((record) => record.kind !== 'run_id').map((record) => record.seq)),
    });
  });

  test('NaN and Inf metric values are not sent, the others are', async () => {
    const runDir = tempDir('nan');
    const { log, lines } = quietLog();
    const tracker = createMlflowTracker({ uri: server.url, experimentName: 'nan', runDir, log });
    await tracker.onRunStart!(startInfo(runDir));
    await tracker.onEpochEnd!(1, epochLogs(1));
    await tracker.onEpochEnd!(2, { ...epochLogs(2), loss: Number.NaN, val_loss: Number.POSITIVE_INFINITY });
    await tracker.onRunEnd!({ status: 'FINISHED', history: [], artifacts: [], wallSeconds: 1 });
    const runId = tracker.mlflowRunId()!;
    expect((await client.getMetricHistory(runId, 'loss')).map((point) => Number(point.step))).toEqual([1]);
    expect((await client.getMetricHistory(runId, 'val_loss')).map((point) => Number(point.step))).toEqual([1]);
    expect((await client.getMetricHistory(runId, 'accuracy')).map((point) => Number(point.step)).sort()).toEqual([
      1, 2,
    ]);
    expect(lines.join('\n')).toMatch(/loss=NaN, val_loss=Infinity not logged/);
  });

  test('a run ended KILLED shows KILLED; FAILED keeps the error as a tag', async () => {
    const killed = await fakeRun({ experimentName: 'statuses', status: 'KILLED' });
    expect((await client.getRun(killed.runId)).info.status).toBe('KILLED');
    const failed = await fakeRun({ experimentName: 'statuses', status: 'FAILED', error: 'ModelError: out of memory' });
    const run = await client.getRun(failed.runId);
    expect(run.info.status).toBe('FAILED');
    expect(fromKeyValues(run.data.tags)['xp.error']).toBe('ModelError: out of memory');
  });

  test('a resumed sweep reuses its parent run and chooses the best among all FINISHED trials, skipped ones included', async () => {
    const base = experiment();
    const loaded: LoadedExperiment = {
      file: 'sweep.yaml',
      sources: [],
      pinned: [],
      origin: () => 'default',
      base,
      sweep: base.sweep,
      trials: [0.2, 0.5].map((dropout, index) => ({
        index: index + 1,
        name: `dropout=${dropout}`,
        values: { 'head.dropout': dropout },
        experiment: experiment({ dropout }),
        configHash: `hash-${dropout}`,
      })),
    };
    const { log, lines } = quietLog();
    const open = () =>
      openSweep({
        uri: server.url,
        experimentName: 'sweep',
        loaded,
        trials: loaded.trials,
        rerun: false,
        sourceFile: 'experiments/sweep.yaml',
        log,
      });

    // First attempt: the better trial finishes, then the sweep is interrupted.
    const first = await open();
    expect(first.trials.map((t) => t.name)).toEqual(['dropout=0.2', 'dropout=0.5']);
    const good = await fakeRun({
      experimentName: 'sweep',
      runName: 'dropout=0.2',
      dropout: 0.2,
      configHash: 'hash-0.2',
      parentRunId: first.parentRunId,
      valAccuracyBoost: 0.3,
    });
    await closeSweep({ uri: server.url, loaded, session: first, results: [], killed: true, log });
    expect((await client.getRun(first.parentRunId!)).info.status).toBe('KILLED');

    // Resume: the FINISHED trial is skipped, the parent is the same, the skipped trial is still the best.
    const second = await open();
    expect(second.parentRunId).toBe(first.parentRunId);
    expect(second.trials.map((t) => t.name)).toEqual(['dropout=0.5']);
    expect(lines.join('\n')).toMatch(/Skipping 1 trial\(s\) already FINISHED in MLflow .*dropout=0\.2/);
    const worse = await fakeRun({
      experimentName: 'sweep',
      runName: 'dropout=0.5',
      dropout: 0.5,
      configHash: 'hash-0.5',
      parentRunId: second.parentRunId,
    });
    const end = await closeSweep({
      uri: server.url,
      loaded,
      session: second,
      results: [
        {
          name: 'dropout=0.5',
          status: 'FINISHED',
          history: [1, 2].map(epochLogs),
          mlflowRunId: worse.runId,
          experimentId: (await client.getRun(worse.runId)).info.experiment_id,
        },
      ],
      killed: false,
      log,
    });
    expect(end.best).toEqual({ name: 'dropout=0.2', runId: good.runId, value: epochLogs(2).val_accuracy! + 0.3 });

    const experimentId = (await client.getRun(good.runId)).info.experiment_id;
    const runs = await client.searchRuns({ experimentIds: [experimentId] });
    const parents = runs.filter((run) => fromKeyValues(run.data.tags)['xp.kind'] === 'sweep');
    expect(parents.map((run) => run.info.run_id)).toEqual([first.parentRunId]);
    const parent = await client.getRun(first.parentRunId!);
    const tags = fromKeyValues(parent.data.tags);
    expect(parent.info.status).toBe('FINISHED');
    expect(tags).toMatchObject({
      'xp.best_run_id': good.runId,
      'xp.sweep_hash': sweepHash(loaded),
      'xp.sweep_metric': 'val_accuracy',
    });
    expect(parent.data.metrics?.find((metric) => metric.key === 'best_val_accuracy')?.value).toBeCloseTo(0.85, 10);
    // The compare link is the sweep's view in the experiment's runs page: stored relative to the server, printed on
    // it; the view's state is the experiment tag the link names, and it selects the parent's trials.
    const route = tags['xp.compare_url'];
    expect(route).toMatch(new RegExp(`^#/experiments/${experimentId}/runs\\?viewStateShareKey=[0-9a-f]{64}&`));
    expect(end.compareUrl).toBe(`${server.url}/${route}`);
    expect(second.compareRoute).toBe(route);
    const key = new URLSearchParams(route.split('?')[1]).get('viewStateShareKey');
    const experimentTags = fromKeyValues((await client.getExperimentByName('sweep'))!.tags);
    const view = JSON.parse(experimentTags[`mlflow.sharedViewState.${key}`]);
    expect(view.searchFilter).toBe(`tags.mlflow.parentRunId = '${first.parentRunId}'`);
    const children = runs.filter((run) => fromKeyValues(run.data.tags)['mlflow.parentRunId'] === first.parentRunId);
    expect(children.map((run) => run.info.run_id).sort()).toEqual([good.runId, worse.runId].sort());

    // The table compares the trials: dropout differs, the backbone does not; the best is first.
    const rows = await listRuns({ uri: server.url, experimentName: 'sweep' });
    const [header, , top, next] = formatRunsTable(rows).split('\n');
    expect(header).toMatch(
      /^run\s+name\s+status\s+head\.dropout\s+val_accuracy\s+val_loss\s+accuracy\s+loss\s+folder$/,
    );
    expect(top).toMatch(new RegExp(`^${good.runId.slice(0, 8)}  dropout=0\\.2\\s+FINISHED\\s+0\\.2\\s+0\\.8500\\s`));
    expect(next).toMatch(new RegExp(`^${worse.runId.slice(0, 8)}  dropout=0\\.5\\s+FINISHED\\s+0\\.5\\s+0\\.5500\\s`));
    expect(bestRun(rows)).toMatchObject({ runId: good.runId, runDir: good.runDir });
    // A loss ranks smallest first: the direction comes from metricGoal.
    expect(bestRun(rows, { metric: 'val_loss' })?.value).toBe(Math.min(...rows.map((row) => row.metrics.val_loss)));
  });

  test('a sweep with the tracking server down goes on at once, its trials journaled as single runs', async () => {
    const base = experiment();
    const loaded: LoadedExperiment = {
      file: 'x.yaml',
      sources: [],
      pinned: [],
      origin: () => 'default',
      base,
      sweep: base.sweep,
      trials: [{ index: 1, name: 'dropout=0.2', values: {}, experiment: base, configHash: 'h' }],
    };
    const { log, lines } = quietLog();
    const started = Date.now();
    const session = await openSweep({
      uri: 'http://127.0.0.1:9',
      experimentName: 'dead',
      loaded,
      trials: loaded.trials,
      rerun: false,
      sourceFile: 'x.yaml',
      log,
      env: { MLFLOW_HTTP_REQUEST_MAX_RETRIES: '7' },
    });
    await closeSweep({
      uri: 'http://127.0.0.1:9',
      loaded,
      session,
      results: [],
      killed: false,
      log,
      env: { MLFLOW_HTTP_REQUEST_MAX_RETRIES: '7' },
    });
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(session.trials).toEqual(loaded.trials);
    expect(session.parentRunId).toBeUndefined();
    expect(lines.join('\n')).toMatch(/journaled as single runs for `xp sync`/);
  });

  test('files of a run on the embedded store are hard-linked into its artifact store, served like uploads', async () => {
    const { runDir, weights } = runDirWithFiles();
    const artifactStore = path.join(server.storeDir, 'artifacts');
    const tracker = createMlflowTracker({
      uri: server.url,
      experimentName: 'linked',
      runDir,
      artifactStore,
      log: quietLog().log,
    });
    await tracker.onRunStart!(startInfo(runDir));
    await tracker.onRunEnd!({
      status: 'FINISHED',
      history: [],
      artifacts: ['experiment.yaml', 'model/'],
      wallSeconds: 1,
    });
    const run = await client.getRun(tracker.mlflowRunId()!);
    const stored = path.join(
      artifactStore,
      run.info.experiment_id,
      run.info.run_id,
      'artifacts',
      'model',
      'weights.bin',
    );
    expect(fs.statSync(stored).ino).toBe(fs.statSync(path.join(runDir, 'model', 'weights.bin')).ino);
    expect(fs.statSync(stored).nlink).toBe(2);
    expect((await client.listArtifacts(run.info.artifact_uri, 'model')).map((file) => file.path).sort()).toEqual([
      'model/model.json',
      'model/weights.bin',
    ]);
    expect(Buffer.compare(await client.downloadArtifact(run.info.artifact_uri, 'model/weights.bin'), weights)).toBe(0);
    expect(await tracker.pending()).toBe(0);
  });
});

describe('client', () => {
  test('logBatch splits metrics, params and tags within MLflow limits', async () => {
    const experiment = await client.getOrCreateExperiment('batches');
    const run = await client.createRun({ experimentId: experiment.experiment_id, runName: 'big' });
    const metrics = Array.from({ length: 2500 }, (_, step) => ({
      key: 'm',
      value: step / 10,
      timestamp: 1_700_000_000_000 + step,
      step,
    }));
    const params = Array.from({ length: 150 }, (_, index) => ({ key: `p${index}`, value: String(index) }));
    const tags = Array.from({ length: 120 }, (_, index) => ({ key: `t${index}`, value: String(index) }));
    const result = await client.logBatch(run.info.run_id, { metrics, params, tags });
    expect(result).toEqual({ requests: 3, dropped: 0 });
    const history = await client.getMetricHistory(run.info.run_id, 'm');
    expect(history.map((point) => Number(point.step)).sort((a, b) => a - b)).toEqual(
      metrics.map((metric) => metric.step),
    );
    const stored = await client.getRun(run.info.run_id);
    expect(stored.data.params).toHaveLength(150);
    expect(Object.keys(fromKeyValues(stored.data.tags)).filter((key) => key.startsWith('t'))).toHaveLength(120);
  });

  test('logBatch drops NaN and Inf with a warning', async () => {
    const warnings: string[] = [];
    const warned = createClient(server.url, { warn: (message) => warnings.push(message), maxRetries: 0 });
    const experiment = await warned.getOrCreateExperiment('batches');
    const run = await warned.createRun({ experimentId: experiment.experiment_id });
    const result = await warned.logBatch(run.info.run_id, {
      metrics: [
        { key: 'a', value: Number.NaN, timestamp: 1, step: 0 },
        { key: 'a', value: 1, timestamp: 2, step: 1 },
        { key: 'b', value: Number.NEGATIVE_INFINITY, timestamp: 1, step: 0 },
      ],
    });
    expect(result).toEqual({ requests: 1, dropped: 2 });
    expect((await warned.getMetricHistory(run.info.run_id, 'a')).map((point) => point.value)).toEqual([1]);
    expect(await warned.getMetricHistory(run.info.run_id, 'b')).toEqual([]);
    expect(warnings).toEqual([expect.stringMatching(/2 metric value\(s\) not logged \(a, b\)/)]);
  });

  test('concurrent creates of one experiment agree on its id', async () => {
    const ids = await Promise.all(
      Array.from({ length: 4 }, () => createClient(server.url).getOrCreateExperiment('raced')),
    );
    expect(new Set(ids.map((experiment) => experiment.experiment_id)).size).toBe(1);
  });

  test('MLflow errors become TrackingErrors with the MLflow error code', async () => {
    const error = await client.getRun('0123456789abcdef0123456789abcdef').catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(TrackingError);
    expect(error).toMatchObject({ errorCode: 'RESOURCE_DOES_NOT_EXIST', status: 404 });
    const experiment = await client.getOrCreateExperiment('errors');
    const run = await client.createRun({ experimentId: experiment.experiment_id });
    await client.logBatch(run.info.run_id, { params: [{ key: 'lr', value: '0.1' }] });
    await client.logBatch(run.info.run_id, { params: [{ key: 'lr', value: '0.1' }] }); // the same value again is fine
    const changed = await client
      .logBatch(run.info.run_id, { params: [{ key: 'lr', value: '0.2' }] })
      .catch((caught: unknown) => caught);
    expect(changed).toMatchObject({
      name: 'TrackingError',
      errorCode: 'INVALID_PARAMETER_VALUE',
      message: expect.stringMatching(/Changing param values is not allowed/),
    });
  });

  test('an unreachable server gives a TrackingError that says so', async () => {
    const down = createClient('http://127.0.0.1:9', { maxRetries: 1, backoffFactor: 0, backoffJitter: 0 });
    const error = await down.getExperimentByName('x').catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(MlflowError);
    expect(error).toMatchObject({
      errorCode: 'UNREACHABLE',
      message: expect.stringMatching(/Cannot reach MLflow at http:\/\/127\.0\.0\.1:9/),
    });
  });
});

describe('server', () => {
  test('a server already running on the store is reused, and its stop() leaves it running', async () => {
    const again = await startServer({ storeDir: server.storeDir });
    expect(again).toMatchObject({ url: server.url, reused: true });
    await again.stop();
    expect(await isHealthy(server.url)).toBe(true);
    expect(JSON.parse(fs.readFileSync(path.join(server.storeDir, 'server.json'), 'utf8'))).toMatchObject({
      url: server.url,
      pid: expect.any(Number),
    });
  });

  test('the tracking URI comes from the experiment, else MLFLOW_TRACKING_URI, else the embedded server', async () => {
    const env = { MLFLOW_TRACKING_URI: 'http://127.0.0.1:5000/' };
    expect(
      await resolveTrackingUri({ experimentUri: 'https://mlflow.example.com', storeDir: server.storeDir, env }),
    ).toMatchObject({ url: 'https://mlflow.example.com', source: 'experiment' });
    expect(await resolveTrackingUri({ storeDir: server.storeDir, env })).toMatchObject({
      url: 'http://127.0.0.1:5000',
      source: 'env',
    });
    const embedded = await resolveTrackingUri({ storeDir: server.storeDir, env: {} });
    expect(embedded).toMatchObject({ url: server.url, source: 'embedded', reused: true });
    // It counts as a user of the server: without this, the server outlived the tests.
    await embedded.stop();
  });
});
