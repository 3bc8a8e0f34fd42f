// `xp run` of a tpe search with asha, end to end on tiny data with the real Optuna: it ends with `trials` trials,
// each FINISHED or stopped by the pruner (KILLED, with the epoch and reason), and running it again with more trials
// continues the study, asking only the new ones.
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { Outcome } from '../../src/run/trials.ts';
import { removeTempDirs, tempDir } from '../tracking/helpers.ts';
import { tpeAsha, writeSearch, xpIn } from './helpers.ts';

const tmp = tempDir('search-run');
afterAll(removeTempDirs);

const write = (trials: number) => writeSearch(tmp, `search-${trials}`, 'search-run', tpeAsha(trials));

const run = async (file: string, ...flags: string[]) => {
  const r = await xpIn(path.join(tmp, 'runs'), ['run', file, '--json', '--no-track', ...flags]);
  expect(r.exitCode, r.stderr).toBe(0);
  const events = r.stdout
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, any>);
  const lines = events.filter((e) => e.event === 'log').map((e) => String(e.message));
  const runs: Outcome[] = events.find((e) => e.event === 'summary')?.runs ?? [];
  return { lines, runs };
};

describe('xp run of a tpe search with asha', () => {
  it('ends with `trials` trials, some stopped by the pruner, and continues its study when run again', async () => {
    const first = await run(write(4));
    expect(first.runs).toHaveLength(4);
    const stopped = first.runs.filter((o) => o.prunedAt);
    expect(stopped.length).toBeGreaterThan(0);
    for (const o of first.runs) {
      if (o.prunedAt) {
        expect(o.status).toBe('KILLED');
        expect(o.history).toHaveLength(o.prunedAt.epoch);
        expect(o.prunedAt.reason).toMatch(/^the rung's top \d+ of \d+ \(1\/2\) starts at \d\.\d{4}$/);
      } else {
        expect(o.status).toBe('FINISHED');
        expect(o.history).toHaveLength(3);
      }
    }
    for (const o of stopped)
      expect(
        first.lines.some(
          (l) => l.startsWith(`trial `) && l.includes(`stopped after epoch ${o.prunedAt!.epoch}: val_accuracy`),
        ),
      ).toBe(true);
    expect(first.lines.filter((l) => l.startsWith('Round '))).toHaveLength(2);
    // The images are decoded once, for both rounds.
    expect(first.lines.filter((l) => l.startsWith('Decoding '))).toHaveLength(1);
    // One line per trial as it ends, in the order they end; the last line tells the best of the study.
    const ended = first.lines.filter((l) => /^trial \d ended: /.test(l));
    expect(ended).toHaveLength(4);
    for (const o of first.runs)
      expect(
        ended.some((l) =>
          l.includes(
            `: ${o.name}: ${o.prunedAt ? `stopped after epoch ${o.prunedAt.epoch} of 3` : '3 of 3 epochs'}, val_accuracy 0.`,
          ),
        ),
      ).toBe(true);
    expect(first.lines.find((l) => l.startsWith('best of 4: trial '))).toMatch(
      /^best of 4: trial \d, dropout=\S+ learning_rate=\S+, val_accuracy \d\.\d{4} \(\d stopped early, after (1 epoch|2 epochs|1-2 epochs)\); the study holds/,
    );
    const end = first.lines.find((l) => l.includes('the study holds'));
    expect(end).toContain(`the study holds ${4 - stopped.length} finished, ${stopped.length} stopped, 0 failed`);

    // The same search with one more trial: the study goes on, the four told trials are not asked again.
    const again = await run(write(5));
    expect(again.lines.some((l) => l.includes('continued: 4 trial(s) done'))).toBe(true);
    expect(again.lines.filter((l) => l.startsWith('Round '))).toEqual([expect.stringMatching(/^Round 1: trial 5: /)]);
    expect(again.runs).toHaveLength(1);
    expect(first.runs.map((o) => o.name)).not.toContain(again.runs[0].name);
    const total = again.lines.find((l) => l.includes('the study holds')) ?? '';
    const [, finished, pruned] = total.match(/the study holds (\d+) finished, (\d+) stopped, 0 failed/) ?? [];
    expect(Number(finished) + Number(pruned)).toBe(5);
  });
});

describe('xp run of a grid sweep with early_terminate', () => {
  it('trains the listed trials in their order through the study, and its pruner stops the bad ones', async () => {
    const file = writeSearch(
      tmp,
      'grid',
      'grid-stopped',
      `
  batch: 2
  early_terminate: {type: asha, min_epochs: 1, eta: 2}
  optimizer.learning_rate: [1.0e-1, 1.0e-5]
  head.dropout: [0.0, 0.6]`,
    );
    const listed = await xpIn(path.join(tmp, 'runs'), ['run', file, '--dry-run', '--no-track']);
    expect(listed.exitCode, listed.stderr).toBe(0);
    const names = [...listed.stdout.matchAll(/trial \d+: (\S+ \S+) /g)].map((m) => m[1]);
    expect(names).toHaveLength(4);
    expect(listed.stdout).toContain(
      "early_terminate asha: rungs after epoch 1, 2; the top 1/2 of a rung's trials go on",
    );
    expect(listed.stdout).toMatch(/rounds of 2 trial\(s\): sweep.batch 2\n/);

    const { lines, runs } = await run(file);
    expect(lines.filter((l) => l.startsWith('Round '))).toEqual([
      `Round 1: trial 1: ${names[0]}; trial 2: ${names[1]}`,
      `Round 2: trial 3: ${names[2]}; trial 4: ${names[3]}`,
    ]);
    expect(runs.map((o) => o.name).sort()).toEqual([...names].sort());
    const stopped = runs.filter((o) => o.prunedAt);
    expect(stopped.length).toBeGreaterThan(0);
    for (const o of runs) {
      expect(o.status).toBe(o.prunedAt ? 'KILLED' : 'FINISHED');
      expect(o.history).toHaveLength(o.prunedAt ? o.prunedAt.epoch : 3);
    }
    expect(lines.find((l) => l.includes('the study holds'))).toContain(
      `the study holds ${4 - stopped.length} finished, ${stopped.length} stopped, 0 failed`,
    );
  });
});
