// A resumed run (RunStartInfo.resumedAt) continues the MLflow run its journal writes to: RUNNING again while it
// trains, its interruption's error gone, each epoch logged once, FINISHED at the end; no second MLflow run.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createClient, type MlflowClient } from '../../src/tracking/client.ts';
import { createMlflowTracker } from '../../src/tracking/tracker.ts';
import {
  epochLogs,
  quietLog,
  removeTempDirs,
  runDirWithFiles,
  SERVER_TIMEOUT,
  startInfo,
  startTestServer,
} from './helpers.ts';

let server: Awaited<ReturnType<typeof startTestServer>>;
let client: MlflowClient;

beforeAll(async () => {
  server = await startTestServer();
  client = createClient(server.url);
}, SERVER_TIMEOUT);

afterAll(async () => {
  await server?.stop();
  removeTempDirs();
});

describe('resumed run', () => {
  test(
    'continues its MLflow run: RUNNING again, epochs after the interruption once each, FINISHED',
    async () => {
      const { runDir } = runDirWithFiles();
      const { log } = quietLog();
      const history = [1, 2, 3].map(epochLogs);
      // Epoch 3 reached the journal but the run failed before its backup: the resumed run trains it again.
      const first = createMlflowTracker({ uri: server.url, experimentName: 'resumed', runDir, log });
      await first.onRunStart!(startInfo(runDir));
      for (let epoch = 1; epoch <= 3; epoch++) await first.onEpochEnd!(epoch, history[epoch - 1]);
      await first.onRunEnd!({ status: 'FAILED', error: 'out of memory', history, artifacts: [], wallSeconds: 1 });
      const runId = first.mlflowRunId()!;
      expect((await client.getRun(runId)).info.status).toBe('FAILED');

      const second = createMlflowTracker({ uri: server.url, experimentName: 'resumed', runDir, log });
      await second.onRunStart!({ ...startInfo(runDir), resumedAt: 2 });
      expect(await second.pending()).toBe(0);
      const running = await client.getRun(runId);
      expect(running.info.status).toBe('RUNNING');
      expect(running.data.tags?.some((t) => t.key === 'xp.error')).toBe(false);
      for (let epoch = 3; epoch <= 4; epoch++) await second.onEpochEnd!(epoch, epochLogs(epoch));
      await second.onRunEnd!({
        status: 'FINISHED',
        history: [1, 2, 3, 4].map(epochLogs),
        artifacts: [],
        wallSeconds: 1,
      });

      expect(second.mlflowRunId()).toBe(runId);
      const run = await client.getRun(runId);
      expect(run.info.status).toBe('FINISHED');
      expect(run.data.tags?.find((t) => t.key === 'xp.resumed_at_epoch')?.value).toBe('2');
      expect(await client.searchRuns({ experimentIds: [run.info.experiment_id] })).toHaveLength(1);
      for (const key of ['loss', 'val_accuracy', 'epoch_seconds']) {
        const points = (await client.getMetricHistory(runId, key)).sort((a, b) => a.step - b.step);
        expect(
          points.map((p) => p.step),
          key,
        ).toEqual([1, 2, 3, 4]);
      }
    },
    SERVER_TIMEOUT,
  );

  test(
    'a run tracked only from its resumption starts its MLflow run with the epochs done before',
    async () => {
      const { runDir } = runDirWithFiles();
      const { log } = quietLog();
      const tracker = createMlflowTracker({ uri: server.url, experimentName: 'resumed-untracked', runDir, log });
      await tracker.onRunStart!({ ...startInfo(runDir), resumedAt: 2, resumedHistory: [1, 2].map(epochLogs) });
      for (let epoch = 3; epoch <= 4; epoch++) await tracker.onEpochEnd!(epoch, epochLogs(epoch));
      await tracker.onRunEnd!({
        status: 'FINISHED',
        history: [1, 2, 3, 4].map(epochLogs),
        artifacts: [],
        wallSeconds: 1,
      });
      const points = (await client.getMetricHistory(tracker.mlflowRunId()!, 'loss')).sort((a, b) => a.step - b.step);
      expect(points.map((p) => [p.step, p.value])).toEqual([1, 2, 3, 4].map((e) => [e, epochLogs(e).loss]));
      expect((await client.getRun(tracker.mlflowRunId()!)).info.status).toBe('FINISHED');
    },
    SERVER_TIMEOUT,
  );

  test(
    'resumed against another server, it says where its MLflow run lives and that `xp sync` sends it there',
    async () => {
      const { runDir } = runDirWithFiles();
      const first = createMlflowTracker({
        uri: server.url,
        experimentName: 'resumed-elsewhere',
        runDir,
        log: () => {},
      });
      await first.onRunStart!(startInfo(runDir));
      await first.onRunEnd!({ status: 'KILLED', history: [], artifacts: [], wallSeconds: 1 });
      const { log, lines } = quietLog();
      const elsewhere = createMlflowTracker({
        uri: 'http://127.0.0.1:9',
        experimentName: 'resumed-elsewhere',
        runDir,
        log,
      });
      await elsewhere.onRunStart!({ ...startInfo(runDir), resumedAt: 1 });
      expect(lines.join('\n')).toContain(
        `this run was logging to the embedded store ${server.storeDir}, not http://127.0.0.1:9`,
      );
      expect(lines.join('\n')).toContain(`\`xp sync ${runDir}\``);
      expect(await elsewhere.pending()).toBeGreaterThan(0);
    },
    SERVER_TIMEOUT,
  );
});
