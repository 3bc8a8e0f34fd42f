// `xp export` of a trained run to tfjs, Keras and SavedModel: each exported model, loaded the way its users load it
// (tf.loadLayersModel; keras.saving.load_model; tf.saved_model.load and its serving_default signature) and fed raw
// 0-255 pixels, gives xp predict's probabilities; a model with a layer Keras lacks is refused with nothing written.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-node';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadImages } from '../../src/data/load.ts';
import { writeSavedModel } from '../../src/model/saved-run.ts';
import { ensureKerasVenv } from '../../src/python/keras-env.ts';
import { names, trainTinyRun, xpIn } from './tiny-run.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'xp-export-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
const xp = xpIn(tmp);

let runDir: string;
let validation: string; // a small validation folder of the run: the export's check predicts all of it
let expected: number[][]; // xp predict's probabilities of `names`, in order
let pixels: Uint8Array;

beforeAll(async () => {
  let files: string[];
  ({ runDir, validation, files } = await trainTinyRun(tmp, 'tiny-export'));
  const predicted = await xp(['predict', runDir, ...files, '--json']);
  expect(predicted.exitCode, predicted.stderr).toBe(0);
  expected = predicted.stdout
    .trim()
    .split('\n')
    .map((l) => Object.values(JSON.parse(l).probabilities as Record<string, number>));
  const loaded = await loadImages(
    files.map((f) => ({ path: f, label: 0 })),
    { imageSize: [96, 96], interpolation: 'bilinear' },
  );
  pixels = loaded.images;
  await ensureKerasVenv(); // made once, before the Keras tests' clocks start
}, 900_000);

/** The largest difference between a model's outputs (one sigmoid unit per image) and xp predict's probabilities. */
function differenceFromPredict(outputs: number[][]): number {
  expect(outputs).toHaveLength(names.length);
  return Math.max(...outputs.map((row, i) => Math.abs(row[0] - expected[i][1])));
}

/** Runs Python in the Keras environment on the raw pixels of `names`; prints the model's outputs as JSON. */
async function kerasOutputs(load: string): Promise<number[][]> {
  const input = path.join(tmp, 'pixels.u8');
  fs.writeFileSync(input, pixels);
  const script = `
import json, sys, numpy as np
x = np.fromfile(${JSON.stringify(input)}, dtype=np.uint8).reshape(-1, 96, 96, 3).astype(np.float32)
${load}
print(json.dumps(np.asarray(y).tolist()))
`;
  const r = await execa(await ensureKerasVenv(), ['-c', script], { reject: false, env: { TF_CPP_MIN_LOG_LEVEL: '3' } });
  expect(r.exitCode, r.stderr).toBe(0);
  return JSON.parse(r.stdout.trim().split('\n').at(-1) ?? '[]');
}

function expectCheckedLine(stdout: string) {
  const m = /checked: on the (\d+) images of .*differ from xp predict's by at most ([0-9.e+-]+)/.exec(stdout);
  expect(m, stdout).not.toBeNull();
  expect(Number(m?.[1])).toBe(names.length);
  expect(Number(m?.[2])).toBeLessThanOrEqual(1e-4);
}

