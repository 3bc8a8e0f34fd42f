// A search logged to a real MLflow server: the sweep's parent run is the search (the study's best trial as metric
// and tags, its trial table and Optuna's two plots as artifacts), stopped trials end KILLED with their epoch, and
// `xp runs` marks them and lists them last.
import path from 'node:path';
import { afterAll, expect, test } from 'vitest';
import { createClient, fromKeyValues, type Run } from '../../src/tracking/client.ts';
import { removeTempDirs, SERVER_TIMEOUT, startTestServer, tempDir } from '../tracking/helpers.ts';
import { tpeAsha, writeSearch, xpIn } from './helpers.ts';

const tmp = tempDir('search-tracked');
const runs = path.join(tmp, 'runs');

// The embedded store of XP_RUNS_DIR, served by the test's server: what a user gets by default.
const xp = (args: string[]) => xpIn(runs, args);

afterAll(removeTempDirs);

const tags = (run: Run) => fromKeyValues(run.data.tags);

test(
  'the parent run holds the study: best trial, trial table and Optuna plots; xp runs lists stopped trials last',
  async () => {
    const file = writeSearch(tmp, 'search', 'search-tracked', tpeAsha(4));
    // The store's own server, which the run finds and logs to (the embedded store of XP_RUNS_DIR).
    const server = await startTestServer(path.join(runs, 'mlflow'));
    try {
      const r = await xp(['run', file, '--quiet']);
      expect(r.exitCode, r.stderr + r.stdout).toBe(0);

      const client = createClient(server.url);
      const experiment = await client.getExperimentByName('search-tracked');
      const all = await client.searchRuns({ experimentIds: [experiment!.experiment_id] });
      const [parent] = all.filter((run) => tags(run)['xp.kind'] === 'sweep');
      const trials = all.filter((run) => tags(run)['mlflow.parentRunId'] === parent.info.run_id);
      expect(trials).toHaveLength(4);
      const stopped = trials.filter((run) => tags(run)['xp.pruned_at_epoch']);
      expect(stopped.length).toBeGreaterThan(0);
      for (const run of stopped) expect(run.info.status).toBe('KILLED');

      // The study's best trial: its value as a metric, its index and each parameter as tags.
      const best = Number(parent.data.metrics?.find((m) => m.key === 'study_best_val_accuracy')?.value);
      const finished = trials.filter((run) => run.info.status === 'FINISHED');
      const results = finished.map((run) =>
        Number(run.data.metrics?.find((m) => m.key === 'final_val_accuracy')?.value),
      );
      expect(best).toBe(Math.max(...results));
      const bestTrial = finished[results.indexOf(best)];
      expect(tags(parent)['xp.study_best_trial']).toMatch(/^[1-4]$/);
      expect(Number(tags(parent)['best.head.dropout'])).toBeCloseTo(
        Number(fromKeyValues(bestTrial.data.params)['head.dropout']),
        5,
      );
      expect(tags(parent)['xp.study']).toMatch(/search-[0-9a-f]{16}\/study\.journal$/);

      // The trial table and the two pictures, as artifacts of the parent.
      const listed = (await client.listArtifacts(parent.info.artifact_uri, 'search')).map((f) => f.path);
      expect(listed.sort()).toEqual([
        'search/optimization_history.png',
        'search/param_importances.png',
        'search/trials.csv',
      ]);
      const csv = (await client.downloadArtifact(parent.info.artifact_uri, 'search/trials.csv'))
        .toString()
        .trim()
        .split('\n');
      expect(csv[0]).toBe('number,index,state,head.dropout,optimizer.learning_rate,value,pruned_epoch');
      expect(csv).toHaveLength(5);
      const rows = csv.slice(1).map((line) => line.split(','));
      expect(
        rows
          .filter((cells) => cells[2] === 'PRUNED')
          .map((cells) => cells[6])
          .sort(),
      ).toEqual(stopped.map((run) => tags(run)['xp.pruned_at_epoch']).sort());
      for (const cells of rows.filter((c) => c[2] === 'COMPLETE')) expect(cells[6]).toBe('');
      for (const png of ['optimization_history.png', 'param_importances.png']) {
        const bytes = await client.downloadArtifact(parent.info.artifact_uri, `search/${png}`);
        expect(bytes.subarray(1, 4).toString()).toBe('PNG');
        expect(bytes.length).toBeGreaterThan(5000);
      }

      // xp runs: stopped trials say so and come after the trials that trained to the end.
      const table = await xp(['runs', 'search-tracked']);
      expect(table.exitCode, table.stderr).toBe(0);
      const body = table.stdout.split('\n').slice(2, 6);
      const marked = body.map((line) => /stopped after epoch \d/.test(line));
      expect(marked.filter(Boolean)).toHaveLength(stopped.length);
      expect(marked).toEqual([...marked].sort((a, b) => Number(a) - Number(b)));
    } finally {
      await server.stop();
    }
  },
  SERVER_TIMEOUT + 600_000,
);
