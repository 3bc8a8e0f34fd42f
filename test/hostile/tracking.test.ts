// Tracking under faults: concurrent first runs on one store, servers that never answer or fail, journals whose
// process died, and `xp sync` sending to the run's own server. Real MLflow servers; dead ones are local listeners.
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { createClient } from '../../src/tracking/client.ts';
import { openJournal, syncRunDir } from '../../src/tracking/journal.ts';
import { startServer } from '../../src/tracking/server.ts';
import { createMlflowTracker } from '../../src/tracking/tracker.ts';
import { epochLogs, quietLog, removeTempDirs, runDirWithFiles, SERVER_TIMEOUT, startInfo, startTestServer, tempDir } from '../tracking/helpers.ts';

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
  closers.push(() => { for (const socket of sockets) socket.destroy(); server.close(); });
  return `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
}

/** A server that answers 500 to everything. */
async function failingServer(): Promise<string> {
  const server = http.createServer((_request, response) => { response.writeHead(500); response.end('{"error_code":"INTERNAL_ERROR","message":"boom"}'); });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  closers.push(() => server.close());
  return `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
}

const METRICS = ['loss', 'accuracy', 'val_loss', 'val_accuracy', 'learning_rate', 'epoch_seconds', 'images_per_second'];

test('two first runs on a new store share one MLflow server, and the store works afterwards', async () => {
  const storeDir = tempDir('race');
  const [a, b] = await Promise.all([startServer({ storeDir, timeoutMs: SERVER_TIMEOUT }), startServer({ storeDir, timeoutMs: SERVER_TIMEOUT })]);
  closers.push(() => a.stop(), () => b.stop());
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
}, SERVER_TIMEOUT * 2);

for (const [name, dead] of [['never answers', silentServer], ['answers 500', failingServer]] as const) {
  test(`a tracking server that ${name} costs training nothing and the run's end at most ~15 s; sync delivers the journal once`, async () => {
    const uri = await dead();
    const { runDir } = runDirWithFiles(`dead-${name.replace(/\W/g, '')}`);
    const { log, lines } = quietLog();
    // env {}: MLflow's default retry policy, not the test helpers' shortened one.
    const tracker = createMlflowTracker({ uri, experimentName: `dead-${name.replace(/\W/g, '')}`, runDir, log, env: {} });
    let started = Date.now();
    await tracker.onRunStart!(startInfo(runDir));
    for (const epoch of [1, 2]) await tracker.onEpochEnd!(epoch, epochLogs(epoch));
    expect(Date.now() - started).toBeLessThan(3000);
    started = Date.now();
    await tracker.onRunEnd!({ status: 'FINISHED', history: [], artifacts: ['experiment.yaml', 'model'], wallSeconds: 1 });
    expect(Date.now() - started).toBeLessThan(20_000);
    expect(lines.at(-1)).toMatch(/NOT delivered yet: the run itself, params, dataset inputs, metrics of epochs 1-2, 3 artifact file\(s\), the final run status.*xp sync/);

    expect((await syncRunDir(runDir, { uri: server.url })).pending).toBe(0);
    const client = createClient(server.url);
    const runId = openJournal(runDir).runRef()!.runId;
    expect((await client.getRun(runId)).info.status).toBe('FINISHED');
    for (const key of METRICS) expect((await client.getMetricHistory(runId, key)).map((point) => Number(point.step)).sort()).toEqual([1, 2]);
    const experiment = await client.getExperimentByName(`dead-${name.replace(/\W/g, '')}`);
    expect(await client.searchRuns({ experimentIds: [experiment!.experiment_id] })).toHaveLength(1);
  }, SERVER_TIMEOUT + 60_000);
}
