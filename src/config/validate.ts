// JSON Schema validation with defaults, and ajv errors turned into one-sentence problems with a field path.
import { createRequire } from 'node:module';
import { Ajv2020 } from 'ajv/dist/2020.js';
import type { DefinedError, ErrorObject, ValidateFunction } from 'ajv';
import { didYouMean, show } from './problems.ts';
import type { Experiment } from './types.ts';

const require = createRequire(import.meta.url);
export const schema = require('../../schema/experiment.schema.json');

/** A node of the JSON Schema, in the keywords xp's code walks. */
export interface SchemaNode {
  $ref?: string;
  $defs?: Record<string, SchemaNode>;
  properties?: Record<string, SchemaNode>;
  patternProperties?: Record<string, SchemaNode>;
  additionalProperties?: SchemaNode | boolean;
  items?: SchemaNode;
  oneOf?: SchemaNode[];
  anyOf?: SchemaNode[];
  'x-unavailable'?: Record<string, string>;
}
/** The schema, typed in the keywords xp walks. */
export const schemaRoot: SchemaNode = schema;

// The Experiment type mirrors the schema (test/config/schema-types.test.ts): what passes is one.
let compiled: ValidateFunction<Experiment> | undefined;

function validator(): ValidateFunction<Experiment> {
  if (!compiled)
    compiled = new Ajv2020({
      allErrors: true,
      useDefaults: true,
      strict: true,
      allowUnionTypes: true,
      // x-unavailable: values the schema names but refuses, each with the reason (read by toProblem, not by ajv).
      keywords: ['x-unavailable'],
    }).compile<Experiment>(schema);
  return compiled;
}

export interface FieldProblem {
  path: (string | number)[];
  /** true when the problem is about the key itself (an unknown field), not its value */
  atKey?: boolean;
  message: string;
}

/** Validates in place (defaults are filled into `data`) and returns the problems, most specific first. */
export function validate(data: unknown): FieldProblem[] {
  const check = validator();
  if (check(data)) return [];
  return explain(check.errors ?? [], data);
}

/** Whether `data` is a valid experiment; validates in place (defaults are filled in), as validate() does. */
export const isExperiment = (data: unknown): data is Experiment => validator()(data);

function explain(errors: ErrorObject[], data: unknown): FieldProblem[] {
  // oneOf failures come with one error per branch: report the oneOf alone, at its own path.
  const oneOfPaths = new Set(errors.filter((e) => e.keyword === 'oneOf').map((e) => e.instancePath));
  const problems: FieldProblem[] = [];
  const seen = new Set<string>();
  for (const e of errors) {
    if (
      e.keyword !== 'oneOf' &&
      [...oneOfPaths].some((p) => e.instancePath.startsWith(p) && e.schemaPath.includes('/oneOf/'))
    )
      continue;
    if (e.keyword === 'if' || e.keyword === 'propertyNames') continue;
    // The validator has ajv's own keywords only: each error is one of theirs.
    const problem = toProblem(e as DefinedError, data);
    const key = `${problem.path.join('.')}|${problem.message}`;
    if (!seen.has(key)) {
      seen.add(key);
      problems.push(problem);
    }
  }
  return problems;
}

function toProblem(e: DefinedError, data: unknown): FieldProblem {
  const path = e.instancePath.split('/').slice(1).map(unescapePointer);
  const name = path.join('.') || 'the experiment';
  const value = valueAt(data, path);
  const got = ` (got ${show(value)})`;
  switch (e.keyword) {
    case 'additionalProperties': {
      const { additionalProperty } = e.params;
      const known = Object.keys(propertiesAt(path));
      const field = [...path, additionalProperty].join('.');
      const hint = known.length ? didYouMean(additionalProperty, known) || `; known fields: ${known.join(', ')}` : '';
      return { path: [...path, additionalProperty], atKey: true, message: `${field} is not a known field${hint}` };
    }
    case 'required':
      return { path, message: `${path.length ? `${name}.` : ''}${e.params.missingProperty} is required` };
    case 'type':
      return { path, message: `${name} must be ${article(e.params.type)}${got}` };
    case 'enum': {
      const allowed = e.params.allowedValues.map(String);
      const refused = typeof value === 'string' ? unavailable(path)?.[value] : undefined;
      if (refused)
        return { path, message: `${name}: ${value} is not available: ${refused} (one of ${allowed.join(', ')})` };
      return {
        path,
        message: `${name} must be one of ${allowed.join(', ')}${got}${typeof value === 'string' ? didYouMean(value, allowed) : ''}`,
      };
    }
    case 'minimum':
    case 'maximum':
    case 'exclusiveMinimum':
    case 'exclusiveMaximum':
      return { path, message: `${name} must be ${e.params.comparison} ${e.params.limit}${got}` };
    case 'minItems':
    case 'maxItems':
      return {
        path,
        message: `${name} must have ${e.keyword === 'minItems' ? 'at least' : 'at most'} ${e.params.limit} items${got}`,
      };
    case 'minLength':
      return { path, message: `${name} must not be empty` };
    case 'pattern':
      return { path, message: `${name} ${patternAdvice(path)}${got}` };
    case 'oneOf':
      return { path, message: `${name} ${oneOfAdvice(path)}${got}` };
    default:
      return { path, message: `${name} ${e.message ?? 'is invalid'}${got}` };
  }
}

