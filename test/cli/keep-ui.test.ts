// `xp run --keep-ui`: the embedded MLflow server outlives the command, so the links it printed open; `xp ui --stop`
// ends it. Real processes, a real (tiny) run, the real embedded server.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, expect, test } from 'vitest';
import { isHealthy, stopKeptServer } from '../../src/tracking/server.ts';
import { shared } from '../train/helpers.ts';

const root = path.resolve(import.meta.dirname, '../..');
const bin = path.join(root, 'bin', 'xp.js');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'xp-keep-ui-'));
const runs = path.join(tmp, 'runs');
afterAll(async () => {
  await stopKeptServer(path.join(runs, 'mlflow')); // whatever the test left up
  fs.rmSync(tmp, { recursive: true, force: true });
}, 60_000);

const env = { XP_RUNS_DIR: runs, MLFLOW_TRACKING_URI: '' };
const xp = (args: string[]) =>
  execa(process.execPath, [bin, ...args], { reject: false, cwd: tmp, env, extendEnv: true });

test('the embedded server stays up after `xp run --keep-ui`, its run page opens, and `xp ui --stop` ends it', async () => {
  const file = path.join(tmp, 'keep.yaml');
  fs.writeFileSync(
    file,
    `name: keep-ui
data: {train: ${shared}/train, validation: ${shared}/validation, image_size: [64, 64], batch_size: 4, max_per_class: 4}
backbone: {name: mobilenet_v2, weights: nsfwjs, cut_layer: block_2_add}
head: {pooling: avg, units: [4]}
training: {epochs: 1, steps_per_epoch: 1, validation_steps: 1}
`,
  );
  const r = await xp(['run', file, '--keep-ui', '--quiet', '--no-backup']);
  expect(r.exitCode, r.stderr).toBe(0);
  const url = /stays up at (http:\/\/127\.0\.0\.1:\d+)/.exec(r.stdout)?.[1];
  expect(url, r.stdout).toBeDefined();
  // The command has ended; the server answers, and so does the run's page the summary linked.
  expect(await isHealthy(url!)).toBe(true);
  const link = new RegExp(`${url}/#/experiments/\\d+/runs/\\w+`).exec(r.stdout)?.[0];
  expect(link, r.stdout).toBeDefined();
  expect((await fetch(link!.replace('/#/', '/'))).status).toBeLessThan(500);

  const stopped = await xp(['ui', '--stop']);
  expect(stopped.stdout).toContain(`Stopped the MLflow server at ${url}`);
  expect(await isHealthy(url!)).toBe(false);
  expect((await xp(['ui', '--stop'])).stdout).toContain('No MLflow server runs on this store.');
}, 300_000);
