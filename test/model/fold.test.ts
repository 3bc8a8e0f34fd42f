import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs-node';
import { describe, expect, it } from 'vitest';
import type { BackboneConfig } from '../../src/config/types.ts';
import { loadBackbone } from '../../src/model/backbone.ts';
import { freezeForInference } from '../../src/model/fold.ts';

const shared = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..', '../shared');

// max |a - b| relative to max |a|
function relativeError(model: tf.LayersModel, folded: (x: tf.Tensor4D) => tf.Tensor4D, x: tf.Tensor4D): number {
  return tf.tidy(() => {
    const a = model.predict(x) as tf.Tensor;
    const b = folded(x);
    expect(b.shape).toEqual(a.shape);
    return tf.max(tf.abs(tf.sub(a, b))).dataSync()[0] / tf.max(tf.abs(a)).dataSync()[0];
  });
}

const cases: [string, BackboneConfig, number][] = [
  // conv(no bias) -> BN(scale=False) -> relu
  ['InceptionV3 to mixed7', { name: 'inception_v3', weights: 'nsfwjs', cut_layer: 'mixed7', trainable: false, preprocessing: 'auto' }, 70],
  // conv / depthwise -> BN(scale) -> ReLU6, and linear projections
  ['MobileNetV2 to out_relu', { name: 'mobilenet_v2', weights: 'nsfwjs', cut_layer: 'out_relu', trainable: false, preprocessing: 'auto' }, 52],
];

describe('freezeForInference', () => {
  for (const [label, cfg, convs] of cases) {
    it(`folds BatchNormalization into the convs of ${label}, same outputs to 1e-4`, async () => {
      const { model } = await loadBackbone(cfg, [150, 150]);
      const folded = freezeForInference(model);
      expect(folded.foldedConvs).toBe(convs);
      const x = tf.randomUniform([2, 150, 150, 3], 0, 1, 'float32', 3) as tf.Tensor4D;
      expect(relativeError(model, folded, x)).toBeLessThan(1e-4);

      const before = tf.memory().numTensors;
      folded(x).dispose();
      expect(tf.memory().numTensors).toBe(before);
      const held = tf.memory().numTensors;
      folded.dispose();
      expect(tf.memory().numTensors).toBe(held - 2 * convs);
      // the model keeps its own weights
      expect(tf.tidy(() => (model.predict(x) as tf.Tensor).shape)).toEqual(model.outputs[0].shape.map((d) => d ?? 2));
      x.dispose();
      model.dispose();
    });
  }

  it('runs the layers it cannot fold as they are (a Teachable Machine model cut inside nested models)', async () => {
    const cfg: BackboneConfig = {
      name: 'mobilenet_v2',
      weights: path.join(shared, 'models/teachable-machine-mobilenet-v2/model.json'),
      cut_layer: 'block_16_project_BN',
      trainable: false,
      preprocessing: 'auto',
    };
    const { model } = await loadBackbone(cfg, [96, 96]);
    const folded = freezeForInference(model);
    const x = tf.randomUniform([1, 96, 96, 3], -1, 1, 'float32', 5) as tf.Tensor4D;
    expect(relativeError(model, folded, x)).toBeLessThan(1e-4);
    folded.dispose();
    x.dispose();
    model.dispose();
  });
});