function article(type: string): string {
  const words: Record<string, string> = {
    integer: 'an integer',
    object: 'a mapping',
    array: 'a list',
    string: 'a string',
    number: 'a number',
    boolean: 'true or false',
  };
  return type
    .split(',')
    .map((t) => words[t] ?? t)
    .join(' or ');
}

function patternAdvice(path: string[]): string {
  const last = path[path.length - 1];
  if (last === 'name') return "may only contain letters, digits, '.', '_' and '-', starting with a letter or digit";
  if (last === 'sha256') return 'must be 64 hexadecimal characters';
  if (last === 'url') return 'must be an http(s):// or file:// URL';
  return 'has an invalid format';
}

function oneOfAdvice(path: string[]): string {
  const last = path[path.length - 1];
  if (last === 'zoom_range') return 'must be a number in [0, 1] or a [lower, upper] pair';
  if (last === 'class_weight') return 'must be balanced or a mapping of class folder names to weights > 0';
  if (path[0] === 'sweep') return 'must be a list of values or a {distribution, min, max | values} mapping';
  return 'does not match any allowed form';
}

/** The values the schema refuses at a data path, with why (its x-unavailable keyword). */
function unavailable(path: string[]): Record<string, string> | undefined {
  const node = propertiesAt(path.slice(0, -1))[path[path.length - 1]];
  return node?.['x-unavailable'];
}

// A JSON Pointer segment's escapes (RFC 6901).
const unescapePointer = (s: string) => s.replace(/~1/g, '/').replace(/~0/g, '~');

function valueAt(data: unknown, path: (string | number)[]): unknown {
  let v = data;
  for (const k of path)
    v = typeof v === 'object' && v !== null ? (v as Record<string | number, unknown>)[k] : undefined;
  return v;
}

/** The `properties` of the schema object at a data path (for "did you mean"). */
export function propertiesAt(path: (string | number)[]): Record<string, SchemaNode> {
  let s: SchemaNode | undefined = schemaRoot;
  for (const k of path) {
    const additional = typeof s?.additionalProperties === 'object' ? s.additionalProperties : undefined;
    s = own(s?.properties, k) ?? additional;
    if (s?.$ref) s = resolveRef(s.$ref);
  }
  return s?.properties ?? {};
}

/** The schema node a `$ref` points to; the schema's refs are all `#/$defs/<name>`. */
export function resolveRef(ref: string): SchemaNode | undefined {
  const name = /^#\/\$defs\/([^/]+)$/.exec(ref)?.[1];
  return name === undefined ? undefined : own(schemaRoot.$defs, name);
}

/** Whether a dotted path names a field the schema knows (for --set and sweep keys). */
export function isKnownField(path: string[]): boolean {
  let s: SchemaNode | undefined = schemaRoot;
  for (const k of path) {
    s = own(s?.properties, k);
    if (!s) return false;
  }
  return true;
}

// `properties.__proto__` would find Object.prototype: look up the schema's own keys only.
const own = <T>(o: Record<string, T> | undefined, k: string | number): T | undefined =>
  o && Object.hasOwn(o, k) ? o[k] : undefined;

export function knownFields(prefix: string[] = []): string[] {
  const props = propertiesAt(prefix);
  return Object.entries(props).flatMap(([k, v]) =>
    v.properties ? knownFields([...prefix, k]) : [[...prefix, k].join('.')],
  );
}
