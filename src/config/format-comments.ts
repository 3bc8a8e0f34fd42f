// Gives each comment of an experiment file to the key it was written for, before `xp fmt` moves keys around.
// The `yaml` package attaches every comment line after a nested block to that block, even the ones written at
// the indentation of the next key, and puts a comment on a key's own line (`data: # ...`) before the value's first
// item. The source text says where each line was written: by its indentation and its line.
import { isMap, isNode, isPair, isSeq, visit, type Document, type Node, type YAMLMap, type YAMLSeq } from 'yaml';

/** One source line between YAML nodes: a comment (`text` without its `#`) or a blank line (`blank`). */
interface Line {
  indent: number;
  text: string;
  blank?: boolean;
}

type Block = YAMLMap | YAMLSeq;

export function attachComments(doc: Document, text: string): void {
  const root = doc.contents;
  if (!isBlock(root)) return;
  settle(root, 0, text);
  // Comments after the last section are the file's end: written after a blank line, wherever the parser put them.
  if (root.comment) {
    doc.comment = doc.comment ? `${root.comment}\n${doc.comment}` : root.comment;
    root.comment = undefined;
  }
  visit(doc, {
    Node(_key, node) {
      tidy(node);
    },
    Pair(_key, pair) {
      if (isNode(pair.key)) tidy(pair.key);
    },
  });
}

/** One blank line at most in a row; a blank line before a comment is a blank line before its node. */
function tidy(node: Node): void {
  if (node.commentBefore) {
    const lines = node.commentBefore.split('\n').filter((l, i, all) => !(l === '' && all[i - 1] === ''));
    if (lines[0] === '' && lines.length > 1) {
      node.spaceBefore = true;
      lines.shift();
    }
    node.commentBefore = lines.join('\n');
  }
  if (node.comment)
    node.comment =
      node.comment
        .split('\n')
        .filter((l, i, all) => !(l === '' && all[i - 1] === ''))
        .join('\n')
        .replace(/^\n+|\n+$/g, '') || undefined;
}

/**
 * Places the comments inside block `node` and returns the comment lines after it that are indented less than
 * `threshold` (at most its parent's column): they belong to a later key of an enclosing block.
 */
function settle(node: Block, threshold: number, text: string): Line[] {
  const column = columnOf(text, node.range?.[0] ?? 0);
  let pending: Line[] = [];
  node.items.forEach((item, i) => {
    const next = node.items[i + 1];
    const value = isPair(item) ? (item.value as Node | null) : (item as Node);
    if (isPair(item) && isBlock(value) && value.commentBefore) keyLineComment(item.key as Node, value, text);
    if (!isBlock(value)) return;
    const out = settle(value, column + 1, text);
    if (!next) {
      pending = out;
      return;
    }
    // Lines that leave the child come before this block's next item, even those indented less: the item is next.
    giveBefore(isPair(next) ? (next.key as Node) : (next as Node), out);
  });
  const own = node.comment ? trailingLines(text, node) : [];
  const lines = [...pending, ...own];
  const cut = firstBelow(lines, threshold);
  const kept = lines.slice(0, cut);
  const out = lines.slice(cut);
  // A blank line after the last comment separates this block from what follows: it goes out with the rest.
  let end = kept.length;
  while (end > 0 && kept[end - 1].blank) end--;
  out.unshift(...kept.splice(end));
  node.comment = kept.length ? trimBlank(kept).map(asComment).join('\n') : undefined;
  return out;
}

/** `key: # note` stays on the key's line; comment lines under the key go with the value's first item. */
function keyLineComment(key: Node, value: Block, text: string): void {
  const from = key.range?.[1];
  const to = value.range?.[0];
  if (from === undefined || to === undefined) return;
  const segments = text.slice(from, to).split('\n');
  const onKeyLine = segments[0].indexOf('#');
  const first = value.items[0];
  const lines = segments.length > 1 ? commentLines(segments.slice(1, -1)) : [];
  if (onKeyLine < 0 && !lines.length) return; // the comment came from somewhere else: leave it as the parser put it
  value.commentBefore = undefined;
  if (onKeyLine >= 0) key.comment = segments[0].slice(onKeyLine + 1).trimEnd();
  if (first && lines.length) giveBefore(isPair(first) ? (first.key as Node) : (first as Node), lines);
}

/** The comment lines the parser attached after `node`'s last item, with their indentation, from the source. */
function trailingLines(text: string, node: Block): Line[] {
  const [, valueEnd, nodeEnd] = node.range ?? [];
  if (valueEnd === undefined || nodeEnd === undefined) return [];
  const segments = text.slice(valueEnd, nodeEnd).split('\n');
  // The last segment is the start of the next key's line, unless the file ends there.
  if (nodeEnd < text.length || !segments.at(-1)?.trim()) segments.pop();
  const lines: Line[] = [];
  if (valueEnd > 0 && text[valueEnd - 1] !== '\n') {
    // The rest of a line that holds content: a comment there is that content's, and stays.
    const rest = segments.shift() ?? '';
    const hash = rest.indexOf('#');
    if (hash >= 0) lines.push({ indent: Infinity, text: rest.slice(hash + 1).trimEnd() });
  }
  return [...lines, ...commentLines(segments)];
}

function commentLines(segments: string[]): Line[] {
  const lines: Line[] = [];
  for (const segment of segments) {
    const trimmed = segment.trimStart();
    if (!trimmed) lines.push({ indent: 0, text: '', blank: true });
    else if (trimmed.startsWith('#'))
      lines.push({ indent: segment.length - trimmed.length, text: trimmed.slice(1).trimEnd() });
  }
  return lines;
}

/** Puts comment lines before `target`: a blank line ahead of them becomes a blank line before the target. */
function giveBefore(target: Node, lines: Line[]): void {
  if (lines[0]?.blank) target.spaceBefore = true;
  if (!lines.some((l) => !l.blank)) return;
  // A blank line between the comment and the target stays (the parser keeps it the same way).
  const last = lines.at(-1);
  const comment = [...trimBlank(lines), ...(last?.blank ? [last] : [])].map(asComment).join('\n');
  target.commentBefore = target.commentBefore ? `${comment}\n${target.commentBefore}` : comment;
}

/** Index of the first comment line indented less than `threshold` (blank lines go with the comment after them). */
function firstBelow(lines: Line[], threshold: number): number {
  const i = lines.findIndex((l) => !l.blank && l.indent < threshold);
  if (i < 0) return lines.length;
  let start = i;
  while (start > 0 && lines[start - 1].blank) start--;
  return start;
}

function trimBlank(lines: Line[]): Line[] {
  let start = 0;
  let end = lines.length;
  while (start < end && lines[start].blank) start++;
  while (end > start && lines[end - 1].blank) end--;
  // Runs of blank lines are one blank line.
  return lines.slice(start, end).filter((l, i, all) => !(l.blank && all[i - 1]?.blank));
}

const asComment = (l: Line) => (l.blank ? '' : l.text);

const isBlock = (node: unknown): node is Block => (isMap(node) || isSeq(node)) && !node.flow;

function columnOf(text: string, offset: number): number {
  return offset - (text.lastIndexOf('\n', offset - 1) + 1);
}
