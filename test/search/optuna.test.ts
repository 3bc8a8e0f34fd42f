// The Optuna side of a search, with the real Optuna in .venv: the seeded first round, a study that goes on where an
// earlier process left it (no trial asked twice, an interrupted one handed out again), and the process's failures.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { SweepConfig } from '../../src/config/types.ts';
import { openOptunaSearch, SearchError } from '../../src/search/optuna.ts';
import { removeTempDirs, tempDir } from '../tracking/helpers.ts';

const tmp = tempDir('search');
afterAll(removeTempDirs);

const sweep = (over: Partial<SweepConfig> = {}): SweepConfig => ({
  method: 'tpe',
  trials: 4,
  seed: 7,
  metric: 'val_accuracy',
  goal: 'maximize',
  parameters: {
    'head.dropout': { distribution: 'uniform', min: 0, max: 0.7 },
    'optimizer.learning_rate': { distribution: 'log_uniform', min: 1e-5, max: 1e-2 },
    'head.units': [[256], [512], [1024]],
  },
  ...over,
});
let studies = 0;
const place = () => ({ file: path.join(tmp, `study-${++studies}.journal`), name: 'test' });

describe('an Optuna search', () => {
  it('asks the same first round twice from the same seed, and another from another seed', async () => {
    const rounds = [];
    for (const seed of [7, 7, 8]) {
      const search = openOptunaSearch(sweep({ seed }), 3, place());
      rounds.push((await search.ask(3)).map((t) => t.values));
      await search.close();
    }
    expect(rounds[0]).toHaveLength(3);
    expect(rounds[1]).toEqual(rounds[0]);
    expect(rounds[2]).not.toEqual(rounds[0]);
    for (const values of rounds[0]) {
      expect(values['head.dropout']).toBeGreaterThanOrEqual(0);
      expect(values['head.dropout']).toBeLessThanOrEqual(0.7);
      expect([[256], [512], [1024]]).toContainEqual(values['head.units']);
    }
  });

  it('continues its study: told trials are never asked again, an interrupted one is handed out again, and it ends at `trials`', async () => {
    const at = place();
    const first = openOptunaSearch(sweep(), 3, at);
    const round = await first.ask(3);
    await first.tell(round[0].number, { state: 'complete', value: 0.8 });
    await first.tell(round[1].number, { state: 'pruned' });
    await first.close(); // round[2] was never told: interrupted
    const again = openOptunaSearch(sweep(), 3, at);
    expect(await again.counts()).toEqual({ complete: 1, pruned: 1, fail: 0, running: 1 });
    const next = await again.ask(3);
    expect(next.map((t) => [t.number, t.again])).toEqual([
      [round[2].number, true],
      [3, false],
    ]);
    expect(next[0].values).toEqual(round[2].values);
    expect(round.map((t) => t.values)).not.toContainEqual(next[1].values);
    for (const t of next) await again.tell(t.number, { state: 'complete', value: 0.5 });
    expect(await again.ask(3)).toEqual([]);
    await again.close();
  });

  it('searches with CMA-ES: the same first round from the same seed, then trials sampled by CMA-ES', async () => {
    const numeric = {
      'head.dropout': sweep().parameters['head.dropout'],
      'optimizer.learning_rate': sweep().parameters['optimizer.learning_rate'],
    };
    const rounds = [];
    const at = [place(), place()];
    for (const file of at) {
      const search = openOptunaSearch(sweep({ method: 'cmaes', trials: 6, parameters: numeric }), 3, file);
      const first = await search.ask(2);
      rounds.push(first.map((t) => t.values));
      for (const t of first)
        await search.tell(t.number, { state: 'complete', value: Number(t.values['head.dropout']) });
      const second = await search.ask(4);
      expect(second.map((t) => t.number)).toEqual([2, 3, 4, 5]);
      for (const t of second) {
        expect(t.values['head.dropout']).toBeGreaterThanOrEqual(0);
        expect(t.values['head.dropout']).toBeLessThanOrEqual(0.7);
      }
      await search.close();
    }
    expect(rounds[1]).toEqual(rounds[0]);
    // CmaEsSampler keeps its generation in each trial it samples (system attr cma:generation): CMA-ES, not a fallback.
    expect(fs.readFileSync(at[0].file, 'utf8')).toContain('cma:generation');
  });

  it("asks a listed sweep's trials in their order with their values, and a continued study only those it has not seen", async () => {
    const random = sweep({ method: 'random', early_terminate: { type: 'asha', min_epochs: 1, eta: 2 } });
    const listed = [
      { index: 1, values: { 'head.dropout': 0.1, 'optimizer.learning_rate': 0.001, 'head.units': [512] }, name: 'a' },
      { index: 2, values: { 'head.dropout': 0.6, 'optimizer.learning_rate': 1e-5, 'head.units': [256] }, name: 'b' },
      { index: 3, values: { 'head.dropout': 0.3, 'optimizer.learning_rate': 0.01, 'head.units': [1024] }, name: 'c' },
    ];
    const at = place();
    const first = openOptunaSearch(random, 3, at, listed);
    const round = await first.ask(2);
    expect(round.map((t) => [t.index, t.values])).toEqual(listed.slice(0, 2).map((t) => [t.index, t.values]));
    await first.tell(round[0].number, { state: 'complete', value: 0.7 });
    await first.close(); // the second stays RUNNING: interrupted
    const again = openOptunaSearch(random, 3, at, listed);
    const next = await again.ask(5);
    expect(next.map((t) => [t.index, t.again])).toEqual([
      [2, true],
      [3, false],
    ]);
    expect(next[1].values).toEqual(listed[2].values);
    // The pruner sees the listed trials as any study's: the worse of two at the first rung stops.
    expect(await again.report(next[1].number, 1, 0.9)).toBeUndefined();
    expect(await again.report(next[0].number, 1, 0.2)).toMatch(/^the rung's top 1 of \d \(1\/2\) starts at 0\.9000$/);
    await again.close();
  });

  it('searches with CMA-ES beside categorical parameters, which are drawn independently', async () => {
    const search = openOptunaSearch(sweep({ method: 'cmaes', trials: 8 }), 3, place());
    for (let round = 0; round < 4; round++) {
      const asked = await search.ask(2);
      for (const t of asked) {
        expect([[256], [512], [1024]]).toContainEqual(t.values['head.units']);
        await search.tell(t.number, { state: 'complete', value: Number(t.values['head.dropout']) });
      }
    }
    expect(await search.counts()).toEqual({ complete: 8, pruned: 0, fail: 0, running: 0 });
    await search.close();
  });

  it('stops a trial behind at an asha rung, saying why', async () => {
    const search = openOptunaSearch(sweep({ early_terminate: { type: 'asha', min_epochs: 1, eta: 2 } }), 3, place());
    const [a, b] = await search.ask(2);
    expect(await search.report(a.number, 1, 0.8)).toBeUndefined();
    expect(await search.report(b.number, 1, 0.5)).toBe("the rung's top 1 of 2 (1/2) starts at 0.8000");
    await search.close();
  });

  it('names the search process when it cannot run, and keeps the study', async () => {
    const at = place();
    process.env.XP_SEARCH_PYTHON = path.join(tmp, 'no-python');
    try {
      const search = openOptunaSearch(sweep(), 3, at);
      const error = await search.ask(1).catch((e) => e);
      expect(error).toBeInstanceOf(SearchError);
      expect(error.message).toMatch(/the search process \(.*no-python src\/search\/optuna_driver.py\) could not start/);
      expect(error.hint).toContain(`the study in ${at.file} keeps every result`);
    } finally {
      delete process.env.XP_SEARCH_PYTHON;
    }
    expect(fs.existsSync(at.file)).toBe(false);
  });
});
