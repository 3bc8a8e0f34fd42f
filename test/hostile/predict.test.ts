// `xp predict` and `xp evaluate` on what a user gives them: folders of images (predicted as Keras users predict a
// directory), things that are not images, and damaged run folders: files missing or replaced by a file or a folder,
// model files cut short, garbled or disagreeing with each other. Each ends with a result or one clear error naming
// the file, never a stack trace or a hang.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-node';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeSavedModel } from '../../src/model/saved-run.ts';

const root = path.resolve(import.meta.dirname, '../..');
const dataset = path.resolve(root, '../shared/datasets/cats_and_dogs_filtered');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'xp-hostile-predict-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const xp = (args: string[]) =>
  execa(process.execPath, [path.join(root, 'bin', 'xp.js'), ...args], {
    reject: false,
    cwd: tmp,
    env: { XP_RUNS_DIR: path.join(tmp, 'runs') },
    timeout: 120_000,
  });

/** One `xp <command>: ...` error and its hint, no stack trace. */
function expectOneCleanError(r: { exitCode?: number; stderr: string }, pattern: RegExp) {
  expect(r.exitCode, r.stderr).not.toBe(0);
  expect(r.stderr).toMatch(pattern);
  expect(r.stderr).not.toMatch(/\n\s+at /);
  const lines = r.stderr
    .trim()
    .split('\n')
    .filter((l) => !/^(WARNING: All log messages before absl|[IW]\d{4} )/.test(l));
  expect(lines.length, r.stderr).toBeLessThanOrEqual(2);
}

const good = path.join(tmp, 'runs', 'good');
const images = path.join(tmp, 'photos');
beforeAll(async () => {
  const model = tf.sequential({
    layers: [tf.layers.flatten({ inputShape: [8, 8, 3] }), tf.layers.dense({ units: 1, activation: 'sigmoid' })],
  });
  await writeSavedModel(good, model, {
    class_names: ['cats', 'dogs'],
    image_size: [8, 8],
    preprocessing: 'rescale',
    interpolation: 'bilinear',
  });
  model.dispose();
  // A folder as a user has one: images at the top and in a subfolder, a hidden file, a note, an empty folder.
  fs.mkdirSync(path.join(images, 'more'), { recursive: true });
  fs.mkdirSync(path.join(images, 'nothing'));
  const cat = (n: number) => path.join(dataset, `validation/cats/cat.${n}.jpg`);
  fs.copyFileSync(cat(2000), path.join(images, 'b.jpg'));
  fs.copyFileSync(cat(2001), path.join(images, 'a.JPG'));
  fs.copyFileSync(cat(2002), path.join(images, 'more', 'c.jpeg'));
  fs.copyFileSync(cat(2003), path.join(images, '.hidden.jpg'));
  fs.writeFileSync(path.join(images, 'notes.txt'), 'not an image');
});

const predicted = (stdout: string) => stdout.split('\n').filter((l) => /\s(cats|dogs)\s+0\.\d{4}$/.test(l));

describe('xp predict of a folder', () => {
  it('predicts every image in it and below it, in order, and nothing else', async () => {
    const r = await xp(['predict', good, images]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stderr).not.toMatch(/unsupported image format|warning/);
    expect(predicted(r.stdout).map((l) => l.split(/\s+/)[0])).toEqual(
      ['a.JPG', 'b.jpg', 'more/c.jpeg'].map((f) => path.join(images, f)),
    );
  });

  it('mixes with files given by name; --json names each file', async () => {
    const r = await xp(['predict', good, path.join(images, 'more'), path.join(images, 'b.jpg'), '--json']);
    expect(r.exitCode, r.stderr).toBe(0);
    const files = r.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l).file);
    expect(files).toEqual([path.join(images, 'more', 'c.jpeg'), path.join(images, 'b.jpg')]);
  });

  it('a folder without images is a warning beside the others, and an error alone', async () => {
    const both = await xp(['predict', good, path.join(images, 'nothing'), path.join(images, 'b.jpg')]);
    expect(both.exitCode).toBe(1);
    expect(both.stderr).toContain(`warning: the folder ${path.join(images, 'nothing')} holds no jpg/`);
    expect(predicted(both.stdout)).toHaveLength(1);
    expectOneCleanError(await xp(['predict', good, path.join(images, 'nothing')]), /no images to predict in .*nothing/);
  });

  it('a named pipe is refused at once instead of read forever', async () => {
    const fifo = path.join(tmp, 'pipe.jpg');
    execFileSync('mkfifo', [fifo]);
    expectOneCleanError(await xp(['predict', good, fifo]), /pipe\.jpg is neither an image file nor a folder/);
  });
});

