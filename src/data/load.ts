// Decodes every image once into one preallocated NHWC uint8 buffer, like Keras `load_img`:
// RGB (alpha dropped), resized to exactly [h, w] ignoring the aspect ratio, no EXIF rotation.
import os from 'node:os';
import sharp from 'sharp';
import type { Interpolation } from '../config/types.ts';
import { DataError, Interrupted } from '../errors.ts';
import type { ImageFile } from './scan.ts';

export interface LoadOptions {
  imageSize: [number, number]; // [height, width]
  /** Resampling kernel for the resize; Keras' default is 'nearest'. */
  interpolation?: Interpolation;
  /** Called once per skipped file with a one-line message. */
  onWarning?: (message: string) => void;
  /** Images decoded at once; default 2 x cores. */
  concurrency?: number;
  /** Asked before each image: true stops decoding, and loadImages throws Interrupted. */
  shouldStop?: () => boolean;
  /** Images with more pixels are refused before decoding (sharp's limitInputPixels); default sharp's, 268M. */
  maxPixels?: number;
}

export interface LoadedImages {
  /** count * h * w * 3 bytes, NHWC, RGB. */
  images: Uint8Array;
  labels: Int32Array;
  count: number;
  skipped: { path: string; reason: string }[];
}

const KERNELS: Record<Interpolation, keyof sharp.KernelEnum> = {
  nearest: 'nearest',
  bilinear: 'linear',
  bicubic: 'cubic',
};

export async function loadImages(files: readonly ImageFile[], opts: LoadOptions): Promise<LoadedImages> {
  const [height, width] = opts.imageSize;
  const imageBytes = height * width * 3;
  const { images, failures, decoded } = await decodeImages(
    files.map((f) => f.path),
    opts,
  );
  if (decoded < files.length) throw new Interrupted(`decoding interrupted after ${decoded} of ${files.length} images`);

  // Close the gaps left by skipped files, keeping the original order.
  const labels = new Int32Array(files.length);
  const skipped: LoadedImages['skipped'] = [];
  let count = 0;
  for (const [index, file] of files.entries()) {
    const reason = failures[index];
    if (reason !== undefined) {
      skipped.push({ path: file.path, reason });
      opts.onWarning?.(`Skipping unreadable image ${file.path}: ${reason}`);
      continue;
    }
    if (count !== index) images.copyWithin(count * imageBytes, index * imageBytes, (index + 1) * imageBytes);
    labels[count++] = file.label;
  }

  if (count === 0 && files.length > 0) {
    throw new DataError(
      `None of the ${files.length} images could be read (first: ${skipped[0].path}: ${skipped[0].reason})`,
      {
        hint: 'Check that the files are JPEG, PNG, GIF or WebP images and not empty or truncated.',
      },
    );
  }
  return {
    images: count === files.length ? images : images.subarray(0, count * imageBytes),
    labels: count === files.length ? labels : labels.slice(0, count),
    count,
    skipped,
  };
}

/**
 * Image files or images given as bytes (the bodies `xp serve` receives), decoded by one decoder so that `xp serve`
 * answers what `xp predict` does: `images` holds each at its index (zeros where it failed), `failures` says why one
 * failed, `decoded` how many were tried before `shouldStop`.
 */
export async function decodeImages(
  sources: readonly (string | Buffer)[],
  opts: LoadOptions,
): Promise<{ images: Uint8Array; failures: (string | undefined)[]; decoded: number }> {
  const [height, width] = opts.imageSize;
  const kernel = KERNELS[opts.interpolation ?? 'nearest'];
  const imageBytes = height * width * 3;
  const images = new Uint8Array(sources.length * imageBytes);
  const failures: (string | undefined)[] = new Array(sources.length);

  const decodeInto = async (index: number): Promise<void> => {
    try {
      // No JPEG shrink-on-load: resample the full-size pixels, as PIL's resize in Keras' load_img does.
      const { data, info } = await sharp(sources[index], {
        sequentialRead: true,
        ...(opts.maxPixels ? { limitInputPixels: opts.maxPixels } : {}),
      })
        .removeAlpha()
        .toColourspace('srgb')
        .resize(width, height, { fit: 'fill', kernel, fastShrinkOnLoad: false })
        .raw()
        .toBuffer({ resolveWithObject: true });
      if (info.channels !== 3 || data.length !== imageBytes) {
        throw new Error(`decoded to ${info.width}x${info.height}x${info.channels}, expected ${width}x${height}x3`);
      }
      images.set(data, index * imageBytes);
    } catch (error) {
      failures[index] = firstLine(error);
    }
  };

  const concurrency = Math.max(1, opts.concurrency ?? 2 * os.availableParallelism());
  let nextIndex = 0;
  const worker = async (): Promise<void> => {
    while (nextIndex < sources.length && !opts.shouldStop?.()) await decodeInto(nextIndex++);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, sources.length) }, worker));
  return { images, failures, decoded: nextIndex };
}

function firstLine(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  return (
    message
      .split('\n')
      .find((line) => line.trim() !== '')
      ?.trim() ?? 'unknown decode error'
  );
}
