// The sandbox's gate, run before anything is read, downloaded or sent: each access a grant does not cover is asked
// for once in a terminal (Deno's prompt: y allows it, A allows everything asked for, N refuses), and refused
// otherwise, naming the flag that allows it. A local file is trusted as the user's own script is: nothing to ask.
import { XpError } from '../errors.ts';
import type { Access } from './access.ts';
import { flagOf, granted, type Grants } from './grants.ts';

/** Answers one question (y, n or a); undefined without a terminal to ask in. */
export type Ask = (question: string) => Promise<string | undefined>;

export interface Decision extends Access {
  /** How it is allowed: by default (the reason), a flag, or the user's answer; undefined when refused. */
  by?: string;
}

/** Decides every access of a file from `origin`; throws (exit code 2) when one is refused. */
export async function checkAccesses(
  accesses: readonly Access[],
  grants: Grants,
  origin: string,
  ask?: Ask,
): Promise<Decision[]> {
  const decisions: Decision[] = [];
  let allowAll = false;
  for (const a of accesses) {
    if (a.allowed) decisions.push({ ...a, by: a.allowed });
    else if (granted(grants, a.kind, a.target)) decisions.push({ ...a, by: flagOf(a.kind) });
    else if (allowAll) decisions.push({ ...a, by: 'answered A' });
    else {
      const answer = (await ask?.(`${origin} wants to ${verb(a)} (${a.field}). Allow? [y/N/A] `))?.trim();
      if (answer === 'A') allowAll = true;
      decisions.push({
        ...a,
        by: answer === 'y' || answer === 'Y' ? 'answered y' : answer === 'A' ? 'answered A' : undefined,
      });
    }
  }
  const refused = decisions.filter((d) => !d.by);
  if (refused.length) throw refusal(origin, refused);
  return decisions;
}

/** The refusal of the accesses nothing allowed (exit code 2), naming each and the flags that allow them. */
function refusal(origin: string, refused: readonly Decision[], listing?: readonly Decision[]): XpError {
  const flags = [...new Set(refused.map(flagFor))];
  const needs = `${origin} ${refused.length === 1 ? 'needs a permission' : 'needs permissions'} it was not granted`;
  return new XpError(
    listing
      ? `${needs}; what it would read, write and contact (nothing was):\n${describeAccesses(listing).join('\n')}`
      : `${needs}: ${refused.map((d) => `${verb(d)} (${d.field})`).join('; ')}`,
    {
      exitCode: 2,
      hint: `files from the web run in a sandbox, as Deno runs scripts; allow ${refused.length === 1 ? 'it' : 'them'} with ${flags.join(' ')} (or -A for everything), or run a copy you trust from a local path`,
    },
  );
}

/**
 * --dry-run's decisions: every access with what allows it, asking nothing; refused ones make an error (exit code 2)
 * that lists them all, since nothing past the gate may be read for a file that has not been allowed.
 */
export function reportAccesses(accesses: readonly Access[], grants: Grants, origin: string): Decision[] {
  const decisions = accesses.map((a) => ({
    ...a,
    by: a.allowed ?? (granted(grants, a.kind, a.target) ? flagOf(a.kind) : undefined),
  }));
  const refused = decisions.filter((d) => !d.by);
  if (refused.length) throw refusal(origin, refused, decisions);
  return decisions;
}

const verb = (a: Access): string => (a.kind === 'net' ? `contact ${a.target}` : `${a.kind} ${a.target}`);
const flagFor = (a: Access): string => `${flagOf(a.kind)}=${a.target}`;

/** One line per access for --dry-run: what it is, why, and what allows it. */
export function describeAccesses(decisions: readonly Decision[]): string[] {
  return decisions.map(
    (d) => `  ${d.kind.padEnd(5)} ${d.target}  (${d.field}; ${d.by ? `allowed: ${d.by}` : `needs ${flagFor(d)}`})`,
  );
}