describe('xp predict and xp evaluate on a run folder that is not whole', () => {
  const image = path.join(dataset, 'validation/cats/cat.2000.jpg');
  let runs = 0;
  const damagedRun = (damage: (runDir: string) => void) => {
    const dir = path.join(tmp, 'runs', `damaged-${++runs}`);
    fs.cpSync(good, dir, { recursive: true });
    damage(dir);
    return dir;
  };
  /** Replaces `name` in the run folder by an empty file, an empty folder, or nothing. */
  const replace = (name: string, by: 'file' | 'folder' | 'nothing') => (runDir: string) => {
    const target = path.join(runDir, name);
    fs.rmSync(target, { recursive: true });
    if (by === 'file') fs.writeFileSync(target, '');
    if (by === 'folder') fs.mkdirSync(target);
  };
  /** Rewrites `name` in the run folder with `change` of its text. */
  const edit = (name: string, change: (text: string) => string) => (runDir: string) => {
    const file = path.join(runDir, name);
    fs.writeFileSync(file, change(fs.readFileSync(file, 'utf8')));
  };
  const cases: [string, (runDir: string) => void, RegExp][] = [
    ['a run folder that does not exist', replace('.', 'nothing'), /has no trained model/],
    ['a file given as the run folder', replace('.', 'file'), /has no trained model/],
    ['a file where model/ should be', replace('model', 'file'), /model\/xp\.json cannot be read \(ENOTDIR\)/],
    [
      'a folder where xp.json should be',
      replace('model/xp.json', 'folder'),
      /model\/xp\.json cannot be read \(EISDIR\)/,
    ],
    ['a missing model.json', replace('model/model.json', 'nothing'), /model\/model\.json is missing/],
    ['a folder where model.json should be', replace('model/model.json', 'folder'), /model\/model\.json: EISDIR/],
    ['a missing weights.bin', replace('model/weights.bin', 'nothing'), /"weights\.bin", which does not exist/],
    [
      'a folder where weights.bin should be',
      replace('model/weights.bin', 'folder'),
      /"weights\.bin", which is not a regular file/,
    ],
    ['an empty xp.json', replace('model/xp.json', 'file'), /model\/xp\.json is not valid JSON/],
    ['a missing xp.json (the class names)', replace('model/xp.json', 'nothing'), /model\/xp\.json is missing/],
    [
      'an xp.json without class names',
      edit('model/xp.json', (text) => text.replace('"class_names"', '"classes"')),
      /model\/xp\.json has no valid class_names/,
    ],
    [
      'an xp.json with three class names for a model of one output',
      edit('model/xp.json', (text) => text.replace('"dogs"', '"dogs", "birds"')),
      /model\/model\.json does not match model\/xp\.json: the model has 1 output unit, the 3 classes/,
    ],
    [
      'an xp.json whose image size is not the model input',
      edit('model/xp.json', (text) => text.replace(/"image_size": \[\s*8,\s*8\s*\]/, '"image_size": [9, 9]')),
      /model\/model\.json does not match model\/xp\.json: the model takes input \[8,8,3\]/,
    ],
    ['a garbage model.json', edit('model/model.json', () => '{"modelTopology": {"cl'), /model\.json: not valid JSON/],
    [
      'a model.json that is JSON but no model',
      edit('model/model.json', () => '[1, 2, 3]'),
      /model\.json: no modelTopology/,
    ],
    [
      'a model.json whose topology names a layer class tfjs does not have',
      edit('model/model.json', (text) => text.replace('"Dense"', '"Densest"')),
      /model\/model\.json does not load as a tfjs model \(Unknown layer: Densest\)/,
    ],
    [
      'a truncated weights.bin',
      (runDir) => fs.truncateSync(path.join(runDir, 'model/weights.bin'), 100),
      /the weight file weights\.bin has 100 bytes, the manifest's weights .* need 772/,
    ],
    [
      'a weights.bin with bytes beyond the manifest',
      (runDir) => fs.appendFileSync(path.join(runDir, 'model/weights.bin'), Buffer.alloc(64)),
      /the weight file weights\.bin has 836 bytes, the manifest's weights .* need 772/,
    ],
  ];
  for (const [what, damage, message] of cases) {
    it(`${what}: one clear error from predict and from evaluate`, async () => {
      const dir = damagedRun(damage);
      expectOneCleanError(await xp(['predict', dir, image]), message);
      expectOneCleanError(await xp(['evaluate', dir, path.join(dataset, 'validation')]), message);
    });
  }

  it('evaluate on a folder that is not there, or is a file, says so', async () => {
    expectOneCleanError(await xp(['evaluate', good, path.join(tmp, 'absent')]), /absent does not exist\n.*subfolder/);
    expectOneCleanError(await xp(['evaluate', good, image]), /cat\.2000\.jpg is not a folder\n.*subfolder/);
  });
});
