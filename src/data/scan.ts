// Lists a class-per-subfolder image directory the way Keras `flow_from_directory` does:
// classes are the sorted subfolder names, files are sorted by name within each class. As with Keras'
// follow_links=False, symbolic links are not followed unless asked (data.follow_links); unlike Keras, that holds
// for linked files and class folders too, and a link is never followed into a loop.
import { readdir, realpath, stat } from 'node:fs/promises';
import path from 'node:path';
import { DataError } from '../errors.ts';
import { closest } from '../util/edit-distance.ts';

export const IMAGE_EXTENSIONS = ['jpg', 'jpeg', 'png', 'bmp', 'gif', 'webp'] as const;

export interface ImageFile {
  path: string; // absolute
  label: number; // index into classNames
}

/** Symbolic links a scan did not use: all of them unless links are followed; else the dangling and looping ones. */
export interface LinkCounts {
  skipped: number;
  dangling: number;
  loops: number;
}

export interface ScannedClasses {
  /** The folder scanned, absolute. */
  root: string;
  classNames: string[];
  files: ImageFile[];
  links: LinkCounts;
  /** Symbolic links to folders directly in the root that were not followed: classes the user may have meant. */
  linkedFolders: string[];
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
  opts: { maxPerClass?: number; followLinks?: boolean } = {},
): Promise<ScannedClasses> {
  const root = path.resolve(dir);
  const info = await stat(root).catch(() => undefined);
  if (!info?.isDirectory()) {
    throw new DataError(`Image directory not found: ${root}`, {
      hint: 'Point data.train / data.validation at a folder with one subfolder per class (e.g. train/cats, train/dogs), or set data.url to download the data set.',
    });
  }

  const links: LinkCounts = { skipped: 0, dangling: 0, loops: 0 };
  const linkedFolders: string[] = [];
  const rootReal = await realpath(root);
  const top = await listFolder(root, rootReal, '', {
    followLinks: opts.followLinks ?? false,
    links,
    walked: new Set([rootReal]),
    rootReal,
    linkedFolders,
  });
  const folders = [...top.folders].sort((a, b) => byCodePoint(a.name, b.name));
  const classNames = folders.map((f) => f.name);
  if (classNames.length === 0) {
    throw new DataError(`No class subfolders in ${root}${linkNote(root, linkedFolders)}`, {
      hint: links.skipped
        ? `Its ${links.skipped} symbolic link(s) were not followed; set data.follow_links: true to use linked folders.`
        : 'Put the images of each class in its own subfolder, e.g. cats/*.jpg and dogs/*.jpg; the subfolder names become the class names.',
    });
  }

  const files: ImageFile[] = [];
  for (const [label, { name: className, real }] of folders.entries()) {
    const classDir = path.join(root, className);
    // Each class walks every real folder once: a link back up (cats/up -> ..) or across cannot repeat images.
    const walk: Walk = { followLinks: opts.followLinks ?? false, links, walked: new Set([rootReal, real]), rootReal };
    // Keras also takes images from nested folders inside a class folder.
    let names = (await walkImages(classDir, real, '', walk)).sort(byFolderThenName);
    if (names.length === 0) {
      throw new DataError(`Class folder ${classDir} holds no images`, {
        hint: links.skipped
          ? `Symbolic links are not followed (${links.skipped} skipped); set data.follow_links: true to use linked images.`
          : `Add jpg, png, gif or webp files to it, or remove the folder if "${className}" is not a class.`,
      });
    }
    if (opts.maxPerClass !== undefined) names = names.slice(0, opts.maxPerClass);
    for (const name of names) files.push({ path: path.join(classDir, name), label });
  }
  return { root, classNames, files, links, linkedFolders: linkedFolders.sort(byCodePoint) };
}

/**
 * What explains a class missing from a folder: the not-followed symbolic links among `names` (class names), said
 * after a colon; empty when none is a link.
 */
export function linkNote(
  root: string,
  linkedFolders: readonly string[],
  names: readonly string[] = linkedFolders,
): string {
  const links = names.filter((n) => linkedFolders.includes(n)).map((n) => path.join(root, n));
  if (!links.length) return '';
  const are = links.length === 1 ? 'is a symbolic link' : 'are symbolic links';
  return `: ${links.join(', ')} ${are}, not followed unless data.follow_links is true`;
}

/**
 * The images in a folder and in the folders below it (`xp predict <folder>`), as paths relative to it in Keras'
 * order; hidden entries are left out, links are not followed (counted, as in a class scan).
 */
export async function listImages(dir: string): Promise<{ files: string[]; links: LinkCounts }> {
  const root = path.resolve(dir);
  const rootReal = await realpath(root);
  const links: LinkCounts = { skipped: 0, dangling: 0, loops: 0 };
  const walk: Walk = { followLinks: false, links, walked: new Set([rootReal]), rootReal };
  return { files: (await walkImages(root, rootReal, '', walk)).sort(byFolderThenName), links };
}

