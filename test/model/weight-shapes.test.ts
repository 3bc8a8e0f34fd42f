// The weights worked out from a topology alone are the ones the model holds: for the two nsfwjs models and the
// Teachable Machine model (a MobileNetV2 nested two levels down), cut at every layer, the expected names and shapes
// match their manifests exactly, so `xp check` never refuses a model.json loading would take; and each topology's
// sizes are those the build makes.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { nsfwjsModelJson } from '../../src/model/nsfwjs.ts';
import { allLayerNames, cutTopology, modelConfigOf } from '../../src/model/topology.ts';
import { expectedWeights, firstEmptyOutput, weightsMismatch } from '../../src/model/weight-shapes.ts';
import { loadBackbone } from '../../src/model/backbone.ts';

const teachable = path.resolve(import.meta.dirname, '../../../shared/models/teachable-machine-mobilenet-v2/model.json');
const models: [
  string,
  { modelTopology: unknown; weightsManifest: { weights: { name: string; shape: number[] }[] }[] },
][] = [
  ['inception_v3 (nsfwjs)', nsfwjsModelJson('inception_v3')],
  ['mobilenet_v2 (nsfwjs)', nsfwjsModelJson('mobilenet_v2')],
  ['Teachable Machine', JSON.parse(fs.readFileSync(teachable, 'utf8'))],
];

describe('expectedWeights', () => {
  for (const [name, json] of models) {
    it(`${name}: the whole model's weights are its manifest's, names and shapes`, () => {
      const manifest = json.weightsManifest.flatMap((g) => g.weights);
      const expected = expectedWeights(modelConfigOf(json.modelTopology));
      expect(expected.map((w) => w.name).sort()).toEqual(manifest.map((w) => w.name).sort());
      const shapes = new Map(manifest.map((w) => [w.name, w.shape]));
      for (const w of expected) expect(w.shape, w.name).toEqual(shapes.get(w.name));
    });

    it(`${name}: cut at any layer, at sizes it builds at, every weight fits`, () => {
      const topology = modelConfigOf(json.modelTopology);
      const shapes = new Map(json.weightsManifest.flatMap((g) => g.weights).map((w) => [w.name, w.shape]));
      for (const cut of allLayerNames(topology)) {
        for (const size of [
          [299, 299],
          [150, 120],
        ] as [number, number][]) {
          const sized = cutTopology(topology, cut, size);
          if (!sized || firstEmptyOutput(sized)) continue; // too small: refused before the weights
          expect(weightsMismatch(expectedWeights(sized), (w) => shapes.get(w), name)?.message, `${cut} ${size}`).toBe(
            undefined,
          );
        }
      }
    });
  }

  it('a reversed kernel is named with both shapes, a missing weight by name', () => {
    const expected = [
      { name: 'conv/kernel', shape: [3, 3, 3, 16] },
      { name: 'bn/gamma', shape: [16] },
    ];
    const values = new Map([['conv/kernel', [16, 3, 3, 3]]]);
    expect(weightsMismatch(expected, (n) => values.get(n), 'm.json')?.message).toBe(
      'Weight conv/kernel from m.json has shape [16,3,3,3], the model expects [3,3,3,16].',
    );
    values.set('conv/kernel', [3, 3, 3, 16]);
    expect(weightsMismatch(expected, (n) => values.get(n), 'm.json')?.message).toBe(
      'm.json has no values for 1 weights of the model: bn/gamma.',
    );
  });
});

describe('firstEmptyOutput', () => {
  it('finds the layer the build finds empty, in a nested model too', async () => {
    const json = JSON.parse(fs.readFileSync(teachable, 'utf8'));
    const nested = json.modelTopology.config.layers[0].config.layers[0].config.layers;
    const depthwise = nested.find((l: { name: string }) => l.name === 'expanded_conv_depthwise');
    Object.assign(depthwise.config, { padding: 'valid', dilation_rate: [20, 20] });
    const sized = cutTopology(modelConfigOf(json.modelTopology), 'block_2_add', [64, 64]);
    expect(firstEmptyOutput(sized!)).toEqual({ layer: 'expanded_conv_depthwise', size: [-8, -8] });
    // At a size where nothing is empty, the build agrees (nsfwjs MobileNetV2 at the schema's smallest size).
    const backbone = await loadBackbone(
      { name: 'mobilenet_v2', weights: 'nsfwjs', cut_layer: 'out_relu', trainable: false, preprocessing: 'auto' },
      [32, 32],
    );
    const mobilenet = modelConfigOf(nsfwjsModelJson('mobilenet_v2').modelTopology);
    expect(firstEmptyOutput(cutTopology(mobilenet, 'out_relu', [32, 32])!)).toBeUndefined();
    expect(backbone.featureShape).toEqual([1, 1, 1280]);
    backbone.model.dispose();
  });
});
