// Entry of `xp bench` (and `npm run bench`): the CLI parses the flags and passes them here as JSON, so that the
// benchmark runs in a process of its own and src/ never imports bench/.
import { XpError } from '../src/errors.ts';
import { benchCommand, type BenchOptions } from './run.ts';

function options(text = '{"quick":false,"keras":true,"sweep":true}'): BenchOptions {
  try {
    return JSON.parse(text) as BenchOptions;
  } catch {
    throw new XpError(`bench/main.ts takes its options as JSON (got ${JSON.stringify(text)})`, {
      hint: 'run it as `xp bench [--quick] ...`',
    });
  }
}

try {
  process.exitCode = await benchCommand(options(process.argv[2]));
} catch (error) {
  if (!(error instanceof XpError)) throw error;
  console.error(`xp bench: ${error.message}`);
  if (error.hint) console.error(`  ${error.hint}`);
  process.exitCode = 1;
}
