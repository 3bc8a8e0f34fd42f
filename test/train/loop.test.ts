import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-node';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadExperiment } from '../../src/config/load.ts';
import { groupTrials } from '../../src/train/sharing.ts';
import { runGroup, type TrialSpec } from '../../src/train/run.ts';
import { createProgress } from '../../src/train/progress.ts';
import type { PreparedData } from '../../src/train/data.ts';
import { buildHead, lossFor } from '../../src/model/head.ts';
import { buildOptimizer } from '../../src/model/optimizer.ts';
import { accelPolicy, trainStep } from '../../src/accel/index.ts';

const shared = path.resolve(import.meta.dirname, '../../../shared/datasets/cats_and_dogs_filtered');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'xp-train-'));
const quiet = createProgress(
  'quiet',
  Object.assign(fs.createWriteStream('/dev/null'), { isTTY: false }) as unknown as NodeJS.WriteStream,
);

// A small, fast pipeline: MobileNetV2 (nsfwjs weights) cut early, 96x96, 16 images per class.
function writeExperiment(name: string, extra: string): string {
  const file = path.join(tmp, `${name}.yaml`);
  fs.writeFileSync(
    file,
    `name: ${name}
data: {train: ${shared}/train, validation: ${shared}/validation, image_size: [96, 96], batch_size: 8, max_per_class: 16}
backbone: {name: mobilenet_v2, weights: nsfwjs, cut_layer: block_2_add}
head: {pooling: avg, units: [16], dropout: 0.3}
augmentation: {rotation_range: 20, zoom_range: 0.1, horizontal_flip: true}
optimizer: {name: adam, learning_rate: 0.001}
training: {epochs: 3, steps_per_epoch: 3, validation_steps: 2, seed: 7}
${extra}`,
  );
  return file;
}

const spec = (t: { name: string; experiment: any; configHash: string }): TrialSpec => ({
  name: t.name,
  experiment: t.experiment,
  configHash: t.configHash,
  callbacks: [],
});

