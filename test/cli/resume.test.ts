// `xp run --resume` end to end (Keras BackupAndRestore): a run Ctrl-C'd after epoch 2 of 4 continues in its
// folder and its MLflow run, and ends with the metrics, MLflow history and saved model of a run never interrupted.
import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClient } from '../../src/tracking/client.ts';
import type { Outcome } from '../../src/run/trials.ts';
import { removeTempDirs, startTestServer, tempDir } from '../tracking/helpers.ts';
import { savedWeights, shared } from '../train/helpers.ts';

const root = path.resolve(import.meta.dirname, '../..');
const bin = path.join(root, 'bin', 'xp.js');
const tmp = tempDir('resume');
let server: Awaited<ReturnType<typeof startTestServer>>;

const EPOCH_METRICS = ['loss', 'accuracy', 'val_loss', 'val_accuracy'] as const;

// The native dense-head step (Flatten -> Dense, RMSprop) with early stopping's best weights to carry across.
const file = path.join(tmp, 'resume-cli.yaml');
fs.writeFileSync(
  file,
  `name: resume-cli
data: {train: ${shared}/train, validation: ${shared}/validation, image_size: [96, 96], batch_size: 8, max_per_class: 16}
backbone: {name: mobilenet_v2, weights: nsfwjs, cut_layer: block_2_add}
augmentation: {rotation_range: 20, zoom_range: 0.1, horizontal_flip: true}
head: {pooling: flatten, units: [32], dropout: 0.2}
optimizer: {name: rmsprop, learning_rate: 0.0001}
training: {epochs: 4, steps_per_epoch: 4, validation_steps: 2, seed: 11,
           early_stopping: {monitor: val_accuracy, patience: 10, restore_best_weights: true}}
`,
);

const xp = (args: string[], experiment = file) =>
  execa(process.execPath, [bin, 'run', experiment, '--json', ...args], {
    reject: false,
    cwd: root,
    env: { XP_RUNS_DIR: path.join(tmp, 'runs'), MLFLOW_TRACKING_URI: server.url, MLFLOW_HTTP_REQUEST_MAX_RETRIES: '1' },
  });

const events = (stdout: string) =>
  stdout
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, any>);
const summaries = (stdout: string): (Outcome & { mlflowRunId: string })[] => {
  const s = events(stdout).find((e) => e.event === 'summary');
  expect(s, stdout).toBeDefined();
  return s!.runs;
};
const summary = (stdout: string) => summaries(stdout)[0];

/** `xp run` Ctrl-C'd once the first line of epoch 2 has printed. */
async function interruptedAfterEpoch2(experiment = file) {
  const child = xp([], experiment);
  let out = '';
  let sent = false; // a second Ctrl-C quits at once
  child.stdout!.on('data', (chunk: Buffer) => {
    out += chunk;
    if (!sent && events(out).some((e) => e.event === 'epoch' && e.epoch === 2)) sent = child.kill('SIGINT');
  });
  return child;
}

beforeAll(async () => {
  server = await startTestServer(path.join(tmp, 'mlflow'));
}, 180_000);
afterAll(async () => {
  await server?.stop();
  removeTempDirs();
});

