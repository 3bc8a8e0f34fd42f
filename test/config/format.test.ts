// `xp fmt`'s canonical YAML: key order from the schema, comments and section breaks kept with their keys, idempotent.
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { describe, expect, it } from 'vitest';
import { formatText, MAX_FLOW_LINE } from '../../src/config/format.ts';
import { schema } from '../../src/config/validate.ts';

const root = path.resolve(import.meta.dirname, '../..');
const topKeys = (text: string) => Object.keys(YAML.parse(text));

describe('formatText', () => {
  it('orders keys as the schema lists its properties, at every level, unknown keys last in their own order', () => {
    const text = [
      'zeta: 1',
      'training: {seed: 1, early_stopping: {patience: 2, monitor: val_loss}, epochs: 3}',
      'alpha: 2',
      'backbone: {cut_layer: mixed7, name: inception_v3}',
      'name: x',
      '',
    ].join('\n');
    const out = formatText(text);
    const schemaOrder = Object.keys(schema.properties);
    expect(topKeys(out)).toEqual([
      ...schemaOrder.filter((k) => ['name', 'backbone', 'training'].includes(k)),
      'zeta',
      'alpha',
    ]);
    expect(out).toContain('training: {epochs: 3, seed: 1, early_stopping: {monitor: val_loss, patience: 2}}');
    expect(out).toContain('backbone: {name: inception_v3, cut_layer: mixed7}');
  });

  it('keeps the order of swept fields, and orders the sweep settings and each distribution', () => {
    const text = [
      'name: x',
      'sweep:',
      '  training.epochs: [2, 4]',
      '  head.dropout: [0.1, 0.5]',
      '  method: grid',
      '  parameters:',
      '    optimizer.learning_rate: {max: 1e-2, min: 1e-4, distribution: log_uniform}',
      '    head.units: [[8], [16]]',
      '',
    ].join('\n');
    const out = formatText(text);
    expect(out).toBe(
      [
        'name: x',
        'sweep:',
        '  method: grid',
        '  parameters:',
        '    optimizer.learning_rate: {distribution: log_uniform, min: 1e-4, max: 1e-2}',
        '    head.units: [[8], [16]]',
        '  training.epochs: [2, 4]',
        '  head.dropout: [0.1, 0.5]',
        '',
      ].join('\n'),
    );
  });

  it('moves line comments, trailing comments and blank lines with their keys; the file header stays on top', () => {
    const text = [
      '# yaml-language-server: $schema=../schema/experiment.schema.json',
      '# what this experiment is',
      'training: {epochs: 3} # short',
      '',
      '# the data',
      'data: # where the images are',
      '  validation: b',
      '  # the training folder',
      '  train: a',
      '# the name comes first',
      'name: x',
      '',
    ].join('\n');
    expect(formatText(text)).toBe(
      [
        '# yaml-language-server: $schema=../schema/experiment.schema.json',
        '# what this experiment is',
        '# the name comes first',
        'name: x',
        '',
        '# the data',
        'data: # where the images are',
        '  # the training folder',
        '  train: a',
        '  validation: b',
        '',
        'training: {epochs: 3} # short',
        '',
      ].join('\n'),
    );
  });

  it('writes 2-space indents and long flow collections in block style; short flow collections stay', () => {
    const long = Array.from({ length: 12 }, (_, i) => `rotation_range: ${i}`).join(', ');
    expect(long.length).toBeGreaterThan(MAX_FLOW_LINE);
    const out = formatText(
      `name: x\ndata:\n    train: a\n    image_size: [96, 96]\nhead: {units: [8], pooling: avg}\naugmentation: {horizontal_flip: true, width_shift_range: 0.25, height_shift_range: 0.25, zoom_range: 0.5, fill_mode: nearest}\n`,
    );
    expect(out).toContain('data:\n  train: a\n  image_size: [96, 96]\n');
    expect(out).toContain('head: {pooling: avg, units: [8]}\n');
    expect(out).toContain(
      'augmentation:\n  width_shift_range: 0.25\n  height_shift_range: 0.25\n  zoom_range: 0.5\n  horizontal_flip: true\n  fill_mode: nearest\n',
    );
    for (const line of out.split('\n')) expect(line.length).toBeLessThanOrEqual(MAX_FLOW_LINE);
  });

  it('is idempotent and keeps the data, on every file in experiments/ and on a messy file', () => {
    const files = fs
      .readdirSync(path.join(root, 'experiments'))
      .map((f) => fs.readFileSync(path.join(root, 'experiments', f), 'utf8'));
    const messy =
      'sweep:\n  head.dropout:\n  - 0.1\n  - 0.2\n  # after dropout\n# before data\ndata:\n\n   train: a   # t\n   validation: b\n\n\n\nname: "q"\n# the end\n';
    for (const text of [...files, messy]) {
      const once = formatText(text);
      expect(formatText(once)).toBe(once);
      expect(YAML.parse(once)).toEqual(YAML.parse(text));
    }
    expect(formatText(messy)).toBe(
      'name: "q"\n# before data\ndata:\n  train: a # t\n  validation: b\nsweep:\n  head.dropout:\n    - 0.1\n    - 0.2\n  # after dropout\n\n# the end\n',
    );
  });

  it('keeps each number, boolean and null spelled as written', () => {
    const out = formatText(
      'optimizer: {rho: +0.9, learning_rate: 0.0000001, epsilon: 1E-7}\nbackbone: {trainable: True}\nname: x\ntracking:\n',
    );
    expect(out).toBe(
      'name: x\nbackbone: {trainable: True}\noptimizer: {learning_rate: 0.0000001, rho: +0.9, epsilon: 1E-7}\ntracking:\n',
    );
  });

  it('refuses, leaving the text alone, a reorder that would put an alias before its anchor', () => {
    expect(() => formatText('training: &t {epochs: 1}\nname: x\nhead: *t\n')).toThrow(
      /cannot reorder this file without changing its meaning/,
    );
  });
});
