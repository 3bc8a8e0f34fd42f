// Shared by the training tests: a small, fast pipeline (MobileNetV2 with nsfwjs weights cut early, 96x96, 16
// training images per class, the whole 1000-image validation set) written as an experiment file, and a console
// whose lines are kept.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-node';
import type { ResolvedTrial } from '../../src/config/load.ts';
import { createProgress, type Progress } from '../../src/train/progress.ts';
import type { PreparedData } from '../../src/train/data.ts';
import type { TrialSpec } from '../../src/train/run.ts';
import { preprocess } from '../../src/model/backbone.ts';
import { batchLossAndCorrect } from '../../src/train/validation.ts';

export const shared = path.resolve(import.meta.dirname, '../../../shared/datasets/cats_and_dogs_filtered');
export const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'xp-train-'));

/** head/optimizer/training lines of the experiment, and anything after them (sweep, ...). */
export function writeExperiment(name: string, body: string): string {
  const file = path.join(tmp, `${name}.yaml`);
  fs.writeFileSync(
    file,
    `name: ${name}
data: {train: ${shared}/train, validation: ${shared}/validation, image_size: [96, 96], batch_size: 8, max_per_class: 16}
backbone: {name: mobilenet_v2, weights: nsfwjs, cut_layer: block_2_add}
augmentation: {rotation_range: 20, zoom_range: 0.1, horizontal_flip: true}
${body}
`,
  );
  return file;
}

export const spec = (t: Pick<ResolvedTrial, 'name' | 'experiment' | 'configHash'>): TrialSpec => ({
  name: t.name,
  experiment: t.experiment,
  configHash: t.configHash,
  callbacks: [],
});

/** A quiet console (epoch lines, no bar) that keeps what it prints. */
export function recordingProgress(): { progress: Progress; text: () => string } {
  let out = '';
  const stream = {
    isTTY: false,
    write: (s: string) => {
      out += s;
      return true;
    },
  } as unknown as NodeJS.WriteStream;
  return { progress: createProgress('quiet', stream), text: () => out };
}

export async function savedWeights(runDir: string): Promise<Float32Array[]> {
  const model = await tf.loadLayersModel(`file://${path.join(runDir, 'model/model.json')}`);
  const values = model.getWeights().map((w) => w.dataSync() as Float32Array);
  model.dispose();
  return values;
}

/** The saved model (model/model.json, as `xp predict` loads it) on every validation image: accuracy and loss. */
export async function scoreSavedModel(runDir: string, data: PreparedData): Promise<{ accuracy: number; loss: number }> {
  const model = await tf.loadLayersModel(`file://${path.join(runDir, 'model/model.json')}`);
  const meta = JSON.parse(fs.readFileSync(path.join(runDir, 'model/xp.json'), 'utf8'));
  const [h, w] = meta.image_size as [number, number];
  const { images, labels, count } = data.validation;
  let correct = 0;
  let loss = 0;
  for (let start = 0; start < count; start += 100) {
    const n = Math.min(100, count - start);
    const [l, c] = tf.tidy(() => {
      const x = tf
        .tensor4d(images.subarray(start * h * w * 3, (start + n) * h * w * 3), [n, h, w, 3], 'int32')
        .toFloat();
      const p = model.predict(preprocess(x, meta.preprocessing)) as tf.Tensor;
      return batchLossAndCorrect(p, labels.subarray(start, start + n), data.numClasses);
    });
    loss += l;
    correct += c;
  }
  model.dispose();
  return { accuracy: correct / count, loss: loss / count };
}
