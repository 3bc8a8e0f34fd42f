import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadExperiment } from '../../src/config/load.ts';

const root = path.resolve(import.meta.dirname, '../..');
const dir = path.join(root, 'experiments');

describe('experiments/', () => {
  const files = fs.readdirSync(dir).filter((f) => f.endsWith('.yaml'));

  it('holds the reference, the quick start and a sweep example', () => {
    expect(files).toEqual(
      expect.arrayContaining(['cats-vs-dogs.yaml', 'quickstart.yaml', 'dropout-epochs-sweep.yaml']),
    );
  });

  for (const name of files) {
    it(`${name} starts with the yaml-language-server line and validates`, async () => {
      const file = path.join(dir, name);
      expect(fs.readFileSync(file, 'utf8').split('\n')[0]).toBe(
        '# yaml-language-server: $schema=../schema/experiment.schema.json',
      );
      const loaded = await loadExperiment(file);
      expect(loaded.trials.length).toBeGreaterThan(0);
    });
  }

  it('the reference experiment resolves to the Keras notebook settings, defaults filled in', async () => {
    const { trials } = await loadExperiment(path.join(dir, 'cats-vs-dogs.yaml'));
    const e = trials[0].experiment;
    expect(e.backbone).toMatchObject({
      name: 'inception_v3',
      weights: 'imagenet',
      cut_layer: 'mixed7',
      trainable: false,
      preprocessing: 'auto',
    });
    expect(e.head).toEqual({ pooling: 'flatten', units: [1024], activation: 'relu', dropout: 0.2 });
    expect(e.augmentation).toMatchObject({
      rotation_range: 40,
      zoom_range: 0.2,
      horizontal_flip: true,
      vertical_flip: false,
      fill_mode: 'nearest',
      cval: 0,
    });
    expect(e.training).toMatchObject({ epochs: 20, steps_per_epoch: 100, validation_steps: 50, seed: 42 });
    expect(e.data).toMatchObject({
      image_size: [150, 150],
      batch_size: 20,
      class_mode: 'auto',
      interpolation: 'nearest',
    });
    expect(e.tracking).toEqual({ enabled: true });
    expect(Object.isFrozen(e.head)).toBe(true);
  });

  it('the sweep example expands to 6 trials with readable names and distinct config hashes', async () => {
    const { trials, sweep } = await loadExperiment(path.join(dir, 'dropout-epochs-sweep.yaml'));
    expect(sweep?.method).toBe('grid');
    expect(trials.map((t) => t.name)).toEqual([
      'dropout=0.1 epochs=2',
      'dropout=0.1 epochs=4',
      'dropout=0.2 epochs=2',
      'dropout=0.2 epochs=4',
      'dropout=0.5 epochs=2',
      'dropout=0.5 epochs=4',
    ]);
    expect(new Set(trials.map((t) => t.configHash)).size).toBe(6);
    expect(trials[3].experiment.head.dropout).toBe(0.2);
    expect(trials[3].experiment.training.epochs).toBe(4);
  });

  it('--set pins a swept field, as Hydra overrides do: the sweep shrinks, and with every field pinned it is one run', async () => {
    const file = path.join(dir, 'dropout-epochs-sweep.yaml');
    const pinned = await loadExperiment(file, { set: ['head.dropout=0.1', 'training.epochs=2'] });
    expect(pinned.sweep).toBeUndefined();
    expect(pinned.trials).toHaveLength(1);
    expect(pinned.trials[0]).toMatchObject({ name: 'dropout-epochs-sweep', values: {} });
    expect(pinned.trials[0].experiment.head.dropout).toBe(0.1);
    expect(pinned.trials[0].experiment.training.epochs).toBe(2);

    const one = await loadExperiment(file, { set: ['head.dropout=0.3'] });
    expect(one.trials.map((t) => t.name)).toEqual(['epochs=2', 'epochs=4']);
    expect(one.trials.every((t) => t.experiment.head.dropout === 0.3)).toBe(true);
    expect(Object.keys(one.sweep!.parameters)).toEqual(['training.epochs']);
  });

  it('--set and --sweep override fields without editing the file', async () => {
    const file = path.join(dir, 'quickstart.yaml');
    const { trials } = await loadExperiment(file, {
      set: ['head.dropout=0.5', 'training.epochs=1'],
      sweep: ['optimizer.learning_rate=0.001,0.0001'],
    });
    expect(trials).toHaveLength(2);
    expect(trials.map((t) => t.experiment.optimizer.learning_rate)).toEqual([0.001, 0.0001]);
    expect(trials.every((t) => t.experiment.head.dropout === 0.5 && t.experiment.training.epochs === 1)).toBe(true);
    await expect(loadExperiment(file, { set: ['head.dropuot=0.5'] })).rejects.toThrow(
      /head.dropuot is not a known field; did you mean head.dropout/,
    );
  });

  it('a random sweep is seeded: the same file gives the same trials', async () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'xp-sweep-'));
    const file = path.join(tmp, 'random.yaml');
    fs.writeFileSync(
      file,
      [
        'name: random-sweep',
        `data: {train: ${path.join(root, '../shared/datasets/cats_and_dogs_filtered/train')}, validation: ${path.join(root, '../shared/datasets/cats_and_dogs_filtered/validation')}}`,
        'backbone: {name: mobilenet_v2, cut_layer: out_relu}',
        'sweep:',
        '  method: random',
        '  trials: 5',
        '  seed: 7',
        '  optimizer.learning_rate: {distribution: log_uniform, min: 0.00001, max: 0.01}',
        '  head.dropout: {distribution: uniform, min: 0.1, max: 0.5}',
        '  training.epochs: {distribution: int, min: 2, max: 6}',
      ].join('\n'),
    );
    const a = await loadExperiment(file);
    const b = await loadExperiment(file);
    expect(a.trials).toHaveLength(5);
    expect(a.trials.map((t) => t.values)).toEqual(b.trials.map((t) => t.values));
    for (const t of a.trials) {
      expect(t.experiment.optimizer.learning_rate).toBeGreaterThanOrEqual(0.00001);
      expect(t.experiment.optimizer.learning_rate).toBeLessThanOrEqual(0.01);
      expect(Number.isInteger(t.experiment.training.epochs)).toBe(true);
      expect(t.experiment.head.dropout).toBeGreaterThanOrEqual(0.1);
    }
    expect(new Set(a.trials.map((t) => t.configHash)).size).toBe(5);
  });
});
