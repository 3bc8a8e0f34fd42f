// Read-modify-write of a file by several processes at once: `withFileLock` runs its work while holding
// `<file>.lck`, created exclusively (O_EXCL) with the holder's pid, host and a nonce. A holder that died (its pid
// gone on this host) or that holds it longer than any update takes is stale: its lock is renamed away and taken.
import { randomBytes } from 'node:crypto';
import { link, open, readFile, rename, stat, unlink, type FileHandle } from 'node:fs/promises';
import os from 'node:os';
import { LockError } from '../errors.ts';
import { processAlive } from '../util/process.ts';

interface Holder {
  pid: number;
  host: string;
  nonce: string;
}

export interface MutexOptions {
  /** Give up waiting after this long. */
  timeoutMs?: number;
  /** A lock older than this is stale whoever holds it (a holder on another host, a reused pid). */
  staleMs?: number;
}

export async function withFileLock<T>(file: string, work: () => Promise<T>, opts: MutexOptions = {}): Promise<T> {
  const lockFile = `${file}.lck`;
  const nonce = await acquire(lockFile, opts.timeoutMs ?? 30_000, opts.staleMs ?? 30_000);
  try {
    return await work();
  } finally {
    await release(lockFile, nonce);
  }
}

async function acquire(lockFile: string, timeoutMs: number, staleMs: number): Promise<string> {
  const me: Holder = { pid: process.pid, host: os.hostname(), nonce: randomBytes(8).toString('hex') };
  const started = Date.now();
  for (let attempt = 0; ; attempt++) {
    if (await create(lockFile, me)) return me.nonce;
    const seen = await stat(lockFile).catch(() => undefined);
    if (!seen) continue; // released in between
    const holder = await readHolder(lockFile);
    const dead = holder !== undefined && holder.host === os.hostname() && !processAlive(holder.pid, holder.host);
    if (dead || Date.now() - seen.mtimeMs > staleMs) {
      await takeOver(lockFile, seen.ino);
      continue;
    }
    if (Date.now() - started > timeoutMs) {
      throw new LockError(
        `${lockFile} has been held by another xp process (pid ${holder?.pid ?? '?'}) for more than ${Math.round(timeoutMs / 1000)} s`,
        {
          hint: `If no xp process is running, remove ${lockFile}.`,
        },
      );
    }
    await sleep(Math.min(50, 2 + attempt) * (0.5 + Math.random()));
  }
}

async function create(lockFile: string, me: Holder): Promise<boolean> {
  let handle: FileHandle;
  try {
    handle = await open(lockFile, 'wx');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw new LockError(`Cannot create ${lockFile}: ${(error as Error).message}`, {
      cause: error,
      hint: 'Check that the folder is writable, or pass --lock=<file> or --no-lock.',
    });
  }
  try {
    await handle.writeFile(JSON.stringify(me));
  } finally {
    await handle.close();
  }
  return true;
}

/**
 * Renames the stale lock (inode `ino`) away. Another process may have taken it over and created a fresh one since
 * it was judged stale: a lock with another inode is put back (link fails if yet another one exists) and left alone.
 */
async function takeOver(lockFile: string, ino: number): Promise<void> {
  const aside = `${lockFile}.stale-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    await rename(lockFile, aside);
  } catch {
    return; // someone else took it over first
  }
  const moved = await stat(aside).catch(() => undefined);
  if (moved && moved.ino !== ino) await link(aside, lockFile).catch(() => {});
  await unlink(aside).catch(() => {});
}

async function release(lockFile: string, nonce: string): Promise<void> {
  // Only our own lock: if ours was taken over as stale, the file is someone else's now.
  if ((await readHolder(lockFile))?.nonce === nonce) await unlink(lockFile).catch(() => {});
}

/** The holder, or undefined while its creator is still writing it (or it is gone). */
async function readHolder(lockFile: string): Promise<Holder | undefined> {
  try {
    const parsed = JSON.parse(await readFile(lockFile, 'utf8')) as Partial<Holder>;
    return typeof parsed.pid === 'number' && typeof parsed.nonce === 'string'
      ? { pid: parsed.pid, host: String(parsed.host), nonce: parsed.nonce }
      : undefined;
  } catch {
    return undefined;
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
