// What an experiment will read, write and contact, field by field, and which of it a file from the web may do
// without a grant (Deno's sandbox): read what xp downloaded and pinned (its cache, the data directory), write the
// runs folder, fetch the downloads it declares while they are pinned in xp.lock. Anything else, a tracking server
// above all (runs, params and file names would leave the machine), needs a flag.
import path from 'node:path';
import type { Experiment } from '../config/types.ts';
import { isUrl } from '../remote/url.ts';
import type { AccessKind } from './grants.ts';

export interface Access {
  kind: AccessKind;
  /** An absolute path, or `host:port` for net. */
  target: string;
  /** Why: the field, e.g. `data.train`, or what xp does, e.g. `run folders`. */
  field: string;
  /** Allowed without a grant, and why; undefined when a grant is needed. */
  allowed?: string;
}

/** Where xp itself reads and writes; the experiment's paths are absolute or URLs once loaded (src/config). */
export interface AccessContext {
  /** Where xp keeps downloads (weights, remote files) and unpacks data sets given by url. */
  cacheDir: string;
  dataDir: string;
  runsDir: string;
  /** Downloads are pinned by xp.lock (false with --no-lock: then they need a grant too). */
  locked: boolean;
}

/** Every access the trials need, each (kind, target) once; the first field that needs it names it. */
export function accessesOf(experiments: readonly Experiment[], ctx: AccessContext): Access[] {
  const found = new Map<string, Access>();
  const add = (a: Access) => {
    const key = `${a.kind} ${a.target}`;
    if (!found.has(key)) found.set(key, a);
  };
  const inCache = (file: string) =>
    [ctx.cacheDir, ctx.dataDir].some((dir) => !path.relative(dir, file).startsWith('..'));
  const read = (file: string, field: string): void => {
    if (isUrl(file)) {
      download(file, field);
      return;
    }
    add({ kind: 'read', target: file, field, allowed: inCache(file) ? "xp's cache" : undefined });
  };
  const download = (url: string, field: string): void => {
    const u = new URL(url);
    if (u.protocol === 'file:') {
      read(decodeURIComponent(u.pathname), field);
      return;
    }
    add({ kind: 'net', target: u.host, field, allowed: ctx.locked ? 'a download pinned in xp.lock' : undefined });
  };
  for (const e of experiments) {
    if (e.data.url) {
      download(e.data.url, 'data.url');
      for (const field of ['train', 'validation'] as const)
        read(path.resolve(ctx.dataDir, e.data[field]), `data.${field}`);
    } else {
      for (const field of ['train', 'validation'] as const) read(e.data[field], `data.${field}`);
    }
    if (e.backbone.weights !== 'nsfwjs' && e.backbone.weights !== 'imagenet')
      read(e.backbone.weights, 'backbone.weights');
    if (e.tracking.enabled && e.tracking.uri) {
      const uri = e.tracking.uri;
      if (uri.startsWith('file:') || !isUrl(uri))
        add({
          kind: 'write',
          target: isUrl(uri) ? decodeURIComponent(new URL(uri).pathname) : path.resolve(uri),
          field: 'tracking.uri',
        });
      else add({ kind: 'net', target: new URL(uri).host, field: 'tracking.uri' });
    }
  }
  add({ kind: 'write', target: ctx.runsDir, field: 'run folders', allowed: 'the runs folder' });
  return [...found.values()];
}
