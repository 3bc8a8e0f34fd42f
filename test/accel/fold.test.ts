// Inference-only forward passes of a frozen backbone: folded eager ops and a compiled graph
// must compute what the LayersModel computes.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BackboneConfig } from '../../src/config/types.ts';
import { loadBackbone } from '../../src/model/backbone.ts';
import { freezeForInference } from '../../src/accel/fold.ts';
import { compileForInference } from '../../src/accel/graph.ts';
import { policyNamed } from '../../src/accel/policy.ts';

// The graph is the compiled-backbone policies' (native, xla): these tests ask for it, whatever XP_ACCEL says.
const COMPILED = policyNamed('xla');

const shared = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..', '../shared');

// max |a - b| relative to max |a|
function relativeError(model: tf.LayersModel, fn: (x: tf.Tensor4D) => tf.Tensor4D, x: tf.Tensor4D): number {
  return tf.tidy(() => {
    const a = model.predict(x) as tf.Tensor;
    const b = fn(x);
    expect(b.shape).toEqual(a.shape);
    return tf.max(tf.abs(tf.sub(a, b))).dataSync()[0] / tf.max(tf.abs(a)).dataSync()[0];
  });
}

const frozen = (cfg: Omit<BackboneConfig, 'trainable' | 'preprocessing'>): BackboneConfig => ({
  ...cfg,
  trainable: false,
  preprocessing: 'auto',
});

const cases = [
  // conv(no bias) -> BN(scale=False) -> relu; pools; concatenations
  {
    label: 'InceptionV3 to mixed7',
    cfg: frozen({ name: 'inception_v3', weights: 'nsfwjs', cut_layer: 'mixed7' }),
    convs: 70,
  },
  // conv and depthwise -> BN(scale) -> ReLU6; linear projections; residual adds; paddings
  {
    label: 'MobileNetV2 to out_relu',
    cfg: frozen({ name: 'mobilenet_v2', weights: 'nsfwjs', cut_layer: 'out_relu' }),
    convs: 52,
  },
];

for (const { label, cfg, convs } of cases) {
  describe(label, () => {
    let model: tf.LayersModel;
    let x: tf.Tensor4D;
    beforeAll(async () => {
      model = (await loadBackbone(cfg, [150, 150])).model;
      x = tf.randomUniform([2, 150, 150, 3], 0, 1, 'float32', 3) as tf.Tensor4D;
    });
    afterAll(() => {
      x.dispose();
      model.dispose();
    });

    it('freezeForInference folds every conv with its BatchNormalization, same outputs to 1e-4', () => {
      const folded = freezeForInference(model);
      expect(folded.foldedConvs).toBe(convs);
      expect(relativeError(model, folded, x)).toBeLessThan(1e-4);
      const before = tf.memory().numTensors;
      folded(x).dispose();
      expect(tf.memory().numTensors).toBe(before);
      folded.dispose();
      expect(tf.memory().numTensors).toBe(before - 2 * convs); // folded kernels and biases freed
      expect(relativeError(model, (t) => model.predict(t) as tf.Tensor4D, x)).toBe(0); // model untouched
    });

    it('compileForInference runs it as one TensorFlow graph, same outputs to 1e-4, any batch size', async () => {
      const graph = await compileForInference(model, COMPILED);
      expect(graph.mode).toBe('graph');
      expect(graph.foldedConvs).toBe(convs);
      expect(relativeError(model, graph, x)).toBeLessThan(1e-4);
      const one = tf.slice(x, [0, 0, 0, 0], [1, -1, -1, -1]) as tf.Tensor4D;
      expect(relativeError(model, graph, one)).toBeLessThan(1e-4);
      one.dispose();
      const before = tf.memory().numTensors;
      graph(x).dispose();
      expect(tf.memory().numTensors).toBe(before);
      graph.dispose();
    });

    it('under the plain policy compileForInference is model.predict itself', async () => {
      const plain = await compileForInference(model, policyNamed('plain'));
      expect(plain.mode).toBe('layers');
      expect(relativeError(model, plain, x)).toBe(0);
      plain.dispose();
    });
  });
}

