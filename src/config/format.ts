// Canonical YAML for experiment files (`xp fmt`), as `deno fmt` does for code: keys in the order the schema lists
// its properties (the schema is the one list), keys it does not know after the known ones in their own order,
// comments and blank lines between sections kept with their keys, 2-space indent. Flow style (`{a: 1}`, `[1, 2]`)
// stays as written unless a line grows past MAX_FLOW_LINE. Formatting its own output changes nothing.
import { isDeepStrictEqual } from 'node:util';
import YAML, { isMap, isPair, isScalar, isSeq, LineCounter, type Document, type Node, type Pair } from 'yaml';
import { attachComments } from './format-comments.ts';
import { resolveRef, schemaRoot, type SchemaNode } from './validate.ts';

/** The widest line a flow collection may make; a longer one is written in block style, one entry per line. */
export const MAX_FLOW_LINE = 100;

/** As parse.ts allows: experiment files are parsed there first. */
const MAX_ALIAS_COUNT = 100;

const RENDER = { indent: 2, lineWidth: 0, flowCollectionPadding: false } as const;

/** A JSON Schema object as far as key order needs it. */
/**
 * The canonical text of an experiment file. `text` must parse as one YAML document (callers check it first with
 * parseFile, which reports file:line:col). Throws, rather than return a text with other data or comments.
 */
export function formatText(text: string): string {
  const doc = YAML.parseDocument(text, { uniqueKeys: false, customTags: [verbatimTag] });
  if (doc.errors.length) throw new Error(`not valid YAML: ${doc.errors[0].message}`);
  // Not an experiment (parseFile says so with its position): nothing to order.
  if (!isMap(doc.contents)) return text;
  const data = doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT });
  keepAsWritten(doc);
  attachComments(doc, text);
  const root = doc.contents;
  if (!root.flow) {
    const firstBefore = root.items[0];
    const separated = spaced(root.items[1]);
    const header = takeHeader(firstBefore);
    order(root, schemaRoot);
    const first = root.items[0];
    if (header) putHeader(first.key as Node, header.text, header.blankAfter);
    // The first section, moved down, is separated from the others as they are from each other.
    if (first !== firstBefore && separated) (firstBefore.key as Node).spaceBefore = true;
  } else order(root, schemaRoot);
  let formatted: string;
  try {
    formatted = render(doc);
  } catch (error) {
    throw new Error(
      `xp fmt cannot reorder this file without changing its meaning (${(error as Error).message.split('\n')[0]}); it is left as it is`,
    );
  }
  // Safety nets: the same data and the same comments, or the file is left alone.
  const again = YAML.parseDocument(formatted, { uniqueKeys: false });
  if (again.errors.length || !isDeepStrictEqual(again.toJS({ maxAliasCount: MAX_ALIAS_COUNT }), data)) {
    throw new Error('xp fmt cannot reorder this file without changing its meaning; it is left as it is');
  }
  if (commentsOf(formatted).join('\n') !== commentsOf(text).join('\n')) {
    throw new Error('xp fmt cannot keep every comment of this file in place; it is left as it is');
  }
  return formatted;
}

/** A number or boolean as the file spells it (`1e-4`, `0.0000001`, `.5`): formatting changes no value's spelling. */
class Verbatim {
  constructor(readonly text: string) {}
}

const verbatimTag: YAML.ScalarTag = {
  tag: 'tag:xp.fmt,2026:verbatim',
  default: true,
  identify: (value) => value instanceof Verbatim,
  resolve: (text) => text,
  stringify: (item) => ((item as YAML.Scalar).value as Verbatim).text,
};

function keepAsWritten(doc: Document): void {
  YAML.visit(doc, {
    Scalar(_key, node) {
      const source = (node as YAML.Scalar.Parsed).source;
      if (node.type === 'PLAIN' && source && (typeof node.value === 'number' || typeof node.value === 'boolean'))
        node.value = new Verbatim(source);
    },
  });
}

/**
 * The comment at the very top of a file is the file's header: it stays on top, whichever key comes first. Only
 * the part after its last blank line belongs to the first key.
 */
function takeHeader(first: Pair | undefined): { text: string; blankAfter: boolean } | undefined {
  const key = first?.key as Node | undefined;
  const before = key?.commentBefore;
  if (!key || !before) return undefined;
  const lines = before.split('\n');
  const blank = lines.lastIndexOf('');
  if (blank < 0) {
    key.commentBefore = undefined;
    return { text: before, blankAfter: false };
  }
  key.commentBefore = lines.slice(blank + 1).join('\n') || undefined;
  key.spaceBefore = true;
  return { text: lines.slice(0, blank).join('\n'), blankAfter: true };
}

