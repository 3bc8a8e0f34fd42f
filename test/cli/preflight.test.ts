// `xp check` finds every config error `xp run` finds before training: both call the same preflight. This table
// holds the two together: each bad config fails in check and in run with the same lines, exit 2, and run starts
// nothing (no run folder, so no image was decoded).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { main } from '../../src/cli/main.ts';

const root = path.resolve(import.meta.dirname, '../..');
const shared = path.resolve(root, '../shared/datasets/cats_and_dogs_filtered');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'xp-preflight-'));
const runsDir = path.join(tmp, 'runs');
const previousRunsDir = process.env.XP_RUNS_DIR;
beforeAll(() => {
  process.env.XP_RUNS_DIR = runsDir;
  fs.writeFileSync(path.join(tmp, 'not-hdf5.h5'), 'this is not an HDF5 file');
  fs.writeFileSync(path.join(tmp, 'not-a-model.json'), '{"modelTopology": {"class_name": "Dense"}}');
  // Validation without the dogs class of train: labels would not line up.
  for (const dir of ['train/cats', 'train/dogs', 'validation/cats']) {
    fs.mkdirSync(path.join(tmp, 'mismatch', dir), { recursive: true });
    fs.copyFileSync(path.join(shared, 'train/cats/cat.1.jpg'), path.join(tmp, 'mismatch', dir, 'a.jpg'));
  }
});
afterAll(() => {
  if (previousRunsDir === undefined) delete process.env.XP_RUNS_DIR;
  else process.env.XP_RUNS_DIR = previousRunsDir;
  fs.rmSync(tmp, { recursive: true, force: true });
});
afterEach(() => vi.restoreAllMocks());

function experiment(name: string, backbone: string, extra = ''): string {
  const file = path.join(tmp, `${name}.yaml`);
  fs.writeFileSync(
    file,
    `name: ${name}
data: {train: ${shared}/train, validation: ${shared}/validation, image_size: [96, 96], batch_size: 4, max_per_class: 2}
backbone: ${backbone}
head: {pooling: avg, units: [4]}
training: {epochs: 1, steps_per_epoch: 1, validation_steps: 1}
${extra}`,
  );
  return file;
}

/** Exit code and stderr lines of `xp <args>`, run in this process. */
async function xp(args: string[]): Promise<{ code: number; lines: string[] }> {
  const lines: string[] = [];
  vi.spyOn(console, 'error').mockImplementation((...a: unknown[]) => void lines.push(a.join(' ')));
  vi.spyOn(console, 'log').mockImplementation(() => undefined);
  const code = await main(args);
  vi.restoreAllMocks();
  return { code, lines: lines.flatMap((l) => l.split('\n')) };
}

