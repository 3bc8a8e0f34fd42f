import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-node';
import { describe, expect, it } from 'vitest';
import { ModelError } from '../../src/errors.ts';
import { applyTrainable } from '../../src/model/backbone.ts';
import { buildHead, composeModel, lossFor } from '../../src/model/head.ts';
import { buildOptimizer } from '../../src/model/optimizer.ts';
import { layerSummary } from '../../src/model/summary.ts';

const reference = { pooling: 'flatten', units: [1024], activation: 'relu', dropout: 0.2 } as const;

describe('buildHead', () => {
  it('builds the Keras reference head with Keras names and parameter count', () => {
    const head = buildHead([7, 7, 768], { ...reference, units: [...reference.units] }, 2);
    expect(head.layers.map((l) => `${l.name}:${l.getClassName()}`)).toEqual([
      'features:InputLayer',
      'flatten:Flatten',
      'dense:Dense',
      'dropout:Dropout',
      'dense_1:Dense',
    ]);
    expect(head.countParams()).toBe(37_632 * 1024 + 1024 + 1024 + 1); // 38,537,217 as in Keras
    expect(head.outputs[0].shape).toEqual([null, 1]);
    expect((head.getLayer('dense_1').getConfig() as { activation: string }).activation).toBe('sigmoid');
    head.dispose();
  });

  it('pools globally, stacks dense layers, skips dropout 0, and ends in softmax for 3+ classes', () => {
    const avg = buildHead([5, 5, 1280], { pooling: 'avg', units: [64, 32], activation: 'tanh', dropout: 0 }, 4);
    expect(avg.layers.map((l) => l.name)).toEqual([
      'features',
      'global_average_pooling2d',
      'dense',
      'dense_1',
      'dense_2',
    ]);
    expect(avg.outputs[0].shape).toEqual([null, 4]);
    expect((avg.getLayer('dense_2').getConfig() as { activation: string }).activation).toBe('softmax');
    const max = buildHead([5, 5, 8], { pooling: 'max', units: [], activation: 'relu', dropout: 0.5 }, 2);
    expect(max.layers.map((l) => l.getClassName())).toEqual(['InputLayer', 'GlobalMaxPooling2D', 'Dense']);
    avg.dispose();
    max.dispose();
  });

  it('needs two classes', () => {
    expect(() => buildHead([2, 2, 2], { ...reference, units: [] }, 1)).toThrow(ModelError);
  });

  it('chooses the loss from the number of classes', () => {
    expect(lossFor(2)).toBe('binaryCrossentropy');
    expect(lossFor(5)).toBe('categoricalCrossentropy');
  });
});

describe('composeModel', () => {
  it('saves a model that tf.loadLayersModel reloads and that predicts the same from images', async () => {
    const input = tf.input({ shape: [16, 16, 3] });
    const conv = tf.layers.conv2d({ filters: 4, kernelSize: 3, name: 'conv2d_1' }).apply(input) as tf.SymbolicTensor;
    const bn = tf.layers.batchNormalization({ name: 'batch_normalization_1' }).apply(conv) as tf.SymbolicTensor;
    const backbone = tf.model({ inputs: input, outputs: bn, name: 'backbone' });
    backbone.trainable = false;
    const head = buildHead([14, 14, 4], { pooling: 'avg', units: [8], activation: 'relu', dropout: 0.2 }, 3);
    const model = composeModel(backbone, head);
    expect(model.inputs[0].shape).toEqual([null, 16, 16, 3]);
    expect(model.outputs[0].shape).toEqual([null, 3]);

    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'xp-compose-'));
    try {
      await model.save(`file://${dir}`);
      const reloaded = await tf.loadLayersModel(`file://${dir}/model.json`);
      const x = tf.randomUniform([2, 16, 16, 3], -1, 1, 'float32', 11);
      const a = model.predict(x) as tf.Tensor;
      const b = reloaded.predict(x) as tf.Tensor;
      expect(tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]).toBeLessThan(1e-6);
      expect(Array.from(tf.sum(b, 1).dataSync()).every((s) => Math.abs(s - 1) < 1e-5)).toBe(true);
      tf.dispose([x, a, b]);
      reloaded.dispose();
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
      model.dispose();
    }
  });
});

