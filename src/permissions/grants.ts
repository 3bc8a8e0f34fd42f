// Deno's permission flags, read as Deno reads them: `--allow-read` alone grants every path, `--allow-read=a,b`
// those paths and what lies below them; `--allow-net=host` any port of that host, `host:port` that port only;
// `-A`/`--allow-all` grants everything.
import path from 'node:path';

export type AccessKind = 'read' | 'write' | 'net';

/** Per kind: 'all', or the granted paths (absolute) or hosts. */
export type Grants = Record<AccessKind, 'all' | string[]>;

export const NO_GRANTS: Grants = { read: [], write: [], net: [] };

/** The flag that grants `kind`, as Deno spells it. */
export const flagOf = (kind: AccessKind): string => `--allow-${kind}`;

/**
 * Grants from the flags' values: each of `read`, `write`, `net` is undefined (not given) or the list of values the
 * flag was given with, '' for a flag given without `=`.
 */
export function parseGrants(values: Partial<Record<AccessKind, string[]>>, all = false, cwd = process.cwd()): Grants {
  if (all) return { read: 'all', write: 'all', net: 'all' };
  const one = (kind: AccessKind): 'all' | string[] => {
    const given = values[kind];
    if (!given?.length) return [];
    if (given.some((v) => v === '')) return 'all';
    const items = given
      .flatMap((v) => v.split(','))
      .map((v) => v.trim())
      .filter(Boolean);
    return kind === 'net' ? items.map((h) => h.toLowerCase()) : items.map((p) => path.resolve(cwd, p));
  };
  return { read: one('read'), write: one('write'), net: one('net') };
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
