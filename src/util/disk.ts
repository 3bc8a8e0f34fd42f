// A full disk (or a used-up quota), said once and the same way wherever xp writes: the file it was writing, that
// there is no space left on its device, and what to do. Node's ENOSPC from a write on an open file names no path,
// so the writer that knows the file turns it into this error.
import path from 'node:path';
import { XpError } from '../errors.ts';

const FULL = new Set(['ENOSPC', 'EDQUOT']);

export class DiskFullError extends XpError {
  readonly path: string;
  constructor(file: string, code: string, hint: string, cause: unknown) {
    super(`cannot write ${file}: ${code === 'EDQUOT' ? 'disk quota exceeded' : 'no space left on device'} (${code})`, {
      cause,
      hint,
    });
    this.name = 'DiskFullError';
    this.path = file;
  }
}

/** Whether `error` is a write that found no room (ENOSPC, EDQUOT), said or not yet. */
export function isDiskFull(error: unknown): boolean {
  return error instanceof DiskFullError || FULL.has((error as NodeJS.ErrnoException)?.code ?? '');
}

/** What to do, for files under a folder whose place a variable chooses. */
export function freeSpaceHint(file: string, variable?: string): string {
  return `free space on the disk that holds ${path.dirname(file)} (df -h ${path.dirname(file)})${variable ? `, or set ${variable} to a folder on a disk with room` : ''}, then run again`;
}

/** `error` as a DiskFullError naming `file` when it is one; otherwise `error` itself. */
export function diskFull(error: unknown, file: string, hint = freeSpaceHint(file)): unknown {
  if (error instanceof DiskFullError || !isDiskFull(error)) return error;
  return new DiskFullError(file, (error as NodeJS.ErrnoException).code ?? 'ENOSPC', hint, error);
}

/** Runs `write` (of `file`); a full disk comes out as a DiskFullError naming `file`. */
export async function writing<T>(file: string, write: () => T | Promise<T>, hint?: string): Promise<T> {
  try {
    return await write();
  } catch (error) {
    throw diskFull(error, file, hint);
  }
}

/** `writing` for synchronous writers. */
export function writingSync<T>(file: string, write: () => T, hint?: string): T {
  try {
    return write();
  } catch (error) {
    throw diskFull(error, file, hint);
  }
}
