// Fetches a data set archive to a local file, hashing it on the way. http(s) downloads follow the download limits of
// every xp download (src/remote/fetch.ts), with a progress line; file:// URLs are read in place.
// whileInterruptible turns Ctrl-C (SIGINT) or SIGTERM into an abort, so the caller's cleanup removes partial files.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import { DataError } from '../errors.ts';
import { DownloadError, type DownloadLimits, fetchToFile } from '../remote/fetch.ts';

export interface Fetched {
  /** The archive on disk: `into` for http(s), the file itself for file://. */
  file: string;
  sha256: string;
}

export interface FetchOptions {
  /** Where an http(s) download is written. */
  into: string;
  progress: NodeJS.WritableStream;
  /** Largest archive accepted, in bytes. */
  maxBytes: number;
  limits?: DownloadLimits;
  /** Aborts the download; its reason is thrown. */
  signal: AbortSignal;
}

export async function fetchArchive(url: string, opts: FetchOptions): Promise<Fetched> {
  if (url.startsWith('file:')) return readLocal(url);
  return download(url, opts, opts.signal);
}

async function readLocal(url: string): Promise<Fetched> {
  let file: string;
  try {
    file = fileURLToPath(url);
  } catch (error) {
    throw new DataError(`data.url ${url} is not a usable file URL: ${(error as Error).message}`, {
      hint: 'Write an absolute path after file://, e.g. file:///home/me/pets.zip.',
    });
  }
  const info = await stat(file).catch(() => undefined);
  if (!info?.isFile()) {
    throw new DataError(`data.url ${url}: ${file} ${info ? 'is not a regular file' : 'does not exist'}`, {
      hint: 'Point data.url at a .zip file, e.g. file:///home/me/pets.zip.',
    });
  }
  const hash = createHash('sha256');
  await pipeline(createReadStream(file), hash);
  return { file, sha256: hash.digest('hex') };
}

/** Runs `work` with an AbortSignal fired by Ctrl-C or SIGTERM, whose reason is a DataError naming `url`. */
export async function whileInterruptible<T>(url: string, work: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const controller = new AbortController();
  const onSignal = (): void =>
    controller.abort(
      new DataError(`Download of ${url} interrupted`, { hint: 'Run again to download it; nothing was kept.' }),
    );
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    return await work(controller.signal);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

async function download(url: string, opts: FetchOptions, signal: AbortSignal): Promise<Fetched> {
  const hint = `Check that the server of data.url answers (open ${url} in a browser), or download the archive yourself and give it as file:///path/to/archive.zip.`;
  let show: ((received: number, done: boolean) => void) | undefined;
  try {
    const { sha256, size } = await fetchToFile(url, opts.into, {
      maxBytes: opts.maxBytes,
      limits: opts.limits,
      signal,
      placedBy: 'XP_DATA_DIR',
      onProgress: (received, total) => {
        show ??= progressPrinter(url, total, opts.progress);
        show(received, false);
      },
    });
    (show ?? progressPrinter(url, size, opts.progress))(size, true);
    return { file: opts.into, sha256 };
  } catch (error) {
    if (!(error instanceof DownloadError)) throw error;
    if (error.kind === 'size')
      throw new DataError(`Refusing to download ${url}: ${error.reason}`, {
        hint: 'Raise XP_UNZIP_MAX_TOTAL_MB if you trust the archive.',
      });
    if (error.kind === 'status')
      throw new DataError(`Could not download ${url}: ${error.reason}`, { hint: 'Check data.url.' });
    throw new DataError(`Download of ${url} failed: ${error.reason}`, {
      cause: error.cause,
      hint: error.hint ? `${hint} ${error.hint}` : hint,
    });
  }
}

function progressPrinter(
  url: string,
  total: number,
  progress: NodeJS.WritableStream,
): (received: number, done: boolean) => void {
  const interactive = 'isTTY' in progress && Boolean(progress.isTTY);
  let lastShown = 0;
  if (!interactive) progress.write(`Downloading ${url}${total ? ` (${mb(total)} MB)` : ''}\n`);
  return (received, done) => {
    if (!done && Date.now() - lastShown < 250) return;
    lastShown = Date.now();
    const size = total
      ? `${mb(received)}/${mb(total)} MB (${Math.floor((100 * received) / total)}%)`
      : `${mb(received)} MB`;
    if (interactive) progress.write(`\rDownloading ${url}: ${size}${done ? '\n' : ''}`);
    else if (done) progress.write(`Downloaded ${url}: ${size}\n`);
  };
}

const mb = (bytes: number): string => (bytes / 1e6).toFixed(1);
