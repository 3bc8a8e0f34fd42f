// The command line's flags as data, one record each (how node:util parseArgs reads it and what --help says), the
// flags several commands share, and the readers that turn parsed values into the options commands take.
import type { ParseArgsConfig } from 'node:util';
import { XpError } from '../errors.ts';
import { DEFAULT_MAX_TRIALS } from '../config/sweep.ts';
import type { LockOptions } from '../lock/lock.ts';
import { parseGrants } from '../permissions/grants.ts';
import type { SandboxOptions } from './sandbox.ts';

export type Values = Record<string, string | boolean | string[] | undefined>;

/**
 * The value parseArgs is given for a flag with an optional value given alone (`--allow-read`), since it has no
 * optional values: NUL, which no command-line argument can hold, so `--allow-read=` stays the empty value it is.
 */
export const ALONE = '\0';

/** One command-line flag: how node:util parseArgs reads it and what `--help` says. */
export interface Flag {
  type: 'string' | 'boolean';
  help: string;
  /** A string flag that may also stand alone, as Deno's `--allow-read` and `--allow-read=a,b` (alone: ALONE). */
  optionalValue?: boolean;
  /** Placeholder shown in help for a string flag, e.g. `N` in `--parallel N`. */
  arg?: string;
  short?: string;
  multiple?: boolean;
  default?: string | boolean;
  /** Internal flags (between xp processes) are parsed but not listed. */
  internal?: boolean;
}

export const overrideFlags: Record<string, Flag> = {
  set: {
    type: 'string',
    multiple: true,
    arg: 'key=value',
    help: 'override one field (repeatable), e.g. --set head.dropout=0.5; a swept field set here is pinned',
  },
  sweep: {
    type: 'string',
    multiple: true,
    arg: 'key=a,b,c',
    help: 'sweep over a field (repeatable), e.g. --sweep training.epochs=5,10',
  },
  'max-trials': {
    type: 'string',
    arg: 'N',
    default: String(DEFAULT_MAX_TRIALS),
    help: 'refuse sweeps of more than N trials',
  },
};
// xp.lock, with Deno's flags: what `lockOptions` turns into the lock check of the command.
export const lockFlags: Record<string, Flag> = {
  'lock-write': { type: 'boolean', help: 'accept changed content of pinned URLs: rewrite their entries in xp.lock' },
  frozen: { type: 'boolean', help: 'refuse to add entries to xp.lock (for CI): a URL not pinned yet is an error' },
  'no-lock': { type: 'boolean', help: 'neither check nor write xp.lock' },
  lock: {
    type: 'string',
    arg: 'FILE',
    help: 'the lock file (default: xp.lock beside the experiment file, in the current folder for a URL)',
  },
};
// Deno's permission flags, for experiments that came from the web (a local file is trusted as the user's own).
export const permissionFlags: Record<string, Flag> = {
  'allow-read': {
    type: 'string',
    multiple: true,
    optionalValue: true,
    arg: 'PATH,...',
    help: 'a file from the web may read these paths (every path without =)',
  },
  'allow-write': {
    type: 'string',
    multiple: true,
    optionalValue: true,
    arg: 'PATH,...',
    help: 'a file from the web may write these paths (every path without =)',
  },
  'allow-net': {
    type: 'string',
    multiple: true,
    optionalValue: true,
    arg: 'HOST[:PORT],...',
    help: 'a file from the web may contact these hosts (a tracking server, unpinned downloads; every host without =)',
  },
  'allow-all': { type: 'boolean', short: 'A', help: 'a file from the web may do anything a local one may' },
};
export const quiet: Flag = { type: 'boolean', short: 'q', help: 'print problems only' };
export const reload: Flag = {
  type: 'boolean',
  short: 'r',
  help: 'fetch the remote files again (the experiment, the files it extends, weights) instead of using the cache',
};
export const queueFlag: Flag = {
  type: 'string',
  arg: 'URL',
  help: 'the Redis of the job queue, redis://host:6379[/db] (default XP_QUEUE_URL)',
};
export const json = (help: string): Flag => ({ type: 'boolean', help });

export function parseOptions(flags: Record<string, Flag>): NonNullable<ParseArgsConfig['options']> {
  return Object.fromEntries(
    Object.entries(flags).map(([name, f]) => [
      name,
      {
        type: f.type,
        ...(f.short ? { short: f.short } : {}),
        ...(f.multiple ? { multiple: true } : {}),
        ...(f.default !== undefined ? { default: f.default } : {}),
      },
    ]),
  ) as NonNullable<ParseArgsConfig['options']>;
}

/**
 * A flag given an empty value (`--lock=`, `--queue=`, `--set ''`) is a slip, never "the default": `--queue=` would
 * train here instead of queueing, `--lock=` pin into another file than the one named. Exit 2 naming the flag.
 * (Deno's `--allow-*=` are read by parseGrants, with their own message.)
 */
export function refuseEmptyValues(flags: Record<string, Flag>, v: Values): void {
  for (const [name, flag] of Object.entries(flags)) {
    const value = v[name];
    if (flag.type !== 'string' || flag.optionalValue || value === undefined) continue;
    if (value === '' || (Array.isArray(value) && value.includes('')))
      throw new XpError(
        `--${name} is given an empty value: give --${name}${flag.arg ? ` ${flag.arg}` : ' a value'}, or leave the flag out`,
        { exitCode: 2 },
      );
  }
}

export function sandboxOptions(v: Values): SandboxOptions {
  const list = (flag: string) => (v[flag] as string[] | undefined)?.map((value) => (value === ALONE ? null : value));
  const grants = parseGrants(
    { read: list('allow-read'), write: list('allow-write'), net: list('allow-net') },
    Boolean(v['allow-all']),
  );
  return { grants, locked: !v['no-lock'], dataDir: (v['data-dir'] as string | undefined) || undefined };
}

export function lockOptions(v: Values): LockOptions {
  const modes = (['lock-write', 'frozen', 'no-lock'] as const).filter((flag) => v[flag]);
  if (modes.length > 1)
    throw new XpError(`${modes.map((flag) => `--${flag}`).join(' and ')} cannot be used together`, {
      hint: '--lock-write accepts changes, --frozen refuses them, --no-lock skips the lock: pick one.',
    });
  if (v['no-lock'] && v.lock) throw new XpError('--no-lock and --lock cannot be used together');
  const mode = v['lock-write'] ? 'write' : v.frozen ? 'frozen' : v['no-lock'] ? 'off' : 'default';
  return { mode, file: (v.lock as string | undefined) || undefined };
}

export function positiveInt(flag: string, text: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1)
    throw new XpError(`${flag} must be a positive integer (got ${JSON.stringify(text)})`);
  return n;
}

export function nonNegativeInt(flag: string, text: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0 || text.trim() === '')
    throw new XpError(`${flag} must be a whole number, 0 or more (got ${JSON.stringify(text)})`);
  return n;
}
