// Damaged backups: `xp run --resume` on a run folder whose backup was cut short says which folder and what to do,
// exits non-zero without a stack trace, and leaves the folder as it was.
import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, expect, test } from 'vitest';
import { loadExperiment } from '../../src/config/load.ts';
import { experimentHeader } from '../../src/train/run-folder.ts';
import { removeTempDirs, tempDir } from '../tracking/helpers.ts';

const root = path.resolve(import.meta.dirname, '../..');
const bin = path.join(root, 'bin', 'xp.js');
const shared = path.resolve(root, '../shared/datasets/cats_and_dogs_filtered');
const tmp = tempDir('hostile-resume');
const runs = path.join(tmp, 'runs');

afterAll(removeTempDirs, 30_000);

test('a backup cut short is named with a way out, not a stack trace, and its folder is left as it was', async () => {
  const file = path.join(tmp, 'cut.yaml');
  fs.writeFileSync(
    file,
    `name: cut
data: {train: ${shared}/train, validation: ${shared}/validation, image_size: [96, 96], batch_size: 8, max_per_class: 12}
backbone: {name: mobilenet_v2, weights: nsfwjs, cut_layer: block_2_add}
head: {pooling: avg, units: [8]}
optimizer: {name: adam, learning_rate: 0.001}
training: {epochs: 3, steps_per_epoch: 2, validation_steps: 2}
`,
  );
  const [trial] = (await loadExperiment(file)).trials;
  const runDir = path.join(runs, 'cut', '20260101-000000-dead');
  fs.mkdirSync(path.join(runDir, 'backup'), { recursive: true });
  fs.writeFileSync(path.join(runDir, 'experiment.yaml'), `${experimentHeader(trial.configHash, file)}\nname: cut\n`);
  const weights = [
    { shape: [24, 8], dtype: 'float32', offset: 0 },
    { shape: [8], dtype: 'float32', offset: 768 },
  ];
  fs.writeFileSync(
    path.join(runDir, 'backup', 'state.json'),
    JSON.stringify({ format: 1, epoch: 1, history: [], checkpoint: {}, tensors: { weights, optimizer: [] } }),
  );
  fs.writeFileSync(path.join(runDir, 'backup', 'tensors.bin'), Buffer.alloc(500)); // the write stopped part-way
  const before = fs.readdirSync(runDir).sort();

  const r = await execa(process.execPath, [bin, 'run', file, '--resume', '--no-track', '--quiet'], {
    reject: false,
    cwd: root,
    env: { XP_RUNS_DIR: runs },
  });
  expect(r.exitCode).toBe(1);
  expect(r.stdout).toContain(`Resuming cut after epoch 1 of 3`);
  expect(r.stderr).toContain(
    `${path.join(runDir, 'backup')} holds a damaged backup (tensors.bin has 500 bytes where state.json describes 800)`,
  );
  expect(r.stderr).toContain(
    'remove that folder: xp run --resume then continues an older interrupted run of this config, or trains it from the start',
  );
  expect(r.stderr).not.toMatch(/\n\s+at /);
  expect(fs.readdirSync(runDir).sort()).toEqual(before);
  expect(fs.readFileSync(path.join(runDir, 'experiment.yaml'), 'utf8')).toBe(
    `${experimentHeader(trial.configHash, file)}\nname: cut\n`,
  );
}, 120_000);

test('a backup whose state file is damaged or missing stops --resume, instead of training from the start', async () => {
  const file = path.join(tmp, 'unreadable.yaml');
  fs.writeFileSync(
    file,
    `name: unreadable
data: {train: ${shared}/train, validation: ${shared}/validation, image_size: [96, 96], batch_size: 8, max_per_class: 12}
backbone: {name: mobilenet_v2, weights: nsfwjs, cut_layer: block_2_add}
head: {pooling: avg, units: [8]}
optimizer: {name: adam, learning_rate: 0.001}
training: {epochs: 3, steps_per_epoch: 2, validation_steps: 2}
`,
  );
  const [trial] = (await loadExperiment(file)).trials;
  const cases: [string, (backup: string) => void, string][] = [
    [
      'cut',
      (b) => fs.writeFileSync(path.join(b, 'state.json'), '{"format": 1, "epoch": 2, "hist'),
      'state.json is not valid JSON',
    ],
    ['gone', (b) => fs.rmSync(path.join(b, 'state.json')), 'state.json is missing'],
    ['empty', (b) => fs.rmSync(path.join(b, 'tensors.bin')), 'tensors.bin is missing'],
  ];
  for (const [id, damage, reason] of cases) {
    const dir = path.join(runs, 'unreadable');
    fs.rmSync(dir, { recursive: true, force: true });
    const runDir = path.join(dir, `20260101-000000-${id}`);
    fs.mkdirSync(path.join(runDir, 'backup'), { recursive: true });
    fs.writeFileSync(path.join(runDir, 'experiment.yaml'), `${experimentHeader(trial.configHash, file)}\nname: x\n`);
    fs.writeFileSync(
      path.join(runDir, 'backup', 'state.json'),
      JSON.stringify({ format: 1, epoch: 2, history: [], checkpoint: {}, tensors: { weights: [], optimizer: [] } }),
    );
    fs.writeFileSync(path.join(runDir, 'backup', 'tensors.bin'), Buffer.alloc(0));
    damage(path.join(runDir, 'backup'));
    const before = fs.readdirSync(path.join(runDir, 'backup')).sort();

    for (const extra of [[], ['--dry-run']]) {
      const r = await execa(process.execPath, [bin, 'run', file, '--resume', '--no-track', '--quiet', ...extra], {
        reject: false,
        cwd: root,
        env: { XP_RUNS_DIR: runs },
      });
      expect(r.exitCode, `${id} ${extra}: ${r.stdout}`).toBe(1);
      expect(r.stdout).not.toContain('Nothing to resume');
      expect(r.stderr).toContain(`${path.join(runDir, 'backup')} holds a damaged backup (${reason}`);
      expect(r.stderr).toContain('remove that folder');
      expect(r.stderr).not.toMatch(/\n\s+at /);
    }
    // Nothing trained, nothing changed.
    expect(fs.readdirSync(dir)).toEqual([path.basename(runDir)]);
    expect(fs.readdirSync(path.join(runDir, 'backup')).sort()).toEqual(before);
  }
}, 240_000);
