import * as tf from '@tensorflow/tfjs-node';
import { expect, it } from 'vitest';
import { KerasRMSprop } from '../../src/accel/rmsprop.ts';

it('KerasRMSprop follows the same trajectory as tf.train.rmsprop (Keras 3 semantics), without leaking tensors', () => {
  const init = tf.randomNormal([64, 32], 0, 1, 'float32', 3);
  const a = tf.variable(init.clone());
  const b = tf.variable(init.clone());
  const ours = new KerasRMSprop(0.01, 0.9, 1e-7);
  const reference = tf.train.rmsprop(0.01, 0.9, 0, 1e-7);
  const x = tf.randomNormal([8, 64], 0, 1, 'float32', 4);
  const loss = (w: tf.Variable) => () => tf.sum(tf.square(tf.matMul(x, w))) as tf.Scalar;
  ours.minimize(loss(a), false, [a]);
  ours.minimize(loss(a), false, [a]); // slots exist from here on: the count must stay flat
  const before = tf.memory().numTensors;
  for (let i = 0; i < 10; i++) ours.minimize(loss(a), false, [a]);
  expect(tf.memory().numTensors).toBe(before);
  for (let i = 0; i < 12; i++) reference.minimize(loss(b), false, [b]);
  const diff = tf.max(tf.abs(tf.sub(a, b))).dataSync()[0];
  const scale = tf.max(tf.abs(b)).dataSync()[0];
  expect(diff / scale).toBeLessThan(1e-5);
  expect(tf.max(tf.abs(tf.sub(a, init))).dataSync()[0]).toBeGreaterThan(0.01); // it did move
  ours.dispose();
  reference.dispose();
});
