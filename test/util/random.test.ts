import { describe, expect, it } from 'vitest';
import { createRng } from '../../src/util/random.ts';

describe('createRng', () => {
  it('gives the same stream for the same seed and a different one for another seed', () => {
    const a = createRng(42);
    const b = createRng(42);
    const c = createRng(43);
    const streamA = Array.from({ length: 20 }, () => a.next());
    expect(Array.from({ length: 20 }, () => b.next())).toEqual(streamA);
    expect(Array.from({ length: 20 }, () => c.next())).not.toEqual(streamA);
  });

  it('keeps next() in [0, 1) and uniform() in [a, b) with a plausible mean', () => {
    const rng = createRng(1);
    const values = Array.from({ length: 20000 }, () => rng.next());
    expect(Math.min(...values)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...values)).toBeLessThan(1);
    expect(values.reduce((a, b) => a + b) / values.length).toBeCloseTo(0.5, 1);
    const uniforms = Array.from({ length: 20000 }, () => rng.uniform(-40, 40));
    expect(Math.min(...uniforms)).toBeGreaterThanOrEqual(-40);
    expect(Math.max(...uniforms)).toBeLessThan(40);
    expect(Math.min(...uniforms)).toBeLessThan(-39);
  });

  it('draws int(a, b) with both ends included', () => {
    const rng = createRng(7);
    const seen = new Set<number>();
    for (let i = 0; i < 2000; i++) seen.add(rng.int(-2, 2));
    expect([...seen].sort((x, y) => x - y)).toEqual([-2, -1, 0, 1, 2]);
  });

  it('shuffles arrays and typed arrays in place into a permutation, reproducibly', () => {
    const array = Array.from({ length: 50 }, (_, i) => i);
    const typed = Int32Array.from(array);
    expect(createRng(5).shuffle(array)).toBe(array);
    createRng(5).shuffle(typed);
    expect(Array.from(typed)).toEqual(array);
    expect(array).not.toEqual(Array.from({ length: 50 }, (_, i) => i));
    expect([...array].sort((x, y) => x - y)).toEqual(Array.from({ length: 50 }, (_, i) => i));
  });

  it('forks reproducible generators that differ from the parent', () => {
    const parent1 = createRng(9);
    const parent2 = createRng(9);
    const child1 = parent1.fork();
    const child2 = parent2.fork();
    const childStream = Array.from({ length: 10 }, () => child1.next());
    expect(Array.from({ length: 10 }, () => child2.next())).toEqual(childStream);
    expect(Array.from({ length: 10 }, () => parent1.next())).not.toEqual(childStream);
  });
});
