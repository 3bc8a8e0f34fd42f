// Ctrl-C in each phase of a run, as a user meets it: real `xp` processes, real (tiny) training. What an interrupted
// run saves and what it says of it must describe each other: the printed result, its epoch, and `xp evaluate` of
// the saved model.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { until } from './process.ts';

const root = path.resolve(import.meta.dirname, '../..');
const bin = path.join(root, 'bin', 'xp.js');
const shared = path.resolve(root, '../shared/datasets/cats_and_dogs_filtered');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'xp-interrupt-'));
const runs = path.join(tmp, 'runs');
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

// A small copy of the data set: 60 validation images per class, so that scoring and `xp evaluate` take seconds.
const validation = path.join(tmp, 'data', 'validation');
beforeAll(() => {
  for (const label of ['cats', 'dogs']) {
    fs.mkdirSync(path.join(validation, label), { recursive: true });
    const names = fs
      .readdirSync(path.join(shared, 'validation', label))
      .sort()
      .slice(0, 60);
    for (const name of names)
      fs.copyFileSync(path.join(shared, 'validation', label, name), path.join(validation, label, name));
  }
});

/** Epochs long enough to be interrupted in the middle; every epoch validates on the whole (small) set. */
function experiment(name: string, steps: number, epochs = 3): string {
  const file = path.join(tmp, `${name}.yaml`);
  fs.writeFileSync(
    file,
    `name: ${name}
data: {train: ${shared}/train, validation: ${validation}, image_size: [64, 64], batch_size: 4, max_per_class: 8}
backbone: {name: mobilenet_v2, weights: nsfwjs, cut_layer: block_2_add}
head: {pooling: avg, units: [8], dropout: 0.2}
optimizer: {name: adam, learning_rate: 0.01}
training: {epochs: ${epochs}, steps_per_epoch: ${steps}}
`,
  );
  return file;
}

const xp = (args: string[]) =>
  execa(process.execPath, [bin, ...args], { reject: false, cwd: root, env: { XP_RUNS_DIR: runs } });

const runDirOf = (name: string) => {
  const [id] = fs.readdirSync(path.join(runs, name));
  return path.join(runs, name, id);
};

/** `xp evaluate` of the run's saved model on the validation folder: accuracy and correct count. */
async function evaluated(runDir: string): Promise<{ accuracy: number; correct: number }> {
  const r = await xp(['evaluate', runDir, validation, '--json']);
  expect(r.exitCode, r.stderr).toBe(0);
  const { accuracy, confusion_matrix } = JSON.parse(r.stdout) as { accuracy: number; confusion_matrix: number[][] };
  return { accuracy, correct: confusion_matrix.reduce((a, row, i) => a + row[i], 0) };
}

describe('Ctrl-C in the middle of epoch 2', () => {
  test('saves the weights of epoch 1, as the backup holds them: the result, its label and the model agree', async () => {
    const run = xp(['run', experiment('mid-epoch', 300), '--no-track', '-q']);
    await until(run, 'Epoch 2/');
    run.kill('SIGINT');
    const r = await run;
    expect(r.exitCode, r.stderr).toBe(130);
    expect(r.stderr).not.toMatch(/\n\s+at /);
    const runDir = runDirOf('mid-epoch');
    const history = JSON.parse(fs.readFileSync(path.join(runDir, 'history.json'), 'utf8'));
    expect(history, r.stdout).toHaveLength(1);
    const printed = /result: val_accuracy (\d\.\d{4}) .* saved weights of epoch (\S+)\n/.exec(r.stdout);
    expect(printed, r.stdout).not.toBeNull();
    expect(printed![2]).toBe('1');
    // Epoch 1 validated on the whole set: its figure is the saved model's.
    expect(printed![1]).toBe(history[0].val_accuracy.toFixed(4));
    const confusion = JSON.parse(fs.readFileSync(path.join(runDir, 'confusion_matrix.json'), 'utf8'));
    expect(confusion.epoch).toBe(1);
    const model = await evaluated(runDir);
    expect(model.accuracy.toFixed(4)).toBe(printed![1]);
    expect(model.correct).toBe(confusion.matrix.reduce((a: number, row: number[], i: number) => a + row[i], 0));
    // The backup the run left resumes from the same epoch.
    expect(JSON.parse(fs.readFileSync(path.join(runDir, 'backup', 'state.json'), 'utf8')).epoch).toBe(1);
  }, 240_000);

  test('without a backup, the result says the saved weights are part of epoch 2, and the model is those weights', async () => {
    const run = xp(['run', experiment('mid-epoch-no-backup', 300), '--no-track', '-q', '--no-backup']);
    await until(run, 'Epoch 2/');
    run.kill('SIGINT');
    const r = await run;
    expect(r.exitCode, r.stderr).toBe(130);
    const runDir = runDirOf('mid-epoch-no-backup');
    const printed = /result: val_accuracy (\d\.\d{4}) .* saved weights of epoch 2, interrupted after step (\d+)\n/.exec(
      r.stdout,
    );
    expect(printed, r.stdout).not.toBeNull();
    expect(Number(printed![2])).toBeGreaterThan(0);
    expect(Number(printed![2])).toBeLessThan(300);
    const confusion = JSON.parse(fs.readFileSync(path.join(runDir, 'confusion_matrix.json'), 'utf8'));
    expect([confusion.epoch, confusion.interrupted_after_step]).toEqual([2, Number(printed![2])]);
    const model = await evaluated(runDir);
    expect(model.accuracy.toFixed(4)).toBe(printed![1]);
  }, 240_000);
});

