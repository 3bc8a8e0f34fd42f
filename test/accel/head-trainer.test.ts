import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-node';
import { expect, it } from 'vitest';
import { headTrainer, setDropoutSeed } from '../../src/accel/index.ts';
import { glorotUniform } from '../../src/accel/init.ts';
import { policyNamed, type AccelName } from '../../src/accel/policy.ts';
import { buildHead, lossFor } from '../../src/model/head.ts';
import { buildOptimizer, setLearningRate } from '../../src/model/optimizer.ts';

const root = path.resolve(import.meta.dirname, '../..');

// The reference head's shape, small: Flatten -> Dense(256, relu) -> Dropout -> Dense(1, sigmoid) on 4x4x64
// features (a 1024 x 256 kernel, large enough for the native one-pass update and the XLA-fused optimizers).
function training(name: AccelName, optimizer: 'rmsprop' | 'adam') {
  const policy = policyNamed(name);
  const model = buildHead([4, 4, 64], { pooling: 'flatten', units: [256], activation: 'relu', dropout: 0.3 }, 2, {
    seed: 5,
  });
  model.compile({
    optimizer: buildOptimizer({ name: optimizer, learning_rate: 1e-3 }, policy),
    loss: lossFor(2),
    metrics: ['accuracy'],
  });
  const trainer = headTrainer(model, policy);
  return { model, trainer };
}

/** Six steps on one batch; with `rates`, the optimizer's rate of each step (a schedule's). */
async function losses(name: AccelName, optimizer: 'rmsprop' | 'adam', rates?: number[]) {
  const { model, trainer } = training(name, optimizer);
  const x = tf.relu(tf.randomNormal([20, 4, 4, 64], 0, 1, 'float32', 9)); // half zeros, as features after a ReLU
  const y = tf.tensor2d(
    Array.from({ length: 20 }, (_, i) => i % 2),
    [20, 1],
  );
  const out: number[][] = [];
  for (let i = 0; i < 6; i++) {
    for (const l of model.layers) if (l.getClassName() === 'Dropout') setDropoutSeed(l, 100 + i);
    if (rates && model.optimizer) setLearningRate(model.optimizer, rates[i]);
    out.push(await trainer.step(x, y, i < 5 ? x : undefined));
  }
  const predictions = Array.from(tf.tidy(() => trainer.predict(x).dataSync()));
  trainer.dispose();
  tf.dispose([x, y]);
  model.dispose();
  return { kind: trainer.kind, out, predictions };
}

it.each(['rmsprop', 'adam'] as const)(
  'the plain policy (trainOnBatch, tfjs ops) trains a head to the losses of the native and XLA ones, to 4 decimals: %s',
  async (optimizer) => {
    const plain = await losses('plain', optimizer);
    expect(plain.kind).toBe('trainOnBatch');
    for (const name of ['native', 'xla'] as const) {
      const fast = await losses(name, optimizer);
      expect(fast.kind).toBe(name === 'native' && optimizer === 'rmsprop' ? 'dense-head' : 'trainOnBatch');
      fast.out.forEach((values, i) => {
        expect(values).toHaveLength(2);
        expect(values[0]).toBeCloseTo(plain.out[i][0], 4);
        expect(values[1]).toBeCloseTo(plain.out[i][1], 4);
      });
      for (const [i, p] of fast.predictions.entries()) expect(p).toBeCloseTo(plain.predictions[i], 4);
    }
  },
);

it.each(['rmsprop', 'adam'] as const)(
  'a learning rate changed before each step (optimizer.schedule) trains alike under every policy: %s',
  async (optimizer) => {
    const rates = [1e-3, 4e-3, 1e-4, 6e-3, 2e-3, 5e-4];
    const plain = await losses('plain', optimizer, rates);
    const constant = await losses('native', optimizer);
    for (const name of ['native', 'xla'] as const) {
      const fast = await losses(name, optimizer, rates);
      for (const [i, values] of fast.out.entries()) expect(values[0]).toBeCloseTo(plain.out[i][0], 4);
      for (const [i, p] of fast.predictions.entries()) expect(p).toBeCloseTo(plain.predictions[i], 4);
      // The rates took effect: the model is not the one the constant rate trains.
      const moved = fast.predictions.map((p, i) => Math.abs(p - constant.predictions[i]));
      expect(Math.max(...moved), name).toBeGreaterThan(1e-3);
    }
  },
);

