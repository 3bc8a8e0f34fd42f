// A config problem is one line for the user: `file:line:col: message`. Many can be reported at once.
import { ConfigError } from '../errors.ts';

export interface Problem {
  file: string;
  line?: number;
  col?: number;
  /** The files that extend `file`, nearest first, when the value was inherited: `(extended by exp.yaml)`. */
  via?: string[];
  message: string;
}

export function formatProblem(p: Problem): string {
  return `${formatPlace(p)}: ${p.message}`;
}

/** `file:line:col`, with the files that extend it: `base.yaml:7:3 (extended by exp.yaml)`. */
export function formatPlace(p: Omit<Problem, 'message'>): string {
  const where = p.line ? `${p.file}:${p.line}:${p.col ?? 1}` : p.file;
  return p.via?.length ? `${where} (${p.via.map((f) => `extended by ${f}`).join(', ')})` : where;
}

/** More problems than this in one file are counted, not listed: the first ones say what is wrong. */
export const MAX_PROBLEMS = 50;

/** Thrown when an experiment file has problems; `problems` holds each one (at most MAX_PROBLEMS and a count), `message` all of them. */
export class ConfigProblems extends ConfigError {
  problems: Problem[];
  constructor(problems: Problem[]) {
    const shown =
      problems.length > MAX_PROBLEMS
        ? [
            ...problems.slice(0, MAX_PROBLEMS),
            { file: problems[MAX_PROBLEMS].file, message: `... and ${problems.length - MAX_PROBLEMS} more problems` },
          ]
        : problems;
    super(shown.map(formatProblem).join('\n'), {
      hint: 'fix the fields above; `xp check <file>` re-checks without training',
    });
    this.name = 'ConfigProblems';
    this.problems = shown;
  }
}

/** Levenshtein distance, for "did you mean" suggestions. */
export function distance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0];
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = row[j];
      row[j] = Math.min(row[j] + 1, row[j - 1] + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return row[b.length];
}

export function didYouMean(given: string, candidates: readonly string[]): string {
  const best = closest(given, candidates);
  return best === undefined ? '' : `; did you mean ${best}?`;
}

/** The candidate nearest to `given` by edit distance (case ignored), if near enough to be a typo of it. */
export function closest(given: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const c of candidates) {
    const d = distance(given.toLowerCase(), c.toLowerCase());
    if (d < bestDistance) [best, bestDistance] = [c, d];
  }
  return best !== undefined && bestDistance <= Math.max(2, Math.floor(best.length / 3)) ? best : undefined;
}

export function show(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (value === null) return 'null';
  if (Array.isArray(value)) return `a list ${JSON.stringify(value).slice(0, 60)}`;
  if (typeof value === 'object') return 'a mapping';
  return String(value);
}