/** The whole data set at full size: decoding it and its validation backbone pass take seconds each. */
function large(name: string): string {
  const file = path.join(tmp, `${name}.yaml`);
  fs.writeFileSync(
    file,
    `name: ${name}
data: {train: ${shared}/train, validation: ${shared}/validation, image_size: [150, 150], batch_size: 20}
backbone: {name: mobilenet_v2, weights: nsfwjs, cut_layer: block_2_add}
head: {pooling: avg, units: [8]}
optimizer: {name: adam, learning_rate: 0.001}
training: {epochs: 2, steps_per_epoch: 5}
`,
  );
  return file;
}

/**
 * Ctrl-C (once, or twice: the second once the first is acknowledged) when stdout shows `phase`, before training
 * begins: the run ends KILLED at once, without a run folder, and nothing of the phases after it is printed.
 */
function interruptedBeforeTraining(phase: string, notReached: string) {
  for (const signals of [1, 2]) {
    test(`${signals === 1 ? 'once' : 'twice'}: it stops there, the run ends KILLED without a run folder`, async () => {
      const name = `${phase.trim().toLowerCase()}-${signals}`;
      const run = xp(['run', large(name), '--no-track', '-q']);
      await until(run, phase);
      const sent = Date.now();
      run.kill('SIGINT');
      if (signals === 2) {
        await until(run, 'Interrupted:');
        run.kill('SIGINT');
      }
      const r = await run;
      const took = Date.now() - sent;
      expect(r.exitCode, r.stderr).toBe(130);
      expect(r.stderr).not.toMatch(/\n\s+at /);
      expect(r.stdout).not.toContain(notReached);
      expect(r.stdout).toContain(`Run KILLED: ${name} (interrupted before training began)`);
      expect(fs.existsSync(path.join(runs, name))).toBe(false);
      expect(took, `${took} ms from Ctrl-C to the end`).toBeLessThan(20_000);
    }, 240_000);
  }
}

describe('Ctrl-C while images decode', () => {
  // No backbone is loaded.
  interruptedBeforeTraining('Decoding ', 'Backbone ');
});

describe("Ctrl-C during the frozen backbone's pass over the validation images", () => {
  // The pass follows the backbone's line and precedes the first epoch; it is heard between its calls.
  interruptedBeforeTraining('Backbone ', 'Epoch 1/');
});

describe('Ctrl-C while the backup of epoch 1 is written', () => {
  for (const signals of [1, 2]) {
    test(`${signals === 1 ? 'once' : 'twice'}: the backup is whole, the model is epoch 1's, and --resume continues from it`, async () => {
      const name = `backup-write-${signals}`;
      // A large dense kernel (24x24x24 features to 1024 units, with RMSprop's slot): a backup of about 110 MB, still
      // being written when epoch 2 begins.
      const file = path.join(tmp, `${name}.yaml`);
      fs.writeFileSync(
        file,
        `name: ${name}
data: {train: ${shared}/train, validation: ${validation}, image_size: [96, 96], batch_size: 4, max_per_class: 8}
backbone: {name: mobilenet_v2, weights: nsfwjs, cut_layer: block_2_add}
head: {pooling: flatten, units: [1024], dropout: 0.2}
optimizer: {name: rmsprop, learning_rate: 0.0001}
training: {epochs: 3, steps_per_epoch: 30}
`,
      );
      const run = xp(['run', file, '--no-track', '-q']);
      await until(run, 'Epoch 2/');
      run.kill('SIGINT');
      if (signals === 2) {
        await until(run, 'Interrupted:');
        run.kill('SIGINT');
      }
      const r = await run;
      expect(r.exitCode, r.stderr).toBe(130);
      expect(r.stderr).not.toMatch(/\n\s+at /);
      expect(r.stdout).toMatch(/saved weights of epoch 1\n/);
      const runDir = runDirOf(name);
      expect(fs.readdirSync(runDir).filter((f) => f.startsWith('backup'))).toEqual(['backup']);
      const state = JSON.parse(fs.readFileSync(path.join(runDir, 'backup', 'state.json'), 'utf8'));
      expect(state.epoch).toBe(1);
      const entries = [...state.tensors.weights, ...state.tensors.optimizer] as { shape: number[]; offset: number }[];
      const described = Math.max(...entries.map((e) => e.offset + e.shape.reduce((a, b) => a * b, 1) * 4));
      expect(fs.statSync(path.join(runDir, 'backup', 'tensors.bin')).size).toBe(described);
      expect(described).toBeGreaterThan(100e6);

      const resumed = await xp(['run', file, '--no-track', '-q', '--resume']);
      expect(resumed.exitCode, resumed.stderr).toBe(0);
      expect(resumed.stdout).toContain(`Resuming ${name} after epoch 1 of 3`);
      expect(resumed.stdout).toMatch(/saved weights of epoch 3\n/);
    }, 360_000);
  }
});
