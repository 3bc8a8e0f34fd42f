// The Optuna side of a search: one long-lived Python process (optuna_driver.py, the .venv's python) per search,
// asked over JSON lines, one answer per request, in order. Its failures are SearchErrors naming the process; the
// study file keeps what it was told, so the search continues when run again.
import { spawn } from 'node:child_process';
import path from 'node:path';
import readline from 'node:readline';
import { XpError } from '../errors.ts';
import { repoRoot } from '../paths.ts';
import type { Trial } from '../config/sweep.ts';
import type { SweepConfig } from '../config/types.ts';
import type { AskedTrial, Search, StudySummary, TrialResult } from './search.ts';

export class SearchError extends XpError {
  constructor(message: string, options?: { cause?: unknown; hint?: string }) {
    super(message, options);
    this.name = 'SearchError';
  }
}

export const driverScript = path.join(repoRoot, 'src', 'search', 'optuna_driver.py');
export const venvPython = (): string => process.env.XP_SEARCH_PYTHON ?? path.join(repoRoot, '.venv', 'bin', 'python');

export interface StudyPlace {
  /** The study's journal file (Optuna's JournalFileBackend). */
  file: string;
  name: string;
}

/**
 * Starts the study's process; the study is created in `place.file`, or loaded from it to go on. `listed`: the trials
 * of a grid or random sweep with early_terminate, asked in their order instead of sampled.
 */
export function openOptunaSearch(sweep: SweepConfig, maxEpochs: number, place: StudyPlace, listed?: Trial[]): Search {
  const spec = {
    method: sweep.method,
    seed: sweep.seed ?? 0,
    direction: sweep.goal,
    trials: listed ? listed.length : (sweep.trials ?? 10),
    parameters: sweep.parameters,
    pruner: sweep.early_terminate && { ...sweep.early_terminate, max_epochs: maxEpochs },
    ...(listed ? { listed: listed.map((t) => ({ index: t.index, values: t.values })) } : {}),
  };
  const python = venvPython();
  const child = spawn(
    python,
    [driverScript, '--storage', place.file, '--study', place.name, '--spec', JSON.stringify(spec)],
    {
      stdio: ['pipe', 'pipe', 'pipe'],
    },
  );
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-4000);
  });
  const waiting: { resolve: (v: unknown) => void; reject: (e: Error) => void }[] = [];
  let ended: Error | undefined;
  const failure = (what: string, setup = false) =>
    new SearchError(`the search process (${python} ${path.relative(repoRoot, driverScript)}) ${what}`, {
      hint: `${stderr.trim().split('\n').slice(-3).join(' | ') || 'it printed nothing'}; the study in ${place.file} keeps every result it was told: \`xp run <file> --resume\` continues it, its interrupted trials from their backups${setup ? ' (`npm run setup` installs Optuna in .venv)' : ''}`,
    });
  const fail = (error: Error) => {
    ended ??= error;
    for (const w of waiting.splice(0)) w.reject(ended);
  };
  child.on('error', (e) => fail(failure(`could not start: ${e.message}`, true)));
  child.on('exit', (code, signal) => fail(failure(`ended (${signal ?? `exit code ${code}`})`)));
  readline.createInterface({ input: child.stdout }).on('line', (line) => {
    const w = waiting.shift();
    if (!w) return;
    let answer: { error?: string };
    try {
      answer = JSON.parse(line);
    } catch {
      return w.reject(failure(`answered what is not JSON: ${line.slice(0, 200)}`));
    }
    if (answer.error) w.reject(failure(`failed: ${answer.error}`));
    else w.resolve(answer);
  });

  const request = <T>(body: object): Promise<T> => {
    if (ended) return Promise.reject(ended);
    return new Promise((resolve, reject) => {
      waiting.push({ resolve: resolve as (v: unknown) => void, reject });
      child.stdin.write(`${JSON.stringify(body)}\n`);
    });
  };

  return {
    ask: async (n) => {
      const answer: { trials: { number: number; index: number; params: Record<string, unknown>; again: boolean }[] } =
        await request({ op: 'ask', n });
      return answer.trials.map(
        (t): AskedTrial => ({ number: t.number, index: t.index, values: readable(t.params), again: t.again }),
      );
    },
    report: async (number, epoch, value) => {
      const answer: { prune: boolean; reason?: string } = await request({ op: 'report', number, epoch, value });
      return answer.prune ? (answer.reason ?? 'the pruner stopped it') : undefined;
    },
    tell: async (number: number, result: TrialResult) => {
      await request({ op: 'tell', number, ...result });
    },
    counts: () => request({ op: 'counts' }),
    summary: async (dir) => {
      const summary: StudySummary = await request({ op: 'summary', dir });
      return summary.best ? { ...summary, best: { ...summary.best, params: readable(summary.best.params) } } : summary;
    },
    close: async () => {
      if (ended || child.exitCode !== null) return;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.stdin.end();
      await exited;
    },
  };
}

// Six significant digits, as the random method's draws: readable run names and MLflow params.
function readable(params: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(
    Object.entries(params).map(([k, v]) => [
      k,
      typeof v === 'number' && !Number.isInteger(v) ? Number(v.toPrecision(6)) : v,
    ]),
  );
}
