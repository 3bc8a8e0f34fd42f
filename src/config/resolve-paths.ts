// The fields that name files, resolved once, against the file that wrote them: `backbone.weights` (a .h5 or
// model.json) and, without `data.url`, `data.train` and `data.validation`. In a local file they become absolute
// paths from the file's folder; in a remote file, URLs relative to the file's URL (a folder cannot be fetched, so
// a remote file's data folders need data.url); on the command line (--set, --sweep), paths from the current
// folder. A remote file names a local file or folder only as a file:// URL, which the sandbox then asks about
// (--allow-read), as a Deno script from the web reads local files. Swept values of these fields are resolved the same way. After this, no one resolves these paths again.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { isUrl, refusedUrl } from '../remote/url.ts';
import type { FieldPath } from './compose.ts';
import { isMapping } from './mapping.ts';
import type { FieldProblem } from './validate.ts';

/** Where a value was written: a file (its absolute path or URL) or the command line (undefined). */
export type WrittenIn = (path: FieldPath) => { spec: string; remote: boolean } | undefined;

const FIELDS = ['backbone.weights', 'data.train', 'data.validation'] as const;
type PathField = (typeof FIELDS)[number];

export function resolvePaths(raw: Record<string, unknown>, writtenIn: WrittenIn): FieldProblem[] {
  const problems: FieldProblem[] = [];
  const hasUrl = isMapping(raw.data) && typeof raw.data.url === 'string';
  const applies = (field: PathField) => field === 'backbone.weights' || !hasUrl;
  for (const field of FIELDS) {
    if (!applies(field)) continue;
    const at = field.split('.');
    const [section, key] = at;
    const parent = raw[section];
    const value = isMapping(parent) ? parent[key] : undefined;
    if (isMapping(parent) && typeof value === 'string') {
      const resolved = resolveOne(field, value, writtenIn(at));
      if (typeof resolved === 'string') parent[key] = resolved;
      else problems.push({ path: at, message: resolved.message });
    }
  }
  const sweep = raw.sweep;
  if (!isMapping(sweep)) return problems;
  for (const field of FIELDS) {
    if (!applies(field)) continue;
    const [holder, at] =
      field in sweep ? [sweep, ['sweep', field]] : [sweep.parameters, ['sweep', 'parameters', field]];
    const spec = isMapping(holder) ? holder[field] : undefined;
    const values: unknown = Array.isArray(spec) ? spec : isMapping(spec) ? spec.values : undefined;
    if (!Array.isArray(values)) continue;
    for (const [i, v] of values.entries()) {
      if (typeof v !== 'string') continue;
      const resolved = resolveOne(field, v, writtenIn(at));
      if (typeof resolved === 'string') values[i] = resolved;
      else problems.push({ path: Array.isArray(spec) ? [...at, i] : [...at, 'values', i], message: resolved.message });
    }
  }
  return problems;
}

function resolveOne(
  field: PathField,
  value: string,
  where: { spec: string; remote: boolean } | undefined,
): string | Error {
  if (field === 'backbone.weights' && (value === 'nsfwjs' || value === 'imagenet')) return value;
  if (where?.remote && value.startsWith('file:')) return localFile(field, value);
  if (field !== 'backbone.weights') {
    if (where?.remote)
      return new Error(
        `${field}: ${where.spec} is a remote file, and a folder cannot be fetched; give data.url, a zip of the class folders (data.train and data.validation are then folders inside it), or a file:// URL of a local folder (the run then needs --allow-read for it)`,
      );
    if (isUrl(value))
      return new Error(`${field} is a folder of class folders, not a URL; give data.url for a zip to download`);
    return path.resolve(where ? path.dirname(where.spec) : process.cwd(), value);
  }
  let resolved: string;
  if (where?.remote) resolved = new URL(value, where.spec).href;
  else if (value.startsWith('file:')) return localFile(field, value);
  else if (isUrl(value)) resolved = value;
  else return path.resolve(where ? path.dirname(where.spec) : process.cwd(), value);
  const refused = refusedUrl(resolved);
  if (refused) return new Error(`backbone.weights: ${refused}`);
  if (/\.json$/i.test(new URL(resolved).pathname)) {
    return new Error(
      `backbone.weights: a tfjs model.json cannot be used from a URL (${resolved}); download the model's folder and give the path of its model.json, or give a Keras .h5 URL`,
    );
  }
  return resolved;
}

function localFile(field: PathField, value: string): string | Error {
  try {
    return fileURLToPath(value);
  } catch (error) {
    return new Error(
      `${field}: ${value} is not a usable file URL (${(error as Error).message}); write an absolute path after file://`,
    );
  }
}
