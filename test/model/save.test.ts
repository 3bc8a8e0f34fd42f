import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-node';
import { expect, it } from 'vitest';
import { buildHead } from '../../src/model/head.ts';
import { saveModel } from '../../src/model/save.ts';
import { readSavedModel, writeSavedModel } from '../../src/model/saved-run.ts';

it('saveModel writes what model.save writes (a kernel larger than one slice included), and it loads back', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xp-save-'));
  const model = buildHead([4, 4, 512], { pooling: 'flatten', units: [600], activation: 'relu', dropout: 0.2 }, 3, {
    seed: 4,
  }); // 8192 x 600 kernel
  await model.save(`file://${path.join(dir, 'tfjs')}`);
  await saveModel(model, path.join(dir, 'ours'));
  const read = (name: string, file: string) => fs.readFileSync(path.join(dir, name, file));
  expect(read('ours', 'weights.bin').equals(read('tfjs', 'weights.bin'))).toBe(true);
  expect(JSON.parse(read('ours', 'model.json').toString())).toEqual(JSON.parse(read('tfjs', 'model.json').toString()));
  const loaded = await tf.loadLayersModel(`file://${path.join(dir, 'ours', 'model.json')}`);
  const x = tf.randomNormal([2, 4, 4, 512], 0, 1, 'float32', 1);
  expect(tf.max(tf.abs(tf.sub(loaded.predict(x) as tf.Tensor, model.predict(x) as tf.Tensor))).dataSync()[0]).toBe(0);
  fs.rmSync(dir, { recursive: true, force: true });
});

it('writeSavedModel replaces an earlier model whole, and readSavedModel gives back its info and predictions', async () => {
  const runDir = fs.mkdtempSync(path.join(os.tmpdir(), 'xp-saved-run-'));
  fs.mkdirSync(path.join(runDir, 'model'));
  fs.writeFileSync(path.join(runDir, 'model', 'stale.bin'), 'from an earlier save');
  const model = tf.sequential({
    layers: [
      tf.layers.conv2d({ inputShape: [4, 5, 3], filters: 2, kernelSize: 3 }),
      tf.layers.flatten(),
      tf.layers.dense({ units: 3, activation: 'softmax' }),
    ],
  });
  const info = {
    class_names: ['a', 'b', 'c'],
    image_size: [4, 5] as [number, number],
    preprocessing: 'inception' as const,
    interpolation: 'bicubic' as const,
  };
  await writeSavedModel(runDir, model, info);
  expect(fs.readdirSync(runDir)).toEqual(['model']);
  expect(fs.readdirSync(path.join(runDir, 'model')).sort()).toEqual(['model.json', 'weights.bin', 'xp.json']);
  const saved = await readSavedModel(runDir);
  expect(saved.info).toEqual(info);
  const x = tf.randomNormal([2, 4, 5, 3], 0, 1, 'float32', 3);
  expect(tf.max(tf.abs(tf.sub(saved.model.predict(x) as tf.Tensor, model.predict(x) as tf.Tensor))).dataSync()[0]).toBe(
    0,
  );
  // xp.json and the model must agree on what goes in.
  fs.writeFileSync(path.join(runDir, 'model', 'xp.json'), JSON.stringify({ ...info, image_size: [5, 4] }));
  await expect(readSavedModel(runDir)).rejects.toThrow(
    /model\/model\.json does not match model\/xp\.json: the model takes input \[4,5,3\], xp\.json says images of 5x4/,
  );
  fs.rmSync(runDir, { recursive: true, force: true });
});
