// Where a run comes from, for its MLflow tags: the user, xp's version, the experiment file (a path or a URL) and the
// files it extends with their sha256, and the git commit of a local experiment file.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { RunStartInfo } from '../events.ts';
import { repoRoot } from '../paths.ts';
import { isUrl } from '../remote/url.ts';

/** MLflow's source tags of a run of `sourceFile` (a path or a URL): its name, and the git commit of a local file. */
export function sourceTags(sourceFile: string | undefined): Record<string, string> {
  const local = sourceFile !== undefined && !isUrl(sourceFile);
  const commit = gitCommit(local ? path.dirname(path.resolve(sourceFile)) : process.cwd());
  return {
    'mlflow.source.name': sourceFile === undefined ? 'xp' : local ? path.resolve(sourceFile) : sourceFile,
    'mlflow.source.type': 'LOCAL',
    ...(commit && (local || sourceFile === undefined) ? { 'mlflow.source.git.commit': commit } : {}),
  };
}

/**
 * The chain of files the experiment was composed of: `xp.source` (path or URL) and `xp.source_sha256` of the
 * experiment file, `xp.extends` the JSON list of the files it extends ({spec, sha256}, in the order merged).
 */
export function chainTags(sources: RunStartInfo['sources']): Record<string, string> {
  if (!sources?.length) return {};
  const [own, ...bases] = sources;
  return {
    'xp.source': own.spec,
    'xp.source_sha256': own.sha256,
    ...(bases.length ? { 'xp.extends': JSON.stringify(bases.map((b) => ({ spec: b.spec, sha256: b.sha256 }))) } : {}),
  };
}

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
    version ??= (JSON.parse(fs.readFileSync(path.join(repoRoot, 'package.json'), 'utf8')) as { version: string })
      .version;
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
  if (fs.statSync(dotGit).isFile())
    gitDir = path.resolve(path.dirname(dotGit), read(dotGit).replace(/^gitdir:\s*/, '')); // worktree
  const commonDir = fs.existsSync(path.join(gitDir, 'commondir'))
    ? path.resolve(gitDir, read(path.join(gitDir, 'commondir')))
    : gitDir;
  const head = read(path.join(gitDir, 'HEAD'));
  if (/^[0-9a-f]{40}$/.test(head)) return head;
  const ref = /^ref:\s*(.+)$/.exec(head)?.[1];
  if (!ref) return undefined;
  for (const dir of [gitDir, commonDir]) {
    if (fs.existsSync(path.join(dir, ref))) return read(path.join(dir, ref));
  }
  const packed = fs.existsSync(path.join(commonDir, 'packed-refs')) ? read(path.join(commonDir, 'packed-refs')) : '';
  return packed
    .split('\n')
    .map((line) => line.split(' '))
    .find(([, name]) => name === ref)?.[0];
}
