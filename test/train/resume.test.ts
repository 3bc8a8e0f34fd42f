// Keras BackupAndRestore: a run interrupted after epoch 2 of 4 and resumed from its folder's backup ends with
// the metrics and weights of the run that was never interrupted.
import fs from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-node';
import { describe, expect, it } from 'vitest';
import { loadExperiment } from '../../src/config/load.ts';
import type { PreparedData } from '../../src/train/data.ts';
import { runGroup } from '../../src/train/run.ts';
import { recordingProgress, savedWeights, spec, tmp, writeExperiment } from './helpers.ts';

// The native dense-head step (Flatten -> Dense with RMSprop, its slots' decays replayed lazily), with early
// stopping's best-weights snapshot to keep across the interruption.
const BODY = `head: {pooling: flatten, units: [32], dropout: 0.2}
optimizer: {name: rmsprop, learning_rate: 0.0001}
training: {epochs: 4, steps_per_epoch: 3, validation_steps: 2, seed: 11,
           early_stopping: {monitor: val_accuracy, patience: 10, restore_best_weights: true}}`;

describe('resume', () => {
  let data: PreparedData | undefined;
  const opts = (extra: { backup?: boolean; shouldStop?: () => boolean } = {}) => ({
    baseDir: tmp,
    runsRoot: path.join(tmp, 'runs'),
    progress: recordingProgress().progress,
    shouldStop: extra.shouldStop ?? (() => false),
    backup: extra.backup,
    data,
  });

  it('a run interrupted after epoch 2 of 4 and resumed ends as the uninterrupted run', async () => {
    const { trials } = await loadExperiment(writeExperiment('resume', BODY));
    const whole = await runGroup(trials.map(spec), opts());
    data = whole.data;
    const uninterrupted = whole.outcomes[0];
    expect(uninterrupted.history).toHaveLength(4);

    let stop = false;
    const first = spec(trials[0]);
    first.callbacks = [
      {
        onEpochEnd: (epoch) => {
          stop = epoch === 2;
        },
      },
    ];
    const [killed] = (await runGroup([first], opts({ backup: true, shouldStop: () => stop }))).outcomes;
    expect(killed.status).toBe('KILLED');
    expect(killed.history).toHaveLength(2);
    expect(fs.existsSync(path.join(killed.runDir, 'backup/state.json'))).toBe(true);

    const again = spec(trials[0]);
    let resumedAt: number | undefined;
    const epochs: number[] = [];
    again.callbacks = [
      {
        onRunStart: (info) => {
          resumedAt = info.resumedAt;
        },
        onEpochEnd: (epoch) => void epochs.push(epoch),
      },
    ];
    again.resume = { runId: killed.runId, runDir: killed.runDir };
    const before = tf.memory().numTensors;
    const [resumed] = (await runGroup([again], opts({ backup: true }))).outcomes;
    expect(tf.memory().numTensors).toBe(before);
    expect(resumed.status).toBe('FINISHED');
    expect(resumed.runDir).toBe(killed.runDir);
    expect(resumedAt).toBe(2);
    expect(epochs).toEqual([3, 4]);
    expect(fs.existsSync(path.join(resumed.runDir, 'backup'))).toBe(false); // a finished run keeps no backup

    expect(resumed.history).toHaveLength(4);
    resumed.history.forEach((h, i) => {
      const u = uninterrupted.history[i];
      for (const k of ['loss', 'accuracy', 'val_loss', 'val_accuracy'] as const)
        expect(h[k], `epoch ${i + 1} ${k}`).toBeCloseTo(u[k]!, 6);
    });
    expect(resumed.earlyStopping).toEqual(uninterrupted.earlyStopping);
    expect(resumed.result!.epoch).toBe(uninterrupted.result!.epoch);
    expect(resumed.result!.val_accuracy).toBeCloseTo(uninterrupted.result!.val_accuracy, 5);
    const [a, b] = await Promise.all([savedWeights(resumed.runDir), savedWeights(uninterrupted.runDir)]);
    a.forEach((w, i) => {
      let worst = 0;
      for (const [j, v] of w.entries()) worst = Math.max(worst, Math.abs(v - b[i][j]));
      expect(worst, `weight ${i}`).toBeLessThan(1e-5);
    });
  });

  it("a prefix trial shares its trainer's backup files until it ends, and both resume as uninterrupted", async () => {
    const { trials } = await loadExperiment(
      writeExperiment('resume-prefix', `${BODY}\nsweep: {training.epochs: [3, 4]}`),
    );
    expect(trials.map((t) => t.experiment.training.epochs)).toEqual([3, 4]);
    const whole = (await runGroup(trials.map(spec), opts())).outcomes;
    expect(whole.map((o) => o.history.length)).toEqual([3, 4]);

    let stop = false;
    const specs = trials.map(spec);
    specs[1].callbacks = [
      {
        onEpochEnd: (epoch) => {
          stop = epoch === 2;
        },
      },
    ];
    const killed = (await runGroup(specs, opts({ backup: true, shouldStop: () => stop }))).outcomes;
    expect(killed.map((o) => [o.status, o.history.length])).toEqual([
      ['KILLED', 2],
      ['KILLED', 2],
    ]);
    const [prefix, trainer] = killed.map((o) => path.join(o.runDir, 'backup'));
    // One copy of the tensors on disk; each trial's own history in its state file.
    expect(fs.statSync(path.join(prefix, 'tensors.bin')).ino).toBe(fs.statSync(path.join(trainer, 'tensors.bin')).ino);
    const states = [prefix, trainer].map((d) => JSON.parse(fs.readFileSync(path.join(d, 'state.json'), 'utf8')));
    expect(states[0].history).toEqual(killed[0].history);
    expect(states[1].history).toEqual(killed[1].history);
    // A snapshot taken at the backed-up epoch points at the weights' bytes instead of repeating them.
    const aliased = states[1].tensors.earlyStopping[0].offset === states[1].tensors.weights[0].offset;
    expect(aliased, `best epoch ${states[1].earlyStopping.bestEpoch}`).toBe(states[1].earlyStopping.bestEpoch === 2);

    const again = trials.map(spec);
    for (const [i, s] of again.entries()) s.resume = { runId: killed[i].runId, runDir: killed[i].runDir };
    const resumed = (await runGroup(again, opts({ backup: true }))).outcomes;
    resumed.forEach((r, t) => {
      expect([r.status, r.runDir, r.history.length]).toEqual(['FINISHED', killed[t].runDir, whole[t].history.length]);
      r.history.forEach((h, i) => {
        for (const k of ['loss', 'accuracy', 'val_loss', 'val_accuracy'] as const)
          expect(h[k], `trial ${t + 1} epoch ${i + 1} ${k}`).toBeCloseTo(whole[t].history[i][k]!, 6);
      });
      expect(r.result!.val_accuracy).toBeCloseTo(whole[t].result!.val_accuracy, 5);
    });
    for (let t = 0; t < 2; t++) {
      const [a, b] = await Promise.all([savedWeights(resumed[t].runDir), savedWeights(whole[t].runDir)]);
      a.forEach((w, i) => {
        let worst = 0;
        for (const [j, v] of w.entries()) worst = Math.max(worst, Math.abs(v - b[i][j]));
        expect(worst, `trial ${t + 1} weight ${i}`).toBeLessThan(1e-5);
      });
    }
  });
});
