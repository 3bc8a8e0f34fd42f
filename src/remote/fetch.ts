// Every download xp makes goes through fetchToFile: experiment files and their bases, weights by URL, the official
// Keras weights and data archives. One policy bounds how long any of them may take: give up when the server does
// not answer within the connect timeout, or sends nothing for the idle timeout; and since a byte now and then
// restarts the idle timeout, an overall deadline too, past which a download goes on only while it keeps a minimum
// rate (a large file on a good link ends whenever it ends; a trickle ends at the deadline). Errors are
// DownloadErrors naming the URL; callers reword them for their field.
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { XpError } from '../errors.ts';
import { diskFull, freeSpaceHint, isDiskFull } from '../util/disk.ts';
import { refusedUrl } from './url.ts';
import { fetchWithCredentials } from '../util/credentials.ts';

export interface DownloadLimits {
  /** Seconds to wait for the server's first answer. */
  connect: number;
  /** Seconds without a byte of the body before giving up. */
  idle: number;
  /** Seconds a download may take at any speed; past them it goes on only while it keeps `minRate`. */
  deadline: number;
  /** Bytes per second a download must keep past the deadline, measured over the last RATE_WINDOW_S seconds. */
  minRate: number;
}

/** The rate past the deadline is measured over this many seconds (or the deadline, when shorter). */
const RATE_WINDOW_S = 30;

export const DOWNLOAD_VARIABLES = {
  connect: 'XP_DOWNLOAD_CONNECT_TIMEOUT',
  idle: 'XP_DOWNLOAD_TIMEOUT',
  deadline: 'XP_DOWNLOAD_DEADLINE',
  minRate: 'XP_DOWNLOAD_MIN_RATE',
} as const;

const DEFAULTS: DownloadLimits = { connect: 30, idle: 60, deadline: 300, minRate: 100_000 };

/**
 * Defaults: 30 s to answer, 60 s without data, 300 s in all unless the download keeps 100 KB/s past them.
 * XP_DOWNLOAD_CONNECT_TIMEOUT, XP_DOWNLOAD_TIMEOUT, XP_DOWNLOAD_DEADLINE (seconds) and XP_DOWNLOAD_MIN_RATE (KB/s)
 * override them; a value that is not a positive number keeps the default.
 */
export function downloadLimits(env: NodeJS.ProcessEnv = process.env): DownloadLimits {
  const positive = (name: string, fallback: number, unit = 1): number => {
    const value = Number(env[name]);
    return env[name] && Number.isFinite(value) && value > 0 ? value * unit : fallback;
  };
  return {
    connect: positive(DOWNLOAD_VARIABLES.connect, DEFAULTS.connect),
    idle: positive(DOWNLOAD_VARIABLES.idle, DEFAULTS.idle),
    deadline: positive(DOWNLOAD_VARIABLES.deadline, DEFAULTS.deadline),
    minRate: positive(DOWNLOAD_VARIABLES.minRate, DEFAULTS.minRate, 1000),
  };
}

/** What ended a download: the answer (an HTTP error), its size, its time, or the network. */
export type DownloadFailure = 'status' | 'size' | 'time' | 'network';

export class DownloadError extends XpError {
  constructor(
    readonly url: string,
    /** The reason alone, without the URL: `HTTP 404 Not Found`, `no answer within 30 s`. */
    readonly reason: string,
    readonly kind: DownloadFailure,
    options: { hint?: string; cause?: unknown } = {},
  ) {
    super(`cannot fetch ${url}: ${reason}`, options);
    this.name = 'DownloadError';
  }
}

export interface FetchOptions {
  /** Largest file accepted, in bytes. */
  maxBytes: number;
  limits?: DownloadLimits;
  /** Aborts the download; its reason is thrown as it is. */
  signal?: AbortSignal;
  /** Told of the bytes received so far and the announced size (0 when unknown): first when the server answers. */
  onProgress?: (received: number, total: number) => void;
  /** The variable that puts `into` elsewhere (XP_DATA_DIR, XP_CACHE_DIR), said when its disk is full. */
  placedBy?: string;
}

