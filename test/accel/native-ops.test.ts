import * as tf from '@tensorflow/tfjs-node';
import { afterEach, expect, it } from 'vitest';
import { denseRmsprop, nativeOps, rmspropCatchUp, scaleShift, sparseMatMul } from '../../src/accel/native-ops.ts';

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

// Shapes that are not multiples of the kernel's 64-row by 64-column panels (ROWS_PER_PANEL, COLS in xp_ops.cc),
// and batch sizes of 1 and more.
it.each([
  [37, 19, 5, '1', false],
  [130, 70, 1, '3', false],
  [257, 1024, 20, '', false],
  [130, 70, 6, '2', true],
  [257, 1024, 20, '', true],
])(
  'XpDenseRmsprop (%i x %i, batch %i, threads "%s", sparse %s) equals the gradient matmul and the RMSprop update, in place',
  (n, m, b, threads, sparse) => {
    if (threads) process.env.TF_NUM_INTRAOP_THREADS = threads;
    tf.tidy(() => {
      const h = { rho: 0.9, eps: 1e-6, step: 3e-4 };
      const w0 = tf.randomNormal([n, m], 0, 1, 'float32', 1);
      const s0 = tf.randomUniform([n, m], 0, 2, 'float32', 2);
      const x = features([b, n], 3, sparse);
      const dz = tf.randomNormal([b, m], 0, 1, 'float32', 4);
      const next = features([b + 1, n], 5, sparse);
      const g = tf.matMul(x, dz, true, false);
      const s1 = tf.add(tf.mul(s0, h.rho), tf.square(g));
      const w1 = tf.sub(w0, tf.mul(tf.div(g, tf.sqrt(tf.add(s1, h.eps))), h.step));
      const w = tf.mul(w0, 1); // the op writes these two
      const s = tf.mul(s0, 1);
      const last = tf.zeros([n], 'int32');
      const zNext = denseRmsprop(w, s, last, 1, x, dz, h, next)!;
      rmspropCatchUp(s, last, 1, h.rho);
      expect(tf.max(tf.div(tf.abs(tf.sub(s, s1)), s1)).dataSync()[0]).toBeLessThan(1e-5);
      expect(tf.max(tf.abs(tf.sub(w, w1))).dataSync()[0]).toBeLessThan(1e-6 * h.step * 1e3);
      expect(tf.max(tf.abs(tf.sub(w, w0))).dataSync()[0]).toBeGreaterThan(h.step / 2); // it did move
      const z = tf.matMul(next, w);
      expect(zNext.shape).toEqual([b + 1, m]);
      expect(tf.max(tf.abs(tf.sub(zNext, z))).dataSync()[0] / tf.max(tf.abs(z)).dataSync()[0]).toBeLessThan(1e-5);
      expect(denseRmsprop(w, s, last, 2, x, dz, h)).toBeUndefined();
      if (sparse) {
        // Rows without input: exactly w' = w, and s' = rho*s once caught up.
        const rows = tf.tensor1d(
          Array.from({ length: Math.floor((n - 4) / 7) + 1 }, (_, i) => 3 + 7 * i),
          'int32',
        );
        expect(tf.max(tf.abs(tf.sub(tf.gather(w, rows), tf.gather(w0, rows)))).dataSync()[0]).toBe(0);
        rmspropCatchUp(s, last, 2, h.rho);
        expect(
          tf.max(tf.abs(tf.sub(tf.gather(s, rows), tf.mul(tf.mul(tf.gather(s0, rows), h.rho), h.rho)))).dataSync()[0],
        ).toBe(0);
      }
    });
  },
);

it('rows skipped for steps take their pending decays when next visited: three steps equal three dense updates', () => {
  tf.tidy(() => {
    const [n, m, b] = [96, 128, 4];
    const h = { rho: 0.9, eps: 1e-6, step: 1e-2 };
    let wRef = tf.randomNormal([n, m], 0, 1, 'float32', 1);
    let sRef = tf.randomUniform([n, m], 0, 1, 'float32', 2);
    const w = tf.mul(wRef, 1);
    const s = tf.mul(sRef, 1);
    const last = tf.zeros([n], 'int32');
    // Step 1 and 2 feed rows 0-31 only, step 3 all rows: rows 32-95 catch up two decays at step 3.
    const xs = [1, 2, 3].map((k) =>
      tf.mul(
        features([b, n], 10 + k, true),
        tf.tensor1d(Array.from({ length: n }, (_, i) => (k < 3 && i >= 32 ? 0 : 1))),
      ),
    );
    for (const [k, x] of xs.entries()) {
      const dz = tf.randomNormal([b, m], 0, 1, 'float32', 20 + k);
      const g = tf.matMul(x, dz, true, false);
      sRef = tf.add(tf.mul(sRef, h.rho), tf.square(g));
      wRef = tf.sub(wRef, tf.mul(tf.div(g, tf.sqrt(tf.add(sRef, h.eps))), h.step));
      denseRmsprop(w, s, last, k + 1, x, dz, h);
    }
    rmspropCatchUp(s, last, 3, h.rho);
    expect(Array.from(last.dataSync())).toEqual(new Array(n).fill(3));
    expect(tf.max(tf.div(tf.abs(tf.sub(s, sRef)), tf.add(sRef, 1e-30))).dataSync()[0]).toBeLessThan(1e-5);
    expect(tf.max(tf.abs(tf.sub(w, wRef))).dataSync()[0]).toBeLessThan(1e-5);
  });
});

it('XpDenseRmsprop rejects mismatched shapes with a TensorFlow error', () => {
  tf.tidy(() => {
    const w = tf.zeros([4, 3]);
    expect(() =>
      denseRmsprop(w, tf.zeros([4, 3]), tf.zeros([4], 'int32'), 1, tf.zeros([2, 5]), tf.zeros([2, 3]), {
        rho: 0.9,
        eps: 1e-6,
        step: 1e-3,
      }),
    ).toThrow(/shapes must be/);
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
    expect(tf.max(tf.abs(tf.sub(z, reference))).dataSync()[0] / tf.max(tf.abs(reference)).dataSync()[0]).toBeLessThan(
      1e-5,
    );
  });
});

it('XpScaleShift rounds as a multiplication then a subtraction, in place', () => {
  const x = tf.randomUniform([1000, 37], 0, 1, 'float32', 5);
  const expected = tf.tidy(() => tf.sub(tf.mul(x, 0.0123), 0.00615));
  const id = x.dataId;
  scaleShift(x, 0.0123, 0.00615);
  expect(x.dataId).toBe(id);
  expect(Array.from(x.dataSync())).toEqual(Array.from(expected.dataSync())); // bit for bit
  tf.dispose([x, expected]);
});
