// The train and validation folders as training takes them, before any image is decoded: each scanned as Keras'
// flow_from_directory lists it (scan.ts), the same classes in both, at least two, as many as class_mode says, and
// each class with a file decoding can read (image-format.ts: its first bytes).
// Training and `xp check` (through the preflight) call this one function, so they refuse the same folders.
import path from 'node:path';
import type { DataConfig } from '../config/types.ts';
import { DataError } from '../errors.ts';
import { noDecodableImage } from './image-format.ts';
import { checkSameClasses, linkNote, linkWarning, scanClasses, type ScannedClasses } from './scan.ts';

export type SplitOptions = Pick<DataConfig, 'class_mode' | 'max_per_class' | 'follow_links'>;

export interface ScannedSplits {
  train: ScannedClasses;
  validation: ScannedClasses;
  classNames: string[];
  /** One line per folder whose symbolic links were not used (linkWarning). */
  warnings: string[];
}

/** What is wrong, by the data field to fix. */
export interface SplitProblem {
  field: 'train' | 'validation' | 'class_mode';
  error: DataError;
}

export type SplitsOrProblems = { splits: ScannedSplits; problems?: undefined } | { problems: SplitProblem[] };

/** Scans both folders; every problem found, each independent one of the others (both folders are scanned). */
export async function scanSplits(
  dirs: { train: string; validation: string },
  data: SplitOptions,
): Promise<SplitsOrProblems> {
  const followLinks = data.follow_links ?? false;
  const [train, validation] = await Promise.all([
    // Always the whole validation set: a quick run still reports comparable accuracy.
    scanClasses(dirs.train, { maxPerClass: data.max_per_class, followLinks }).catch(asDataError),
    scanClasses(dirs.validation, { followLinks }).catch(asDataError),
  ]);
  const problems: SplitProblem[] = [];
  if (train instanceof DataError) problems.push({ field: 'train', error: train });
  if (validation instanceof DataError) problems.push({ field: 'validation', error: validation });
  if (train instanceof DataError || validation instanceof DataError) return { problems };

  const classNames = train.classNames;
  if (classNames.length < 2) {
    problems.push({
      field: 'train',
      error: new DataError(
        `${dirs.train} has one class folder (${classNames[0]}); a classifier needs at least two${linkNote(train.root, train.linkedFolders)}`,
        { hint: 'put each class in its own subfolder of the train and validation directories' },
      ),
    });
  } else if (data.class_mode === 'binary' && classNames.length !== 2) {
    problems.push({
      field: 'class_mode',
      error: new DataError(
        `data.class_mode is binary but ${dirs.train} has ${classNames.length} classes (${classNames.join(', ')})`,
        { hint: 'use class_mode: categorical (or auto) for more than two classes' },
      ),
    });
  }
  try {
    checkSameClasses(train, validation);
  } catch (error) {
    problems.push({ field: 'validation', error: asDataError(error) });
  }
  for (const [field, scan] of [
    ['train', train],
    ['validation', validation],
  ] as const) {
    const error = await undecodableClass(scan);
    if (error) problems.push({ field, error });
  }
  if (problems.length) return { problems };
  const warnings = [
    linkWarning(dirs.train, train.links, followLinks),
    linkWarning(dirs.validation, validation.links, followLinks),
  ].filter((w): w is string => w !== undefined);
  return { splits: { train, validation, classNames, warnings } };
}

// Decoding skips what it cannot read: a class with nothing it can read would train as if it were not there. The
// first bytes of a class's files tell, without decoding (one file each, when the first is an image).
async function undecodableClass(scan: ScannedClasses): Promise<DataError | undefined> {
  for (const [label, className] of scan.classNames.entries()) {
    const files = scan.files.filter((f) => f.label === label).map((f) => f.path);
    const unreadable = await noDecodableImage(files);
    if (!unreadable) continue;
    const classDir = path.join(scan.root, className);
    const which = files.length === 1 ? 'its file is' : `none of its ${files.length} files is`;
    return new DataError(
      `Class folder ${classDir} holds no image xp can decode: ${which} a JPEG, PNG, GIF or WebP image (${path.relative(classDir, unreadable.file)}: ${unreadable.why})`,
      { hint: `Convert them to jpg or png, or remove the folder if "${className}" is not a class.` },
    );
  }
  return undefined;
}

// A folder that cannot be read (permissions, a file swapped in) is a data problem like any other.
function asDataError(error: unknown): DataError {
  if (error instanceof DataError) return error;
  return new DataError((error as Error).message, { cause: error });
}
