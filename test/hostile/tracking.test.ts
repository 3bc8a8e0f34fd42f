// Tracking under faults: concurrent first runs on one store, servers that never answer or fail, journals whose
// process died, and `xp sync` sending to the run's own server. Real MLflow servers; dead ones are local listeners.
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { createClient } from '../../src/tracking/client.ts';
import { openJournal } from '../../src/tracking/journal.ts';
import { syncRunDir } from '../../src/tracking/delivery.ts';
import { startServer } from '../../src/tracking/server.ts';
import { createMlflowTracker } from '../../src/tracking/tracker.ts';
import {
  epochLogs,
  quietLog,
  removeTempDirs,
  runDirWithFiles,
  SERVER_TIMEOUT,
  startInfo,
  startTestServer,
  tempDir,
} from '../tracking/helpers.ts';

const closers: (() => unknown)[] = [];
let server: Awaited<ReturnType<typeof startTestServer>>;
beforeAll(async () => {
  server = await startTestServer();
  closers.push(() => server.stop());
}, SERVER_TIMEOUT);
afterAll(async () => {
  for (const close of closers.splice(0)) await close();
  removeTempDirs();
}, 60_000);

/** A listener that accepts connections and never answers. */
async function silentServer(): Promise<string> {
  const sockets: net.Socket[] = [];
  const server = net.createServer((socket) => sockets.push(socket));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  closers.push(() => {
    for (const socket of sockets) socket.destroy();
    server.close();
  });
  return `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
}

/** A server that answers 500 to everything. */
async function failingServer(): Promise<string> {
  const server = http.createServer((_request, response) => {
    response.writeHead(500);
    response.end('{"error_code":"INTERNAL_ERROR","message":"boom"}');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  closers.push(() => server.close());
  return `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
}

const METRICS = ['loss', 'accuracy', 'val_loss', 'val_accuracy', 'learning_rate', 'epoch_seconds', 'images_per_second'];

test(
  'two first runs on a new store share one MLflow server, and the store works afterwards',
  async () => {
    const storeDir = tempDir('race');
    const [a, b] = await Promise.all([
      startServer({ storeDir, timeoutMs: SERVER_TIMEOUT }),
      startServer({ storeDir, timeoutMs: SERVER_TIMEOUT }),
    ]);
    closers.push(
      () => a.stop(),
      () => b.stop(),
    );
    expect(a.url).toBe(b.url);
    expect([a.reused, b.reused].sort()).toEqual([false, true]);
    const client = createClient(a.url);
    const experiment = await client.getOrCreateExperiment('race');
    await client.createRun({ experimentId: experiment.experiment_id, runName: 'after the race' });
    expect(await client.searchRuns({ experimentIds: [experiment.experiment_id] })).toHaveLength(1);
    expect(fs.readFileSync(path.join(storeDir, 'server.log'), 'utf8')).not.toMatch(/already exists/);
    // The first to stop leaves the server to the other user; the last one ends it.
    await a.stop();
    expect((await fetch(`${a.url}/health`)).ok).toBe(true);
    await b.stop();
    await expect(fetch(`${a.url}/health`)).rejects.toThrow();
  },
  SERVER_TIMEOUT * 2,
);

for (const [name, dead] of [
  ['never answers', silentServer],
  ['answers 500', failingServer],
] as const) {
  test(
    `a tracking server that ${name} costs training nothing and the run's end at most ~15 s; sync delivers the journal once`,
    async () => {
      const uri = await dead();
      const { runDir } = runDirWithFiles(`dead-${name.replace(/\W/g, '')}`);
      const { log, lines } = quietLog();
      // env {}: MLflow's default retry policy, not the test helpers' shortened one.
      const tracker = createMlflowTracker({
        uri,
        experimentName: `dead-${name.replace(/\W/g, '')}`,
        runDir,
        log,
        env: {},
      });
      let started = Date.now();
      await tracker.onRunStart!(startInfo(runDir));
      for (const epoch of [1, 2]) await tracker.onEpochEnd!(epoch, epochLogs(epoch));
      expect(Date.now() - started).toBeLessThan(3000);
      started = Date.now();
      await tracker.onRunEnd!({
        status: 'FINISHED',
        history: [],
        artifacts: ['experiment.yaml', 'model'],
        wallSeconds: 1,
      });
      expect(Date.now() - started).toBeLessThan(20_000);
      expect(openJournal(runDir).runRecord()).toMatchObject({ uri, pid: process.pid });
      expect(lines.at(-1)).toMatch(
        /NOT delivered yet: the run itself, params, dataset inputs, metrics of epochs 1-2, 3 artifact file\(s\), the final run status.*xp sync/,
      );

      expect((await syncRunDir(runDir, { uri: server.url })).pending).toBe(0);
      const client = createClient(server.url);
      const runId = openJournal(runDir).runRef()!.runId;
      expect((await client.getRun(runId)).info.status).toBe('FINISHED');
      for (const key of METRICS)
        expect((await client.getMetricHistory(runId, key)).map((point) => Number(point.step)).sort()).toEqual([1, 2]);
      const experiment = await client.getExperimentByName(`dead-${name.replace(/\W/g, '')}`);
      expect(await client.searchRuns({ experimentIds: [experiment!.experiment_id] })).toHaveLength(1);
    },
    SERVER_TIMEOUT + 60_000,
  );
}