describe('layer kinds off the folding path', () => {
  it('compiles a conv read twice (BN left standalone), pads, pools, adds, concatenations and activations', async () => {
    const L = tf.layers;
    const input = tf.input({ shape: [12, 12, 3] });
    const padded = L.zeroPadding2d({
      padding: [
        [0, 1],
        [1, 0],
      ],
    }).apply(input) as tf.SymbolicTensor;
    const conv = L.conv2d({ filters: 4, kernelSize: 3, padding: 'same', useBias: true }).apply(
      padded,
    ) as tf.SymbolicTensor;
    const bn = L.batchNormalization({ epsilon: 1e-3 }).apply(conv) as tf.SymbolicTensor; // conv has two readers: no folding
    const sum = L.add().apply([bn, conv]) as tf.SymbolicTensor;
    const relu6 = L.reLU({ maxValue: 6 }).apply(sum) as tf.SymbolicTensor;
    const max = L.maxPooling2d({ poolSize: 2, padding: 'same' }).apply(relu6) as tf.SymbolicTensor;
    const avg = L.averagePooling2d({ poolSize: 3, strides: 2, padding: 'same' }).apply(relu6) as tf.SymbolicTensor;
    const joined = L.concatenate().apply([max, avg]) as tf.SymbolicTensor;
    const dw = L.depthwiseConv2d({ kernelSize: 3, depthMultiplier: 2, activation: 'relu' }).apply(
      joined,
    ) as tf.SymbolicTensor;
    const out = L.activation({ activation: 'sigmoid' }).apply(
      L.dropout({ rate: 0.5 }).apply(dw) as tf.SymbolicTensor,
    ) as tf.SymbolicTensor;
    const model = tf.model({ inputs: input, outputs: out });
    // non-trivial BN statistics
    const w = model.layers[3].getWeights();
    model.layers[3].setWeights(w.map((t, i) => tf.add(t, tf.randomUniform(t.shape, 0.1, 0.5, 'float32', i))));
    const graph = await compileForInference(model, COMPILED);
    expect(graph.mode).toBe('graph');
    const x = tf.randomUniform([3, 12, 12, 3], -1, 1, 'float32', 9) as tf.Tensor4D;
    expect(relativeError(model, graph, x)).toBeLessThan(1e-5);
    expect(relativeError(model, freezeForInference(model), x)).toBeLessThan(1e-5);
    graph.dispose();
    x.dispose();
    model.dispose();
  });
});

describe('a Teachable Machine model (MobileNetV2 alpha 0.35 nested in Sequentials)', () => {
  const cfg = (cut_layer: string) =>
    frozen({
      name: 'mobilenet_v2',
      weights: path.join(shared, 'models/teachable-machine-mobilenet-v2/model.json'),
      cut_layer,
    });

  it('compiles when cut inside the nested functional model', async () => {
    const { model } = await loadBackbone(cfg('block_16_project_BN'), [96, 96]);
    const x = tf.randomUniform([1, 96, 96, 3], -1, 1, 'float32', 5) as tf.Tensor4D;
    const graph = await compileForInference(model, COMPILED);
    expect(graph.mode).toBe('graph');
    expect(relativeError(model, graph, x)).toBeLessThan(1e-4);
    graph.dispose();
    x.dispose();
    model.dispose();
  });

  it('falls back to folded eager ops when a nested model stays (cut in its head)', async () => {
    const { model } = await loadBackbone(cfg('dense_Dense1'), [96, 96]);
    const x = tf.randomUniform([1, 96, 96, 3], -1, 1, 'float32', 6) as tf.Tensor4D;
    const fn = await compileForInference(model, COMPILED);
    expect(fn.mode).toBe('eager');
    expect(relativeError(model, fn, x)).toBeLessThan(1e-4);
    fn.dispose();
    x.dispose();
    model.dispose();
  });
});
