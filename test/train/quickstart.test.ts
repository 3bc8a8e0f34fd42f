// The quick start's headline is the whole validation set's: its epochs validate on all 1000 images.
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { describe, expect, it } from 'vitest';

describe('the quick start', () => {
  it('validates every epoch on the whole validation set (cats_and_dogs_filtered: 1000 images)', () => {
    const e = YAML.parse(
      fs.readFileSync(path.resolve(import.meta.dirname, '../../experiments/quickstart.yaml'), 'utf8'),
    );
    const steps = e.training.validation_steps;
    if (steps !== undefined) expect(steps * e.data.batch_size).toBe(1000);
  });
});