describe('xp export', () => {
  it('--format tfjs writes a LayersModel with the preprocessing inside that predicts as xp predict does', async () => {
    const r = await xp(['export', runDir]);
    expect(r.exitCode, r.stderr).toBe(0);
    expectCheckedLine(r.stdout);
    const out = path.join(runDir, 'export', 'tfjs');
    const model = await tf.loadLayersModel(`file://${path.join(out, 'model.json')}`);
    // One flat graph: the backbone's layers by name, the preprocessing first after the input.
    expect(model.layers[1].getClassName()).toBe('Rescaling');
    expect(model.getLayer('block_2_add')).toBeDefined();
    const y = model.predict(tf.tensor4d(pixels, [names.length, 96, 96, 3], 'int32').toFloat()) as tf.Tensor;
    expect(differenceFromPredict((await y.array()) as number[][])).toBeLessThanOrEqual(1e-4);
    const meta = JSON.parse(fs.readFileSync(path.join(out, 'xp-model.json'), 'utf8'));
    expect(meta).toMatchObject({ class_names: ['cats', 'dogs'], image_size: [96, 96], resize: 'bilinear' });
    expect(meta.experiment).toBe('tiny-export');
    expect(meta.check).toMatchObject({ images: names.length, folder: validation });
    expect(meta.check.max_difference).toBeLessThanOrEqual(1e-4);
  }, 300_000);

  it('--format keras writes a .keras file that keras.saving.load_model loads and predicts as xp predict does', async () => {
    const r = await xp(['export', runDir, '--format', 'keras', '--out', path.join(tmp, 'keras')]);
    expect(r.exitCode, r.stderr).toBe(0);
    expectCheckedLine(r.stdout);
    const file = path.join(tmp, 'keras', 'model.keras');
    const y = await kerasOutputs(
      `import keras\ny = keras.saving.load_model(${JSON.stringify(file)}).predict(x, verbose=0)`,
    );
    expect(differenceFromPredict(y)).toBeLessThanOrEqual(1e-4);
  }, 600_000);

  it('--format savedmodel writes a SavedModel whose serving_default signature predicts as xp predict does', async () => {
    const out = path.join(tmp, 'savedmodel');
    const r = await xp(['export', runDir, '--format', 'savedmodel', '--out', out]);
    expect(r.exitCode, r.stderr).toBe(0);
    expectCheckedLine(r.stdout);
    expect(fs.existsSync(path.join(out, 'saved_model.pb'))).toBe(true);
    expect(fs.existsSync(path.join(out, 'assets.extra', 'xp-model.json'))).toBe(true);
    const y = await kerasOutputs(`import tensorflow as tf
f = tf.saved_model.load(${JSON.stringify(out)}).signatures["serving_default"]
(name,) = f.structured_input_signature[1].keys()
(y,) = f(**{name: tf.constant(x)}).values()
y = y.numpy()`);
    expect(differenceFromPredict(y)).toBeLessThanOrEqual(1e-4);
  }, 600_000);

  it('refuses, naming the layer, a model with a layer Keras lacks, and writes nothing', async () => {
    const odd = path.join(tmp, 'runs', 'odd', 'run');
    const model = tf.sequential({
      layers: [
        tf.layers.conv2d({ inputShape: [96, 96, 3], filters: 2, kernelSize: 3, name: 'conv' }),
        tf.layers.thresholdedReLU({ theta: 0.5, name: 'cutoff' }),
        tf.layers.globalAveragePooling2d({}),
        tf.layers.dense({ units: 1, activation: 'sigmoid' }),
      ],
    });
    await writeSavedModel(odd, model, {
      class_names: ['cats', 'dogs'],
      image_size: [96, 96],
      preprocessing: 'rescale',
      interpolation: 'bilinear',
    });
    const out = path.join(tmp, 'odd-keras');
    const r = await xp(['export', odd, '--format', 'keras', '--out', out, '--images', validation]);
    expect(r.exitCode).not.toBe(0);
    expect(r.stderr).toMatch(/Keras has no layer for ThresholdedReLU \(layer cutoff\)/);
    expect(r.stderr).not.toMatch(/\n\s+at /);
    expect(fs.existsSync(out)).toBe(false);
    expect(fs.existsSync(`${out}.partial`)).toBe(false);
    // tfjs has the layer: the same model exports to tfjs.
    const tfjs = await xp(['export', odd, '--out', path.join(tmp, 'odd-tfjs'), '--images', validation]);
    expect(tfjs.exitCode, tfjs.stderr).toBe(0);
  }, 300_000);

  it('leaves a path that is not an earlier export alone', async () => {
    const out = path.join(tmp, 'mine');
    fs.mkdirSync(out);
    fs.writeFileSync(path.join(out, 'notes.txt'), 'mine');
    const r = await xp(['export', runDir, '--out', out]);
    expect(r.exitCode).not.toBe(0);
    expect(r.stderr).toMatch(/exists and is not an earlier xp export/);
    expect(fs.readdirSync(out)).toEqual(['notes.txt']);
  }, 120_000);
});
