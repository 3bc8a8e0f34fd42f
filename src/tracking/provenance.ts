// Where a run comes from, for its MLflow tags: the user, xp's version and the git commit of the experiment file.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { repoRoot } from '../paths.ts';

export function userName(env: NodeJS.ProcessEnv): string {
  try {
    return os.userInfo().username;
  } catch {
    return env.USER ?? env.USERNAME ?? 'unknown';
  }
}

let version: string | undefined;
export function xpVersion(): string {
  try {
    version ??= (JSON.parse(fs.readFileSync(path.join(repoRoot, 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    version = 'unknown';
  }
  return version;
}

/** HEAD commit of the git repository holding `start`, read from .git without running git. */
export function gitCommit(start: string): string | undefined {
  try {
    for (let dir = path.resolve(start); ; dir = path.dirname(dir)) {
      const dotGit = path.join(dir, '.git');
      if (fs.existsSync(dotGit)) return headCommit(dotGit);
      if (path.dirname(dir) === dir) return undefined;
    }
  } catch {
    return undefined;
  }
}

function headCommit(dotGit: string): string | undefined {
  const read = (file: string) => fs.readFileSync(file, 'utf8').trim();
  let gitDir = dotGit;
  if (fs.statSync(dotGit).isFile()) gitDir = path.resolve(path.dirname(dotGit), read(dotGit).replace(/^gitdir:\s*/, '')); // worktree
  const commonDir = fs.existsSync(path.join(gitDir, 'commondir')) ? path.resolve(gitDir, read(path.join(gitDir, 'commondir'))) : gitDir;
  const head = read(path.join(gitDir, 'HEAD'));
  if (/^[0-9a-f]{40}$/.test(head)) return head;
  const ref = /^ref:\s*(.+)$/.exec(head)?.[1];
  if (!ref) return undefined;
  for (const dir of [gitDir, commonDir]) {
    if (fs.existsSync(path.join(dir, ref))) return read(path.join(dir, ref));
  }
  const packed = fs.existsSync(path.join(commonDir, 'packed-refs')) ? read(path.join(commonDir, 'packed-refs')) : '';
  return packed.split('\n').map((line) => line.split(' ')).find(([, name]) => name === ref)?.[0];
}
