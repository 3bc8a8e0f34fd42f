// Everything the training loop needs from disk, decoded once: train and validation images in memory.
import crypto from 'node:crypto';
import path from 'node:path';
import type { DataConfig } from '../config/types.ts';
import { DataError } from '../errors.ts';
import { resolveDataset } from '../data/dataset.ts';
import { checkSameClasses, linkWarning, scanClasses, type ImageFile } from '../data/scan.ts';
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
  const followLinks = data.follow_links ?? false;
  const [trainScan, validationScan] = await Promise.all([
    scanClasses(trainDir, { maxPerClass: data.max_per_class, followLinks }),
    scanClasses(validationDir, { followLinks }), // always the whole validation set: a quick run still reports comparable accuracy
  ]);
  for (const [scan, dir] of [
    [trainScan, trainDir],
    [validationScan, validationDir],
  ] as const) {
    const warning = linkWarning(dir, scan.links, followLinks);
    if (warning) opts.onWarning?.(warning);
  }
  checkSameClasses(trainScan, validationScan);
  const classNames = trainScan.classNames;
  if (classNames.length < 2) {
    throw new DataError(`${trainDir} has one class folder (${classNames[0]}); a classifier needs at least two`, {
      hint: 'put each class in its own subfolder of the train and validation directories',
    });
  }
  if (data.class_mode === 'binary' && classNames.length !== 2) {
    throw new DataError(
      `data.class_mode is binary but ${trainDir} has ${classNames.length} classes (${classNames.join(', ')})`,
      {
        hint: 'use class_mode: categorical (or auto) for more than two classes',
      },
    );
  }
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
        hint: 'check the folder holds jpg, png, bmp, gif or webp files',
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
