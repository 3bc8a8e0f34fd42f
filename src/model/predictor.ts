// A trained run's saved model as `xp predict` and `xp evaluate` use it: images (uint8 RGB at the run's size) in,
// a probability per class out, through the run's preprocessing. `xp export` checks its exports against it.
import type { Interpolation } from '../config/types.ts';

export interface SavedRun {
  classNames: string[];
  imageSize: [number, number];
  interpolation: Interpolation;
  predict(images: Uint8Array, n: number): Promise<Float32Array[]>; // per image, a probability per class
}

export async function openSavedRun(runDir: string): Promise<SavedRun> {
  const { readSavedModel } = await import('./saved-run.ts');
  const { info, model } = await readSavedModel(runDir);
  const tf = await import('@tensorflow/tfjs-node');
  const { preprocess } = await import('./backbone.ts');
  const [h, w] = info.image_size;
  return {
    classNames: info.class_names,
    imageSize: [h, w],
    interpolation: info.interpolation,
    async predict(images, n) {
      const out: Float32Array[] = [];
      for (let start = 0; start < n; start += 32) {
        const m = Math.min(32, n - start);
        const p = tf.tidy(() => {
          const x = tf
            .tensor4d(images.subarray(start * h * w * 3, (start + m) * h * w * 3), [m, h, w, 3], 'int32')
            .toFloat();
          return model.predict(preprocess(x, info.preprocessing)) as import('@tensorflow/tfjs-node').Tensor;
        });
        const values = (await p.array()) as number[][];
        p.dispose();
        for (const row of values) out.push(asProbabilities(row));
      }
      return out;
    },
  };
}

/** A model's output row as a probability per class: a binary head's one sigmoid unit is the second class's. */
export const asProbabilities = (row: ArrayLike<number>): Float32Array =>
  Float32Array.from(row.length === 1 ? [1 - row[0], row[0]] : Array.from(row));
