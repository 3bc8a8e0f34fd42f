// `extends:` composition: an experiment is the deep merge of its bases, then itself (later wins, lists replaced,
// `sweep:` merged by key, `null` removes a field). Files are local paths or URLs; a path written in a file is
// relative to that file (a remote file's paths are URLs relative to its URL). Every file keeps its own positions,
// so that a problem in an inherited value points at the file and line that wrote it, with the chain of files
// that extend it.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { LockError, XpError } from '../errors.ts';
import { DiskFullError } from '../util/disk.ts';
import { remoteFile } from '../remote/cache.ts';
import { isUrl } from '../remote/url.ts';
import { isMapping } from './mapping.ts';
import { MAX_FILE_BYTES, parseText, readText, type Source } from './parse.ts';
import { ConfigProblems, type Problem } from './problems.ts';

/** How many levels of `extends` a chain may have; real experiments need one or two. */
export const MAX_EXTENDS_DEPTH = 8;

export interface ComposedFile {
  /** The absolute path of a local file, or the URL of a fetched one. */
  spec: string;
  remote: boolean;
  sha256: string;
  /** How problems name it: the command line's path, a base's path (relative to the current folder when inside it), or the URL. */
  name: string;
  /** The names of the files that extend this one, nearest first (none for the experiment itself). */
  via: string[];
  /** Its own fields, `extends` left out. */
  value: Record<string, unknown>;
  source: Source;
}

export type FieldPath = (string | number)[];

export interface Composed {
  /** The merged fields. */
  value: Record<string, unknown>;
  /** The experiment file itself. */
  top: ComposedFile;
  /** Every file in the order merged: bases first (each after its own bases), the experiment itself last. */
  merged: ComposedFile[];
  /** The file that wrote the value at `path`: the last merged file that has it (or, if none, its nearest parent). */
  writer(path: FieldPath): ComposedFile;
  /** The last merged file that has the value at `path` itself, if any. */
  writtenBy(path: FieldPath): ComposedFile | undefined;
  position(path: FieldPath, atKey?: boolean): Omit<Problem, 'message'>;
}

export interface ComposeOptions {
  /** Fetch remote files again instead of using the cache (--reload). */
  reload?: boolean;
}

/** Errors fetching a file that are no problem of the file: xp.lock's mismatch, a full disk. */
const endsTheCommand = (error: unknown): boolean => error instanceof LockError || error instanceof DiskFullError;

export async function compose(spec: string, opts: ComposeOptions = {}): Promise<Composed> {
  const top = await readFile(isUrl(spec) ? spec : path.resolve(spec), spec, [], opts).catch((error: unknown) => {
    // A URL that cannot be fetched is a problem of that file, as a missing file is; bytes that do not match xp.lock,
    // and a full disk, are no problem of the file: they end the command with their own error and exit code.
    if (!(error instanceof XpError) || error instanceof ConfigProblems || endsTheCommand(error)) throw error;
    throw new ConfigProblems([
      {
        file: spec,
        message: `${error.message.replace(`cannot fetch ${spec}: `, 'cannot fetch: ')}${error.hint ? `; ${error.hint}` : ''}`,
      },
    ]);
  });
  const merged = await withBases(top, [], opts);
  const value: Record<string, unknown> = {};
  for (const f of merged) mergeInto(value, f.value, []);
  const writtenBy = (p: FieldPath): ComposedFile | undefined => {
    for (let i = merged.length - 1; i >= 0; i--) {
      // A null at the path or above it removed what earlier files wrote: the value comes from the defaults.
      if (p.some((_, k) => valueAt(merged[i].value, p.slice(0, k + 1)) === null)) return undefined;
      if (has(merged[i].value, p)) return merged[i];
    }
    return undefined;
  };
  const writer = (p: FieldPath): ComposedFile => {
    for (let k = p.length; k >= 0; k--) {
      const f = writtenBy(p.slice(0, k));
      if (f) return f;
    }
    return top;
  };
  return {
    value,
    top,
    merged,
    writer,
    writtenBy,
    position(p, atKey) {
      const f = writer(p);
      return { file: f.name, ...f.source.position(p, atKey), ...(f.via.length ? { via: f.via } : {}) };
    },
  };
}

// The files `file` extends, each after its own bases, then `file`. `chain`: the files that extend it, outermost first.
async function withBases(file: ComposedFile, chain: ComposedFile[], opts: ComposeOptions): Promise<ComposedFile[]> {
  const specs = extendsList(file);
  const out: ComposedFile[] = [];
  const lineage = [...chain, file];
  for (const [i, written] of specs.entries()) {
    const at = Array.isArray(file.source.value.extends) ? ['extends', i] : ['extends'];
    const problem = (message: string) =>
      new ConfigProblems([
        { file: file.name, ...file.source.position(at), ...(file.via.length ? { via: file.via } : {}), message },
      ]);
    const spec = resolveSpec(written, file);
    if (spec instanceof Error) throw problem(`extends: ${spec.message}`);
    const names = [...lineage.map((f) => f.name), nameOf(spec)];
    if (lineage.some((f) => f.spec === spec))
      throw problem(`extends: a cycle: ${names.join(' -> ')}; remove one of these extends`);
    if (lineage.length > MAX_EXTENDS_DEPTH)
      throw problem(
        `extends: more than ${MAX_EXTENDS_DEPTH} levels of extends (${names.join(' -> ')}); merge some of these files`,
      );
    const via = [...lineage].reverse().map((f) => f.name);
    const base = await readFile(spec, nameOf(spec), via, opts).catch((error: unknown) => {
      if (error instanceof ConfigProblems && error.problems.every((p) => p.file === nameOf(spec) && !p.line))
        throw problem(`extends: ${error.problems.map((p) => `${p.message}`).join('; ')}: ${nameOf(spec)}`);
      if (error instanceof XpError && !(error instanceof ConfigProblems) && !endsTheCommand(error))
        throw problem(`extends: ${error.message}${error.hint ? `; ${error.hint}` : ''}`);
      throw error;
    });
    out.push(...(await withBases(base, lineage, opts)));
  }
  return [...out, file];
}

