// Which files `xp fmt` formats, and formatting one file in place: its YAML checked first as `xp check` checks it,
// then the canonical text written whole.
import fs from 'node:fs';
import path from 'node:path';
import { XpError } from '../errors.ts';
import { writeFileAtomic } from '../util/write-atomic.ts';
import { formatText } from './format.ts';
import { MAX_FILE_BYTES, parseFile } from './parse.ts';

/** Folders never searched for experiment files: dependencies and run outputs; hidden ones (.git, .venv) too. */
export const SKIPPED_FOLDERS: readonly string[] = ['node_modules', 'runs'];

// A top-level `backbone:` key: every experiment has one, other YAML files (CI, compose files) do not.
const EXPERIMENT = /^["']?backbone["']?[ \t]*:/m;

/** The `.yaml`/`.yml` files under `dir` that look like experiments, sorted; links are not followed. */
export function findExperimentFiles(dir: string): string[] {
  const found: string[] = [];
  const pending = [dir];
  for (let folder = pending.pop(); folder !== undefined; folder = pending.pop()) {
    for (const entry of fs.readdirSync(folder, { withFileTypes: true })) {
      const file = path.join(folder, entry.name);
      if (entry.isDirectory() && !SKIPPED_FOLDERS.includes(entry.name) && !entry.name.startsWith('.'))
        pending.push(file);
      else if (entry.isFile() && /\.ya?ml$/.test(entry.name) && looksLikeExperiment(file)) found.push(file);
    }
  }
  return found.sort();
}

function looksLikeExperiment(file: string): boolean {
  try {
    return fs.statSync(file).size <= MAX_FILE_BYTES && EXPERIMENT.test(fs.readFileSync(file, 'utf8'));
  } catch {
    return false; // unreadable: not ours to format
  }
}

/**
 * Formats one experiment file; with `check`, changes nothing. Returns whether the file is (or was) not canonical.
 * Throws ConfigProblems (file:line:col) for YAML errors and XpError when the file cannot be formatted safely.
 */
export function formatFile(file: string, options: { check: boolean }): boolean {
  parseFile(file);
  const text = fs.readFileSync(file, 'utf8');
  let formatted: string;
  try {
    formatted = formatText(text);
  } catch (error) {
    throw new XpError(`${file}: ${(error as Error).message}`, { cause: error });
  }
  if (formatted === text) return false;
  if (options.check) return true;
  try {
    writeFileAtomic(file, formatted);
  } catch (error) {
    throw new XpError(
      `${file}: cannot write the formatted file (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`,
      { cause: error },
    );
  }
  return true;
}
