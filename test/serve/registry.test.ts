// `xp serve models:/NAME/VERSION` and `models:/NAME@ALIAS`: a tracked run registered in a real MLflow server's Model
// Registry (through its REST API, as MLflow's client registers one) is served from its run folder, answering what
// `xp predict` answers; a version the registry lacks is refused by name.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClient } from '../../src/tracking/client.ts';
import { startServer, type TrackingServer } from '../../src/tracking/server.ts';
import { trainTinyRun, xpIn } from '../export/tiny-run.ts';
import { expectAnswers, invoke, type Prediction, startServe } from './helpers.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'xp-serve-registry-'));
let mlflow: TrackingServer;
let xp: ReturnType<typeof xpIn>;
let runDir: string;
let file: string;
let expected: Prediction;

beforeAll(async () => {
  mlflow = await startServer({ storeDir: path.join(tmp, 'mlflow') });
  xp = xpIn(tmp, { MLFLOW_TRACKING_URI: mlflow.url });
  let files: string[];
  ({ runDir, files } = await trainTinyRun(tmp, 'tiny-registry', mlflow.url));
  file = files[0];
  const predicted = await xp(['predict', runDir, file, '--json']);
  expect(predicted.exitCode, predicted.stderr).toBe(0);
  expected = JSON.parse(predicted.stdout);
  const client = createClient(mlflow.url);
  const experiment = await client.getExperimentByName('tiny-registry');
  const [run] = await client.searchRuns({ experimentIds: [experiment?.experiment_id ?? ''] });
  const post = async (endpoint: string, body: unknown) => {
    const r = await fetch(`${mlflow.url}/api/2.0/mlflow/${endpoint}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    expect(r.status, await r.clone().text()).toBe(200);
  };
  await post('registered-models/create', { name: 'tiny' });
  await post('model-versions/create', {
    name: 'tiny',
    source: `runs:/${run.info.run_id}/model`,
    run_id: run.info.run_id,
  });
  await post('registered-models/alias', { name: 'tiny', alias: 'champion', version: '1' });
}, 600_000);

afterAll(async () => {
  await mlflow?.stop();
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe('xp serve of a registered model', () => {
  for (const uri of ['models:/tiny/1', 'models:/tiny@champion'])
    it(`${uri} serves the registered run's folder`, async () => {
      const serve = await startServe(xp, uri);
      try {
        expect(serve.stdout()).toContain(runDir);
        const r = await invoke(serve.url, fs.readFileSync(file), 'image/jpeg');
        expect(r.status, r.json.message).toBe(200);
        expectAnswers(r.json.predictions, [expected]);
      } finally {
        serve.process.kill('SIGTERM');
        expect((await serve.process).exitCode).toBe(0);
      }
    });

  it('refuses a version the registry does not have, naming it', async () => {
    const r = await xp(['serve', 'models:/tiny/7', '--port', '0']);
    expect(r.exitCode).not.toBe(0);
    expect(r.stderr).toMatch(/has no models:\/tiny\/7/);
  });
});
