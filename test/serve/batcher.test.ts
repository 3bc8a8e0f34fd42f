// The batcher alone: concurrent submissions share model calls, no call holds more than maxBatch items, every
// submission gets its own results in order, and a failed call fails only the submissions in it.
import { describe, expect, it } from 'vitest';
import { createBatcher } from '../../src/serve/batcher.ts';

describe('createBatcher', () => {
  it('puts concurrent submissions in shared calls of at most maxBatch items, each result to its item', async () => {
    const calls: number[][] = [];
    const batcher = createBatcher<number, number>({
      maxBatch: 4,
      waitMs: 20,
      async run(items) {
        calls.push(items);
        return items.map((x) => x * 10);
      },
    });
    const submissions = Array.from({ length: 10 }, (_, i) => batcher.submit([i]));
    const twoAtOnce = batcher.submit([100, 101]);
    expect(await Promise.all(submissions)).toEqual(Array.from({ length: 10 }, (_, i) => [i * 10]));
    expect(await twoAtOnce).toEqual([1000, 1010]);
    expect(calls.flat().sort((x, y) => x - y)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 100, 101]);
    expect(Math.max(...calls.map((c) => c.length))).toBeLessThanOrEqual(4);
    expect(calls.length).toBe(3);
  });

  it('runs one call at a time', async () => {
    let running = 0;
    let most = 0;
    const batcher = createBatcher<number, number>({
      maxBatch: 2,
      waitMs: 0,
      async run(items) {
        most = Math.max(most, ++running);
        await new Promise((resolve) => setTimeout(resolve, 5));
        running--;
        return items;
      },
    });
    await Promise.all(Array.from({ length: 9 }, (_, i) => batcher.submit([i])));
    expect(most).toBe(1);
  });

  it('fails the submissions of a failed call only, and goes on', async () => {
    const batcher = createBatcher<number, number>({
      maxBatch: 2,
      waitMs: 0,
      async run(items) {
        if (items.includes(-1)) throw new Error('bad batch');
        return items;
      },
    });
    await expect(batcher.submit([-1])).rejects.toThrow('bad batch');
    expect(await batcher.submit([7])).toEqual([7]);
  });
});
