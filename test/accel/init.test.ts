import * as tf from '@tensorflow/tfjs-node';
import { expect, it } from 'vitest';
import { glorotUniform } from '../../src/accel/init.ts';

it('seeded Glorot uniform: the same weights for the same seed, Glorot bounds and spread, tfjs config', () => {
  tf.tidy(() => {
    const shape = [3000, 200];
    const a = glorotUniform(11).apply(shape);
    const b = glorotUniform(11).apply(shape);
    const c = glorotUniform(12).apply(shape);
    expect(a.shape).toEqual(shape);
    expect(tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]).toBe(0);
    expect(tf.max(tf.abs(tf.sub(a, c))).dataSync()[0]).toBeGreaterThan(0.01);
    const limit = Math.sqrt(6 / (3000 + 200));
    expect(tf.max(tf.abs(a)).dataSync()[0]).toBeLessThanOrEqual(limit);
    expect(tf.max(tf.abs(a)).dataSync()[0]).toBeGreaterThan(limit * 0.999);
    const { mean, variance } = tf.moments(a);
    expect(Math.abs(mean.dataSync()[0])).toBeLessThan(limit / 100);
    expect(Math.sqrt(variance.dataSync()[0]) / (limit / Math.sqrt(3))).toBeCloseTo(1, 2);
  });
  const dense = (init: ReturnType<typeof glorotUniform>) => {
    const layer = tf.layers.dense({ units: 4, kernelInitializer: init });
    layer.apply(tf.input({ shape: [3] }));
    return JSON.stringify((layer.getConfig() as { kernelInitializer: unknown }).kernelInitializer);
  };
  expect(dense(glorotUniform(3))).toBe(dense(tf.initializers.glorotUniform({ seed: 3 }))); // saved models read the same
});
