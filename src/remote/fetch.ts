// Fetches one URL to a file, hashing it on the way, with the download timeouts every xp download uses: give up when
// the server does not answer within the connect timeout, or sends nothing for the idle timeout; refuse more bytes
// than the caller allows. Errors are XpErrors naming the URL; callers reword them for their field.
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { XpError } from '../errors.ts';
import { refusedUrl } from './url.ts';
import { fetchWithCredentials } from '../util/credentials.ts';

export interface Timeouts {
  /** Seconds to wait for the server's first answer. */
  connect: number;
  /** Seconds without a byte of the body before giving up. */
  idle: number;
}

/** Defaults: 30 s to answer, 60 s without data; XP_DOWNLOAD_CONNECT_TIMEOUT and XP_DOWNLOAD_TIMEOUT override them. */
export function downloadTimeouts(env: NodeJS.ProcessEnv = process.env): Timeouts {
  const seconds = (name: string, fallback: number): number => {
    const value = Number(env[name]);
    return env[name] && Number.isFinite(value) && value > 0 ? value : fallback;
  };
  return { connect: seconds('XP_DOWNLOAD_CONNECT_TIMEOUT', 30), idle: seconds('XP_DOWNLOAD_TIMEOUT', 60) };
}

/** Downloads `url` into the file `into`; returns the bytes' sha256 and size. */
export async function fetchToFile(
  url: string,
  into: string,
  maxBytes: number,
  timeouts = downloadTimeouts(),
): Promise<{ sha256: string; size: number }> {
  const controller = new AbortController();
  const fail = (message: string, hint?: string): XpError => new XpError(`cannot fetch ${url}: ${message}`, { hint });
  let timer = setTimeout(
    () =>
      controller.abort(
        fail(`no answer within ${timeouts.connect} s`, 'XP_DOWNLOAD_CONNECT_TIMEOUT sets the seconds to wait.'),
      ),
    timeouts.connect * 1000,
  );
  let received = 0;
  const stalled = (): void => {
    clearTimeout(timer);
    timer = setTimeout(
      () => controller.abort(fail(`no data for ${timeouts.idle} s`, 'XP_DOWNLOAD_TIMEOUT sets the seconds to wait.')),
      timeouts.idle * 1000,
    );
  };
  const failure = (error: unknown): XpError => {
    const reason = controller.signal.reason;
    if (reason instanceof XpError) return reason;
    if (error instanceof XpError) return error;
    const cause = (error as { cause?: { message?: string } }).cause?.message;
    return fail(`${(error as Error).message}${cause ? ` (${cause})` : ''}`);
  };
  const tooLarge = (size: string) =>
    fail(`${size} bytes is above the ${maxBytes} bytes allowed`, 'Is it the right URL?');
  try {
    let response: Response;
    try {
      response = await fetchFollowing(url, controller.signal);
    } catch (error) {
      throw failure(error);
    }
    if (!response.ok || !response.body) {
      await response.body?.cancel();
      throw fail(`HTTP ${response.status} ${response.statusText}`.trim());
    }
    stalled();
    const total = Number(response.headers.get('content-length')) || 0;
    if (total > maxBytes) {
      await response.body.cancel();
      throw tooLarge(String(total));
    }
    const hash = createHash('sha256');
    const meter = new Transform({
      transform(chunk: Buffer, _encoding, callback) {
        stalled();
        hash.update(chunk);
        received += chunk.length;
        if (received > maxBytes) return callback(tooLarge(`more than ${maxBytes}`));
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
  }
}

const MAX_REDIRECTS = 10;

// Redirects are followed by hand, so that each hop passes the same rule as the URL itself (no https -> http://host).
async function fetchFollowing(url: string, signal: AbortSignal): Promise<Response> {
  let at = url;
  for (let hop = 0; ; hop++) {
    const response = await fetchWithCredentials(at, { signal, redirect: 'manual' });
    const location = response.headers.get('location');
    if (response.status < 300 || response.status >= 400 || !location) return response;
    await response.body?.cancel();
    if (hop === MAX_REDIRECTS) throw new XpError(`cannot fetch ${url}: more than ${MAX_REDIRECTS} redirects`);
    const next = new URL(location, at).href;
    const refused = refusedUrl(next);
    if (refused) throw new XpError(`cannot fetch ${url}: it redirects to ${next}, and ${refused}`);
    at = next;
  }
}
