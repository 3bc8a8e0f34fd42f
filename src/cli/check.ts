// `xp check <files...>`: the pre-flight checks of `xp run` on each file, one line per problem, exit 2 when any.
import { ConfigProblems, formatProblem } from '../config/problems.ts';
import { preflight, type PreflightOptions } from './preflight.ts';

export async function check(files: string[], opts: PreflightOptions & { quiet?: boolean }): Promise<number> {
  let failed = 0;
  for (const file of files) {
    try {
      const loaded = await preflight(file, opts);
      const trials = loaded.sweep ? `, sweep of ${loaded.trials.length} trials` : '';
      if (!opts.quiet) console.log(`${file}: ok (${loaded.base.backbone.name} cut at ${loaded.base.backbone.cut_layer}${trials})`);
    } catch (error) {
      if (!(error instanceof ConfigProblems)) throw error;
      failed++;
      for (const p of error.problems) console.error(formatProblem(p));
    }
  }
  return failed ? 2 : 0;
}
