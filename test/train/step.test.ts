import * as tf from '@tensorflow/tfjs-node';
import { expect, it } from 'vitest';
import { buildHead, lossFor } from '../../src/model/head.ts';
import { buildOptimizer } from '../../src/model/optimizer.ts';
import { predictor, setDropoutSeed as seedDropout, trainStep } from '../../src/accel/index.ts';
import { policyNamed } from '../../src/accel/policy.ts';

// The dense-head step is the native policy's: these tests ask for it, whatever XP_ACCEL says.
const NATIVE = policyNamed('native');

// Heads whose first kernel (1024 x 256) is large enough for the one-pass update.
type Shape = { units: number[]; activation: string; dropout: number; classes: number };
const REFERENCE: Shape = { units: [256, 16], activation: 'relu', dropout: 0.3, classes: 2 };
const head = (optimizer: 'rmsprop' | 'adam' = 'rmsprop', shape: Shape = REFERENCE) => {
  const model = buildHead(
    [4, 4, 64],
    { pooling: 'flatten', units: shape.units, activation: shape.activation as 'relu', dropout: shape.dropout },
    shape.classes,
    { seed: 5 },
  );
  model.compile({
    optimizer: buildOptimizer({ name: optimizer, learning_rate: 1e-3 }),
    loss: lossFor(shape.classes),
    metrics: ['accuracy'],
  });
  return model;
};
const targets = (classes: number) =>
  classes === 2
    ? tf.tensor2d(
        Array.from({ length: 20 }, (_, i) => i % 2),
        [20, 1],
      )
    : tf
        .oneHot(
          tf.tensor1d(
            Array.from({ length: 20 }, (_, i) => i % classes),
            'int32',
          ),
          classes,
        )
        .toFloat();

const setDropoutSeed = (model: tf.LayersModel, seed: number) => {
  for (const l of model.layers) if (l.getClassName() === 'Dropout') seedDropout(l, seed);
};

it.each([
  ['binary, relu, two Dense layers and dropout (the reference shape)', REFERENCE],
  ['3 classes (softmax), tanh, no dropout', { units: [256], activation: 'tanh', dropout: 0, classes: 3 }],
  ['5 classes, sigmoid hidden layers, dropout', { units: [256, 8], activation: 'sigmoid', dropout: 0.5, classes: 5 }],
  ['binary, linear, dropout', { units: [256], activation: 'linear', dropout: 0.2, classes: 2 }],
])(
  'the one-pass dense-head step follows trainOnBatch: same losses, metrics and weights, no leaks: %s',
  async (_, shape) => {
    await followsTrainOnBatch(() => head('rmsprop', shape), targets(shape.classes), 'written-out');
  },
);

it('a head with a regularizer after the large Dense takes the gradient tape, and follows trainOnBatch too', async () => {
  const make = () => {
    const input = tf.input({ shape: [4, 4, 64] });
    const flat = tf.layers.flatten().apply(input);
    const hidden = tf.layers
      .dense({ units: 256, activation: 'relu', kernelInitializer: tf.initializers.glorotUniform({ seed: 1 }) })
      .apply(flat);
    const out = tf.layers
      .dense({
        units: 1,
        activation: 'sigmoid',
        kernelRegularizer: tf.regularizers.l2({ l2: 0.01 }),
        kernelInitializer: tf.initializers.glorotUniform({ seed: 2 }),
      })
      .apply(hidden);
    const model = tf.model({ inputs: input, outputs: out as tf.SymbolicTensor });
    model.compile({
      optimizer: buildOptimizer({ name: 'rmsprop', learning_rate: 1e-3 }),
      loss: lossFor(2),
      metrics: ['accuracy'],
    });
    return model;
  };
  await followsTrainOnBatch(make, targets(2), 'tape');
});

async function followsTrainOnBatch(make: () => tf.LayersModel, y: tf.Tensor, backprop: 'written-out' | 'tape') {
  const fused = make();
  const reference = make();
  const step = trainStep(fused, NATIVE);
  expect(step.kind).toBe('dense-head');
  expect(step.backprop).toBe(backprop);
  const x = tf.randomNormal([20, 4, 4, 64], 0, 1, 'float32', 9);
  let before = 0;
  for (let i = 0; i < 8; i++) {
    // Optimizer slots exist from the first step on, and from then on one prepared matmul for the next batch.
    if (i === 2) before = tf.memory().numTensors;
    if (i === 6) expect(tf.memory().numTensors).toBe(before);
    setDropoutSeed(fused, 100 + i);
    setDropoutSeed(reference, 100 + i);
    // The batch after this one is known except at the end: the step prepares its matmul in the update.
    const ours = await step(x, y, i < 7 ? x : undefined);
    const theirs = (await reference.trainOnBatch(x, y)) as number[];
    expect(ours).toHaveLength(2);
    expect(ours[0]).toBeCloseTo(theirs[0], 4);
    expect(ours[1]).toBeCloseTo(theirs[1], 4);
  }
  expect(tf.memory().numTensors).toBe(before - 1); // the last step had no next batch to prepare for
  const a = fused.getWeights();
  const b = reference.getWeights();
  const start = make().getWeights();
  for (let i = 0; i < a.length; i++) {
    const moved = tf.max(tf.abs(tf.sub(b[i], start[i]))).dataSync()[0];
    expect(moved).toBeGreaterThan(0); // every variable trained, the fused kernel included
    expect(tf.max(tf.abs(tf.sub(a[i], b[i]))).dataSync()[0]).toBeLessThan(moved * 1e-3);
  }
  const after = tf.memory().numTensors;
  await step(x, y, x); // interrupted before the announced batch: dispose frees what was prepared
  step.dispose();
  expect(tf.memory().numTensors).toBe(after);
  tf.dispose([x, y]);
}

it('other heads and optimizers keep trainOnBatch', () => {
  expect(trainStep(head('adam'), NATIVE).kind).toBe('trainOnBatch');
  const small = buildHead([2, 2, 8], { pooling: 'avg', units: [8], activation: 'relu', dropout: 0 }, 2);
  small.compile({
    optimizer: buildOptimizer({ name: 'rmsprop', learning_rate: 1e-3 }),
    loss: lossFor(2),
    metrics: ['accuracy'],
  });
  expect(trainStep(small, NATIVE).kind).toBe('trainOnBatch');
});

it('predictions of the dense head equal model.predict, with sparse features (zeros skipped) and dense ones', () => {
  const model = head();
  const predict = predictor(model, NATIVE);
  tf.tidy(() => {
    for (const shift of [1.4, -10]) {
      const x = tf.relu(tf.sub(tf.randomNormal([50, 4, 4, 64], 0, 1, 'float32', 3), shift)); // 92% zeros, then none
      const ours = predict(x);
      const theirs = model.predict(x) as tf.Tensor;
      expect(ours.shape).toEqual(theirs.shape);
      expect(tf.max(tf.abs(tf.sub(ours, theirs))).dataSync()[0]).toBeLessThan(1e-5);
    }
  });
});