/** One warning line for the links a scan did not use, or undefined when there were none. */
export function linkWarning(dir: string, links: LinkCounts, followLinks: boolean): string | undefined {
  const plural = (n: number, what: string) => `${n} ${what}${n === 1 ? '' : 's'}`;
  if (!followLinks)
    return links.skipped
      ? `${plural(links.skipped, 'symbolic link')} in ${dir} skipped (data.follow_links is false)`
      : undefined;
  const parts = [
    links.dangling ? `${plural(links.dangling, 'dangling symbolic link')}` : '',
    links.loops ? `${plural(links.loops, 'symbolic link')} back to a folder already walked` : '',
  ].filter(Boolean);
  return parts.length ? `${parts.join(' and ')} in ${dir} skipped` : undefined;
}

interface Walk {
  followLinks: boolean;
  links: LinkCounts;
  /** Real paths of the folders walked so far (and the root's). */
  walked: Set<string>;
  rootReal: string;
  /** Where the root's listing records its links to folders that are not followed (only the root's listing has it). */
  linkedFolders?: string[];
}

/** Image files under `dir` as posix paths relative to the class folder. */
async function walkImages(dir: string, real: string, relative: string, walk: Walk): Promise<string[]> {
  const { files, folders } = await listFolder(dir, real, relative, walk);
  const images = files.filter(isImage);
  for (const folder of folders)
    images.push(...(await walkImages(path.join(dir, folder.name), folder.real, folder.relative, walk)));
  return images;
}

interface Listed {
  files: string[];
  folders: { name: string; real: string; relative: string }[];
}

/** The regular files and folders of `dir` (hidden ones left out), following links only when asked and never twice. */
async function listFolder(dir: string, real: string, relative: string, walk: Walk): Promise<Listed> {
  const listed: Listed = { files: [], folders: [] };
  const join = (name: string) => (relative ? `${relative}/${name}` : name);
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    if (entry.name.startsWith('.')) continue; // Unlike Keras, hidden folders (.ipynb_checkpoints, .git) are skipped.
    if (entry.isSymbolicLink()) {
      if (!walk.followLinks) {
        walk.links.skipped++;
        // Its target's kind only (a stat, nothing read): a linked folder at the top is a class the user may mean.
        if (walk.linkedFolders && (await stat(path.join(dir, entry.name)).catch(() => undefined))?.isDirectory())
          walk.linkedFolders.push(entry.name);
        continue;
      }
      const target = await stat(path.join(dir, entry.name)).catch(() => undefined);
      if (!target) walk.links.dangling++;
      else if (target.isFile()) listed.files.push(join(entry.name));
      else if (target.isDirectory()) {
        const targetReal = await realpath(path.join(dir, entry.name));
        const contains = (inner: string) => inner === targetReal || inner.startsWith(targetReal + path.sep);
        if (walk.walked.has(targetReal) || contains(walk.rootReal) || contains(real)) walk.links.loops++;
        else {
          walk.walked.add(targetReal);
          listed.folders.push({ name: entry.name, real: targetReal, relative: join(entry.name) });
        }
      }
    } else if (entry.isDirectory()) {
      const folderReal = path.join(real, entry.name);
      walk.walked.add(folderReal);
      listed.folders.push({ name: entry.name, real: folderReal, relative: join(entry.name) });
    } else if (entry.isFile()) listed.files.push(join(entry.name)); // not FIFOs or devices, which would block a read
  }
  return listed;
}

/** Validation must have the same classes as train, in the same order, or labels would not line up. */
export function checkSameClasses(train: Classes | string[], validation: Classes | string[]): void {
  const [trainNames, trainLinks] = Array.isArray(train) ? [train, () => ''] : namesAndLinks(train);
  const [validationNames, validationLinks] = Array.isArray(validation)
    ? [validation, () => '']
    : namesAndLinks(validation);
  const missing = trainNames.filter((name) => !validationNames.includes(name));
  const extra = validationNames.filter((name) => !trainNames.includes(name));
  // A folder misspelt in one of the two: the other's name it is a near miss of.
  const misspelt = (names: string[], others: string[], where: string) =>
    names.length === 1 && closest(names[0], others) ? `; did you mean ${where} "${closest(names[0], others)}"?` : '';
  if (missing.length > 0) {
    throw new DataError(
      `Validation data lacks class${missing.length > 1 ? 'es' : ''} ${missing.map((n) => `"${n}"`).join(', ')} found in train${validationLinks(missing) || misspelt(missing, extra, "validation's")}`,
      { hint: `Add a validation subfolder for each train class (train has: ${trainNames.join(', ')}).` },
    );
  }
  if (extra.length > 0) {
    throw new DataError(
      `Validation data has class${extra.length > 1 ? 'es' : ''} ${extra.map((n) => `"${n}"`).join(', ')} not found in train${trainLinks(extra)}`,
      { hint: `Use the same class subfolders in train and validation (train has: ${trainNames.join(', ')}).` },
    );
  }
}

type Classes = Pick<ScannedClasses, 'classNames'> & Partial<Pick<ScannedClasses, 'root' | 'linkedFolders'>>;

const namesAndLinks = (c: Classes): [string[], (names: string[]) => string] => [
  c.classNames,
  (names) => (c.root && c.linkedFolders ? linkNote(c.root, c.linkedFolders, names) : ''),
];