describe('xp run --resume', () => {
  it('continues a run interrupted after epoch 2 of 4 in its folder and MLflow run, ending as the uninterrupted run', async () => {
    const whole = await xp([]);
    expect(whole.exitCode, whole.stderr).toBe(0);
    const uninterrupted = summary(whole.stdout);
    expect(fs.existsSync(path.join(uninterrupted.runDir, 'backup')), 'a finished run keeps no backup').toBe(false);

    const interrupted = await interruptedAfterEpoch2();
    expect(interrupted.exitCode, interrupted.stderr).toBe(130);
    const killed = summary(interrupted.stdout);
    expect(killed.status).toBe('KILLED');
    const done = killed.history.length; // 2, or 3 when the signal lands after epoch 3 began (a loaded machine)
    expect(done === 2 || done === 3, `epochs done before the interruption: ${done}`).toBe(true);
    const client = createClient(server.url);
    expect((await client.getRun(killed.mlflowRunId)).info.status).toBe('KILLED');

    const again = await xp(['--resume']);
    expect(again.exitCode, again.stderr).toBe(0);
    expect(
      events(again.stdout).some(
        (e) => e.event === 'log' && new RegExp(`^Resuming .* after epoch ${done} of 4`).test(e.message),
      ),
    ).toBe(true);
    const resumed = summary(again.stdout);
    expect(resumed.status).toBe('FINISHED');
    expect(resumed.runDir).toBe(killed.runDir);
    expect(resumed.mlflowRunId).toBe(killed.mlflowRunId);
    expect(fs.existsSync(path.join(resumed.runDir, 'backup'))).toBe(false);

    // Per-epoch metrics as the uninterrupted run's, in the summary and in MLflow: one value per epoch step.
    expect(resumed.history).toHaveLength(4);
    const run = await client.getRun(resumed.mlflowRunId);
    expect(run.info.status).toBe('FINISHED');
    expect(run.data.tags?.find((t) => t.key === 'xp.resumed_at_epoch')?.value).toBe(String(done));
    const runs = await client.searchRuns({ experimentIds: [run.info.experiment_id] });
    expect(runs).toHaveLength(2); // the uninterrupted one and the resumed one: no second MLflow run
    for (const key of EPOCH_METRICS) {
      const points = (await client.getMetricHistory(resumed.mlflowRunId, key)).sort((a, b) => a.step - b.step);
      expect(
        points.map((p) => p.step),
        key,
      ).toEqual([1, 2, 3, 4]);
      points.forEach((p, i) => {
        expect(resumed.history[i][key], `epoch ${i + 1} ${key}`).toBeCloseTo(uninterrupted.history[i][key]!, 4);
        expect(p.value, `MLflow epoch ${i + 1} ${key}`).toBeCloseTo(uninterrupted.history[i][key]!, 4);
      });
    }

    // The saved model: the same result and weights.
    expect(resumed.result!.epoch).toBe(uninterrupted.result!.epoch);
    expect(resumed.result!.val_accuracy).toBeCloseTo(uninterrupted.result!.val_accuracy, 4);
    expect(resumed.result!.val_loss).toBeCloseTo(uninterrupted.result!.val_loss, 4);
    const finalAccuracy = run.data.metrics?.find((m) => m.key === 'final_val_accuracy')?.value;
    expect(finalAccuracy).toBeCloseTo(uninterrupted.result!.val_accuracy, 4);
    const [a, b] = await Promise.all([savedWeights(resumed.runDir), savedWeights(uninterrupted.runDir)]);
    a.forEach((w, i) => {
      let worst = 0;
      for (const [j, v] of w.entries()) worst = Math.max(worst, Math.abs(v - b[i][j]));
      expect(worst, `weight ${i}`).toBeLessThan(1e-5);
    });

    // Nothing left to resume: a fresh run, said so (as BackupAndRestore without a backup).
    const fresh = await xp(['--resume', '--set', 'training.epochs=1']);
    expect(fresh.exitCode, fresh.stderr).toBe(0);
    expect(
      events(fresh.stdout).some(
        (e) => e.event === 'log' && /^Nothing to resume for .*training from the start$/.test(e.message),
      ),
    ).toBe(true);
    expect(summary(fresh.stdout).runDir).not.toBe(killed.runDir);
  }, 600_000);

  it('resumes every interrupted trial of a sweep in its own folder and MLflow run, under the same parent', async () => {
    const sweep = path.join(tmp, 'resume-sweep.yaml');
    fs.writeFileSync(
      sweep,
      `${fs.readFileSync(file, 'utf8').replace('name: resume-cli', 'name: resume-sweep')}sweep: {parameters: {head.dropout: [0.1, 0.3]}}\n`,
    );
    const interrupted = await interruptedAfterEpoch2(sweep);
    expect(interrupted.exitCode, interrupted.stderr).toBe(130);
    const killed = summaries(interrupted.stdout);
    const done = killed[0].history.length; // 2, or 3 when the signal lands after epoch 3 began (a loaded machine)
    expect(done === 2 || done === 3, `epochs done before the interruption: ${done}`).toBe(true);
    expect(killed.map((o) => [o.status, o.history.length])).toEqual([
      ['KILLED', done],
      ['KILLED', done],
    ]);

    const again = await xp(['--resume'], sweep);
    expect(again.exitCode, again.stderr).toBe(0);
    const resumed = summaries(again.stdout);
    expect(
      events(again.stdout).filter(
        (e) => e.event === 'log' && new RegExp(`^Resuming .* after epoch ${done} of 4`).test(e.message),
      ),
    ).toHaveLength(2);
    for (const k of killed) {
      const r = resumed.find((o) => o.name === k.name)!;
      expect([r.status, r.runDir, r.mlflowRunId, r.history.length]).toEqual(['FINISHED', k.runDir, k.mlflowRunId, 4]);
    }
    const client = createClient(server.url);
    const experimentId = (await client.getExperimentByName('resume-sweep'))!.experiment_id;
    const runs = await client.searchRuns({ experimentIds: [experimentId] });
    expect(runs.map((r) => r.info.status)).toEqual(['FINISHED', 'FINISHED', 'FINISHED']); // the parent and its two trials
    for (const k of killed)
      expect((await client.getMetricHistory(k.mlflowRunId, 'val_loss')).map((p) => p.step).sort()).toEqual([
        1, 2, 3, 4,
      ]);
  }, 600_000);
});
