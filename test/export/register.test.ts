// `xp register` against a real MLflow server: the run's model is logged under the run (which keeps its status and
// end time) and registered; the alias champion moves only to a version with a better metric; and
// `mlflow models serve` of the registered model, from the project's Keras environment, answers what xp predict does.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureKerasVenv } from '../../src/python/keras-env.ts';
import { startServer, type TrackingServer } from '../../src/tracking/server.ts';
import { freePort } from '../../src/util/ports.ts';

const root = path.resolve(import.meta.dirname, '../..');
const shared = path.resolve(root, '../shared/datasets/cats_and_dogs_filtered');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'xp-register-'));
let server: TrackingServer;
let serving: ChildProcess | undefined;
afterAll(async () => {
  serving?.kill('SIGTERM');
  await server?.stop();
  fs.rmSync(tmp, { recursive: true, force: true });
});

const xp = (args: string[]) =>
  execa(process.execPath, [path.join(root, 'bin', 'xp.js'), ...args], {
    reject: false,
    cwd: tmp,
    env: { XP_RUNS_DIR: path.join(tmp, 'runs'), MLFLOW_TRACKING_URI: server.url },
    timeout: 600_000,
  });
const api = async (route: string, init?: RequestInit) => {
  const r = await fetch(`${server.url}/api/2.0/mlflow/${route}`, {
    ...init,
    headers: { 'content-type': 'application/json' },
  });
  expect(r.ok, `${route}: ${r.status}`).toBe(true);
  return r.json();
};

// The validation folder: PNGs already at the run's size, so that MLflow's side (PIL) and xp's (sharp) decode the
// same pixels and resize nothing.
const validation = path.join(tmp, 'validation');
let runDir: string;
let runId: string;

beforeAll(async () => {
  server = await startServer({ storeDir: path.join(tmp, 'mlflow') });
  for (const [cls, prefix] of [
    ['cats', 'cat'],
    ['dogs', 'dog'],
  ]) {
    fs.mkdirSync(path.join(validation, cls), { recursive: true });
    for (const n of [2000, 2001, 2002])
      await sharp(path.join(shared, 'validation', cls, `${prefix}.${n}.jpg`))
        .resize(96, 96, { fit: 'fill' })
        .png()
        .toFile(path.join(validation, cls, `${prefix}.${n}.png`));
  }
  const file = path.join(tmp, 'tiny.yaml');
  fs.writeFileSync(
    file,
    `name: tiny-register
data: {train: ${shared}/train, validation: ${validation}, image_size: [96, 96], batch_size: 8, max_per_class: 8}
backbone: {name: mobilenet_v2, weights: nsfwjs, cut_layer: block_2_add}
head: {pooling: avg, units: [8], dropout: 0.2}
optimizer: {name: adam, learning_rate: 0.01}
training: {epochs: 1, steps_per_epoch: 2}
`,
  );
  const run = await xp(['run', file, '--quiet']);
  expect(run.exitCode, run.stderr).toBe(0);
  const [folder] = fs.readdirSync(path.join(tmp, 'runs', 'tiny-register'));
  runDir = path.join(tmp, 'runs', 'tiny-register', folder);
  runId = /runs\/([0-9a-f]{32})/.exec(run.stdout)?.[1] ?? '';
  expect(runId).not.toBe('');
  await ensureKerasVenv();
}, 900_000);

const champion = async (name: string) =>
  (await api(`registered-models/alias?name=${name}&alias=champion`)).model_version.version as string;

