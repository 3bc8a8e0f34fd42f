// The journal against a real MLflow server that goes away and comes back: nothing lost, nothing twice.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { createClient, fromKeyValues } from '../../src/tracking/client.ts';
import { CURSOR_FILE, openJournal, type JournalRecord } from '../../src/tracking/journal.ts';
import { syncRunDir } from '../../src/tracking/delivery.ts';
import { startServer, type TrackingServer } from '../../src/tracking/server.ts';
import { createMlflowTracker } from '../../src/tracking/tracker.ts';
import {
  epochLogs,
  quietLog,
  runDirWithFiles,
  removeTempDirs,
  SERVER_TIMEOUT,
  startInfo,
  startTestServer,
  tempDir,
} from './helpers.ts';

const METRICS = ['loss', 'accuracy', 'val_loss', 'val_accuracy', 'learning_rate', 'epoch_seconds', 'images_per_second'];

let server: TrackingServer & { storeDir: string };

beforeAll(async () => {
  server = await startTestServer();
}, SERVER_TIMEOUT);

afterAll(async () => {
  await server?.stop();
  removeTempDirs();
}, 30_000);

async function restart(port?: number) {
  server = {
    ...(await startServer({ storeDir: server.storeDir, port, timeoutMs: SERVER_TIMEOUT })),
    storeDir: server.storeDir,
  };
}

async function expectEveryMetricOnce(runId: string, steps: number[]) {
  const client = createClient(server.url);
  for (const key of METRICS) {
    const history = await client.getMetricHistory(runId, key);
    expect(
      history.map((point) => Number(point.step)).sort((a, b) => a - b),
      key,
    ).toEqual(steps);
  }
}

test('with the server down mid-run, training goes on and the journal replays in order once it is back', async () => {
  const { runDir, weights } = runDirWithFiles('outage');
  const { log, lines } = quietLog();
  const tracker = createMlflowTracker({ uri: server.url, experimentName: 'outage', runDir, log });
  await tracker.onRunStart!(startInfo(runDir));
  await tracker.onEpochEnd!(1, epochLogs(1));
  await tracker.onEpochEnd!(2, epochLogs(2));
  expect(await tracker.pending()).toBe(0);
  const runId = tracker.mlflowRunId()!;

  await server.stop();
  await tracker.onEpochEnd!(3, epochLogs(3)); // callbacks do not throw
  await tracker.onEpochEnd!(4, epochLogs(4));
  expect(await tracker.pending()).toBe(2);
  expect(lines.filter((line) => /cannot deliver/.test(line))).toHaveLength(1); // said once per outage, not per epoch

  await restart(Number(new URL(server.url).port)); // same store, same address
  await tracker.onEpochEnd!(5, epochLogs(5));
  expect(await tracker.pending()).toBe(0);
  expect(lines.at(-1)).toMatch(/reachable again, delivered 3 pending record/);
  await tracker.onRunEnd!({
    status: 'FINISHED',
    history: [],
    artifacts: ['experiment.yaml', 'model'],
    wallSeconds: 10,
  });
  expect(await tracker.pending()).toBe(0);

  const client = createClient(server.url);
  const run = await client.getRun(runId);
  expect(run.info.status).toBe('FINISHED');
  await expectEveryMetricOnce(runId, [1, 2, 3, 4, 5]);
  expect(await client.downloadArtifact(run.info.artifact_uri, 'model/weights.bin')).toEqual(weights);
  const experiment = await client.getExperimentByName('outage');
  expect(await client.searchRuns({ experimentIds: [experiment!.experiment_id] })).toHaveLength(1);
}, 120_000);

