// The permission check of `xp run` and `xp check`, as Deno runs a script: a local experiment is the user's own and
// runs with every permission; one that came from the web, or extends a file that did, gets only what the sandbox
// allows (src/permissions) and what the flags grant, and is asked about the rest in a terminal.
import readline from 'node:readline/promises';
import type { ExperimentSource, ResolvedTrial } from '../config/load.ts';
import { cacheDir, dataDir, runsRoot } from '../paths.ts';
import { accessesOf } from '../permissions/access.ts';
import { checkAccesses, reportAccesses, type Ask, type Decision } from '../permissions/check.ts';
import type { Grants } from '../permissions/grants.ts';

export interface SandboxOptions {
  grants: Grants;
  /** Where data sets given by url are unpacked (--data-dir), when not the default. */
  dataDir?: string;
  /** Downloads are pinned in xp.lock (not with --no-lock). */
  locked: boolean;
  /** Receives every decision (for --dry-run's listing). */
  decided?: (decisions: Decision[], trusted: boolean) => void;
  /** --dry-run: ask nothing; list every access with its verdict (refused ones: an error listing them all). */
  report?: boolean;
}

/** Which file asks: the experiment when it came from the web, else the first remote file it extends. */
export function untrustedOrigin(sources: readonly ExperimentSource[]): string | undefined {
  const remote = sources.find((s) => s.remote);
  if (!remote) return undefined;
  return remote === sources[0] ? remote.spec : `${sources[0].spec} (extending ${remote.spec})`;
}

export function sandboxCheck(opts: SandboxOptions) {
  return async (sources: readonly ExperimentSource[], trials: readonly ResolvedTrial[]): Promise<void> => {
    const accesses = accessesOf(
      trials.map((t) => t.experiment),
      {
        cacheDir: cacheDir(),
        dataDir: opts.dataDir ?? dataDir(),
        runsDir: runsRoot(),
        locked: opts.locked,
      },
    );
    const origin = untrustedOrigin(sources);
    if (!origin)
      return opts.decided?.(
        accesses.map((a) => ({ ...a, by: a.allowed ?? 'a local file' })),
        true,
      );
    const decisions = opts.report
      ? reportAccesses(accesses, opts.grants, origin)
      : await checkAccesses(accesses, opts.grants, origin, process.stdin.isTTY ? terminalAsk : undefined);
    opts.decided?.(decisions, false);
  };
}

// One question at a time on the terminal; the prompt goes to stderr, as Deno's does.
const terminalAsk: Ask = async (question) => {
  const rl = readline.createInterface({ input: process.stdin, output: process.stderr });
  try {
    return await rl.question(question);
  } finally {
    rl.close();
  }
};
