// A config problem is one line for the user: `file:line:col: message`. Many can be reported at once.
import { ConfigError } from '../errors.ts';
import { closest } from '../util/edit-distance.ts';

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

export function didYouMean(given: string, candidates: readonly string[]): string {
  const best = closest(given, candidates);
  return best === undefined ? '' : `; did you mean ${best}?`;
}

export function show(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (value === null) return 'null';
  if (Array.isArray(value)) return `a list ${JSON.stringify(value).slice(0, 60)}`;
  if (typeof value === 'object') return 'a mapping';
  return String(value);
}
