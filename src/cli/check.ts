// `xp check <files...>`: the pre-flight checks of `xp run` on each file, one line per problem, exit 2 when any.
// Remote bytes fetched on the way are checked against (or pinned in) each file's xp.lock, as `xp run` does.
import { ConfigProblems, formatProblem } from '../config/problems.ts';
import { isSearch } from '../config/sweep.ts';
import { useLock, type LockOptions } from '../lock/lock.ts';
import { preflight, type PreflightOptions } from './preflight.ts';

export async function check(
  files: string[],
  opts: PreflightOptions & { quiet?: boolean; lock: LockOptions },
): Promise<number> {
  let failed = 0;
  for (const file of files) {
    // Each file's own lock: remote files it is fetched from or extends are pinned there.
    await useLock(file, opts.lock);
    try {
      const loaded = await preflight(file, opts);
      // A search's loaded trials are its probes (each parameter at its bounds): its size is sweep.trials.
      const trials = !loaded.sweep
        ? ''
        : isSearch(loaded.sweep)
          ? `, ${loaded.sweep.method} search of ${loaded.sweep.trials ?? 10} trials`
          : `, sweep of ${loaded.trials.length} trials${loaded.sweep.early_terminate ? ` stopped early by ${loaded.sweep.early_terminate.type}` : ''}`;
      if (!opts.quiet)
        console.log(`${file}: ok (${loaded.base.backbone.name} cut at ${loaded.base.backbone.cut_layer}${trials})`);
    } catch (error) {
      if (!(error instanceof ConfigProblems)) throw error;
      failed++;
      for (const p of error.problems) console.error(formatProblem(p));
    }
  }
  return failed ? 2 : 0;
}
