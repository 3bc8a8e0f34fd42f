// `xp ui --study`: the real optuna-dashboard on a real study journal, fetched over loopback; Ctrl-C ends it.
import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import type { SweepConfig } from '../../src/config/types.ts';
import { studyFileOf } from '../../src/search/dashboard.ts';
import { openOptunaSearch } from '../../src/search/optuna.ts';
import { removeTempDirs, tempDir } from '../tracking/helpers.ts';
import { root, tpeAsha, writeSearch } from './helpers.ts';

const tmp = tempDir('dashboard');
afterAll(removeTempDirs);

const sweep: SweepConfig = {
  method: 'tpe',
  trials: 3,
  seed: 7,
  metric: 'val_accuracy',
  goal: 'maximize',
  parameters: { 'head.dropout': { distribution: 'uniform', min: 0, max: 0.7 } },
};

describe('xp ui --study', () => {
  it("serves the study's trials on 127.0.0.1, prints its link, and stops on Ctrl-C", async () => {
    const file = path.join(tmp, 'study.journal');
    const search = openOptunaSearch(sweep, 3, { file, name: 'dash-study' });
    const trials = await search.ask(3);
    await search.tell(trials[0].number, { state: 'complete', value: 0.7 });
    await search.tell(trials[1].number, { state: 'complete', value: 0.8 });
    await search.tell(trials[2].number, { state: 'pruned' });
    await search.close();

    const child = execa(process.execPath, [path.join(root, 'bin', 'xp.js'), 'ui', '--study', file], {
      reject: false,
      cwd: root,
    });
    let out = '';
    const link = await new Promise<string>((resolve, reject) => {
      child.stdout?.on('data', (d: Buffer) => {
        out += d.toString();
        const found = /study dash-study: (http:\/\/127\.0\.0\.1:\d+\/dashboard\/studies\/\d+)/.exec(out);
        if (found) resolve(found[1]);
      });
      child.once('exit', () => reject(new Error(`xp ui --study ended: ${out}`)));
    });
    const base = new URL(link).origin;
    const { study_summaries: studies } = (await (await fetch(`${base}/api/studies`)).json()) as {
      study_summaries: { study_id: number; study_name: string }[];
    };
    expect(studies.map((s) => s.study_name)).toEqual(['dash-study']);
    expect(link).toBe(`${base}/dashboard/studies/${studies[0].study_id}`);
    const detail = (await (await fetch(`${base}/api/studies/${studies[0].study_id}`)).json()) as {
      trials: { state: string; values?: number[] }[];
    };
    expect(detail.trials.map((t) => t.state)).toEqual(['Complete', 'Complete', 'Pruned']);
    expect(detail.trials[1].values).toEqual([0.8]);

    child.kill('SIGINT');
    expect((await child).exitCode).toBe(0);
    await expect(fetch(`${base}/api/studies`)).rejects.toThrow();
  });

  it("finds an experiment's study beside its runs, and says when its search has not run yet", async () => {
    const file = writeSearch(tmp, 'search', 'dash-search', tpeAsha(2));
    const runs = path.join(tmp, 'runs');
    process.env.XP_RUNS_DIR = runs;
    try {
      const error = await studyFileOf(file).catch((e) => e);
      expect(error.message).toMatch(
        new RegExp(`^xp ui --study: no study at ${runs}/dash-search/search-[0-9a-f]{16}/study.journal$`),
      );
      const journal = error.message.replace('xp ui --study: no study at ', '');
      fs.mkdirSync(path.dirname(journal), { recursive: true });
      const search = openOptunaSearch(sweep, 3, { file: journal, name: 'x' });
      await search.ask(1);
      await search.close();
      expect(await studyFileOf(file)).toBe(journal);
      expect(await studyFileOf(path.dirname(journal))).toBe(journal);
    } finally {
      delete process.env.XP_RUNS_DIR;
    }
  });
});