const bin = path.join(import.meta.dirname, '../../bin/xp.js');
const xp = (args: string[], env: Record<string, string> = {}) =>
  execa(process.execPath, [bin, ...args], { reject: false, env: { MLFLOW_HTTP_REQUEST_MAX_RETRIES: '1', ...env } });

/** A journal as a run in process `pid` leaves it when it logs to `uri` and nothing reaches the server. */
function journalOf(uri: string, experimentName: string, options: { pid: number; end: boolean }): string {
  const runDir = tempDir('journal');
  const journal = openJournal(runDir);
  journal.append({
    kind: 'run',
    experimentName,
    runName: 'r',
    startTime: Date.now() - 5000,
    runKey: `${experimentName}-key`,
    tags: { 'mlflow.runName': 'r' },
    uri,
    pid: options.pid,
    host: os.hostname(),
  });
  journal.append({ kind: 'metrics', step: 1, timestamp: Date.now() - 1000, metrics: { loss: 0.5 } });
  if (options.end) journal.append({ kind: 'end', status: 'FINISHED', endTime: Date.now() });
  return runDir;
}

async function runsIn(url: string, experimentName: string) {
  const client = createClient(url);
  const experiment = await client.getExperimentByName(experimentName);
  return experiment ? client.searchRuns({ experimentIds: [experiment.experiment_id] }) : [];
}

test(
  '`xp sync` sends a journal to the server its run was logging to, or to --to; never to the one configured now',
  async () => {
    const other = await startTestServer();
    closers.push(() => other.stop());
    const own = journalOf(server.url, 'sync-own', { pid: process.pid, end: true });
    const r = await xp(['sync', own], { MLFLOW_TRACKING_URI: other.url });
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toContain(`sent 3 record(s) to ${server.url}`);
    expect(await runsIn(server.url, 'sync-own')).toHaveLength(1);
    expect(await runsIn(other.url, 'sync-own')).toHaveLength(0);

    const moved = journalOf(server.url, 'sync-to', { pid: process.pid, end: true });
    const to = await xp(['sync', moved, '--to', other.url]);
    expect(to.exitCode, to.stderr).toBe(0);
    expect(await runsIn(other.url, 'sync-to')).toHaveLength(1);
    expect(await runsIn(server.url, 'sync-to')).toHaveLength(0);
  },
  SERVER_TIMEOUT + 60_000,
);

test('`xp sync` closes as KILLED a run whose process died without journaling its end, and says so', async () => {
  const dead = execa(process.execPath, ['-e', '']);
  await dead;
  const runDir = journalOf(server.url, 'sync-killed', { pid: dead.pid!, end: false });
  const r = await xp(['sync', runDir]);
  expect(r.exitCode, r.stderr).toBe(0);
  expect(r.stdout).toMatch(/ended without closing it: closing it as KILLED/);
  const [run] = await runsIn(server.url, 'sync-killed');
  expect(run.info.status).toBe('KILLED');
  expect(Number(run.info.end_time)).toBeLessThanOrEqual(Date.now());
  // A live run is left RUNNING.
  const live = journalOf(server.url, 'sync-live', { pid: process.pid, end: false });
  expect((await xp(['sync', live])).stdout).toMatch(/still going on/);
  expect((await runsIn(server.url, 'sync-live'))[0].info.status).toBe('RUNNING');
}, 60_000);

test('`xp sync` to an MLflow that accepts the connection and never answers gives up after XP_SYNC_TIMEOUT seconds, naming it', async () => {
  const uri = await silentServer();
  const runDir = journalOf(uri, 'sync-silent', { pid: process.pid, end: true });
  const started = Date.now();
  // MLflow's own retry policy, as a user has it: no MLFLOW_HTTP_REQUEST_* set.
  const r = await xp(['sync', runDir], { MLFLOW_HTTP_REQUEST_MAX_RETRIES: '', XP_SYNC_TIMEOUT: '3' });
  const took = Date.now() - started;
  expect(r.exitCode).toBe(1);
  expect(took, `${took} ms`).toBeLessThan(20_000);
  expect(r.stderr).toContain(`3 still pending: MLflow at ${uri} took no record within 3 s (XP_SYNC_TIMEOUT).`);
  expect(r.stderr).toMatch(/raise XP_SYNC_TIMEOUT/);
  expect(r.stderr).not.toMatch(/\n\s+at /);
  // Nothing was taken for delivered: a server that answers gets all of it.
  expect(openJournal(runDir).pending()).toHaveLength(3);
  const to = await xp(['sync', runDir, '--to', server.url]);
  expect(to.exitCode, to.stderr).toBe(0);
  expect((await runsIn(server.url, 'sync-silent'))[0].info.status).toBe('FINISHED');
}, 60_000);
