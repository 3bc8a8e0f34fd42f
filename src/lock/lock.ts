// What stands behind `pin` (src/lock/pin.ts): a lock file, xp.lock, recording the sha256 of every remote URL a run
// fetched, as deno.lock does. Modes, as Deno's flags: the default writes an entry on first use and verifies it
// later; `write` (--lock-write) accepts new content; `frozen` (--frozen) refuses new entries; `off` (--no-lock)
// checks nothing. Only http(s) URLs are remote: a file:// URL is the user's own file.
import path from 'node:path';
import { LockError } from '../errors.ts';
import { lockFileFor } from '../paths.ts';
import { readLock, writeLock, type LockData } from './file.ts';
import { withFileLock } from './mutex.ts';
import { usePin, type Pin } from './pin.ts';

export type LockMode = 'default' | 'write' | 'frozen' | 'off';

export interface LockOptions {
  mode: LockMode;
  /** The lock file (--lock=<file>); default: lockFileFor(the experiment). */
  file?: string;
}

export const isRemote = (url: string): boolean => /^https?:\/\//i.test(url);

/**
 * Installs the lock of this experiment for the rest of the process (the CLI, once it knows the experiment) and
 * returns its path. A damaged lock file is reported here, before anything is fetched, even if nothing is.
 */
export async function useLock(experiment: string, opts: LockOptions): Promise<string | undefined> {
  const file = opts.mode === 'off' ? undefined : path.resolve(opts.file ?? lockFileFor(experiment));
  if (file) await readLock(file);
  usePin(file ? lockPin(file, opts.mode) : async () => {});
  return file;
}

/** A check against entries handed over (a queued job's copy of the submitter's lock): known URLs must match. */
export function pinnedBy(entries: Record<string, string>, where: string): Pin {
  return async (url, sha256) => {
    const expected = entries[url];
    if (expected !== undefined && expected !== sha256.toLowerCase())
      throw mismatch(url, expected, sha256.toLowerCase(), where);
  };
}

/** The check of `url`'s sha256 against the lock `file` in this mode. */
export function lockPin(file: string, mode: LockMode): Pin {
  if (mode === 'off') return async () => {};
  return async (url, sha256) => {
    if (!isRemote(url)) return;
    const digest = sha256.toLowerCase();
    const expected = (await readLock(file)).remote[url];
    if (expected !== digest) {
      if (expected !== undefined && mode !== 'write') throw mismatch(url, expected, digest, file);
      if (expected === undefined && mode === 'frozen') throw frozen(url, digest, file);
      await withFileLock(file, () => record(file, url, digest, mode));
    }
  };
}

/** Under the file lock: read again (another process may have written the entry since), then add or replace. */
async function record(file: string, url: string, digest: string, mode: LockMode): Promise<void> {
  const lock: LockData = await readLock(file);
  const expected = lock.remote[url];
  if (expected === digest) return;
  if (expected !== undefined && mode !== 'write') throw mismatch(url, expected, digest, file);
  lock.remote = { ...lock.remote, [url]: digest };
  await writeLock(file, lock);
}

function mismatch(url: string, expected: string, actual: string, file: string): LockError {
  return new LockError(
    `${url} does not match its entry in the lock file ${file}:\n  expected sha256 ${expected}\n  actual sha256   ${actual}`,
    {
      hint: 'The content at that URL changed since it was pinned. If you trust the new content, rerun with --lock-write to accept the new content.',
    },
  );
}

function frozen(url: string, actual: string, file: string): LockError {
  return new LockError(`${url} (sha256 ${actual}) is not in the lock file ${file}, and --frozen forbids new entries`, {
    hint: 'Run once without --frozen to pin it (then commit the lock file), or with --lock-write.',
  });
}
