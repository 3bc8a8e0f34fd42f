import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { benchData } from '../../bench/stages/data.ts';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'xp-bench-'));
  for (const [label, cls] of ['cats', 'dogs'].entries()) {
    await mkdir(path.join(dir, cls));
    for (let i = 0; i < 6; i++) {
      const background = { r: 40 * i, g: 100 * label, b: 30 };
      await sharp({ create: { width: 40 + i, height: 30, channels: 3, background } })
        .jpeg()
        .toFile(path.join(dir, cls, `${i}.jpg`));
    }
  }
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('benchData', () => {
  it('reports positive, finite decode and augmentation throughput', async () => {
    const result = await benchData(dir, { imageSize: [32, 32], batchSize: 5, augmentBatches: 3 });
    expect(Object.keys(result).sort()).toEqual(['augment_images_per_s', 'decode_images_per_s']);
    for (const value of Object.values(result)) {
      expect(Number.isFinite(value)).toBe(true);
      expect(value).toBeGreaterThan(0);
    }
  });
});
