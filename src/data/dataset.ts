// Finds the train/validation folders of an experiment, downloading and unpacking `data.url` once into the data
// directory when they are missing. Downloads are verified and unpacked into a temp folder first, so an
// interrupted or bad download never leaves a half-written data set behind. Each unpacked top-level folder is
// recorded with the url and sha256 of its archive (.xp-sources/), so a changed url or sha256 fetches it afresh.
// Both a downloaded archive and a folder unpacked earlier are pinned in the run's lock (xp.lock) by that sha256.
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { DataConfig } from '../config/types.ts';
import { DataError, LockError } from '../errors.ts';
import { pin } from '../lock/pin.ts';
import { dataDir } from '../paths.ts';
import { fetchArchive, whileInterruptible } from './download.ts';
import { extractZip, zipLimits } from './zip.ts';

export interface ResolvedDataset {
  trainDir: string;
  validationDir: string;
}

export interface ResolveOptions {
  /** Where downloaded data sets live; default $XP_DATA_DIR, else ~/.cache/xp/datasets. */
  dataDir?: string;
  /** Folder of the experiment file; train/validation paths without a url are relative to it. */
  baseDir: string;
  /** Progress output; default process.stderr. */
  progress?: NodeJS.WritableStream;
}

/** Where an unpacked folder came from: the archive's url and its actual sha256. */
interface Source {
  url: string;
  sha256: string;
}

export function defaultDataDir(): string {
  return dataDir();
}

export async function resolveDataset(data: DataConfig, opts: ResolveOptions): Promise<ResolvedDataset> {
  if (!data.url) {
    return {
      trainDir: path.resolve(opts.baseDir, data.train),
      validationDir: path.resolve(opts.baseDir, data.validation),
    };
  }
  const url = data.url;
  const wanted = data.sha256?.toLowerCase();
  const progress = opts.progress ?? process.stderr;
  const { dataDir, resolved, present, stale } = await lookUp(data, url, opts.dataDir);
  if (present && stale.length === 0) {
    await pinCached(dataDir, [resolved.trainDir, resolved.validationDir], url);
    return resolved;
  }
  for (const line of stale)
    progress.write(`${line}, not from ${url}${wanted ? ` (sha256 ${wanted})` : ''}: fetching it again\n`);

  await mkdir(dataDir, { recursive: true });
  await removeLeftovers(dataDir);
  const kept = await downloadAndExtract(url, wanted, dataDir, progress);

  await checkFolders(resolved, kept, url, dataDir);
  return resolved;
}

/**
 * The folders of a data set given by url as `resolveDataset` would use them, when they are unpacked already and from
 * that url (and sha256); undefined otherwise. Nothing is fetched, pinned or written: what `xp check` scans.
 */
export async function unpackedDataset(
  data: DataConfig,
  opts: { dataDir?: string } = {},
): Promise<ResolvedDataset | undefined> {
  if (!data.url) return undefined;
  const { resolved, present, stale } = await lookUp(data, data.url, opts.dataDir);
  return present && stale.length === 0 ? resolved : undefined;
}

// Where the data set's folders are in the data directory, whether they are there, and which were unpacked from
// another archive.
async function lookUp(data: DataConfig, url: string, dir: string | undefined) {
  const dataDir = path.resolve(dir ?? defaultDataDir());
  const resolved = {
    trainDir: path.resolve(dataDir, data.train),
    validationDir: path.resolve(dataDir, data.validation),
  };
  const present = (await isDirectory(resolved.trainDir)) && (await isDirectory(resolved.validationDir));
  const stale = await staleFolders(
    dataDir,
    [resolved.trainDir, resolved.validationDir],
    url,
    data.sha256?.toLowerCase(),
  );
  return { dataDir, resolved, present, stale };
}

/** The unpacked folders holding `dirs` whose record names another url or sha256, one line each. */
async function staleFolders(
  dataDir: string,
  dirs: string[],
  url: string,
  sha256: string | undefined,
): Promise<string[]> {
  const stale: string[] = [];
  for (const top of new Set(dirs.map((dir) => topFolder(dataDir, dir)))) {
    // Folders put in the data directory by hand (no record) are used as they are.
    const recorded = top && (await readSource(dataDir, top));
    if (recorded && !matches(recorded, url, sha256))
      stale.push(`${path.join(dataDir, top)} was unpacked from ${recorded.url} (sha256 ${recorded.sha256})`);
  }
  return stale;
}

/** A data set unpacked earlier stands for the archive it came from: its recorded sha256 is checked against the lock. */
async function pinCached(dataDir: string, dirs: string[], url: string): Promise<void> {
  for (const top of new Set(dirs.map((dir) => topFolder(dataDir, dir)))) {
    const recorded = top ? await readSource(dataDir, top) : undefined;
    if (!top || !recorded) continue; // put there by hand: there is no archive to pin
    await pin(url, recorded.sha256).catch((error: unknown) => {
      if (error instanceof LockError)
        error.hint = `${error.hint} ${path.join(dataDir, top)} holds that content, unpacked earlier: remove it to download and verify the archive again.`;
      throw error;
    });
  }
}

