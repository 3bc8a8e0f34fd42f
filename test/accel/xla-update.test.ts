import * as tf from '@tensorflow/tfjs-node';
import { describe, expect, it } from 'vitest';
import { KerasAdam } from '../../src/accel/adam.ts';
import { KerasRMSprop } from '../../src/accel/rmsprop.ts';
import { compileFused, tfOps, type Ops } from '../../src/accel/xla-update.ts';

// Gradient w + c with c in [0.5, 1.5]: bounded away from 0 over 10 steps, so float rounding stays rounding
// (near a minimum, RMSprop's normalized steps oscillate and amplify it).
const setup = (seed: number) => {
  const init = tf.randomNormal([1024, 1024], 0, 0.05, 'float32', seed);
  const c = tf.randomUniform([1024, 1024], 0.5, 1.5, 'float32', seed + 1);
  const loss = (w: tf.Variable) => () => tf.sum(tf.add(tf.mul(tf.square(w), 0.5), tf.mul(c, w))) as tf.Scalar;
  return { init, c, loss };
};

const relativeDiff = (a: tf.Tensor, b: tf.Tensor) =>
  tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0] / tf.max(tf.abs(b)).dataSync()[0]);

describe('compileFused', () => {
  const expr = <X>(o: Ops<X>, a: X, b: X): X[] => [
    o.sub(a, o.div(o.mul(b, 0.5), o.sqrt(o.add(o.square(b), 1)))),
    o.add(a, 2),
  ];

  it('computes the same values as the tfjs ops, for any shape, and stops after dispose', () => {
    const fused = compileFused(2, (o, a, b) => expr(o, a, b), true);
    for (const shape of [[3, 5], [7]]) {
      const [a, b] = [tf.randomNormal(shape, 0, 1, 'float32', 1), tf.randomNormal(shape, 0, 1, 'float32', 2)];
      const got = fused(a, b);
      expect(got).toBeDefined(); // tfjs-node's TensorFlow has the XLA CPU JIT
      if (!got) return;
      const want = expr(tfOps, a, b);
      expect(got.map((t) => t.shape)).toEqual([shape, shape]);
      for (let i = 0; i < 2; i++) expect(relativeDiff(got[i], want[i])).toBeLessThan(1e-6);
      tf.dispose([a, b, ...got, ...want]);
    }
    fused.dispose();
    const x = tf.ones([2]);
    expect(fused(x, x)).toBeUndefined();
    x.dispose();
  });

  it('is off, for the caller to use tfjs ops, under a policy without fused updates', () => {
    const off = compileFused(2, (o, a, b) => expr(o, a, b), false);
    const x = tf.ones([2]);
    expect(off(x, x)).toBeUndefined();
    x.dispose();
    off.dispose();
  });
});

it('KerasRMSprop on a 1M-weight variable (the fused path) follows tf.train.rmsprop, without leaking tensors', () => {
  const { init, c, loss } = setup(3);
  const a = tf.variable(init.clone());
  const b = tf.variable(init.clone());
  const ours = new KerasRMSprop(0.01, 0.9, 1e-7, true);
  const reference = tf.train.rmsprop(0.01, 0.9, 0, 1e-7);
  ours.minimize(loss(a), false, [a]);
  ours.minimize(loss(a), false, [a]); // slots and the compiled update exist from here on
  const before = tf.memory().numTensors;
  for (let i = 0; i < 8; i++) ours.minimize(loss(a), false, [a]);
  expect(tf.memory().numTensors).toBe(before);
  for (let i = 0; i < 10; i++) reference.minimize(loss(b), false, [b]);
  expect(relativeDiff(a, b)).toBeLessThan(1e-5);
  expect(tf.tidy(() => tf.max(tf.abs(tf.sub(a, init))).dataSync()[0])).toBeGreaterThan(0.05); // it did move
  ours.dispose();
  reference.dispose();
  tf.dispose([init, c, a, b]);
});

describe('KerasAdam', () => {
  it('adds epsilon to sqrt(v) as Keras 3 does, not to the bias-corrected one as tf.train.adam', () => {
    // One step from w=0 with g=1, lr=1, eps=0.1: alpha = sqrt(0.001)/0.1, m=0.1, v=0.001.
    const w = tf.variable(tf.scalar(0));
    const opt = new KerasAdam(1, 0.9, 0.999, 0.1);
    opt.minimize(() => tf.mul(w, 1) as tf.Scalar, false, [w]);
    expect(w.dataSync()[0]).toBeCloseTo(-Math.sqrt(0.001) / (Math.sqrt(0.001) + 0.1), 6);
    opt.dispose();
    w.dispose();
  });

  it('on a 1M-weight variable (the fused path) follows tf.train.adam when epsilon is 0, without leaking tensors', () => {
    // With epsilon 0 both formulations are the same function: alpha*m/sqrt(v) = lr*m_hat/sqrt(v_hat).
    const { init, c, loss } = setup(5);
    const a = tf.variable(init.clone());
    const b = tf.variable(init.clone());
    const ours = new KerasAdam(0.01, 0.9, 0.999, 0, true);
    const reference = tf.train.adam(0.01, 0.9, 0.999, 0);
    ours.minimize(loss(a), false, [a]);
    ours.minimize(loss(a), false, [a]);
    const before = tf.memory().numTensors;
    for (let i = 0; i < 8; i++) ours.minimize(loss(a), false, [a]);
    expect(tf.memory().numTensors).toBe(before);
    for (let i = 0; i < 10; i++) reference.minimize(loss(b), false, [b]);
    expect(relativeDiff(a, b)).toBeLessThan(1e-5);
    expect(tf.tidy(() => tf.max(tf.abs(tf.sub(a, init))).dataSync()[0])).toBeGreaterThan(0.05);
    ours.dispose();
    reference.dispose();
    tf.dispose([init, c, a, b]);
  });
});