describe('xp register', () => {
  it('logs the model under its run, registers version 1 as champion, and leaves the run as it was', async () => {
    const before = (await api(`runs/get?run_id=${runId}`)).run.info;
    const r = await xp(['register', runDir, 'cats-vs-dogs', '--json']);
    expect(r.exitCode, r.stderr).toBe(0);
    const answer = JSON.parse(r.stdout.trim().split('\n').at(-1) ?? '{}');
    expect(answer).toMatchObject({ version: '1', champion: true, metric: 'val_accuracy' });
    expect(await champion('cats-vs-dogs')).toBe('1');
    const version = (await api('model-versions/get?name=cats-vs-dogs&version=1')).model_version;
    expect(version.run_id).toBe(runId);
    const tags = Object.fromEntries(version.tags.map((t: { key: string; value: string }) => [t.key, t.value]));
    expect(tags['xp.metric']).toBe('final_val_accuracy');
    expect(Number(tags['xp.metric_value'])).toBeCloseTo(answer.value, 10);
    const after = (await api(`runs/get?run_id=${runId}`)).run.info;
    expect(after.status).toBe(before.status);
    expect(after.end_time).toBe(before.end_time);
    // The MLmodel under the run: python_function around the Keras model, with a signature.
    const mlmodel = await execa(
      await ensureKerasVenv(),
      [
        '-c',
        `import mlflow, json; m = mlflow.models.get_model_info("models:/cats-vs-dogs/1"); print(json.dumps({"flavors": list(m.flavors), "inputs": m.signature.inputs.to_dict()}))`,
      ],
      { env: { MLFLOW_TRACKING_URI: server.url } },
    );
    const info = JSON.parse(mlmodel.stdout.trim().split('\n').at(-1) ?? '{}');
    expect(info.flavors).toContain('python_function');
    expect(info.inputs[0].name).toBe('image');
  }, 600_000);

  it('moves champion only to a version whose metric beats the champion', async () => {
    // The same run again: an equal metric does not beat the champion.
    const same = await xp(['register', runDir, 'cats-vs-dogs']);
    expect(same.exitCode, same.stderr).toBe(0);
    expect(same.stdout).toMatch(/alias champion stays on version 1/);
    // The checked export of the unchanged run is taken again, not rebuilt.
    expect(same.stderr).toMatch(/Keras export, checked on 6 images/);
    expect(same.stderr).not.toMatch(/Building the Keras file/);
    expect(await champion('cats-vs-dogs')).toBe('1');
    // The champion's recorded metric lowered: the next version beats it.
    await api('model-versions/set-tag', {
      method: 'POST',
      body: JSON.stringify({ name: 'cats-vs-dogs', version: '1', key: 'xp.metric_value', value: '0.01' }),
    });
    const better = await xp(['register', runDir, 'cats-vs-dogs']);
    expect(better.exitCode, better.stderr).toBe(0);
    expect(better.stdout).toMatch(/alias champion -> version 3 \(it beats version 1/);
    expect(await champion('cats-vs-dogs')).toBe('3');
  }, 600_000);

  it('tracking.register registers the best trial of a sweep when it ends', async () => {
    const file = path.join(tmp, 'sweep.yaml');
    fs.writeFileSync(
      file,
      `name: tiny-register-sweep
data: {train: ${shared}/train, validation: ${validation}, image_size: [96, 96], batch_size: 8, max_per_class: 8}
backbone: {name: mobilenet_v2, weights: nsfwjs, cut_layer: block_2_add}
head: {pooling: avg, units: [8]}
optimizer: {name: adam, learning_rate: 0.01}
training: {epochs: 1, steps_per_epoch: 2}
tracking: {register: sweep-model}
sweep: {head.dropout: [0.1, 0.5]}
`,
    );
    const r = await xp(['run', file, '--quiet']);
    expect(r.exitCode, `${r.stdout}\n${r.stderr}`).toBe(0);
    expect(r.stdout).toMatch(
      /Registered .* as sweep-model version 1 \(val_accuracy [0-9.]+\); alias champion -> version 1/,
    );
    const version = (await api('model-versions/get?name=sweep-model&version=1')).model_version;
    const { experiment_id } = (await api(`runs/get?run_id=${version.run_id}`)).run.info;
    const parents = await api('runs/search', {
      method: 'POST',
      body: JSON.stringify({ experiment_ids: [experiment_id] }),
    });
    const parent = parents.runs.find((p: { data: { tags: { key: string }[] } }) =>
      p.data.tags.some((t) => t.key === 'xp.best_run_id'),
    );
    const best = parent.data.tags.find((t: { key: string; value: string }) => t.key === 'xp.best_run_id').value;
    expect(version.run_id).toBe(best);
    expect(await champion('sweep-model')).toBe('1');
  }, 900_000);

  it('is served by mlflow models serve with the classes and probabilities of xp predict', async () => {
    const files = ['cats/cat.2000.png', 'cats/cat.2001.png', 'dogs/dog.2000.png', 'dogs/dog.2002.png'].map((f) =>
      path.join(validation, f),
    );
    const predicted = await xp(['predict', runDir, ...files, '--json']);
    expect(predicted.exitCode, predicted.stderr).toBe(0);
    const expected = predicted.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    const port = await freePort();
    // As a user runs it: the environment's bin first on PATH (MLflow starts uvicorn from there).
    const bin = path.dirname(await ensureKerasVenv());
    serving = spawn(
      path.join(bin, 'mlflow'),
      [
        'models',
        'serve',
        '-m',
        'models:/cats-vs-dogs@champion',
        '--env-manager',
        'local',
        '-p',
        String(port),
        '-h',
        '127.0.0.1',
      ],
      { env: { ...process.env, PATH: `${bin}:${process.env.PATH}`, MLFLOW_TRACKING_URI: server.url }, stdio: 'ignore' },
    );
    const base = `http://127.0.0.1:${port}`;
    const deadline = Date.now() + 240_000;
    while (
      !(await fetch(`${base}/ping`).then(
        (r) => r.ok,
        () => false,
      ))
    ) {
      expect(Date.now() < deadline, 'mlflow models serve answers /ping').toBe(true);
      await new Promise((r) => setTimeout(r, 1000));
    }
    const body = {
      dataframe_split: { columns: ['image'], data: files.map((f) => [fs.readFileSync(f).toString('base64')]) },
    };
    const r = await fetch(`${base}/invocations`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    expect(r.status).toBe(200);
    const { predictions } = (await r.json()) as { predictions: Record<string, number | string>[] };
    expect(predictions).toHaveLength(files.length);
    for (const [i, p] of predictions.entries()) {
      expect(p.class).toBe(expected[i].class);
      for (const cls of ['cats', 'dogs'])
        expect(Math.abs((p[cls] as number) - expected[i].probabilities[cls])).toBeLessThanOrEqual(1e-4);
    }
  }, 600_000);
});
