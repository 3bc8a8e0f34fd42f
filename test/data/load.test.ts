import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadImages } from '../../src/data/load.ts';
import { DataError } from '../../src/errors.ts';

let dir: string;
const file = (name: string): string => path.join(dir, name);

// Solid-colour images of odd sizes; nearest resizing keeps their colour exactly.
const solid = (width: number, height: number, [r, g, b, alpha]: number[]) =>
  sharp({
    create: {
      width,
      height,
      channels: alpha === undefined ? 3 : 4,
      background: { r, g, b, alpha: (alpha ?? 255) / 255 },
    },
  });

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'xp-load-'));
  await solid(20, 10, [255, 0, 0]).png().toFile(file('red.png'));
  await solid(7, 13, [0, 0, 255, 128]).png().toFile(file('blue-alpha.png'));
  await solid(12, 12, [90, 90, 90]).toColourspace('b-w').png().toFile(file('grey.png'));
  const jpeg = await solid(64, 48, [0, 200, 0]).jpeg({ quality: 95 }).toBuffer();
  await writeFile(file('green.jpg'), jpeg);
  await writeFile(file('truncated.jpg'), jpeg.subarray(0, Math.floor(jpeg.length / 2)));
  await writeFile(file('empty.png'), '');
  await writeFile(file('text.jpg'), 'this is not an image\n');
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('loadImages', () => {
  it('decodes to RGB uint8 NHWC at exactly [h, w], skipping bad files with one warning each', async () => {
    const files = [
      { path: file('red.png'), label: 0 },
      { path: file('empty.png'), label: 1 },
      { path: file('blue-alpha.png'), label: 1 },
      { path: file('text.jpg'), label: 0 },
      { path: file('grey.png'), label: 0 },
      { path: file('truncated.jpg'), label: 1 },
      { path: file('green.jpg'), label: 1 },
    ];
    expect((await sharp(file('blue-alpha.png')).metadata()).channels).toBe(4);
    expect((await sharp(file('grey.png')).metadata()).channels).toBe(1);
    const warnings: string[] = [];
    const [h, w] = [5, 6];
    const result = await loadImages(files, { imageSize: [h, w], onWarning: (m) => warnings.push(m), concurrency: 3 });

    expect(result.count).toBe(4);
    expect(result.images.length).toBe(4 * h * w * 3);
    expect(Array.from(result.labels)).toEqual([0, 1, 0, 1]);
    expect(result.skipped.map((s) => path.basename(s.path))).toEqual(['empty.png', 'text.jpg', 'truncated.jpg']);
    expect(result.skipped.every((s) => s.reason.length > 0 && !s.reason.includes('\n'))).toBe(true);
    expect(warnings).toHaveLength(3);
    expect(warnings[0]).toContain(file('empty.png'));

    const pixel = (image: number, row: number, col: number): number[] =>
      Array.from(result.images.subarray(((image * h + row) * w + col) * 3, ((image * h + row) * w + col) * 3 + 3));
    expect(pixel(0, 0, 0)).toEqual([255, 0, 0]);
    expect(pixel(0, h - 1, w - 1)).toEqual([255, 0, 0]);
    expect(pixel(1, 2, 3)).toEqual([0, 0, 255]); // alpha dropped, not blended
    expect(pixel(2, 4, 5)).toEqual([90, 90, 90]); // greyscale expanded to 3 channels
    const green = pixel(3, 2, 2);
    expect(green[1]).toBeGreaterThan(190);
    expect(green[0] + green[2]).toBeLessThan(20);
  });

  it('maps the interpolation names to resampling kernels that give different results', async () => {
    const gradient = Buffer.alloc(16 * 16 * 3);
    for (let i = 0; i < 16 * 16; i++) gradient.fill((i % 16) * 16, i * 3, i * 3 + 3);
    await sharp(gradient, { raw: { width: 16, height: 16, channels: 3 } })
      .png()
      .toFile(file('gradient.png'));
    const load = (interpolation: 'nearest' | 'bilinear' | 'bicubic') =>
      loadImages([{ path: file('gradient.png'), label: 0 }], { imageSize: [5, 5], interpolation }).then((r) =>
        Buffer.from(r.images),
      );
    const [nearest, bilinear, bicubic] = await Promise.all([load('nearest'), load('bilinear'), load('bicubic')]);
    // Nearest only picks existing values (multiples of 16); the others blend.
    expect([...nearest].every((v) => v % 16 === 0)).toBe(true);
    expect(bilinear.equals(nearest)).toBe(false);
    expect(bicubic.equals(bilinear)).toBe(false);
  });

  it('throws when no image at all can be read', async () => {
    const error = await loadImages([{ path: file('empty.png'), label: 0 }], { imageSize: [4, 4] }).catch(
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(DataError);
    expect((error as Error).message).toMatch(/None of the 1 images/);
  });
});
