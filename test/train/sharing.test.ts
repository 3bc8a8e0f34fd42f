import { describe, expect, it } from 'vitest';
import type { Experiment } from '../../src/config/types.ts';
import { trainersOf } from '../../src/train/sharing.ts';

const experiment = (dropout: number, epochs: number, lr = 1e-4) =>
  ({
    name: 'x',
    head: { pooling: 'flatten', units: [1024], dropout },
    optimizer: { name: 'rmsprop', learning_rate: lr },
    training: { epochs, seed: 42 },
  }) as unknown as Experiment;

describe('trainersOf', () => {
  it('lets the longest of the experiments that differ only in epochs train for all of them', () => {
    expect(trainersOf([experiment(0.1, 2), experiment(0.1, 4), experiment(0.2, 2), experiment(0.2, 4)])).toEqual([
      1, 1, 3, 3,
    ]);
    expect(trainersOf([experiment(0.1, 10), experiment(0.1, 5), experiment(0.1, 20)])).toEqual([2, 2, 2]);
  });

  it('trains every experiment that differs in anything else on its own', () => {
    expect(trainersOf([experiment(0.1, 2), experiment(0.2, 2), experiment(0.1, 4, 1e-3)])).toEqual([0, 1, 2]);
  });

  it('trains duplicates once', () => {
    expect(trainersOf([experiment(0.1, 3), experiment(0.1, 3)])).toEqual([0, 0]);
  });
});
