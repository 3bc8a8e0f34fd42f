import { describe, expect, it } from 'vitest';
import { createIndexStream, gatherBatch } from '../../src/data/batches.ts';
import { createRng } from '../../src/util/random.ts';

const take = (stream: { next(): Int32Array }, count: number): number[][] =>
  Array.from({ length: count }, () => Array.from(stream.next()));

describe('createIndexStream', () => {
  it('yields ceil(n / batchSize) batches per pass, the last one holding n % batchSize', () => {
    const stream = createIndexStream(10, 4, { shuffle: false, rng: createRng(0) });
    expect(stream.batchesPerPass).toBe(3);
    expect(take(stream, 6)).toEqual([
      [0, 1, 2, 3],
      [4, 5, 6, 7],
      [8, 9],
      [0, 1, 2, 3],
      [4, 5, 6, 7],
      [8, 9],
    ]);
  });

  it('reshuffles at the start of every pass, each pass a permutation, reproducibly from the seed', () => {
    const passes = (seed: number): number[][] => {
      const stream = createIndexStream(10, 4, { shuffle: true, rng: createRng(seed) });
      return [take(stream, 3).flat(), take(stream, 3).flat()];
    };
    const [first, second] = passes(3);
    expect([...first].sort((a, b) => a - b)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect([...second].sort((a, b) => a - b)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(second).not.toEqual(first);
    expect(passes(3)).toEqual([first, second]);
    expect(passes(4)[0]).not.toEqual(first);
  });

  it('continues across epochs: steps_per_epoch smaller than a pass does not restart the pass', () => {
    const stream = createIndexStream(9, 3, { shuffle: true, rng: createRng(1) });
    const epoch1 = take(stream, 2).flat(); // 6 of 9 images
    const epoch2 = take(stream, 2).flat(); // 3 remaining, then a new pass starts
    expect([...epoch1, ...epoch2.slice(0, 3)].sort((a, b) => a - b)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8]);
  });

  it('returns batches the caller may keep', () => {
    const stream = createIndexStream(4, 2, { shuffle: false, rng: createRng(0) });
    const first = stream.next();
    stream.next();
    stream.next();
    expect(Array.from(first)).toEqual([0, 1]);
  });
});

describe('gatherBatch', () => {
  it('copies the images and labels at the given indices', () => {
    const [h, w] = [2, 3];
    const size = h * w * 3;
    const images = new Uint8Array(4 * size).map((_, i) => Math.floor(i / size) * 10 + (i % size));
    const labels = Int32Array.from([0, 1, 0, 1]);
    const { x, y } = gatherBatch(images, labels, Int32Array.from([3, 0]), [h, w]);
    expect(x.length).toBe(2 * size);
    expect(Array.from(x.subarray(0, size))).toEqual(Array.from(images.subarray(3 * size, 4 * size)));
    expect(Array.from(x.subarray(size))).toEqual(Array.from(images.subarray(0, size)));
    expect(Array.from(y)).toEqual([1, 0]);
    x[0] = 255;
    expect(images[3 * size]).toBe(30);
  });

  it('rejects an index past the end', () => {
    expect(() => gatherBatch(new Uint8Array(12), Int32Array.from([0]), [1], [2, 2])).toThrow(/outside/);
  });
});