const inception = (more = '') => `{name: inception_v3, cut_layer: mixed7${more}}`;
const table: { name: string; file: () => string; args?: string[]; expected: RegExp }[] = [
  {
    name: 'cut layer with a typo',
    file: () => experiment('typo', '{name: inception_v3, cut_layer: mixd7}'),
    expected: /:3:43: backbone\.cut_layer "mixd7" is not a layer of inception_v3; did you mean mixed7\?/,
  },
  {
    name: 'trainable_from after the cut, by --set',
    file: () => experiment('after-cut', inception()),
    args: ['--set', 'backbone.trainable_from=mixed9'],
    expected:
      /^--set backbone\.trainable_from=mixed9: backbone\.trainable_from "mixed9" is not part of the backbone cut at mixed7/,
  },
  {
    name: 'trainable_from not a layer',
    file: () => experiment('not-a-layer', inception(', trainable_from: mixed_6')),
    expected: /:3:67: backbone\.trainable_from "mixed_6" is not a layer of inception_v3; did you mean mixed6\?/,
  },
  {
    name: 'missing .h5 weights',
    file: () => experiment('missing-h5', inception(', weights: missing.h5')),
    expected: /backbone\.weights: no such file .*missing\.h5/,
  },
  {
    name: 'an .h5 that is not HDF5',
    file: () => experiment('not-hdf5', inception(', weights: not-hdf5.h5')),
    expected: /backbone\.weights: .*not-hdf5\.h5 is not an HDF5 file/,
  },
  {
    name: 'a model.json that is not a model',
    file: () => experiment('not-a-model', '{name: mobilenet_v2, weights: not-a-model.json, cut_layer: out_relu}'),
    expected: /backbone\.weights: .*not-a-model\.json: its modelTopology is not a Keras model/,
  },
  {
    name: 'a missing data folder',
    file: () => experiment('no-data', inception()).replace(/$/, ''),
    args: ['--set', 'data.validation=/nonexistent/validation'],
    expected: /^--set data\.validation=\/nonexistent\/validation: data\.validation: no such directory/,
  },
  {
    name: 'validation folders lacking a class of train',
    file: () => experiment('mismatch', inception()),
    args: [
      '--set',
      `data.train=${path.join(tmp, 'mismatch/train')}`,
      '--set',
      `data.validation=${path.join(tmp, 'mismatch/validation')}`,
    ],
    expected: /^--set data\.validation=.*: data\.validation: Validation data lacks class "dogs" found in train/,
  },
  {
    name: 'images too small for the cut backbone',
    file: () => experiment('too-small', inception()),
    args: ['--set', 'data.image_size=[32,32]'],
    expected:
      /^--set data\.image_size=\[32,32\]: data\.image_size \[32, 32\] is too small for inception_v3 cut at mixed7: layer \w+ would output 0x0/,
  },
  {
    name: 'a sweep trial with trainable_from after the cut',
    file: () => experiment('sweep-trial', inception(), 'sweep:\n  backbone.trainable_from: [mixed5, mixed9]\n'),
    expected: /trial 2 \(trainable_from=mixed9\): backbone\.trainable_from "mixed9" is not part of the backbone cut/,
  },
  {
    name: 'a bad --set value',
    file: () => experiment('bad-set', inception()),
    args: ['--set', 'head.dropout=1.5'],
    expected: /^--set head\.dropout=1\.5: head\.dropout must be < 1 \(got 1\.5\)$/,
  },
  {
    name: 'class weights for a class the folders do not have',
    file: () => experiment('class-weight', inception()),
    args: ['--set', 'training.class_weight={cats: 1, dgos: 2}'],
    expected:
      /^--set "training\.class_weight=\{cats: 1, dgos: 2\}": training\.class_weight names a class the data does not have: "dgos"; did you mean dogs\?; the classes are cats, dogs$/,
  },
  {
    name: 'a class weight of 0',
    file: () => experiment('class-weight-zero', inception()),
    args: ['--set', 'training.class_weight={cats: 0}'],
    expected:
      /training\.class_weight must be balanced or a mapping of class folder names to weights > 0 \(got a mapping\)/,
  },
  {
    name: 'label smoothing above 0.5',
    file: () => experiment('smoothing', inception()),
    args: ['--set', 'training.label_smoothing=0.7'],
    expected: /^--set training\.label_smoothing=0\.7: training\.label_smoothing must be <= 0\.5 \(got 0\.7\)$/,
  },
  {
    name: 'early stopping on a metric the run does not compute',
    file: () => experiment('monitor', inception()),
    args: ['--set', 'training.early_stopping={monitor: val_auc}'],
    expected:
      /^--set "training\.early_stopping=\{monitor: val_auc\}": training\.early_stopping\.monitor is val_auc, which the run does not compute; add auc to training\.metrics$/,
  },
  {
    name: 'an unknown metric',
    file: () => experiment('metric-typo', inception()),
    args: ['--set', 'training.metrics=[aucc]'],
    expected:
      /training\.metrics\.0 must be one of auc, precision, recall, top_k_accuracy \(got "aucc"\); did you mean auc\?/,
  },
  {
    name: 'top_k_accuracy with two classes',
    file: () => experiment('top-k', inception()),
    args: ['--set', 'training.metrics=[auc, top_k_accuracy]'],
    expected:
      /training\.metrics: top_k_accuracy needs more than two classes \(the data has cats and dogs, one sigmoid output\)/,
  },
  {
    name: "a schedule field of another type, with the type's fields listed",
    file: () => experiment('schedule-field', inception(), 'optimizer: {schedule: {type: cosine, decay_rate: 0.5}}\n'),
    expected:
      /:6:38: optimizer\.schedule\.decay_rate is not a field of a cosine schedule; its fields are warmup_epochs, warmup_target, alpha$/,
  },
  {
    name: 'warmup beyond the epochs',
    file: () => experiment('warmup', inception()),
    args: ['--set', 'optimizer.schedule={type: cosine, warmup_epochs: 1, warmup_target: 0.01}'],
    expected: /optimizer\.schedule\.warmup_epochs must be below training\.epochs \(1\), which leaves no epoch to decay/,
  },
  {
    name: 'piecewise boundaries out of order',
    file: () =>
      experiment(
        'piecewise',
        inception(),
        'optimizer: {schedule: {type: piecewise, boundaries: [4, 2], values: [0.01, 0.001]}}\n',
      ),
    expected: /optimizer\.schedule\.boundaries must increase \(got 4, 2\)/,
  },
  {
    name: 'piecewise with a value too few',
    file: () =>
      experiment(
        'piecewise-values',
        inception(),
        'optimizer: {schedule: {type: piecewise, boundaries: [2, 4], values: [0.01, 0.001]}}\n',
      ),
    expected: /optimizer\.schedule\.values must hold one rate more than boundaries: 3 for 2 boundaries \(got 2\)/,
  },
  {
    name: 'plateau monitoring a metric the run does not compute',
    file: () => experiment('plateau', inception(), 'optimizer: {schedule: {type: plateau, monitor: val_recall}}\n'),
    expected:
      /optimizer\.schedule\.monitor is val_recall, which the run does not compute; add recall to training\.metrics/,
  },
  {
    name: 'a sweep above the trial limit',
    file: () => experiment('huge', inception()),
    args: ['--sweep', 'training.seed=1,2,3', '--max-trials', '2'],
    expected: /^--sweep: the sweep has 3 trials, above the limit of 2/,
  },
];

describe('xp check and xp run find the same config errors before training', () => {
  for (const row of table) {
    it(row.name, async () => {
      const file = row.file();
      const checked = await xp(['check', file, ...(row.args ?? [])]);
      const ran = await xp(['run', file, '--no-track', '--quiet', ...(row.args ?? [])]);
      expect(checked.code).toBe(2);
      expect(checked.lines).toContainEqual(expect.stringMatching(row.expected));
      expect(ran).toEqual(checked);
      expect(fs.existsSync(runsDir), 'xp run started a run').toBe(false);
    });
  }
});