/** Downloads `url` into the file `into`; returns the bytes' sha256 and size. */
export async function fetchToFile(
  url: string,
  into: string,
  opts: FetchOptions,
): Promise<{ sha256: string; size: number }> {
  const limits = opts.limits ?? downloadLimits();
  const { maxBytes, signal: outside } = opts;
  outside?.throwIfAborted();
  const controller = new AbortController();
  const abort = (error: unknown): void => controller.abort(error);
  const onOutside = (): void => abort(outside?.reason);
  outside?.addEventListener('abort', onOutside);
  let received = 0;
  const timedOut = (reason: string, ...variables: (keyof DownloadLimits)[]): DownloadError =>
    new DownloadError(url, reason, 'time', { hint: limitsHint(variables) });

  let timer = setTimeout(
    () => abort(timedOut(`no answer within ${limits.connect} s`, 'connect')),
    limits.connect * 1000,
  );
  const stalled = (): void => {
    clearTimeout(timer);
    timer = setTimeout(
      () => abort(timedOut(`no data for ${limits.idle} s after ${size(received)}`, 'idle')),
      limits.idle * 1000,
    );
  };
  const stopPacing = pace(
    limits,
    () => received,
    (rate, window) =>
      abort(
        timedOut(
          `still downloading after ${limits.deadline} s (${size(received)} received, ${size(rate)}/s over the last ${window} s; a download must keep ${size(limits.minRate)}/s past ${limits.deadline} s)`,
          'deadline',
          'minRate',
        ),
      ),
  );
  const failure = (error: unknown): unknown => {
    if (controller.signal.aborted) return controller.signal.reason;
    if (error instanceof XpError) return error;
    // Not the server's fault: the disk `into` is on is full.
    if (isDiskFull(error)) return diskFull(error, into, freeSpaceHint(into, opts.placedBy));
    const cause = (error as { cause?: { message?: string } }).cause?.message;
    const after = received ? ` after ${size(received)}` : '';
    return new DownloadError(url, `${(error as Error).message}${cause ? ` (${cause})` : ''}${after}`, 'network', {
      cause: error,
    });
  };
  const tooLarge = (what: string) =>
    new DownloadError(url, `${what} the ${size(maxBytes)} allowed`, 'size', { hint: 'Is it the right URL?' });
  try {
    let response: Response;
    try {
      response = await fetchFollowing(url, controller.signal);
    } catch (error) {
      throw failure(error);
    }
    if (!response.ok || !response.body) {
      await response.body?.cancel();
      throw new DownloadError(url, `HTTP ${response.status} ${response.statusText}`.trim(), 'status');
    }
    stalled();
    const total = Number(response.headers.get('content-length')) || 0;
    if (total > maxBytes) {
      await response.body.cancel();
      throw tooLarge(`${size(total)}, above`);
    }
    opts.onProgress?.(0, total);
    const hash = createHash('sha256');
    const meter = new Transform({
      transform(chunk: Buffer, _encoding, callback) {
        stalled();
        hash.update(chunk);
        received += chunk.length;
        if (received > maxBytes) return callback(tooLarge('more than'));
        opts.onProgress?.(received, total);
        callback(null, chunk);
      },
    });
    try {
      await pipeline(Readable.fromWeb(response.body as WebReadableStream), meter, createWriteStream(into), {
        signal: controller.signal,
      });
    } catch (error) {
      throw failure(error);
    }
    return { sha256: hash.digest('hex'), size: received };
  } finally {
    clearTimeout(timer);
    stopPacing();
    outside?.removeEventListener('abort', onOutside);
  }
}

/**
 * From the deadline on, every window (RATE_WINDOW_S, or the deadline when shorter) must bring minRate x window
 * bytes; `slow` is told the rate and window of the first that does not. Returns the function that stops watching.
 */
function pace(
  limits: DownloadLimits,
  received: () => number,
  slow: (rate: number, window: number) => void,
): () => void {
  const window = Math.min(RATE_WINDOW_S, limits.deadline);
  let mark = 0;
  let every: NodeJS.Timeout | undefined;
  const check = (): void => {
    const rate = (received() - mark) / window;
    mark = received();
    if (rate < limits.minRate) slow(Math.round(rate), window);
  };
  const marking = setTimeout(() => (mark = received()), (limits.deadline - window) * 1000);
  const first = setTimeout(() => {
    check();
    every = setInterval(check, window * 1000);
  }, limits.deadline * 1000);
  return () => {
    clearTimeout(marking);
    clearTimeout(first);
    clearInterval(every);
  };
}

function limitsHint(variables: (keyof DownloadLimits)[]): string {
  const says: Record<keyof DownloadLimits, string> = {
    connect: `raises the seconds to wait for an answer (default ${DEFAULTS.connect})`,
    idle: `raises the seconds to wait for data (default ${DEFAULTS.idle})`,
    deadline: `raises the seconds a download may take (default ${DEFAULTS.deadline})`,
    minRate: `lowers the KB/s it must keep after them (default ${DEFAULTS.minRate / 1000})`,
  };
  return `${variables.map((v) => `${DOWNLOAD_VARIABLES[v]} ${says[v]}`).join('; ')}.`;
}

/** Bytes for messages: `37 bytes`, `20.5 KB`, `1.2 MB`. */
export function size(bytes: number): string {
  if (bytes < 1000) return `${bytes} bytes`;
  if (bytes < 1e6) return `${+(bytes / 1e3).toFixed(1)} KB`;
  return `${+(bytes / 1e6).toFixed(1)} MB`;
}

const MAX_REDIRECTS = 10;

// Redirects are followed by hand, so that no hop is less safe than the URL itself (no https -> http://host).
async function fetchFollowing(url: string, signal: AbortSignal): Promise<Response> {
  const checked = !refusedUrl(url);
  let at = url;
  for (let hop = 0; ; hop++) {
    const response = await fetchWithCredentials(at, { signal, redirect: 'manual' });
    const location = response.headers.get('location');
    if (response.status < 300 || response.status >= 400 || !location) return response;
    await response.body?.cancel();
    if (hop === MAX_REDIRECTS) throw new DownloadError(url, `more than ${MAX_REDIRECTS} redirects`, 'network');
    const next = new URL(location, at).href;
    const refused = checked && refusedUrl(next);
    if (refused) throw new DownloadError(url, `it redirects to ${next}, and ${refused}`, 'network');
    at = next;
  }
}