it('a snapshot keeps the weights it copied while the native step goes on updating the kernel in place', async () => {
  const { model, trainer } = training('native', 'rmsprop');
  expect(trainer.kind).toBe('dense-head');
  const x = tf.randomNormal([20, 4, 4, 64], 0, 1, 'float32', 3);
  const y = tf.tensor2d(
    Array.from({ length: 20 }, (_, i) => i % 2),
    [20, 1],
  );
  await trainer.step(x, y);
  const saved = trainer.snapshot();
  const copied = saved.map((t) => Array.from(t.dataSync()));
  await trainer.step(x, y);
  for (const [i, t] of saved.entries()) expect(Array.from(t.dataSync())).toEqual(copied[i]);
  const kernel = model.getWeights()[0];
  expect(tf.max(tf.abs(tf.sub(kernel, saved[0]))).dataSync()[0]).toBeGreaterThan(0);
  tf.dispose([...saved, x, y]);
  trainer.dispose();
  model.dispose();
});

it('under XP_ACCEL=plain a head trains and a backbone runs without ever loading native/build/xp_ops.node, from the same initial weights', () => {
  const code = `(async () => {
const tf = await import('@tensorflow/tfjs-node');
const { accelPolicy, compileForInference, describePolicy, trainStep } = await import('./src/accel/index.ts');
const { glorotUniform } = await import('./src/accel/init.ts');
const { buildHead, lossFor } = await import('./src/model/head.ts');
const { buildOptimizer } = await import('./src/model/optimizer.ts');
const model = buildHead([4, 4, 64], { pooling: 'flatten', units: [256], activation: 'relu', dropout: 0 }, 2, { seed: 5 });
model.compile({ optimizer: buildOptimizer({ name: 'rmsprop', learning_rate: 1e-3 }), loss: lossFor(2), metrics: ['accuracy'] });
const step = trainStep(model);
const x = tf.randomNormal([20, 4, 4, 64], 0, 1, 'float32', 9), y = tf.tensor2d(Array.from({ length: 20 }, (_, i) => i % 2), [20, 1]);
const losses = [];
for (let i = 0; i < 3; i++) losses.push((await step(x, y, x))[0]);
const forward = await compileForInference(model);
const init = Array.from(glorotUniform(11).apply([300, 20]).dataSync().slice(0, 5));
const maps = (await import('node:fs')).readFileSync('/proc/self/maps', 'utf8');
console.log(JSON.stringify({ policy: describePolicy(), kind: step.kind, mode: forward.mode, losses, init, native: maps.includes('xp_ops.node') }));
})();`;
  const tsx = path.join(root, 'node_modules', 'tsx', 'dist', 'cli.mjs');
  const stdout = execFileSync(process.execPath, [tsx, '--eval', code], {
    cwd: root,
    encoding: 'utf8',
    env: { ...process.env, XP_ACCEL: 'plain', TF_CPP_MIN_LOG_LEVEL: '2' },
  });
  const r = JSON.parse(stdout.trim().split('\n').at(-1)!);
  expect(r).toMatchObject({
    policy: 'acceleration: plain (plain tfjs: trainOnBatch, model.predict, tfjs optimizer ops)',
    kind: 'trainOnBatch',
    mode: 'layers',
    native: false,
  });
  expect(r.losses.every((l: number) => Number.isFinite(l))).toBe(true);
  expect(r.losses[2]).toBeLessThan(r.losses[0]);
  // This process runs the native policy: the same seeded initial weights either way.
  const here = Array.from(glorotUniform(11).apply([300, 20]).dataSync().slice(0, 5));
  expect(r.init).toEqual(here);
  expect(fs.readFileSync('/proc/self/maps', 'utf8')).toContain('xp_ops.node'); // the check sees a loaded kernel file
});
