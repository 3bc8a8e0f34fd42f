// Hostile acceleration settings: a bad XP_ACCEL value is one clear error, never a stack trace or a silent default.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import sharp from 'sharp';
import { expect, it } from 'vitest';
import { resolvePolicy } from '../../src/accel/policy.ts';
import { XpError } from '../../src/errors.ts';

const root = path.resolve(import.meta.dirname, '../..');

it('an unknown XP_ACCEL value is an XpError that lists the policies', () => {
  for (const value of ['fast', 'native,xla', '0']) {
    let error: unknown;
    try {
      resolvePolicy(value);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(XpError);
    expect((error as XpError).message).toBe(`XP_ACCEL=${value} is not an acceleration policy.`);
    expect((error as XpError).hint).toBe('Use native, xla, plain, or leave XP_ACCEL unset for the best available.');
  }
});

it('xp run with XP_ACCEL=fast exits non-zero with the error and its hint, no stack trace, no run folder written', async () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'xp-hostile-accel-'));
  for (const split of ['train', 'validation']) {
    for (const cls of ['cats', 'dogs']) {
      fs.mkdirSync(path.join(tmp, split, cls), { recursive: true });
      for (let i = 0; i < 2; i++)
        await sharp({
          create: {
            width: 40,
            height: 40,
            channels: 3,
            background: { r: 60 * i, g: cls === 'cats' ? 200 : 20, b: 90 },
          },
        })
          .jpeg()
          .toFile(path.join(tmp, split, cls, `${i}.jpg`));
    }
  }
  const file = path.join(tmp, 'e.yaml');
  fs.writeFileSync(
    file,
    `name: hostile-accel
data: {train: ${tmp}/train, validation: ${tmp}/validation, image_size: [32, 32], batch_size: 2}
backbone: {name: mobilenet_v2, weights: nsfwjs, cut_layer: block_2_add}
head: {pooling: avg, units: [4]}
optimizer: {name: adam, learning_rate: 0.001}
training: {epochs: 1}
tracking: {enabled: false}
`,
  );
  const runs = path.join(tmp, 'runs');
  const r = await execa(process.execPath, [path.join(root, 'bin', 'xp.js'), 'run', file], {
    reject: false,
    cwd: root,
    env: { XP_ACCEL: 'fast', XP_RUNS_DIR: runs, TF_CPP_MIN_LOG_LEVEL: '2' },
  });
  expect(r.exitCode).not.toBe(0);
  expect(r.stderr).toContain('XP_ACCEL=fast is not an acceleration policy.');
  expect(r.stderr).toContain('Use native, xla, plain, or leave XP_ACCEL unset for the best available.');
  expect(r.stderr).not.toMatch(/^\s+at /m);
  expect(fs.existsSync(runs) ? fs.readdirSync(runs) : []).toEqual([]);
  fs.rmSync(tmp, { recursive: true, force: true });
});
