import * as tf from '@tensorflow/tfjs-node';
import { beforeAll, describe, expect, it } from 'vitest';
import type { BackboneConfig } from '../../src/config/types.ts';
import { ModelError } from '../../src/errors.ts';
import {
  applyTrainable,
  backboneLayerNames,
  loadBackbone,
  preprocess,
  type Backbone,
} from '../../src/model/backbone.ts';

const inception: BackboneConfig = {
  name: 'inception_v3',
  weights: 'nsfwjs',
  cut_layer: 'mixed7',
  trainable: false,
  preprocessing: 'auto',
};

describe('InceptionV3 from the nsfwjs bundle, 150x150 cut at mixed7 (the Keras reference)', () => {
  let backbone: Backbone;
  beforeAll(async () => {
    backbone = await loadBackbone(inception, [150, 150]);
  });

  it('has the Keras output shape and parameter count', () => {
    expect(backbone.featureShape).toEqual([7, 7, 768]);
    expect(backbone.model.inputs[0].shape).toEqual([null, 150, 150, 3]);
    expect(backbone.model.countParams()).toBe(8_975_264);
    expect(backbone.model.outputLayers[0].name).toBe('mixed7');
  });

  it('resolves auto preprocessing to what nsfwjs feeds its models (x/255)', () => {
    expect(backbone.preprocessing).toBe('rescale');
  });

  it('is frozen, and its BatchNormalization uses moving statistics even in training mode', () => {
    expect(backbone.model.trainableWeights).toHaveLength(0);
    const x = tf.randomUniform([2, 150, 150, 3], 0, 1, 'float32', 1);
    const inference = backbone.model.predict(x) as tf.Tensor;
    const training = backbone.model.apply(x, { training: true }) as tf.Tensor;
    expect(tf.max(tf.abs(tf.sub(inference, training))).dataSync()[0]).toBe(0);
    tf.dispose([x, inference, training]);
  });

  it('computes features without leaking tensors', () => {
    const x = tf.randomUniform([1, 150, 150, 3]);
    const run = () => (backbone.model.predict(x) as tf.Tensor).dispose();
    run(); // warm-up: tfjs caches a few constants on first use
    const before = tf.memory().numTensors;
    for (let i = 0; i < 2; i++) run();
    expect(tf.memory().numTensors).toBe(before);
    x.dispose();
  });

  it('trainable_from unfreezes that layer and the ones after it', () => {
    applyTrainable(backbone.model, { trainable: false, trainable_from: 'mixed6' });
    const trainable = backbone.model.layers.filter((l) => l.trainable && l.weights.length > 0).map((l) => l.name);
    expect(trainable).toContain('conv2d_70');
    expect(trainable).not.toContain('conv2d_1');
    expect(backbone.model.trainableWeights.length).toBeGreaterThan(0);
    applyTrainable(backbone.model, { trainable: false });
    expect(backbone.model.trainableWeights).toHaveLength(0);
  });

  it('trains its BatchNormalization layers when unfrozen, though they have no gamma (scale=False)', () => {
    applyTrainable(backbone.model, { trainable: false, trainable_from: 'conv2d_70' });
    const bn = backbone.model.getLayer('batch_normalization_70');
    const frozenBn = backbone.model.getLayer('batch_normalization_1');
    const before = [bn, frozenBn].map((l) => l.getWeights()[1].dataSync().slice()); // moving_mean
    const x = tf.randomUniform([2, 150, 150, 3], 0, 1, 'float32', 2);
    const grads = tf.variableGrads(
      () => tf.mean(backbone.model.apply(x, { training: true }) as tf.Tensor) as tf.Scalar,
    );
    expect(Object.keys(grads.grads).length).toBeGreaterThan(0);
    const after = [bn, frozenBn].map((l) => l.getWeights()[1].dataSync());
    expect(after[0]).not.toEqual(before[0]); // moving average updated
    expect(after[1]).toEqual(before[1]); // frozen layer untouched
    tf.dispose([x, grads.value, ...Object.values(grads.grads)]);
    applyTrainable(backbone.model, { trainable: false });
  });

  it('rejects an unknown trainable_from with the valid names', () => {
    expect(() => applyTrainable(backbone.model, { trainable: true, trainable_from: 'mixed9' })).toThrow(
      /mixed9.*mixed0, mixed1/,
    );
  });
});

describe('cut layers', () => {
  it('lists the Keras layer names without weights, mixed blocks included, nsfwjs head excluded', async () => {
    const names = await backboneLayerNames({ name: 'inception_v3', weights: 'nsfwjs', cut_layer: 'mixed7' });
    expect(names).toContain('mixed7');
    expect(names.at(-1)).toBe('mixed10');
    expect(names).not.toContain('dense_1');
    expect(names).not.toContain('input_1');
    const mobile = await backboneLayerNames({ name: 'mobilenet_v2', weights: 'nsfwjs', cut_layer: 'out_relu' });
    expect(mobile.at(-1)).toBe('out_relu');
    expect(mobile).toContain('block_13_expand_relu');
  });

  it('rejects an unknown cut layer, listing mixed blocks first, others truncated', async () => {
    const error = await loadBackbone({ ...inception, cut_layer: 'mixed11' }, [150, 150]).catch((e) => e);
    expect(error).toBeInstanceOf(ModelError);
    expect(error.message).toMatch(/"mixed11" is not a layer of inception_v3/);
    expect(error.message).toMatch(/mixed0, mixed1, .*mixed10 and \d+ other layers: conv2d_1, /);
    expect(error.message).toMatch(/, \.\.\.\.$/);
    expect(error.message.length).toBeLessThan(600);
  });

  it('rejects an input too small for the architecture', async () => {
    const error = await loadBackbone({ ...inception, cut_layer: 'mixed10' }, [40, 40]).catch((e) => e);
    expect(error).toBeInstanceOf(ModelError);
    expect(error.message).toMatch(/40x40 .* would output shape/);
    expect(error.hint).toMatch(/raise data.image_size/);
  });
});

describe('MobileNetV2 from the nsfwjs bundle', () => {
  it('rebuilds the correct_pad paddings for the input size, as Keras does', async () => {
    const cfg: BackboneConfig = {
      name: 'mobilenet_v2',
      weights: 'nsfwjs',
      cut_layer: 'out_relu',
      trainable: true,
      preprocessing: 'auto',
    };
    const even = await loadBackbone(cfg, [150, 150]);
    // Keras: 150 -> 75 -> 38 -> 19 -> 10 -> 5
    expect(even.featureShape).toEqual([5, 5, 1280]);
    expect(even.model.countParams()).toBe(2_257_984);
    expect(even.model.trainableWeights.length).toBeGreaterThan(0);
    const odd = await loadBackbone(cfg, [151, 97]);
    const pad = odd.model.getLayer('Conv1_pad').getConfig() as { padding: number[][] };
    expect(pad.padding).toEqual([
      [1, 1],
      [1, 1],
    ]);
    expect(odd.featureShape).toEqual([5, 4, 1280]);
    even.model.dispose();
    odd.model.dispose();
  });
});

describe('preprocess', () => {
  it('maps 0..255 as rescale, inception or none', () => {
    const x = tf.tensor([0, 127.5, 255]);
    expect(Array.from(preprocess(x, 'rescale').dataSync())).toEqual([0, 0.5, 1]);
    expect(Array.from(preprocess(x, 'inception').dataSync())).toEqual([-1, 0, 1]);
    expect(Array.from(preprocess(x, 'none').dataSync())).toEqual([0, 127.5, 255]);
  });
});
