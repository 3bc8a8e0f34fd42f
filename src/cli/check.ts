// `xp check <files...>`: validate experiment files, one line per problem, exit 2 when any.
import { loadExperiment } from '../config/load.ts';
import { ConfigProblems, formatProblem } from '../config/problems.ts';

export async function check(files: string[], opts: { set?: string[]; sweep?: string[]; quiet?: boolean }): Promise<number> {
  let failed = 0;
  for (const file of files) {
    try {
      const loaded = await loadExperiment(file, { set: opts.set, sweep: opts.sweep });
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