describe('training loop', () => {
  let data: PreparedData | undefined;
  const opts = () => ({
    baseDir: tmp,
    runsRoot: path.join(tmp, 'runs'),
    progress: quiet,
    shouldStop: () => false,
    data,
  });

  beforeAll(() => {
    expect(tf.getBackend()).toBe('tensorflow');
  });

  it('trains, keeps numTensors flat from epoch to epoch, and writes every output', async () => {
    const { trials } = await loadExperiment(writeExperiment('single', ''));
    const before = tf.memory().numTensors;
    const r = await runGroup(trials.map(spec), opts());
    data = r.data;
    const [o] = r.outcomes;
    expect(o.status).toBe('FINISHED');
    expect(o.history).toHaveLength(3);
    for (const h of o.history) {
      expect(h.loss).toBeGreaterThan(0);
      expect(h.val_accuracy).toBeGreaterThanOrEqual(0);
      expect(h.val_accuracy).toBeLessThanOrEqual(1);
    }
    expect(new Set(o.tensorsPerEpoch).size, `numTensors per epoch: ${o.tensorsPerEpoch}`).toBe(1);
    expect(tf.memory().numTensors).toBe(before);
    for (const f of [
      'experiment.yaml',
      'history.csv',
      'history.json',
      'curves.png',
      'summary.txt',
      'confusion_matrix.json',
      'model/model.json',
      'model/xp.json',
    ]) {
      expect(fs.existsSync(path.join(o.runDir, f)), f).toBe(true);
    }
    expect(fs.readFileSync(path.join(o.runDir, 'history.csv'), 'utf8').trim().split('\n')).toHaveLength(4);
    const confusion = JSON.parse(fs.readFileSync(path.join(o.runDir, 'confusion_matrix.json'), 'utf8'));
    expect(confusion.matrix.flat().reduce((a: number, b: number) => a + b, 0)).toBe(1000); // the whole validation set
    const model = await tf.loadLayersModel(`file://${path.join(o.runDir, 'model/model.json')}`);
    const p = model.predict(tf.zeros([1, 96, 96, 3])) as tf.Tensor;
    expect(p.shape).toEqual([1, 1]);
    tf.dispose([p]);
    model.dispose();
  });

  it('a trial trained in a shared group ends with the same metrics as alone with the same seed', async () => {
    const sweep = 'sweep:\n  head.dropout: [0.1, 0.5]\n  training.epochs: [2, 3]\n';
    const { trials } = await loadExperiment(writeExperiment('grouped', sweep));
    const groups = groupTrials(trials, true);
    expect(groups).toHaveLength(1);
    const together = await runGroup(trials.map(spec), opts());
    expect(together.outcomes.map((o) => o.history.length)).toEqual([2, 3, 2, 3]);
    const alone = await runGroup([spec(trials[3])], opts());
    const a = together.outcomes[3].history;
    const b = alone.outcomes[0].history;
    expect(b).toHaveLength(a.length);
    a.forEach((h, i) => {
      expect(b[i].loss).toBeCloseTo(h.loss, 5);
      expect(b[i].accuracy).toBeCloseTo(h.accuracy, 5);
      expect(b[i].val_loss).toBeCloseTo(h.val_loss!, 5);
      expect(b[i].val_accuracy).toBeCloseTo(h.val_accuracy!, 5);
    });
    // and the trials really differ from each other
    expect(together.outcomes[1].history[1].loss).not.toBeCloseTo(together.outcomes[3].history[1].loss, 5);

    // dropout 0.5 for 2 epochs trained as the prefix of dropout 0.5 for 3: its first two epochs, and the model a
    // lone 2-epoch run saves
    expect(together.outcomes[2].history).toEqual(
      together.outcomes[3].history.slice(0, 2).map((h) => ({ ...h, epoch_seconds: expect.any(Number) })),
    );
    const short = await runGroup([spec(trials[2])], opts());
    expect(short.outcomes[0].history.map((h) => h.val_loss)).toEqual(
      together.outcomes[2].history.map((h) => h.val_loss),
    );
    const weights = async (dir: string) => {
      const model = await tf.loadLayersModel(`file://${path.join(dir, 'model/model.json')}`);
      const values = model.getWeights().map((w) => Array.from(w.dataSync()));
      model.dispose();
      return values;
    };
    const [prefix, lone] = await Promise.all([together.outcomes[2], short.outcomes[0]].map((o) => weights(o.runDir)));
    expect(prefix.length).toBe(lone.length);
    for (const [i, w] of prefix.entries()) for (const [j, v] of w.entries()) expect(v).toBeCloseTo(lone[i][j], 5); // trained, not initial, weights
  });

  it('a prefix trial is done, with its outputs, before its group goes on: a later failure leaves it FINISHED', async () => {
    const { trials } = await loadExperiment(writeExperiment('prefix-then-fail', 'sweep:\n  training.epochs: [1, 2]\n'));
    const specs = trials.map(spec);
    let prefixDir = '';
    let prefixSaved = false;
    specs[0].callbacks = [
      {
        onRunStart: (info) => {
          prefixDir = info.runDir;
        },
      },
    ];
    specs[1].callbacks = [
      {
        onEpochEnd: (epoch) => {
          if (epoch !== 2) return;
          prefixSaved = fs.existsSync(path.join(prefixDir, 'model/model.json'));
          throw new Error('boom at epoch 2');
        },
      },
    ];
    const error = await runGroup(specs, opts()).then(
      () => undefined,
      (e) => e,
    );
    expect(error?.message).toBe('boom at epoch 2');
    expect(prefixSaved).toBe(true); // written when its last epoch ended, not at the end of the group
    expect(error.outcomes.map((o: { status: string }) => o.status)).toEqual(['FINISHED', 'FAILED']);
    expect(error.outcomes[0].history).toHaveLength(1);
  });

  it('a prefix trial that restores its best weights keeps a copy of its own and ends as alone', async () => {
    const best = ['training.checkpoint={monitor: val_loss, save_best_only: true}'];
    const { trials } = await loadExperiment(writeExperiment('prefix-best', 'sweep:\n  training.epochs: [2, 3]\n'), {
      set: best,
    });
    const together = await runGroup(trials.map(spec), opts());
    const alone = await runGroup([spec(trials[0])], opts());
    expect(together.outcomes.map((o) => o.status)).toEqual(['FINISHED', 'FINISHED']);
    expect(together.outcomes[0].history.map((h) => h.val_loss)).toEqual(
      alone.outcomes[0].history.map((h) => h.val_loss),
    );
    expect(together.outcomes[0].bestEpoch).toBe(alone.outcomes[0].bestEpoch);
    const read = (dir: string) => fs.readFileSync(path.join(dir, 'model/weights.bin'));
    expect(read(together.outcomes[0].runDir).equals(read(alone.outcomes[0].runDir))).toBe(true);
  });

  it('an epoch that validates on the whole set gives the accuracy of the confusion matrix', async () => {
    const { trials } = await loadExperiment(writeExperiment('whole-validation', ''), {
      set: ['training.validation_steps=125', 'training.epochs=1'],
    }); // 125 x 8 = 1000
    const [o] = (await runGroup(trials.map(spec), opts())).outcomes;
    const confusion = JSON.parse(fs.readFileSync(path.join(o.runDir, 'confusion_matrix.json'), 'utf8'));
    expect(confusion.matrix.flat().reduce((a: number, b: number) => a + b, 0)).toBe(1000);
    expect(o.history[0].val_accuracy).toBeCloseTo(confusion.accuracy, 10);
  });

  it('early stopping ends a run when the monitored metric stops improving, with the best weights restored', async () => {
    const { trials } = await loadExperiment(writeExperiment('early', ''), {
      set: [
        'training.epochs=6',
        'training.early_stopping={monitor: val_loss, patience: 1, min_delta: 100, restore_best_weights: true}',
      ],
    });
    const r = await runGroup(trials.map(spec), opts());
    const [o] = r.outcomes;
    expect(o.history).toHaveLength(2); // epoch 1 is the best; epoch 2 cannot beat it by 100
    expect(o.status).toBe('FINISHED');
    expect(o.earlyStopping).toMatchObject({ stopped_epoch: 2, best_epoch: 1, restored_epoch: 1 });
    // The saved weights are epoch 1's snapshot: those of the same run ended by its epochs after epoch 1.
    const { trials: one } = await loadExperiment(writeExperiment('early-1', ''), { set: ['training.epochs=1'] });
    const [best] = (await runGroup(one.map(spec), opts())).outcomes;
    expect(best.history[0].val_loss).toBe(o.history[0].val_loss);
    expect(o.history[1].val_loss).not.toBe(o.history[0].val_loss); // epoch 2 did change the weights
    const read = (dir: string) => fs.readFileSync(path.join(dir, 'model/weights.bin'));
    expect(read(o.runDir).equals(read(best.runDir))).toBe(true);
  });

  it("a Flatten -> Dense head trained with RMSprop takes the policy's step through the loop (the one-pass native step unless XP_ACCEL=plain), and its prefix trial ends as alone", async () => {
    const set = [
      'head={pooling: flatten, units: [32], dropout: 0.2}',
      'optimizer={name: rmsprop, learning_rate: 0.0001}',
    ];
    const { trials } = await loadExperiment(writeExperiment('rmsprop-flatten', 'sweep:\n  training.epochs: [1, 3]\n'), {
      set,
    });
    // The head as runGroup builds it on block_2_add's 24x24x24 features takes the native step (dense-head.ts)
    // under the native policy; `npm test` runs this file again under XP_ACCEL=plain, where it is trainOnBatch.
    const head = buildHead([24, 24, 24], trials[0].experiment.head, 2, { seed: trials[0].experiment.training.seed });
    head.compile({
      optimizer: buildOptimizer(trials[0].experiment.optimizer),
      loss: lossFor(2),
      metrics: ['accuracy'],
    });
    const step = trainStep(head);
    expect(step.kind).toBe(accelPolicy().nativeKernels ? 'dense-head' : 'trainOnBatch');
    step.dispose();
    head.optimizer.dispose();
    for (const w of head.weights) w.dispose();

    const before = tf.memory().numTensors;
    const together = await runGroup(trials.map(spec), opts());
    expect(together.outcomes.map((o) => o.history.length)).toEqual([1, 3]);
    expect(
      new Set(together.outcomes[1].tensorsPerEpoch).size,
      `numTensors per epoch: ${together.outcomes[1].tensorsPerEpoch}`,
    ).toBe(1);
    expect(tf.memory().numTensors).toBe(before);
    const losses = together.outcomes[1].history.map((h) => h.loss);
    expect(losses[2]).toBeLessThan(losses[0]); // it learns
    const alone = await runGroup([spec(trials[0])], opts());
    expect(alone.outcomes[0].history[0].val_loss).toBeCloseTo(together.outcomes[0].history[0].val_loss!, 5);
    expect(alone.outcomes[0].result!.val_accuracy).toBeCloseTo(together.outcomes[0].result!.val_accuracy, 5);
    const weights = async (dir: string) => {
      const model = await tf.loadLayersModel(`file://${path.join(dir, 'model/model.json')}`);
      const values = model.getWeights().map((w) => Array.from(w.dataSync()));
      model.dispose();
      return values;
    };
    const [prefix, lone, long] = await Promise.all(
      [together.outcomes[0], alone.outcomes[0], together.outcomes[1]].map((o) => weights(o.runDir)),
    );
    for (const [i, w] of prefix.entries()) for (const [j, v] of w.entries()) expect(v).toBeCloseTo(lone[i][j], 5); // epoch 1's weights, not epoch 3's
    expect(long[1].some((v, j) => Math.abs(v - prefix[1][j]) > 1e-6)).toBe(true);
  });

  it('a fine-tuned backbone is never shared and trains through the whole model', async () => {
    const { trials } = await loadExperiment(
      writeExperiment('finetune', 'sweep:\n  head.dropout: [0.1, 0.2]\n'.replace('sweep', 'sweep')),
      {
        set: ['backbone.trainable_from=block_2_expand', 'training.epochs=1'],
      },
    );
    expect(groupTrials(trials, true)).toHaveLength(2);
    const r = await runGroup([spec(trials[0])], opts());
    expect(r.outcomes[0].status).toBe('FINISHED');
    expect(r.outcomes[0].history).toHaveLength(1);
  });
});
