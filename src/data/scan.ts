// Lists a class-per-subfolder image directory the way Keras `flow_from_directory` does:
// classes are the sorted subfolder names, files are sorted by name within each class.
import { stat } from 'node:fs/promises';
import path from 'node:path';
import fg from 'fast-glob';
import { DataError } from '../errors.ts';

export const IMAGE_EXTENSIONS = ['jpg', 'jpeg', 'png', 'bmp', 'gif', 'webp'] as const;

export interface ImageFile {
  path: string; // absolute
  label: number; // index into classNames
}

export interface ScannedClasses {
  classNames: string[];
  files: ImageFile[];
}

// Keras sorts with Python's default string order (code points), not the locale.
const byCodePoint = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

// Keras walks folders in sorted order and sorts file names within each folder.
const byFolderThenName = (a: string, b: string): number => {
  const dirA = path.posix.dirname(a);
  const dirB = path.posix.dirname(b);
  if (dirA !== dirB) return dirA === '.' ? -1 : dirB === '.' ? 1 : byCodePoint(dirA, dirB);
  return byCodePoint(path.posix.basename(a), path.posix.basename(b));
};

const isImage = (name: string): boolean =>
  (IMAGE_EXTENSIONS as readonly string[]).includes(path.extname(name).slice(1).toLowerCase());

export async function scanClasses(
  dir: string,
  opts: { maxPerClass?: number } = {},
): Promise<ScannedClasses> {
  const root = path.resolve(dir);
  const info = await stat(root).catch(() => undefined);
  if (!info?.isDirectory()) {
    throw new DataError(`Image directory not found: ${root}`, {
      hint: 'Point data.train / data.validation at a folder with one subfolder per class (e.g. train/cats, train/dogs), or set data.url to download the data set.',
    });
  }

  // Unlike Keras, hidden folders (.ipynb_checkpoints, .git) are not classes.
  const classNames = (await fg('*', { cwd: root, onlyDirectories: true, dot: false })).sort(byCodePoint);
  if (classNames.length === 0) {
    throw new DataError(`No class subfolders in ${root}`, {
      hint: 'Put the images of each class in its own subfolder, e.g. cats/*.jpg and dogs/*.jpg; the subfolder names become the class names.',
    });
  }

  const files: ImageFile[] = [];
  for (const [label, className] of classNames.entries()) {
    const classDir = path.join(root, className);
    // Keras also takes images from nested folders inside a class folder.
    let names = (await fg('**/*', { cwd: classDir, onlyFiles: true, dot: false }))
      .filter(isImage)
      .sort(byFolderThenName);
    if (names.length === 0) {
      throw new DataError(`Class folder ${classDir} holds no images`, {
        hint: `Add ${IMAGE_EXTENSIONS.join('/')} files to it, or remove the folder if "${className}" is not a class.`,
      });
    }
    if (opts.maxPerClass !== undefined) names = names.slice(0, opts.maxPerClass);
    for (const name of names) files.push({ path: path.join(classDir, name), label });
  }
  return { classNames, files };
}

/** Validation must have the same classes as train, in the same order, or labels would not line up. */
export function checkSameClasses(train: ScannedClasses | string[], validation: ScannedClasses | string[]): void {
  const trainNames = Array.isArray(train) ? train : train.classNames;
  const validationNames = Array.isArray(validation) ? validation : validation.classNames;
  const missing = trainNames.filter((name) => !validationNames.includes(name));
  if (missing.length > 0) {
    throw new DataError(
      `Validation data lacks class${missing.length > 1 ? 'es' : ''} ${missing.map((n) => `"${n}"`).join(', ')} found in train`,
      { hint: `Add a validation subfolder for each train class (train has: ${trainNames.join(', ')}).` },
    );
  }
  const extra = validationNames.filter((name) => !trainNames.includes(name));
  if (extra.length > 0) {
    throw new DataError(
      `Validation data has class${extra.length > 1 ? 'es' : ''} ${extra.map((n) => `"${n}"`).join(', ')} not found in train`,
      { hint: `Use the same class subfolders in train and validation (train has: ${trainNames.join(', ')}).` },
    );
  }
}
