// A tfjs LayersModel as backbone: the Teachable Machine export (Sequential > Sequential > Model).
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs-node';
import { beforeAll, describe, expect, it } from 'vitest';
import type { BackboneConfig } from '../../src/config/types.ts';
import { ModelError } from '../../src/errors.ts';
import { loadBackbone } from '../../src/model/backbone.ts';

const shared = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..', '../shared');
const modelJson = path.join(shared, 'models/teachable-machine-mobilenet-v2/model.json');
const cfg: BackboneConfig = {
  name: 'mobilenet_v2',
  weights: modelJson,
  cut_layer: 'out_relu',
  trainable: false,
  preprocessing: 'auto',
};

describe('a Teachable Machine model.json', () => {
  let original: tf.LayersModel;
  beforeAll(async () => {
    original = await tf.loadLayersModel(`file://${modelJson}`);
  });

  it('is cut inside its nested functional model into a flat model with the same outputs', async () => {
    const backbone = await loadBackbone(cfg, [224, 224]);
    expect(backbone.model.layers.some((l) => l instanceof tf.LayersModel)).toBe(false);
    expect(backbone.model.outputLayers[0].name).toBe('out_relu');
    expect(backbone.featureShape).toEqual([7, 7, 1280]);
    expect(backbone.preprocessing).toBe('inception');
    const inner = (original.layers[0] as tf.LayersModel).layers[0] as tf.LayersModel; // sequential_1 > model1
    const x = tf.randomUniform([2, 224, 224, 3], -1, 1, 'float32', 2);
    const a = inner.predict(x) as tf.Tensor;
    const b = backbone.model.predict(x) as tf.Tensor;
    expect(tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]).toBe(0);
    tf.dispose([x, a, b]);
    backbone.model.dispose();
  });

  it('is rebuilt for another input size', async () => {
    const backbone = await loadBackbone(cfg, [150, 150]);
    expect(backbone.model.inputs[0].shape).toEqual([null, 150, 150, 3]);
    expect(backbone.featureShape).toEqual([5, 5, 1280]);
    backbone.model.dispose();
  });

  it('can be cut in a later nested model (the head), keeping what comes before', async () => {
    const backbone = await loadBackbone({ ...cfg, cut_layer: 'dense_Dense1' }, [224, 224]);
    expect(backbone.featureShape).toEqual([100]);
    const x = tf.randomUniform([1, 224, 224, 3], -1, 1, 'float32', 4);
    const viaOriginal = tf.tidy(() => {
      const features = (original.layers[0] as tf.LayersModel).predict(x) as tf.Tensor;
      return (original.layers[1] as tf.LayersModel).layers[0].apply(features) as tf.Tensor;
    });
    const ours = backbone.model.predict(x) as tf.Tensor;
    expect(tf.max(tf.abs(tf.sub(viaOriginal, ours))).dataSync()[0]).toBeLessThan(1e-5);
    tf.dispose([x, viaOriginal, ours]);
    backbone.model.dispose();
  });

  it('lists the nested layer names when the cut layer is unknown', async () => {
    const error = await loadBackbone({ ...cfg, cut_layer: 'mixed7' }, [224, 224]).catch((e) => e);
    expect(error).toBeInstanceOf(ModelError);
    expect(error.message).toMatch(
      /not a layer of .*model\.json\. Valid layers: block_2_add, .*out_relu and \d+ other layers: /,
    );
  });

  it('reports a missing model file', async () => {
    await expect(loadBackbone({ ...cfg, weights: path.join(shared, 'nope/model.json') }, [224, 224])).rejects.toThrow(
      /Cannot read the tfjs model/,
    );
  });
});
