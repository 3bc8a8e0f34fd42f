import * as tf from '@tensorflow/tfjs-node';
import { afterEach, expect, it } from 'vitest';
import { denseRmsprop, nativeOps } from '../../src/model/native-ops.ts';

afterEach(() => {
  delete process.env.TF_NUM_INTRAOP_THREADS;
});

// Setup builds the kernels: a test run without them would hide a broken build behind the slower fallback.
it('the native kernels are built and load', () => {
  expect(nativeOps()).toBe(true);
});

// Shapes that are not multiples of the kernel's 4-row and 32-column blocks, and batch sizes of 1 and more.
it.each([
  [37, 19, 5, '1'],
  [130, 70, 1, '3'],
  [257, 1024, 20, ''],
])('XpDenseRmsprop (%i x %i, batch %i, threads "%s") equals the gradient matmul and the RMSprop update', (n, m, b, threads) => {
  if (threads) process.env.TF_NUM_INTRAOP_THREADS = threads;
  tf.tidy(() => {
    const h = { rho: 0.9, eps: 1e-6, step: 3e-4 };
    const w = tf.randomNormal([n, m], 0, 1, 'float32', 1);
    const s = tf.randomUniform([n, m], 0, 2, 'float32', 2);
    const x = tf.randomNormal([b, n], 0, 1, 'float32', 3);
    const dz = tf.randomNormal([b, m], 0, 1, 'float32', 4);
    const next = tf.randomNormal([b + 1, n], 0, 1, 'float32', 5);
    const { w: w2, s: s2, zNext } = denseRmsprop(w, s, x, dz, h, next);
    const g = tf.matMul(x, dz, true, false);
    const s3 = tf.add(tf.mul(s, h.rho), tf.square(g));
    const w3 = tf.sub(w, tf.mul(tf.div(g, tf.sqrt(tf.add(s3, h.eps))), h.step));
    expect(w2.shape).toEqual([n, m]);
    expect(tf.max(tf.div(tf.abs(tf.sub(s2, s3)), s3)).dataSync()[0]).toBeLessThan(1e-5);
    expect(tf.max(tf.abs(tf.sub(w2, w3))).dataSync()[0]).toBeLessThan(1e-6 * h.step * 1e3);
    expect(tf.max(tf.abs(tf.sub(w2, w))).dataSync()[0]).toBeGreaterThan(h.step / 2); // it did move
    const z = tf.matMul(next, w2);
    expect(zNext!.shape).toEqual([b + 1, m]);
    expect(tf.max(tf.abs(tf.sub(zNext!, z))).dataSync()[0] / tf.max(tf.abs(z)).dataSync()[0]).toBeLessThan(1e-5);
    expect(denseRmsprop(w, s, x, dz, h).zNext).toBeUndefined();
  });
});

it('XpDenseRmsprop rejects mismatched shapes with a TensorFlow error', () => {
  tf.tidy(() => {
    const w = tf.zeros([4, 3]);
    expect(() => denseRmsprop(w, w, tf.zeros([2, 5]), tf.zeros([2, 3]), { rho: 0.9, eps: 1e-6, step: 1e-3 })).toThrow(/shapes must be/);
  });
});
