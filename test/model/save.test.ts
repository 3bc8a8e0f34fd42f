import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-node';
import { expect, it } from 'vitest';
import { buildHead } from '../../src/model/head.ts';
import { saveModel } from '../../src/model/save.ts';

it('saveModel writes what model.save writes (a kernel larger than one slice included), and it loads back', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xp-save-'));
  const model = buildHead([4, 4, 512], { pooling: 'flatten', units: [600], activation: 'relu', dropout: 0.2 }, 3, { seed: 4 }); // 8192 x 600 kernel
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
