// Reads an experiment file as YAML, defensively: a size limit, duplicate and reserved keys found in one pass,
// alias expansion bounded, and each parser error reported once per position. Keeps node positions so that
// every later problem can say `file:line:col`. A password written in a URL value (`tracking.uri`, `data.url`,
// `extends`) leaves here masked: xp keeps it for the requests to that server only (util/credentials.ts).
import fs from 'node:fs';
import YAML, {
  isAlias,
  isCollection,
  isMap,
  isPair,
  isScalar,
  isSeq,
  LineCounter,
  type Document,
  type Node,
  type Pair,
  type YAMLMap,
} from 'yaml';
import { keepCredentials } from '../util/credentials.ts';
import { ConfigProblems, type Problem } from './problems.ts';

/** Experiment files are a few kilobytes; anything this large is a mistake or an attack. */
export const MAX_FILE_BYTES = 1024 * 1024;
/** How far a file may nest mappings and lists; experiments need four or five levels. */
export const MAX_DEPTH = 64;
/** Alias uses allowed when building values; the `yaml` package's default, enough for any real experiment. */
const MAX_ALIAS_COUNT = 100;

/** Keys that would reach JavaScript's object machinery instead of a field. */
export const RESERVED_KEYS: readonly string[] = ['__proto__', 'constructor', 'prototype'];

export interface Source {
  /** The file's mapping as plain data. */
  value: Record<string, unknown>;
  position(path: (string | number)[], atKey?: boolean): { line?: number; col?: number };
}

export function parseFile(file: string): Source {
  return parseText(readText(file), file);
}

/** Parses the text of an experiment file; `file` (a path or a URL) is what problems name. */
export function parseText(text: string, file: string): Source {
  if (Buffer.byteLength(text) > MAX_FILE_BYTES) {
    throw new ConfigProblems([
      {
        file,
        message: `the file is ${Buffer.byteLength(text)} bytes, above the ${MAX_FILE_BYTES} bytes (1 MiB) allowed for an experiment file; is it the right file?`,
      },
    ]);
  }
  const lineCounter = new LineCounter();
  const doc = YAML.parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: false });
  const at = (offset: number, message: string): Problem => ({ file, ...lineCounter.linePos(offset), message });
  if (doc.errors.length) {
    // A stack overflow inside the parser surfaces at many positions: it is one problem.
    const overflow = doc.errors.find((e) => /call stack/i.test(e.message));
    const errors = overflow ? [overflow] : doc.errors;
    throw new ConfigProblems(
      onePerPosition(errors.map((e) => at(e.pos[0], `YAML syntax error: ${syntaxMessage(e.message)}`))),
    );
  }
  const structural = walk(doc).map((p) => at(p.offset, p.message));
  if (structural.length) throw new ConfigProblems(structural);
  if (!isMap(doc.contents)) {
    const kind = doc.contents === null ? 'an empty document' : isSeq(doc.contents) ? 'a list' : 'a single value';
    throw new ConfigProblems([
      {
        file,
        line: 1,
        col: 1,
        message: `an experiment must be a mapping of fields (name, data, backbone, ...), got ${kind}`,
      },
    ]);
  }
  let value: Record<string, unknown>;
  try {
    value = doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT }) as Record<string, unknown>;
  } catch (error) {
    const alias = firstAlias(doc);
    throw new ConfigProblems([
      at(
        alias ?? 0,
        `YAML aliases expand to too many values (${(error as Error).message.split('\n')[0]}); write the values out instead of nesting aliases`,
      ),
    ]);
  }
  return { value: withoutPasswords(value), position: positions(doc, lineCounter) };
}

/** Parses one command-line value (`--set key=VALUE`) with the same limits; throws a plain Error with the reason. */
export function parseValue(text: string): unknown {
  const doc = YAML.parseDocument(text, { prettyErrors: false, uniqueKeys: false });
  if (doc.errors.length) throw new Error(syntaxMessage(doc.errors[0].message));
  const problem = walk(doc)[0];
  if (problem) throw new Error(problem.message);
  try {
    return withoutPasswords(doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT }));
  } catch (error) {
    throw new Error(`YAML aliases: ${(error as Error).message.split('\n')[0]}`);
  }
}

/** The parsed data with every URL password kept for this process and masked in the data. */
function withoutPasswords<T>(value: T): T {
  if (typeof value === 'string') return keepCredentials(value) as T;
  if (Array.isArray(value)) return value.map(withoutPasswords) as T;
  if (typeof value === 'object' && value !== null) {
    for (const [key, child] of Object.entries(value)) (value as Record<string, unknown>)[key] = withoutPasswords(child);
  }
  return value;
}

