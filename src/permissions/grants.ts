// Deno's permission flags, read as Deno reads them: `--allow-read` alone grants every path, `--allow-read=a,b`
// those paths and what lies below them; `--allow-net=host` any port of that host, `host:port` that port only;
// `-A`/`--allow-all` grants everything. An empty entry (`--allow-read=`, `--allow-net=a,,b`) is an error, as
// Deno's "Empty path is not allowed": it is a slip, and reading it as "everything" or "nothing" grants by accident.
import path from 'node:path';
import { XpError } from '../errors.ts';

export type AccessKind = 'read' | 'write' | 'net';

/** Per kind: 'all', or the granted paths (absolute) or hosts. */
export type Grants = Record<AccessKind, 'all' | string[]>;

export const NO_GRANTS: Grants = { read: [], write: [], net: [] };

/** The flag that grants `kind`, as Deno spells it. */
export const flagOf = (kind: AccessKind): string => `--allow-${kind}`;

/**
 * Grants from the flags' values: each of `read`, `write`, `net` is undefined (not given) or the list of values the
 * flag was given with, null for a flag given without `=`. Throws (exit 2) on an empty entry, naming the flag.
 */
export function parseGrants(
  values: Partial<Record<AccessKind, (string | null)[]>>,
  all = false,
  cwd = process.cwd(),
): Grants {
  const one = (kind: AccessKind): 'all' | string[] => {
    const given = values[kind];
    if (!given?.length) return [];
    const items = given.flatMap((v) => (v === null ? [] : v.split(',').map((item) => ({ item: item.trim(), v }))));
    const empty = items.find(({ item }) => item === '');
    if (empty) throw emptyEntry(kind, empty.v);
    if (given.includes(null)) return 'all';
    const list = items.map(({ item }) => item);
    return kind === 'net' ? list.map((h) => h.toLowerCase()) : list.map((p) => path.resolve(cwd, p));
  };
  const grants = { read: one('read'), write: one('write'), net: one('net') };
  return all ? { read: 'all', write: 'all', net: 'all' } : grants;
}

function emptyEntry(kind: AccessKind, value: string): XpError {
  const flag = flagOf(kind);
  const what = kind === 'net' ? 'HOST[:PORT]' : 'PATH';
  return new XpError(
    `${flag}=${value} has an empty ${kind === 'net' ? 'host' : 'path'}: give ${flag} alone to allow every ${kind === 'net' ? 'host' : 'path'}, or ${flag}=${what}[,${what}...] without empty entries`,
    { exitCode: 2 },
  );
}

/** Whether the grant covers the path (itself or below it) or the host (`host` or `host:port`). */
export function granted(grants: Grants, kind: AccessKind, target: string): boolean {
  const g = grants[kind];
  if (g === 'all') return true;
  return g.some((item) => covers(kind, item, target));
}

export function covers(kind: AccessKind, item: string, target: string): boolean {
  if (kind === 'net') {
    const host = target.toLowerCase();
    const itemHasPort = item.startsWith('[') ? item.includes(']:') : item.includes(':');
    return item === host || (!itemHasPort && item === hostname(host));
  }
  const relative = path.relative(item, target);
  return relative === '' || (!relative.startsWith('..') && !path.isAbsolute(relative));
}

/** `host:port` -> `host` (IPv6 in brackets kept whole). */
export function hostname(hostPort: string): string {
  if (hostPort.startsWith('[')) return hostPort.slice(0, hostPort.indexOf(']') + 1);
  const colon = hostPort.lastIndexOf(':');
  return colon < 0 ? hostPort : hostPort.slice(0, colon);
}
