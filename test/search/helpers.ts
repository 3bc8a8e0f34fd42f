// The search tests' tiny experiment (MobileNetV2 cut early, 96 px, 16 images a class, 3 epochs of 2 steps) and
// the xp command they run, with the runs folder of the test.
import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { shared } from '../train/helpers.ts';

export const root = path.resolve(import.meta.dirname, '../..');

/** The TPE search with ASHA most tests run: 2 trials a round, seeded, over dropout and learning rate. */
export const tpeAsha = (trials: number) => `
  method: tpe
  trials: ${trials}
  batch: 2
  seed: 7
  early_terminate: {type: asha, min_epochs: 1, eta: 2}
  head.dropout: {distribution: uniform, min: 0.0, max: 0.7}
  optimizer.learning_rate: {distribution: log_uniform, min: 1.0e-5, max: 1.0e-1}`;

/** Writes `<dir>/<file>.yaml`: the tiny experiment named `name` with `sweep` (indented lines) as its sweep. */
export function writeSearch(dir: string, file: string, name: string, sweep: string, epochs = 3): string {
  const at = path.join(dir, `${file}.yaml`);
  fs.writeFileSync(
    at,
    `name: ${name}
data: {train: ${shared}/train, validation: ${shared}/validation, image_size: [96, 96], batch_size: 8, max_per_class: 16}
backbone: {name: mobilenet_v2, weights: nsfwjs, cut_layer: block_2_add}
head: {pooling: avg, units: [16]}
training: {epochs: ${epochs}, steps_per_epoch: 2, validation_steps: 2}
sweep:${sweep}
`,
  );
  return at;
}

/** `xp <args>` with its runs (and embedded MLflow store) in `runs`, no tracking server given. */
export const xpIn = (runs: string, args: string[], env: Record<string, string> = {}) =>
  execa(process.execPath, [path.join(root, 'bin', 'xp.js'), ...args], {
    reject: false,
    cwd: root,
    env: { XP_RUNS_DIR: runs, MLFLOW_TRACKING_URI: '', MLFLOW_HTTP_REQUEST_MAX_RETRIES: '1', ...env },
  });