/** After a download: the train and validation folders exist, or an error says why not. */
async function checkFolders(resolved: ResolvedDataset, kept: string[], url: string, dataDir: string): Promise<void> {
  for (const [field, dir] of [
    ['train', resolved.trainDir],
    ['validation', resolved.validationDir],
  ] as const) {
    if (await isDirectory(dir)) continue;
    const blocker = kept.find((existing) => dir === existing || dir.startsWith(existing + path.sep));
    throw blocker
      ? new DataError(
          `${dir} (data.${field}) is missing and ${blocker} already existed, so it was not replaced by the download`,
          {
            hint: `Remove ${blocker} and run again to download it afresh.`,
          },
        )
      : new DataError(`The archive from ${url} has no folder ${path.relative(dataDir, dir)} (data.${field})`, {
          hint: `Set data.${field} to a path inside the archive, relative to ${dataDir}.`,
        });
  }
}

async function isDirectory(dir: string): Promise<boolean> {
  return (await stat(dir).catch(() => undefined))?.isDirectory() ?? false;
}

/** The top-level folder of the data directory that holds `dir`, or undefined when `dir` is outside it. */
function topFolder(dataDir: string, dir: string): string | undefined {
  const relative = path.relative(dataDir, dir);
  if (!relative || relative.startsWith('..') || path.isAbsolute(relative)) return undefined;
  return relative.split(path.sep)[0];
}

const matches = (recorded: Source, url: string, sha256: string | undefined): boolean =>
  recorded.url === url && (sha256 === undefined || recorded.sha256 === sha256);

const sourceFile = (dataDir: string, top: string): string =>
  path.join(dataDir, '.xp-sources', `${encodeURIComponent(top)}.json`);

async function readSource(dataDir: string, top: string): Promise<Source | undefined> {
  const text = await readFile(sourceFile(dataDir, top), 'utf8').catch(() => undefined);
  try {
    const parsed = text === undefined ? undefined : (JSON.parse(text) as Partial<Source>);
    // An unreadable record still says the folder was downloaded: it no longer matches anything.
    return parsed ? { url: String(parsed.url), sha256: String(parsed.sha256) } : undefined;
  } catch {
    return { url: '?', sha256: '?' };
  }
}

/** Written after the folder is in place: a crash in between leaves the old record, which no longer matches. */
async function writeSource(dataDir: string, top: string, source: Source, tag: string): Promise<void> {
  const file = sourceFile(dataDir, top);
  await mkdir(path.dirname(file), { recursive: true });
  await writeFile(`${file}.${tag}`, `${JSON.stringify(source)}\n`);
  await rename(`${file}.${tag}`, file);
}

/** Temp files of downloads whose process is gone (SIGKILL, power loss): their names carry the pid. */
async function removeLeftovers(dataDir: string): Promise<void> {
  for (const name of await readdir(dataDir)) {
    const pid = /^\.(?:download|extract|replaced)-(\d+)-/.exec(name)?.[1];
    if (pid && !isAlive(Number(pid))) await rm(path.join(dataDir, name), { recursive: true, force: true });
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Returns the existing paths that were left in place instead of being replaced. */
async function downloadAndExtract(
  url: string,
  sha256: string | undefined,
  dataDir: string,
  progress: NodeJS.WritableStream,
): Promise<string[]> {
  const tag = `${process.pid}-${randomBytes(4).toString('hex')}`;
  const zipPath = path.join(dataDir, `.download-${tag}.zip`);
  const extractDir = path.join(dataDir, `.extract-${tag}`);
  // A second Ctrl-C may end the process before the finally below runs; this still removes the temp files.
  const cleanUp = (): void => {
    rmSync(zipPath, { force: true });
    rmSync(extractDir, { recursive: true, force: true });
  };
  process.on('exit', cleanUp);
  try {
    const limits = zipLimits();
    const digest = await whileInterruptible(url, async (signal) => {
      const fetched = await fetchArchive(url, { into: zipPath, progress, maxBytes: limits.totalBytes, signal });
      if (sha256 && fetched.sha256 !== sha256) {
        throw new DataError(`Checksum mismatch for ${url}: expected sha256 ${sha256}, got ${fetched.sha256}`, {
          hint: 'The file changed or the download was corrupted; check data.url and data.sha256. The downloaded file was removed.',
        });
      }
      // Checked against xp.lock before a byte of it is unpacked.
      await pin(url, fetched.sha256);
      await mkdir(extractDir);
      await extractZip(fetched.file, extractDir, url, { limits, signal });
      return fetched.sha256;
    });
    return await install(extractDir, dataDir, { url, sha256: digest }, tag);
  } finally {
    cleanUp();
    process.off('exit', cleanUp);
  }
}

/** Moves the unpacked top-level folders into the data directory (each rename is atomic). */
async function install(extractDir: string, dataDir: string, source: Source, tag: string): Promise<string[]> {
  const kept: string[] = [];
  for (const entry of await readdir(extractDir)) {
    if (entry === '.xp-sources') continue; // the records are xp's, never an archive's
    const target = path.join(dataDir, entry);
    if (await stat(target).catch(() => undefined)) {
      const recorded = await readSource(dataDir, entry);
      // Unpacked by hand, or by a parallel run of the same archive: left as it is.
      if (!recorded || matches(recorded, source.url, source.sha256)) {
        if (!recorded) kept.push(target);
        continue;
      }
      const replaced = path.join(dataDir, `.replaced-${tag}-${entry}`);
      await rename(target, replaced);
      await rename(path.join(extractDir, entry), target);
      await writeSource(dataDir, entry, source, tag);
      await rm(replaced, { recursive: true, force: true });
    } else {
      await rename(path.join(extractDir, entry), target);
      await writeSource(dataDir, entry, source, tag);
    }
  }
  return kept;
}
