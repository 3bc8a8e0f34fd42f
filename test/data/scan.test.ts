import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DataError } from '../../src/errors.ts';
import { checkSameClasses, scanClasses } from '../../src/data/scan.ts';

let root: string;
beforeEach(async () => {
  root = await mkdtemp(path.join(os.tmpdir(), 'xp-scan-'));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

const touch = async (...files: string[]): Promise<void> => {
  for (const file of files) {
    await mkdir(path.dirname(path.join(root, file)), { recursive: true });
    await writeFile(path.join(root, file), '');
  }
};

describe('scanClasses', () => {
  it('sorts classes and files like Keras and keeps only image extensions, case-insensitively', async () => {
    await touch(
      'dogs/b.JPG',
      'dogs/a.png',
      'dogs/notes.txt',
      'cats/c10.jpeg',
      'cats/c2.webp',
      'cats/c1.Bmp',
      'Zebra/z.gif',
    );
    const { classNames, files } = await scanClasses(root);
    expect(classNames).toEqual(['Zebra', 'cats', 'dogs']); // code-point order, as Python's sorted()
    expect(files.map((f) => [path.relative(root, f.path), f.label])).toEqual([
      [path.join('Zebra', 'z.gif'), 0],
      [path.join('cats', 'c1.Bmp'), 1],
      [path.join('cats', 'c10.jpeg'), 1],
      [path.join('cats', 'c2.webp'), 1],
      [path.join('dogs', 'a.png'), 2],
      [path.join('dogs', 'b.JPG'), 2],
    ]);
    expect(path.isAbsolute(files[0].path)).toBe(true);
  });

  it('takes the first maxPerClass files of each class', async () => {
    await touch('a/3.jpg', 'a/1.jpg', 'a/2.jpg', 'b/9.jpg');
    const { files } = await scanClasses(root, { maxPerClass: 2 });
    expect(files.map((f) => path.basename(f.path))).toEqual(['1.jpg', '2.jpg', '9.jpg']);
  });

  it('includes images in nested folders, after the class folder own files', async () => {
    await touch('a/z.jpg', 'a/sub/a.jpg');
    const { files } = await scanClasses(root);
    expect(files.map((f) => path.relative(root, f.path))).toEqual([
      path.join('a', 'z.jpg'),
      path.join('a', 'sub', 'a.jpg'),
    ]);
  });

  it('names a missing directory and says what to do', async () => {
    const missing = path.join(root, 'nope');
    const error = await scanClasses(missing).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DataError);
    expect((error as DataError).message).toContain(missing);
    expect((error as DataError).hint).toMatch(/subfolder per class/);
  });

  it('rejects a directory without class subfolders', async () => {
    await touch('loose.jpg');
    await expect(scanClasses(root)).rejects.toThrow(/No class subfolders/);
  });

  it('names an empty class folder', async () => {
    await touch('cats/a.jpg', 'dogs/readme.txt');
    await expect(scanClasses(root)).rejects.toThrow(/dogs holds no images/);
  });
});

describe('checkSameClasses', () => {
  it('accepts identical class lists', () => {
    expect(() => checkSameClasses(['cats', 'dogs'], { classNames: ['cats', 'dogs'] })).not.toThrow();
  });

  it('names a class missing from validation', () => {
    expect(() => checkSameClasses(['cats', 'dogs'], ['cats'])).toThrow(DataError);
    expect(() => checkSameClasses(['cats', 'dogs'], ['cats'])).toThrow(/"dogs"/);
  });

  it('names a validation class unknown to train', () => {
    expect(() => checkSameClasses(['cats'], ['birds', 'cats'])).toThrow(/"birds" not found in train/);
  });
});