test('a run logged while MLflow was unreachable throughout is sent whole by `sync`, once', async () => {
  const { runDir, weights } = runDirWithFiles('offline');
  const { log, lines } = quietLog();
  const tracker = createMlflowTracker({ uri: 'http://127.0.0.1:9', experimentName: 'offline', runDir, log });
  await tracker.onRunStart!(startInfo(runDir));
  for (const epoch of [1, 2, 3]) await tracker.onEpochEnd!(epoch, epochLogs(epoch));
  await tracker.onRunEnd!({ status: 'KILLED', history: [], artifacts: ['experiment.yaml', 'model'], wallSeconds: 10 });
  expect(tracker.mlflowRunId()).toBeUndefined();
  expect(await tracker.pending()).toBe(10);
  expect(lines.at(-1)).toMatch(
    /NOT delivered yet: the run itself, params, dataset inputs, metrics of epochs 1-3, 3 artifact file\(s\), the final run status \(10 record\(s\)\).*xp sync/,
  );

  expect(await syncRunDir(runDir, { uri: server.url })).toEqual({ sent: 10, pending: 0 });
  expect(await syncRunDir(runDir, { uri: server.url })).toEqual({ sent: 0, pending: 0 });
  const runId = openJournal(runDir).runRef()!.runId;
  const client = createClient(server.url);
  const run = await client.getRun(runId);
  expect(run.info.status).toBe('KILLED');
  expect(fromKeyValues(run.data.params)['head.dropout']).toBe('0.2');
  await expectEveryMetricOnce(runId, [1, 2, 3]);
  expect(await client.downloadArtifact(run.info.artifact_uri, 'model/weights.bin')).toEqual(weights);
});

test('a record that may have reached MLflow before a crash is checked, not sent twice', async () => {
  const runDir = tempDir('crash');
  const tracker = createMlflowTracker({ uri: server.url, experimentName: 'crash', runDir, log: () => {} });
  await tracker.onRunStart!(startInfo(runDir));
  for (const epoch of [1, 2, 3]) await tracker.onEpochEnd!(epoch, epochLogs(epoch));
  await tracker.pending(); // delivery runs beside training
  const runId = tracker.mlflowRunId()!;

  // As if the process died after MLflow stored epoch 3 but before the cursor said so.
  const epoch3 = openJournal(runDir)
    .records()
    .find((record) => record.kind === 'metrics' && record.step === 3)!;
  fs.writeFileSync(path.join(runDir, CURSOR_FILE), JSON.stringify({ delivered: epoch3.seq - 1, inflight: epoch3.seq }));
  expect(await syncRunDir(runDir, { uri: server.url })).toEqual({ sent: 1, pending: 0 });
  await expectEveryMetricOnce(runId, [1, 2, 3]);
});

test('a run created just before a crash is found again by its key, not created twice', async () => {
  const runDir = tempDir('crash-create');
  const journal = openJournal(runDir);
  const runRecord = journal.append({
    kind: 'run',
    experimentName: 'crash-create',
    runName: 'lost answer',
    startTime: Date.now(),
    runKey: 'key-1',
    tags: { 'mlflow.runName': 'lost answer' },
  });
  journal.append({ kind: 'metrics', step: 1, timestamp: Date.now(), metrics: { loss: 0.5 } });
  journal.saveCursor({ delivered: 0, inflight: runRecord.seq });
  // MLflow got runs/create; its answer never arrived.
  const client = createClient(server.url);
  const experiment = await client.getOrCreateExperiment('crash-create');
  const created = await client.createRun({
    experimentId: experiment.experiment_id,
    runName: 'lost answer',
    tags: { 'xp.run_key': 'key-1' },
  });

  expect(await syncRunDir(runDir, { uri: server.url })).toEqual({ sent: 2, pending: 0 });
  const runs = await client.searchRuns({ experimentIds: [experiment.experiment_id] });
  expect(runs.map((run) => run.info.run_id)).toEqual([created.info.run_id]);
  expect(fromKeyValues(runs[0].data.tags)['xp.run_key']).toBe('key-1');
  const recorded = openJournal(runDir)
    .records()
    .filter((record): record is Extract<JournalRecord, { kind: 'run_id' }> => record.kind === 'run_id');
  expect(recorded.map((record) => record.runId)).toEqual([created.info.run_id]);
  expect((await client.getMetricHistory(created.info.run_id, 'loss')).map((point) => point.value)).toEqual([0.5]);
});
