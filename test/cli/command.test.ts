// xp is a command, not a folder: installed as `npm link` installs it (links to the clone and its bin/xp.js) and run from
// a folder outside the repository, it writes run folders and the embedded MLflow store under that folder's ./runs.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { createClient } from '../../src/tracking/client.ts';
import { SERVER_TIMEOUT, startTestServer } from '../tracking/helpers.ts';

const root = path.resolve(import.meta.dirname, '../..');
const shared = path.resolve(root, '../shared/datasets/cats_and_dogs_filtered');
const tmp = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'xp-command-')));
// The layout `npm link` makes under npm's prefix: a link to the clone, and a relative link to its bin on the PATH.
const prefix = path.join(tmp, 'prefix');
const binDir = path.join(prefix, 'bin');
const work = path.join(tmp, 'work');
let server: Awaited<ReturnType<typeof startTestServer>> | undefined;

// The user's environment, without the variables that would choose the runs folder or the server for xp.
function userEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env))
    if (v !== undefined && !/^(XP_RUNS_DIR|MLFLOW_TRACKING_URI|MLFLOW_EXPERIMENT_NAME)$/.test(k)) env[k] = v;
  return { ...env, PATH: `${binDir}${path.delimiter}${env.PATH ?? ''}`, MLFLOW_HTTP_REQUEST_MAX_RETRIES: '1' };
}
// `xp` found on the PATH, as a shell finds it, in the user's folder.
const xp = (args: string[]) => execa('xp', args, { reject: false, cwd: work, env: userEnv(), extendEnv: false });

const runFolders = (runs: string, name: string) =>
  fs.existsSync(path.join(runs, name)) ? fs.readdirSync(path.join(runs, name)) : [];

beforeAll(() => {
  fs.mkdirSync(binDir, { recursive: true });
  fs.mkdirSync(path.join(prefix, 'lib', 'node_modules'), { recursive: true });
  fs.mkdirSync(work);
  fs.symlinkSync(root, path.join(prefix, 'lib', 'node_modules', 'xp'));
  fs.symlinkSync('../lib/node_modules/xp/bin/xp.js', path.join(binDir, 'xp'));
  fs.writeFileSync(
    path.join(work, 'tiny.yaml'),
    `name: command-tiny
data: {train: ${shared}/train, validation: ${shared}/validation, image_size: [96, 96], batch_size: 8, max_per_class: 16}
backbone: {name: mobilenet_v2, weights: nsfwjs, cut_layer: block_2_add}
head: {pooling: avg, units: [8]}
training: {epochs: 1, steps_per_epoch: 2, validation_steps: 2}
`,
  );
});

afterAll(async () => {
  await server?.stop();
  fs.rmSync(tmp, { recursive: true, force: true });
}, 30_000);

test('through a link on the PATH, from a folder outside the repository, xp checks and trains into ./runs there', async () => {
  const check = await xp(['check', 'tiny.yaml']);
  expect(check.exitCode, check.stderr).toBe(0);
  expect(check.stdout).toBe('tiny.yaml: ok (mobilenet_v2 cut at block_2_add)');

  const before = runFolders(path.join(root, 'runs'), 'command-tiny');
  const run = await xp(['run', 'tiny.yaml', '--no-track', '--quiet']);
  expect(run.exitCode, run.stderr + run.stdout).toBe(0);
  const [runId] = runFolders(path.join(work, 'runs'), 'command-tiny');
  expect(runId).toBeDefined();
  expect(fs.existsSync(path.join(work, 'runs', 'command-tiny', runId, 'model', 'model.json'))).toBe(true);
  expect(run.stdout).toContain(`output: ${path.join('runs', 'command-tiny', runId)}`);
  // Nothing lands in the installation.
  expect(runFolders(path.join(root, 'runs'), 'command-tiny')).toEqual(before);
}, 240_000);

test(
  'the embedded MLflow store is ./runs/mlflow of the current folder',
  async () => {
    // Started here on that store, so that this test stops it: xp run finds it there and logs to it.
    server = await startTestServer(path.join(work, 'runs', 'mlflow'));
    const run = await xp(['run', 'tiny.yaml', '--quiet']);
    expect(run.exitCode, run.stderr + run.stdout).toBe(0);
    expect(run.stdout).toContain(`MLflow: ${server.url} (embedded, store ${path.join('runs', 'mlflow')})`);

    const client = createClient(server.url);
    const experiment = await client.getExperimentByName('command-tiny');
    const [logged] = await client.searchRuns({ experimentIds: [experiment!.experiment_id] });
    expect(logged.info.status).toBe('FINISHED');
    expect(fs.existsSync(path.join(work, 'runs', 'mlflow', 'mlflow.db'))).toBe(true);
    expect(fs.readdirSync(path.join(work, 'runs', 'mlflow', 'artifacts')).length).toBeGreaterThan(0);

    const listed = await xp(['runs', 'command-tiny']);
    expect(listed.exitCode, listed.stderr).toBe(0);
    expect(listed.stdout).toMatch(/^[0-9a-f]{8} {2}command-tiny +FINISHED /m);
    expect(listed.stdout).toContain(`1 run(s) in ${server.url}`);
  },
  SERVER_TIMEOUT + 240_000,
);
