// A tracking server that is alive but answers late (the embedded MLflow starved of CPU while a run decodes its
// images on 2 busy cores) is slow, not down: the console stays quiet until it has been so for long. A dead one is
// still reported at once. The server here is a real embedded MLflow, frozen with SIGSTOP and thawed with SIGCONT.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { createClient } from '../../src/tracking/client.ts';
import { createMlflowTracker } from '../../src/tracking/tracker.ts';
import {
  epochLogs,
  quietLog,
  removeTempDirs,
  runDirWithFiles,
  SERVER_TIMEOUT,
  startInfo,
  startTestServer,
} from '../tracking/helpers.ts';

let server: Awaited<ReturnType<typeof startTestServer>>;
let pid: number;
beforeAll(async () => {
  server = await startTestServer();
  pid = JSON.parse(fs.readFileSync(path.join(server.storeDir, 'server.json'), 'utf8')).pid;
}, SERVER_TIMEOUT);
afterAll(async () => {
  signal('SIGCONT');
  await server?.stop();
  removeTempDirs();
}, 60_000);

/** The server's whole process group (mlflow, uvicorn and its worker). */
const signal = (name: NodeJS.Signals) => {
  try {
    process.kill(-pid, name);
  } catch {
    // gone
  }
};

// Each request gives up after 2 s, as one does after 15 s during a run.
const env = (slowSeconds: number) => ({
  ...process.env,
  MLFLOW_HTTP_REQUEST_TIMEOUT: '2',
  XP_TRACKING_SLOW_TIMEOUT: String(slowSeconds),
});
const said = (lines: string[]) => lines.filter((l) => /cannot deliver|not answered|reachable again/.test(l));

test('a frozen embedded server is not reported while its process runs, and nothing is lost or sent twice', async () => {
  const { runDir } = runDirWithFiles('slow');
  const { log, lines } = quietLog();
  const tracker = createMlflowTracker({ uri: server.url, experimentName: 'slow', runDir, log, env: env(600) });
  await tracker.onRunStart!(startInfo(runDir));
  await tracker.onEpochEnd!(1, epochLogs(1));
  expect(await tracker.pending()).toBe(0);

  signal('SIGSTOP');
  try {
    await tracker.onEpochEnd!(2, epochLogs(2));
    expect(await tracker.pending()).toBe(1); // timed out
    await tracker.onEpochEnd!(3, epochLogs(3));
    expect(await tracker.pending()).toBe(2);
  } finally {
    signal('SIGCONT');
  }
  expect(said(lines)).toEqual([]);
  await tracker.onEpochEnd!(4, epochLogs(4));
  expect(await tracker.pending()).toBe(0);
  expect(said(lines)).toEqual([]); // nothing was said to be wrong, so nothing is said to be right again

  const client = createClient(server.url);
  const runId = tracker.mlflowRunId()!;
  const steps = (await client.getMetricHistory(runId, 'loss')).map((p) => Number(p.step)).sort();
  expect(steps).toEqual([1, 2, 3, 4]);
}, 120_000);

test('a server alive but silent for longer than XP_TRACKING_SLOW_TIMEOUT is reported once, as slow', async () => {
  const { runDir } = runDirWithFiles('slow-long');
  const { log, lines } = quietLog();
  const tracker = createMlflowTracker({ uri: server.url, experimentName: 'slow', runDir, log, env: env(0) });
  await tracker.onRunStart!(startInfo(runDir));
  expect(await tracker.pending()).toBe(0);
  signal('SIGSTOP');
  try {
    await tracker.onEpochEnd!(1, epochLogs(1));
    await tracker.pending();
    await tracker.onEpochEnd!(2, epochLogs(2));
    await tracker.pending();
  } finally {
    signal('SIGCONT');
  }
  expect(said(lines)).toEqual([
    expect.stringMatching(/^MLflow: http:\S+ runs but has not answered in time for \d+ s \(.*timed out/),
  ]);
  await tracker.onEpochEnd!(3, epochLogs(3));
  expect(await tracker.pending()).toBe(0);
  expect(said(lines).at(-1)).toMatch(/reachable again, delivered 3 pending record/);
}, 120_000);

test('a dead server is reported at the first failed delivery, and the end waits for it only seconds', async () => {
  const { runDir } = runDirWithFiles('dead');
  const { log, lines } = quietLog();
  const tracker = createMlflowTracker({
    uri: server.url,
    experimentName: 'slow',
    runDir,
    log,
    env: { ...env(600), XP_TRACKING_END_TIMEOUT: '3' },
  });
  await tracker.onRunStart!(startInfo(runDir));
  expect(await tracker.pending()).toBe(0);
  signal('SIGKILL');
  await tracker.onEpochEnd!(1, epochLogs(1));
  await tracker.pending();
  expect(said(lines)).toEqual([expect.stringMatching(/^MLflow: cannot deliver to/)]);
  const started = Date.now();
  await tracker.onRunEnd!({ status: 'FINISHED', history: [], artifacts: [], wallSeconds: 1 });
  expect(Date.now() - started).toBeLessThan(10_000);
  expect(lines.at(-1)).toMatch(/NOT delivered yet/);
}, 120_000);
