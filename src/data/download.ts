// Fetches a data set archive to a local file, hashing it on the way. http(s) downloads give up when the server does
// not answer within the connect timeout or sends nothing for the idle timeout; file:// URLs are read in place.
// whileInterruptible turns Ctrl-C (SIGINT) or SIGTERM into an abort, so the caller's cleanup removes partial files.
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { fileURLToPath } from 'node:url';
import { DataError } from '../errors.ts';
import { downloadTimeouts, type Timeouts } from '../remote/fetch.ts';
import { fetchWithCredentials } from '../util/credentials.ts';

export interface Fetched {
  /** The archive on disk: `into` for http(s), the file itself for file://. */
  file: string;
  sha256: string;
}

export { downloadTimeouts, type Timeouts } from '../remote/fetch.ts';

export interface FetchOptions {
  /** Where an http(s) download is written. */
  into: string;
  progress: NodeJS.WritableStream;
  /** Largest archive accepted, in bytes. */
  maxBytes: number;
  timeouts?: Timeouts;
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

async function download(url: string, opts: FetchOptions, interrupt: AbortSignal): Promise<Fetched> {
  const { connect, idle } = opts.timeouts ?? downloadTimeouts();
  const controller = new AbortController();
  const abortWith = (error: DataError): void => controller.abort(error);
  const onInterrupt = (): void => abortWith(interrupt.reason as DataError);
  interrupt.throwIfAborted();
  interrupt.addEventListener('abort', onInterrupt);
  const hint = `Check that the server of data.url answers (open ${url} in a browser), or download the archive yourself and give it as file:///path/to/archive.zip.`;
  let timer = setTimeout(
    () =>
      abortWith(
        new DataError(`Download of ${url} failed: no answer within ${connect} s`, {
          hint: `${hint} XP_DOWNLOAD_CONNECT_TIMEOUT sets the seconds to wait.`,
        }),
      ),
    connect * 1000,
  );
  let received = 0;
  const stalled = (): void => {
    clearTimeout(timer);
    timer = setTimeout(
      () =>
        abortWith(
          new DataError(`Download of ${url} stalled: no data for ${idle} s after ${mb(received)} MB`, {
            hint: `${hint} XP_DOWNLOAD_TIMEOUT sets the seconds to wait.`,
          }),
        ),
      idle * 1000,
    );
  };
  const failure = (error: unknown): DataError => {
    const reason = controller.signal.reason;
    if (reason instanceof DataError) return reason;
    if (error instanceof DataError) return error;
    const cause = (error as { cause?: { message?: string } }).cause?.message;
    const after = received ? ` after ${mb(received)} MB` : '';
    return new DataError(
      `Download of ${url} failed${after}: ${(error as Error).message}${cause ? ` (${cause})` : ''}`,
      { cause: error, hint },
    );
  };

  try {
    let response: Response;
    try {
      response = await fetchWithCredentials(url, { signal: controller.signal });
    } catch (error) {
      throw failure(error);
    }
    if (!response.ok || !response.body) {
      await response.body?.cancel();
      throw new DataError(`Could not download ${url}: HTTP ${response.status} ${response.statusText}`, {
        hint: 'Check data.url.',
      });
    }
    stalled();
    const total = Number(response.headers.get('content-length')) || 0;
    if (total > opts.maxBytes)
      throw new DataError(
        `Refusing to download ${url}: ${mb(total)} MB is above the limit of ${mb(opts.maxBytes)} MB`,
        { hint: 'Raise XP_UNZIP_MAX_TOTAL_MB if you trust the archive.' },
      );
    const hash = createHash('sha256');
    const show = progressPrinter(url, total, opts.progress);
    const meter = new Transform({
      transform(chunk: Buffer, _encoding, callback) {
        stalled();
        hash.update(chunk);
        received += chunk.length;
        if (received > opts.maxBytes)
          return callback(
            new DataError(`Refusing to download ${url}: more than ${mb(opts.maxBytes)} MB`, {
              hint: 'Raise XP_UNZIP_MAX_TOTAL_MB if you trust the archive.',
            }),
          );
        show(received, false);
        callback(null, chunk);
      },
    });
    try {
      await pipeline(Readable.fromWeb(response.body as WebReadableStream), meter, createWriteStream(opts.into), {
        signal: controller.signal,
      });
    } catch (error) {
      throw failure(error);
    }
    show(received, true);
    return { file: opts.into, sha256: hash.digest('hex') };
  } finally {
    clearTimeout(timer);
    interrupt.removeEventListener('abort', onInterrupt);
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
