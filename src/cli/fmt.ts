// `xp fmt [files...] [--check]`: experiment files in canonical YAML, as `deno fmt` formats code. Without files,
// every experiment under the current folder. Exit 1 when a file has YAML errors or (--check) is not formatted.
import fs from 'node:fs';
import { XpError } from '../errors.ts';
import { findExperimentFiles, formatFile } from '../config/format-files.ts';
import { ConfigProblems, formatProblem } from '../config/problems.ts';

export async function fmtCommand(args: string[], opts: { check: boolean }): Promise<number> {
  const files = (args.length ? args : ['.']).flatMap((arg) => (isFolder(arg) ? findExperimentFiles(arg) : [arg]));
  let changed = 0;
  let failed = 0;
  for (const file of files) {
    try {
      if (!formatFile(file, opts)) continue;
      changed++;
      console.log(file);
    } catch (error) {
      failed++;
      if (error instanceof ConfigProblems) for (const p of error.problems) console.error(formatProblem(p));
      else if (error instanceof XpError) console.error(error.message);
      else throw error;
    }
  }
  const n = `${files.length} file${files.length === 1 ? '' : 's'}`;
  if (opts.check && changed) console.error(`${changed} of ${n} not formatted; \`xp fmt\` formats them`);
  else if (opts.check) console.error(`Checked ${n}`);
  else console.error(`Formatted ${changed} of ${n}`);
  if (failed) console.error(`${failed} of ${n} left unformatted: fix the problems above`);
  return failed || (opts.check && changed) ? 1 : 0;
}

const isFolder = (arg: string) => fs.statSync(arg, { throwIfNoEntry: false })?.isDirectory() ?? false;
