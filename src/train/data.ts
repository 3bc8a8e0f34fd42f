// Everything the training loop needs from disk, decoded once: train and validation images in memory.
import crypto from 'node:crypto';
import path from 'node:path';
import type { DataConfig } from '../config/types.ts';
import { DataError } from '../errors.ts';
import { resolveDataset } from '../data/dataset.ts';
import type { ImageFile } from '../data/scan.ts';
import { scanSplits } from '../data/splits.ts';
import { loadImages, type LoadedImages } from '../data/load.ts';

export interface Split extends LoadedImages {
  dir: string;
  /** sha256 of the sorted relative file list, first 16 hex chars (MLflow dataset digest). */
  digest: string;
}

export interface PreparedData {
  classNames: string[];
  numClasses: number;
  train: Split;
  validation: Split;
  decodeSeconds: number;
}

export async function prepareData(
  data: DataConfig,
  opts: {
    baseDir: string;
    dataDir?: string;
    onWarning?: (message: string) => void;
    log?: (line: string) => void;
    /** Asked while decoding: true stops it (Interrupted). */
    shouldStop?: () => boolean;
  },
): Promise<PreparedData> {
  const { trainDir, validationDir } = await resolveDataset(data, { baseDir: opts.baseDir, dataDir: opts.dataDir });
  const scanned = await scanSplits({ train: trainDir, validation: validationDir }, data);
  // The preflight has reported every problem of local folders; a data set given by url is first scanned here.
  if (scanned.problems) throw scanned.problems[0].error;
  const { train: trainScan, validation: validationScan, classNames } = scanned.splits;
  for (const warning of scanned.splits.warnings) opts.onWarning?.(warning);
  const started = Date.now();
  opts.log?.(
    `Decoding ${trainScan.files.length} training and ${validationScan.files.length} validation images at ${data.image_size.join('x')}`,
  );
  const load = (files: ImageFile[]) =>
    loadImages(files, {
      imageSize: data.image_size,
      interpolation: data.interpolation,
      onWarning: opts.onWarning,
      shouldStop: opts.shouldStop,
    });
  const [train, validation] = [await load(trainScan.files), await load(validationScan.files)];
  for (const [split, dir] of [
    [train, trainDir],
    [validation, validationDir],
  ] as const) {
    if (split.count === 0)
      throw new DataError(`no readable image in ${dir}`, {
        hint: 'check the folder holds jpg, png, gif or webp files',
      });
  }
  return {
    classNames,
    numClasses: classNames.length,
    train: { ...train, dir: trainDir, digest: digest(trainScan.files, trainDir) },
    validation: { ...validation, dir: validationDir, digest: digest(validationScan.files, validationDir) },
    decodeSeconds: (Date.now() - started) / 1000,
  };
}

function digest(files: ImageFile[], root: string): string {
  const h = crypto.createHash('sha256');
  for (const f of files) h.update(`${path.relative(root, f.path)}\t${f.label}\n`);
  return h.digest('hex').slice(0, 16);
}
