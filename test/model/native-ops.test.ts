import * as tf from '@tensorflow/tfjs-node';
import { afterEach, expect, it } from 'vitest';
import { denseRmsprop, nativeOps, sparseMatMul } from '../../src/model/native-ops.ts';

afterEach(() => {
  delete process.env.TF_NUM_INTRAOP_THREADS;
});

// Setup builds the kernels: a test run without them would hide a broken build behind the slower fallback.
it('the native kernels are built and load', () => {
  expect(nativeOps()).toBe(true);
});

// Inputs as a backbone gives them: after a ReLU, mostly zeros (the kernel skips them), here with whole kernel
// rows of zero input (zero gradient: s decays, w stays) every 7th row.
const features = (shape: [number, number], seed: number, sparse: boolean) =>
  tf.tidy(() => {
    const x = tf.randomNormal(shape, 0, 1, 'float32', seed);
    if (!sparse) return x;
    const columns = tf.tensor1d(Array.from({ length: shape[1] }, (_, i) => (i % 7 === 3 ? 0 : 1)));
    return tf.mul(tf.relu(tf.sub(x, 1)), columns);
  });

// Shapes that are not multiples of the kernel's 16-row and 64-column panels, and batch sizes of 1 and more.
it.each([
  [37, 19, 5, '1', false],
  [130, 70, 1, '3', false],
  [257, 1024, 20, '', false],
  [130, 70, 6, '2', true],
  [257, 1024, 20, '', true],
])('XpDenseRmsprop (%i x %i, batch %i, threads "%s", sparse %s) equals the gradient matmul and the RMSprop update', (n, m, b, threads, sparse) => {
  if (threads) process.env.TF_NUM_INTRAOP_THREADS = threads;
  tf.tidy(() => {
    const h = { rho: 0.9, eps: 1e-6, step: 3e-4 };
    const w = tf.randomNormal([n, m], 0, 1, 'float32', 1);
    const s = tf.randomUniform([n, m], 0, 2, 'float32', 2);
    const x = features([b, n], 3, sparse);
    const dz = tf.randomNormal([b, m], 0, 1, 'float32', 4);
    const next = features([b + 1, n], 5, sparse);
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
    if (sparse) {
      // Rows without input: exactly s' = rho*s and w' = w.
      const rows = tf.tensor1d(Array.from({ length: Math.floor((n - 4) / 7) + 1 }, (_, i) => 3 + 7 * i), 'int32');
      expect(tf.max(tf.abs(tf.sub(tf.gather(w2, rows), tf.gather(w, rows)))).dataSync()[0]).toBe(0);
      expect(tf.max(tf.abs(tf.sub(tf.gather(s2, rows), tf.mul(tf.gather(s, rows), h.rho)))).dataSync()[0]).toBe(0);
    }
  });
});

it('XpDenseRmsprop rejects mismatched shapes with a TensorFlow error', () => {
  tf.tidy(() => {
    const w = tf.zeros([4, 3]);
    expect(() => denseRmsprop(w, w, tf.zeros([2, 5]), tf.zeros([2, 3]), { rho: 0.9, eps: 1e-6, step: 1e-3 })).toThrow(/shapes must be/);
  });
});

it.each([
  [37, 19, 5, false],
  [1000, 300, 250, true],
  [257, 1024, 20, true],
])('XpSparseMatMul (%i x %i, %i rows, sparse %s) equals tf.matMul', (n, m, r, sparse) => {
  tf.tidy(() => {
    const x = features([r, n], 7, sparse);
    const w = tf.randomNormal([n, m], 0, 1, 'float32', 8);
    const z = sparseMatMul(x, w);
    const reference = tf.matMul(x, w);
    expect(z.shape).toEqual([r, m]);
    expect(tf.max(tf.abs(tf.sub(z, reference))).dataSync()[0] / tf.max(tf.abs(reference)).dataSync()[0]).toBeLessThan(1e-5);
  });
});
