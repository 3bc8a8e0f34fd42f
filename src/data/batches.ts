// Batching with Keras `DirectoryIterator` semantics: an endless stream of index batches; each pass over the
// data is (re)shuffled at its start and ends with a smaller batch of n % batchSize; epochs take
// `steps_per_epoch` batches from it, so an epoch may end mid-pass and the next one carries on.
import type { Rng } from '../util/random.ts';

export interface IndexStream {
  next(): Int32Array;
  /** ceil(n / batchSize): what Keras uses as steps_per_epoch by default. */
  batchesPerPass: number;
}

export function createIndexStream(n: number, batchSize: number, opts: { shuffle: boolean; rng: Rng }): IndexStream {
  if (!Number.isInteger(n) || n <= 0) throw new RangeError(`createIndexStream: n must be a positive integer, got ${n}`);
  if (!Number.isInteger(batchSize) || batchSize <= 0) {
    throw new RangeError(`createIndexStream: batchSize must be a positive integer, got ${batchSize}`);
  }
  const order = new Int32Array(n);
  let position = 0;

  const startPass = (): void => {
    // A fresh permutation of 0..n-1 each pass, as Keras' np.random.permutation(n).
    for (let i = 0; i < n; i++) order[i] = i;
    if (opts.shuffle) opts.rng.shuffle(order);
  };

  return {
    batchesPerPass: Math.ceil(n / batchSize),
    next() {
      if (position === 0) startPass();
      const end = Math.min(position + batchSize, n);
      const batch = order.slice(position, end);
      position = end === n ? 0 : end;
      return batch;
    },
  };
}

export interface Batch {
  /** indices.length * h * w * 3 bytes, NHWC. */
  x: Uint8Array;
  y: Int32Array;
}

/** Copies the images and labels at `indices` into a new contiguous batch. */
export function gatherBatch(
  images: Uint8Array,
  labels: Int32Array,
  indices: ArrayLike<number>,
  imageSize: [number, number],
): Batch {
  const imageBytes = imageSize[0] * imageSize[1] * 3;
  const x = new Uint8Array(indices.length * imageBytes);
  const y = new Int32Array(indices.length);
  for (let i = 0; i < indices.length; i++) {
    const index = indices[i];
    if (index < 0 || index >= labels.length) {
      throw new RangeError(`gatherBatch: index ${index} is outside 0..${labels.length - 1}`);
    }
    x.set(images.subarray(index * imageBytes, (index + 1) * imageBytes), i * imageBytes);
    y[i] = labels[index];
  }
  return { x, y };
}
