// The lock file's format, as deno.lock's: JSON with sorted keys, 2-space indent and a final newline, one entry per
// URL, so that a change reads as a one-line diff. `{ "version": "1", "remote": { "<url>": "<sha256>" } }`.
// Top-level sections other than `remote` are kept as they are. A damaged file is an error, never overwritten.
import { randomBytes } from 'node:crypto';
import { readFile, rename, rm, writeFile } from 'node:fs/promises';
import { LockError } from '../errors.ts';

export const LOCK_VERSION = '1';

export interface LockData {
  version: string;
  remote: Record<string, string>;
  [section: string]: unknown;
}

export const emptyLock = (): LockData => ({ version: LOCK_VERSION, remote: {} });

const SHA256 = /^[0-9a-f]{64}$/;

/** The file's entries; a missing file is an empty lock. */
export async function readLock(file: string): Promise<LockData> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return emptyLock();
    throw new LockError(`Cannot read the lock file ${file}: ${(error as Error).message}`, { cause: error });
  }
  return parseLock(text, file);
}

export function parseLock(text: string, file: string): LockData {
  const damaged = (what: string, cause?: unknown) =>
    new LockError(`The lock file ${file} is damaged: ${what}`, {
      cause,
      hint: `Fix it by hand (it is JSON: {"version": "${LOCK_VERSION}", "remote": {"<url>": "<sha256>"}}), or restore it from version control, or delete it to pin every URL afresh on the next run.`,
    });
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw damaged(`not valid JSON (${(error as Error).message})`, error);
  }
  if (!isObject(parsed)) throw damaged('not a JSON object');
  if (parsed.version !== LOCK_VERSION) {
    throw typeof parsed.version === 'string' && parsed.version > LOCK_VERSION
      ? new LockError(
          `The lock file ${file} has version ${parsed.version}, written by a newer xp (this one reads version ${LOCK_VERSION})`,
          { hint: 'Update xp, or run with --no-lock.' },
        )
      : damaged(`"version" is ${JSON.stringify(parsed.version)}, expected "${LOCK_VERSION}"`);
  }
  // Absent, there is nothing pinned yet; present, it must be the entries (null is no more an empty lock than 5 is).
  const remote = Object.hasOwn(parsed, 'remote') ? parsed.remote : {};
  if (!isObject(remote))
    throw damaged(`"remote" is ${JSON.stringify(remote).slice(0, 40)}, not an object of URL -> sha256`);
  for (const [url, sha256] of Object.entries(remote)) {
    if (typeof sha256 !== 'string' || !SHA256.test(sha256))
      throw damaged(`the entry of ${url} is ${JSON.stringify(sha256)}, not a sha256 (64 lowercase hex digits)`);
  }
  return { ...parsed, version: LOCK_VERSION, remote: remote as Record<string, string> };
}

/** The file's text: keys sorted at every level, 2-space indent, newline at the end. */
export function formatLock(lock: LockData): string {
  return `${JSON.stringify(sortKeys(lock), null, 2)}\n`;
}

/** Written to a temp file beside it and renamed over it: a reader sees the old file or the new one, never half. */
export async function writeLock(file: string, lock: LockData): Promise<void> {
  const temp = `${file}.${process.pid}-${randomBytes(4).toString('hex')}.tmp`;
  try {
    await writeFile(temp, formatLock(lock));
    await rename(temp, file);
  } catch (error) {
    await rm(temp, { force: true });
    throw new LockError(`Cannot write the lock file ${file}: ${(error as Error).message}`, {
      cause: error,
      hint: 'Check that its folder is writable, or pass --lock=<file> or --no-lock.',
    });
  }
}

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (!isObject(value)) return value;
  return Object.fromEntries(
    Object.keys(value)
      .sort()
      .map((key) => [key, sortKeys(value[key])]),
  );
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