function extendsList(file: ComposedFile): string[] {
  const written = file.source.value.extends;
  if (written === undefined || written === null) return [];
  const list = Array.isArray(written) ? written : [written];
  const bad = list.findIndex((s) => typeof s !== 'string' || s.trim() === '');
  if (bad >= 0 || list.length === 0) {
    const at = Array.isArray(written) && bad >= 0 ? ['extends', bad] : ['extends'];
    throw new ConfigProblems([
      {
        file: file.name,
        ...file.source.position(at),
        ...(file.via.length ? { via: file.via } : {}),
        message: 'extends must be the path or URL of an experiment file, or a list of them',
      },
    ]);
  }
  return list as string[];
}

// A base named in a remote file is a URL relative to it, never a local path; in a local file, a path relative to
// the file's folder (or a URL).
function resolveSpec(written: string, from: ComposedFile): string | Error {
  if (from.remote) {
    const url = new URL(written, from.spec);
    return url.protocol === 'https:' || url.protocol === 'http:'
      ? url.href
      : new Error(`${written}: a remote file can only extend URLs (got ${url.protocol}//)`);
  }
  if (written.startsWith('file:')) {
    try {
      return fileURLToPath(written);
    } catch (error) {
      return new Error(`${written} is not a usable file URL: ${(error as Error).message}`);
    }
  }
  return isUrl(written) ? written : path.resolve(path.dirname(from.spec), written);
}

async function readFile(spec: string, name: string, via: string[], opts: ComposeOptions): Promise<ComposedFile> {
  const remote = isUrl(spec);
  let text: string;
  let sha256: string | undefined;
  if (remote) {
    const got = await remoteFile(spec, { maxBytes: MAX_FILE_BYTES, reload: opts.reload });
    text = fs.readFileSync(got.file, 'utf8');
    sha256 = got.sha256; // of the bytes served, as pinned
  } else {
    try {
      text = readText(spec);
    } catch (error) {
      if (error instanceof ConfigProblems) throw new ConfigProblems(error.problems.map((p) => ({ ...p, file: name })));
      throw error;
    }
  }
  let source: Source;
  try {
    source = parseText(text, name);
  } catch (error) {
    if (error instanceof ConfigProblems && via.length)
      throw new ConfigProblems(error.problems.map((p) => ({ ...p, via })));
    throw error;
  }
  const { extends: _extends, ...value } = source.value;
  return { spec, remote, sha256: sha256 ?? createHash('sha256').update(text).digest('hex'), name, via, value, source };
}

// A base's name in problems: its URL, or its path relative to the current folder when it is inside it.
function nameOf(spec: string): string {
  if (isUrl(spec)) return spec;
  const relative = path.relative(process.cwd(), spec);
  return relative && !relative.startsWith('..') && !path.isAbsolute(relative) ? relative : spec;
}

// Under `sweep`, each parameter (and each setting) is replaced whole: merging two distributions would make a third.
const replacedWhole = (p: string[]): boolean =>
  p[0] === 'sweep' && (p.length === 2 ? p[1] !== 'parameters' : p.length === 3);

function mergeInto(target: Record<string, unknown>, source: Record<string, unknown>, at: string[]): void {
  for (const [key, value] of Object.entries(source)) {
    const here = [...at, key];
    if (value === null) delete target[key];
    else if (isMapping(value) && isMapping(target[key]) && !replacedWhole(here))
      mergeInto(target[key] as Record<string, unknown>, value, here);
    else target[key] = isMapping(value) ? withoutNulls(value) : structuredClone(value);
  }
}

// A mapping that replaces a value is taken as written, except that its nulls still mean "absent".
function withoutNulls(value: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value))
    if (v !== null) out[k] = isMapping(v) ? withoutNulls(v) : structuredClone(v);
  return out;
}

// The value at `p`, or undefined where the path does not exist (a null written there is returned as null).
function valueAt(value: unknown, p: FieldPath): unknown {
  let node: unknown = value;
  for (const k of p) {
    if (node === null || typeof node !== 'object' || !Object.hasOwn(node, k)) return undefined;
    node = (node as Record<string | number, unknown>)[k];
  }
  return node;
}

function has(value: unknown, p: FieldPath): boolean {
  let node: unknown = value;
  for (const k of p) {
    if (node === null || typeof node !== 'object' || !Object.hasOwn(node, k)) return false;
    node = (node as Record<string | number, unknown>)[k];
  }
  return true;
}
