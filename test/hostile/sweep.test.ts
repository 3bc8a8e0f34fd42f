// Sweeps against a dead tracking server behave like single runs: training starts at once, every trial is
// journaled, and `xp sync` delivers them once a server is there.
import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, expect, test } from 'vitest';
import { createClient } from '../../src/tracking/client.ts';
import { removeTempDirs, SERVER_TIMEOUT, startTestServer, tempDir } from '../tracking/helpers.ts';

const root = path.resolve(import.meta.dirname, '../..');
const bin = path.join(root, 'bin', 'xp.js');
const shared = path.resolve(root, '../shared/datasets/cats_and_dogs_filtered');
const tmp = tempDir('hostile-sweep');
const runs = path.join(tmp, 'runs');

afterAll(removeTempDirs, 30_000);

test(
  'a sweep with the tracking server not listening trains every trial and leaves journals for `xp sync`',
  async () => {
    const file = path.join(tmp, 'dead-sweep.yaml');
    fs.writeFileSync(
      file,
      `name: dead-sweep
data: {train: ${shared}/train, validation: ${shared}/validation, image_size: [96, 96], batch_size: 8, max_per_class: 12}
backbone: {name: mobilenet_v2, weights: nsfwjs, cut_layer: block_2_add}
head: {pooling: avg, units: [8]}
optimizer: {name: adam, learning_rate: 0.001}
training: {epochs: 1, steps_per_epoch: 2, validation_steps: 2}
sweep:
  head.dropout: [0.1, 0.3]
`,
    );
    const dead = 'http://127.0.0.1:9'; // discard port: nothing listens
    const started = Date.now();
    const r = await execa(process.execPath, [bin, 'run', file, '--quiet'], {
      reject: false,
      cwd: root,
      env: { XP_RUNS_DIR: runs, MLFLOW_TRACKING_URI: dead, MLFLOW_HTTP_REQUEST_MAX_RETRIES: '0' },
    });
    expect(r.exitCode, r.stderr + r.stdout).toBe(0);
    expect(Date.now() - started).toBeLessThan(120_000);
    expect(r.stdout).toMatch(/journaled as single runs for `xp sync`/);
    const runDirs = fs.readdirSync(path.join(runs, 'dead-sweep')).map((name) => path.join(runs, 'dead-sweep', name));
    expect(runDirs).toHaveLength(2);
    for (const dir of runDirs) expect(fs.existsSync(path.join(dir, 'mlflow-journal.jsonl'))).toBe(true);

    const server = await startTestServer();
    try {
      const synced = await execa(process.execPath, [bin, 'sync', ...runDirs, '--to', server.url], {
        reject: false,
        cwd: root,
        env: { XP_RUNS_DIR: runs, MLFLOW_TRACKING_URI: server.url },
      });
      expect(synced.exitCode, synced.stderr + synced.stdout).toBe(0);
      const client = createClient(server.url);
      const experiment = await client.getExperimentByName('dead-sweep');
      const delivered = await client.searchRuns({ experimentIds: [experiment!.experiment_id] });
      expect(delivered.map((run) => run.info.run_name).sort()).toEqual(['dropout=0.1', 'dropout=0.3']);
      expect(delivered.every((run) => run.info.status === 'FINISHED')).toBe(true);
    } finally {
      await server.stop();
    }
  },
  SERVER_TIMEOUT + 180_000,
);