export function readText(file: string): string {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(file);
  } catch (error) {
    const { code, message } = error as NodeJS.ErrnoException;
    throw new ConfigProblems([
      { file, message: code === 'ENOENT' ? 'no such file' : `cannot read (${code ?? message})` },
    ]);
  }
  if (!stat.isFile())
    throw new ConfigProblems([{ file, message: 'not a regular file; give the path of an experiment .yaml file' }]);
  if (stat.size > MAX_FILE_BYTES) {
    throw new ConfigProblems([
      {
        file,
        message: `the file is ${stat.size} bytes, above the ${MAX_FILE_BYTES} bytes (1 MiB) allowed for an experiment file; is it the right file?`,
      },
    ]);
  }
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (error) {
    const { code, message } = error as NodeJS.ErrnoException;
    throw new ConfigProblems([{ file, message: `cannot read (${code ?? message})` }]);
  }
}

// An unclosed `{a:{a:...` makes the parser report the same error once per open level.
function onePerPosition(problems: Problem[]): Problem[] {
  const seen = new Set<string>();
  return problems.filter((p) => {
    const key = `${p.line}:${p.col}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

function syntaxMessage(message: string): string {
  const first = message.split('\n')[0];
  if (/multiple documents/.test(first))
    return 'a --- document marker inside the text; an experiment is one YAML document';
  return /call stack/i.test(first)
    ? `nested too deeply to parse (more than ${MAX_DEPTH} levels are never needed)`
    : first;
}

interface Found {
  offset: number;
  message: string;
}

// One pass over the node tree, without recursion (nesting depth is the input's choice): duplicate keys in
// a mapping (a Set per mapping, so linear in the file), reserved keys, and the nesting depth.
function walk(doc: Document): Found[] {
  const found: Found[] = [];
  const stack: { node: unknown; depth: number }[] = [{ node: doc.contents, depth: 0 }];
  let tooDeep = false;
  for (let next = stack.pop(); next !== undefined; next = stack.pop()) {
    const { node, depth } = next;
    if (!isCollection(node)) continue;
    const offset = (node as Node).range?.[0] ?? 0;
    if (depth > MAX_DEPTH) {
      if (!tooDeep)
        found.push({ offset, message: `nested more than ${MAX_DEPTH} levels deep; an experiment needs a few` });
      tooDeep = true;
      continue;
    }
    if (isMap(node)) {
      const keys = new Map<string, number>();
      for (const pair of node.items) {
        if (!isPair(pair)) continue;
        const keyNode = pair.key as Node | null;
        const keyOffset = keyNode?.range?.[0] ?? offset;
        const key = isScalar(keyNode)
          ? String(keyNode.value)
          : isAlias(keyNode)
            ? `*${keyNode.source}`
            : String(keyNode);
        if (RESERVED_KEYS.includes(key))
          found.push({
            offset: keyOffset,
            message: `${key} cannot be a key (reserved by JavaScript); rename or remove it`,
          });
        const first = keys.get(key);
        if (first !== undefined)
          found.push({
            offset: keyOffset,
            message: `YAML syntax error: Map keys must be unique (${key} appears twice)`,
          });
        else keys.set(key, keyOffset);
        stack.push({ node: pair.key, depth: depth + 1 }, { node: pair.value, depth: depth + 1 });
      }
    } else {
      for (const item of node.items) stack.push({ node: item, depth: depth + 1 });
    }
  }
  return found.sort((a, b) => a.offset - b.offset);
}

function firstAlias(doc: Document): number | undefined {
  let offset: number | undefined;
  YAML.visit(doc, {
    Alias(_key, node) {
      offset = node.range?.[0];
      return YAML.visit.BREAK;
    },
  });
  return offset;
}

function positions(doc: Document, lineCounter: LineCounter): Source['position'] {
  // Each mapping's keys indexed once, so that many problems cost one lookup each.
  const index = new WeakMap<object, Map<unknown, Pair>>();
  const pairOf = (map: YAMLMap, key: string | number) => {
    let keys = index.get(map);
    if (!keys) {
      keys = new Map();
      for (const pair of map.items) {
        const key = isScalar(pair.key) ? pair.key.value : undefined;
        if (!keys.has(key)) keys.set(key, pair as Pair);
      }
      index.set(map, keys);
    }
    return keys.get(key);
  };
  return (fieldPath, atKey = false) => {
    let node: Node | null | undefined = doc.contents;
    let offset = node?.range?.[0] ?? 0;
    for (let i = 0; i < fieldPath.length && node; i++) {
      const k = fieldPath[i];
      if (isMap(node)) {
        const pair = pairOf(node, k);
        if (!pair) break;
        const last = i === fieldPath.length - 1;
        node = pair.value as Node | null;
        offset = (last && atKey) || !node?.range ? ((pair.key as Node).range?.[0] ?? offset) : node.range[0];
      } else if (isSeq(node)) {
        node = node.items[Number(k)] as Node | undefined;
        if (node?.range) offset = node.range[0];
      } else break;
    }
    return lineCounter.linePos(offset);
  };
}