describe('training the composed model', () => {
  it('fits the head through a frozen backbone whose BatchNormalization has no gamma (InceptionV3 style)', async () => {
    const input = tf.input({ shape: [8, 8, 3] });
    const conv = tf.layers
      .conv2d({ filters: 4, kernelSize: 3, useBias: false, name: 'conv2d_1' })
      .apply(input) as tf.SymbolicTensor;
    const bn = tf.layers
      .batchNormalization({ scale: false, name: 'batch_normalization_1' })
      .apply(conv) as tf.SymbolicTensor;
    const backbone = tf.model({
      inputs: input,
      outputs: tf.layers.activation({ activation: 'relu' }).apply(bn) as tf.SymbolicTensor,
    });
    applyTrainable(backbone, { trainable: false });
    const frozen = backbone.getWeights().map((w) => w.dataSync().slice());
    const model = composeModel(
      backbone,
      buildHead([6, 6, 4], { pooling: 'flatten', units: [4], activation: 'relu', dropout: 0.2 }, 2),
    );
    model.compile({
      optimizer: buildOptimizer({ name: 'rmsprop', learning_rate: 1e-3 }),
      loss: lossFor(2),
      metrics: ['accuracy'],
    });
    const x = tf.randomUniform([8, 8, 8, 3], -1, 1, 'float32', 1);
    const y = tf.tensor2d([0, 1, 0, 1, 0, 1, 0, 1], [8, 1]);
    const history = await model.fit(x, y, { epochs: 2, batchSize: 4, verbose: 0 });
    expect(history.history.loss).toHaveLength(2);
    expect(backbone.getWeights().map((w) => w.dataSync())).toEqual(frozen); // moving statistics untouched too
    tf.dispose([x, y]);
    model.dispose();
  });
});

describe('buildOptimizer', () => {
  const config = (o: tf.Optimizer) => o.getConfig() as Record<string, unknown>;

  it('uses Keras defaults', () => {
    expect(config(buildOptimizer({ name: 'rmsprop', learning_rate: 1e-4 }))).toMatchObject({
      learningRate: 1e-4,
      rho: 0.9,
      epsilon: 1e-7,
    });
    expect(config(buildOptimizer({ name: 'adam', learning_rate: 1e-3 }))).toMatchObject({
      learningRate: 1e-3,
      beta1: 0.9,
      beta2: 0.999,
      epsilon: 1e-7,
    });
    expect(buildOptimizer({ name: 'sgd', learning_rate: 0.01 }).getClassName()).toBe('SGD');
    expect(config(buildOptimizer({ name: 'sgd', learning_rate: 0.01, momentum: 0.9, nesterov: true }))).toMatchObject({
      momentum: 0.9,
      useNesterov: true,
    });
    expect(config(buildOptimizer({ name: 'adagrad', learning_rate: 0.01 }))).toMatchObject({
      learningRate: 0.01,
      initialAccumulatorValue: 0.1,
    });
  });

  it('passes rho, betas and epsilon through', () => {
    expect(
      config(buildOptimizer({ name: 'rmsprop', learning_rate: 0.1, rho: 0.8, momentum: 0.5, epsilon: 1e-5 })),
    ).toMatchObject({ decay: 0.8, momentum: 0.5, epsilon: 1e-5 });
    expect(config(buildOptimizer({ name: 'adam', learning_rate: 0.1, beta_1: 0.5, beta_2: 0.9 }))).toMatchObject({
      beta1: 0.5,
      beta2: 0.9,
    });
  });

  it('takes a Keras SGD-with-momentum step', () => {
    // Keras: v = m*v - lr*g; w += v. Two steps of g=1 from w=0 with lr 0.1, m 0.9: -0.1, then -0.29.
    const w = tf.variable(tf.scalar(0));
    const opt = buildOptimizer({ name: 'sgd', learning_rate: 0.1, momentum: 0.9 });
    for (let i = 0; i < 2; i++) opt.minimize(() => tf.mul(w, 1) as tf.Scalar, false, [w]);
    expect(w.dataSync()[0]).toBeCloseTo(-0.29, 6);
    w.dispose();
    opt.dispose();
  });

  it('rejects a non-positive learning rate', () => {
    expect(() => buildOptimizer({ name: 'adam', learning_rate: 0 })).toThrow(ModelError);
  });
});

describe('layerSummary', () => {
  it('lists layers with output shapes and parameters, and the totals', () => {
    const head = buildHead([7, 7, 768], { ...reference, units: [...reference.units] }, 2);
    head.getLayer('dense').trainable = false;
    const text = layerSummary(head);
    expect(text).toMatch(/^Model: "head"/);
    expect(text).toMatch(/flatten \(Flatten\)\s+\(None, 37632\)\s+0/);
    expect(text).toMatch(/dense \(Dense\)\s+\(None, 1024\)\s+38,536,192/);
    expect(text).toMatch(/dense_1 \(Dense\)\s+\(None, 1\)\s+1,025/);
    expect(text).toContain('Total params: 38,537,217');
    expect(text).toContain('Trainable params: 1,025');
    expect(text).toContain('Non-trainable params: 38,536,192');
    head.dispose();
  });
});
