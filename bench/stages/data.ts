// Data pipeline throughput on a class-per-folder data set: decode+resize of every image, and augmentation of
// batches of 20 with the reference notebook's ImageDataGenerator settings.
import { performance } from 'node:perf_hooks';
import * as tf from '@tensorflow/tfjs-node';
import { createAugmenter, NOTEBOOK_AUGMENTATION } from '../../src/data/augment.ts';
import { createIndexStream, gatherBatch } from '../../src/data/batches.ts';
import { loadImages } from '../../src/data/load.ts';
import { scanClasses } from '../../src/data/scan.ts';
import { createRng } from '../../src/util/random.ts';

export interface DataBenchResult {
  decode_images_per_s: number;
  augment_images_per_s: number;
}

export async function benchData(
  datasetDir: string,
  opts: { imageSize?: [number, number]; batchSize?: number; augmentBatches?: number } = {},
): Promise<DataBenchResult> {
  const imageSize = opts.imageSize ?? [150, 150];
  const batchSize = opts.batchSize ?? 20;
  const augmentBatches = opts.augmentBatches ?? 100;

  const { files } = await scanClasses(datasetDir);
  const decodeStart = performance.now();
  const { images, labels, count } = await loadImages(files, { imageSize });
  const decodeSeconds = (performance.now() - decodeStart) / 1000;

  const rng = createRng(0);
  const stream = createIndexStream(count, batchSize, { shuffle: true, rng: rng.fork() });
  const augmenter = createAugmenter(NOTEBOOK_AUGMENTATION, imageSize, rng.fork());
  // Per training step: gather a batch, upload it, warp it (TF eager ops run synchronously in tfjs-node).
  const step = (): number => {
    const { x } = gatherBatch(images, labels, stream.next(), imageSize);
    const input = tf.tensor4d(
      x,
      [x.length / (imageSize[0] * imageSize[1] * 3), imageSize[0], imageSize[1], 3],
      'int32',
    );
    const output = augmenter.augment(input);
    tf.dispose([input, output]);
    return input.shape[0];
  };
  step(); // warm-up: kernel registration and first-call setup
  let augmented = 0;
  const augmentStart = performance.now();
  for (let i = 0; i < augmentBatches; i++) augmented += step();
  const augmentSeconds = (performance.now() - augmentStart) / 1000;

  return {
    decode_images_per_s: count / decodeSeconds,
    augment_images_per_s: augmented / augmentSeconds,
  };
}