function putHeader(key: Node, header: string, blankAfter: boolean): void {
  const own = key.commentBefore;
  key.commentBefore = `${header}${blankAfter ? '\n' : ''}${own ? `\n${own}` : ''}`;
  key.spaceBefore = false;
}

const spaced = (pair: Pair | undefined) => Boolean((pair?.key as Node | undefined)?.spaceBefore);

/** Sorts every mapping's keys by its schema, recursively; the first entry of a block never starts with a blank line. */
function order(node: unknown, s: SchemaNode | undefined): void {
  if (isMap(node)) {
    const object = variant(s, 'properties');
    const known = Object.keys(object?.properties ?? {});
    const rank = (pair: Pair) => {
      const i = isScalar(pair.key) ? known.indexOf(String(pair.key.value)) : -1;
      return i < 0 ? known.length : i;
    };
    // Array.prototype.sort is stable: unknown keys keep their order, after the known ones.
    node.items.sort((a, b) => rank(a) - rank(b));
    for (const pair of node.items) {
      if (YAML.isNode(pair.value)) (pair.value as Node).spaceBefore = false;
      order(pair.value, childSchema(object, isScalar(pair.key) ? String(pair.key.value) : undefined));
    }
    const first = node.items[0]?.key;
    if (YAML.isNode(first)) first.spaceBefore = false;
  } else if (isSeq(node)) {
    const items = variant(s, 'items')?.items;
    for (const item of node.items) order(item, items);
    if (YAML.isNode(node.items[0])) node.items[0].spaceBefore = false;
  }
}

function childSchema(object: SchemaNode | undefined, key: string | undefined): SchemaNode | undefined {
  if (!object || key === undefined) return undefined;
  if (object.properties && Object.hasOwn(object.properties, key)) return object.properties[key];
  for (const [pattern, sub] of Object.entries(object.patternProperties ?? {}))
    if (new RegExp(pattern, 'u').test(key)) return sub;
  return typeof object.additionalProperties === 'object' ? object.additionalProperties : undefined;
}

/** The schema that describes a node: `s` itself, its `$ref`'s target, or its `oneOf`/`anyOf` variant that has `what`. */
function variant(s: SchemaNode | undefined, what: 'properties' | 'items'): SchemaNode | undefined {
  for (let depth = 0; s && depth < 8; depth++) {
    const variants = s.oneOf ?? s.anyOf;
    if (s.$ref) s = resolveRef(s.$ref);
    else if (variants) s = variants.find((v) => v[what]) ?? variants.find((v) => v.$ref);
    else return s;
  }
  return undefined;
}

/** Renders `doc`, writing in block style each flow collection (within a block) whose line would pass MAX_FLOW_LINE. */
function render(doc: Document): string {
  for (let round = 0; ; round++) {
    const text = doc.toString(RENDER);
    const lineCounter = new LineCounter();
    const again = YAML.parseDocument(text, { lineCounter, uniqueKeys: false });
    // Rendering keeps the tree's shape: the n-th collection of one is the n-th of the other.
    const mine = collections(doc);
    const rendered = collections(again);
    let changed = false;
    rendered.forEach(({ node, inFlow }, i) => {
      if (!node.flow || inFlow || !node.range || mine[i]?.node.flow !== true) return;
      if (lineCounter.linePos(node.range[1]).col - 1 > MAX_FLOW_LINE) {
        mine[i].node.flow = false;
        changed = true;
      }
    });
    if (!changed || round > 64) return text;
  }
}

type Collection = Extract<Node, { items: unknown[] }>;

function collections(doc: Document): { node: Collection; inFlow: boolean }[] {
  const found: { node: Collection; inFlow: boolean }[] = [];
  const walk = (node: unknown, inFlow: boolean) => {
    if (!isMap(node) && !isSeq(node)) return;
    found.push({ node, inFlow });
    for (const item of node.items) {
      if (isPair(item)) {
        walk(item.key, inFlow || Boolean(node.flow));
        walk(item.value, inFlow || Boolean(node.flow));
      } else walk(item, inFlow || Boolean(node.flow));
    }
  };
  walk(doc.contents, false);
  return found;
}

/** Every comment of a YAML text, sorted: formatting may move comments, never add or drop one. */
function commentsOf(text: string): string[] {
  return [...new YAML.Lexer().lex(text)]
    .filter((token) => token.startsWith('#'))
    .map((token) => token.trimEnd())
    .sort();
}
