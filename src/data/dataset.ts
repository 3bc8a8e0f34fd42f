// Finds the train/validation folders of an experiment, downloading and unpacking `data.url` once into the data
// directory when they are missing. Downloads are verified and unpacked into a temp folder first, so an
// interrupted or bad download never leaves a half-written data set behind.
import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import AdmZip from 'adm-zip';
import type { DataConfig } from '../config/types.ts';
import { DataError } from '../errors.ts';
import { dataDir } from '../paths.ts';

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

export function defaultDataDir(): string {
  return dataDir();
}

export async function resolveDataset(data: DataConfig, opts: ResolveOptions): Promise<ResolvedDataset> {
  if (!data.url) {
    return { trainDir: path.resolve(opts.baseDir, data.train), validationDir: path.resolve(opts.baseDir, data.validation) };
  }
  const dataDir = path.resolve(opts.dataDir ?? defaultDataDir());
  const resolved = { trainDir: path.resolve(dataDir, data.train), validationDir: path.resolve(dataDir, data.validation) };
  if ((await isDirectory(resolved.trainDir)) && (await isDirectory(resolved.validationDir))) return resolved;

  await mkdir(dataDir, { recursive: true });
  const kept = await downloadAndExtract(data.url, data.sha256, dataDir, opts.progress ?? process.stderr);

  for (const [field, dir] of [['train', resolved.trainDir], ['validation', resolved.validationDir]] as const) {
    if (await isDirectory(dir)) continue;
    const blocker = kept.find((existing) => dir === existing || dir.startsWith(existing + path.sep));
    throw blocker
      ? new DataError(`${dir} (data.${field}) is missing and ${blocker} already existed, so it was not replaced by the download`, {
          hint: `Remove ${blocker} and run again to download it afresh.`,
        })
      : new DataError(`The archive from ${data.url} has no folder ${path.relative(dataDir, dir)} (data.${field})`, {
          hint: `Set data.${field} to a path inside the archive, relative to ${dataDir}.`,
        });
  }
  return resolved;
}

async function isDirectory(dir: string): Promise<boolean> {
  return (await stat(dir).catch(() => undefined))?.isDirectory() ?? false;
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
  try {
    const digest = await download(url, zipPath, progress);
    if (sha256 && digest !== sha256.toLowerCase()) {
      throw new DataError(`Checksum mismatch for ${url}: expected sha256 ${sha256}, got ${digest}`, {
        hint: 'The file changed or the download was corrupted; check data.url and data.sha256. The downloaded file was removed.',
      });
    }
    try {
      new AdmZip(zipPath).extractAllTo(extractDir, true);
    } catch (error) {
      throw new DataError(`Could not unpack ${url}: ${(error as Error).message}`, {
        cause: error,
        hint: 'data.url must point to a .zip archive.',
      });
    }
    // Move the unpacked top-level entries into place; each rename is atomic. An entry that already exists (e.g. a
    // parallel run unpacked the same archive first) is kept as it is.
    const kept: string[] = [];
    for (const entry of await readdir(extractDir)) {
      const target = path.join(dataDir, entry);
      if (await stat(target).catch(() => undefined)) kept.push(target);
      else await rename(path.join(extractDir, entry), target);
    }
    return kept;
  } finally {
    await rm(zipPath, { force: true });
    await rm(extractDir, { recursive: true, force: true });
  }
}

/** Streams `url` to `file`, printing progress; returns the sha256 hex digest. */
async function download(url: string, file: string, progress: NodeJS.WritableStream): Promise<string> {
  let response: Response;
  try {
    response = await fetch(url);
  } catch (error) {
    throw new DataError(`Could not download ${url}: ${(error as Error).message}`, {
      cause: error,
      hint: 'Check the network and data.url, or download the archive yourself and point data.train/validation at it.',
    });
  }
  if (!response.ok || !response.body) {
    throw new DataError(`Could not download ${url}: HTTP ${response.status} ${response.statusText}`, {
      hint: 'Check data.url.',
    });
  }
  const total = Number(response.headers.get('content-length')) || 0;
  const hash = createHash('sha256');
  const interactive = 'isTTY' in progress && Boolean(progress.isTTY);
  let received = 0;
  let lastShown = 0;
  const show = (done: boolean): void => {
    const size = total ? `${mb(received)}/${mb(total)} MB (${Math.floor((100 * received) / total)}%)` : `${mb(received)} MB`;
    if (interactive) progress.write(`\rDownloading ${url}: ${size}${done ? '\n' : ''}`);
    else if (done) progress.write(`Downloaded ${url}: ${size}\n`);
  };
  if (!interactive) progress.write(`Downloading ${url}${total ? ` (${mb(total)} MB)` : ''}\n`);
  const meter = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      hash.update(chunk);
      received += chunk.length;
      if (Date.now() - lastShown > 250) {
        lastShown = Date.now();
        show(false);
      }
      callback(null, chunk);
    },
  });
  try {
    await pipeline(Readable.fromWeb(response.body as WebReadableStream), meter, createWriteStream(file));
  } catch (error) {
    throw new DataError(`Download of ${url} failed after ${mb(received)} MB: ${(error as Error).message}`, { cause: error });
  }
  show(true);
  return hash.digest('hex');
}

const mb = (bytes: number): string => (bytes / 1e6).toFixed(1);
