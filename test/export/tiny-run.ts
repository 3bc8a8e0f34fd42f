// The tests of models out of xp (export, serve) share one small trained run: MobileNetV2 with nsfwjs weights cut at
// block_2_add, 96x96, 1 epoch of 2 steps, untracked, validated on six images copied into the test's folder.
import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { expect } from 'vitest';

const root = path.resolve(import.meta.dirname, '../..');
const shared = path.resolve(root, '../shared/datasets/cats_and_dogs_filtered');
export const names = ['cat.2000.jpg', 'cat.2001.jpg', 'cat.2002.jpg', 'dog.2000.jpg', 'dog.2001.jpg', 'dog.2002.jpg'];

/** `xp <args>` as users run it, in `tmp` with its runs under tmp/runs (and `env`). */
export const xpIn =
  (tmp: string, env: Record<string, string> = {}) =>
  (args: string[]) =>
    execa(process.execPath, [path.join(root, 'bin', 'xp.js'), ...args], {
      reject: false,
      cwd: tmp,
      env: { XP_RUNS_DIR: path.join(tmp, 'runs'), ...env },
      timeout: 600_000,
    });

/**
 * Trains the run, untracked unless `trackingUri` is given; its folder, its validation folder and the validation
 * files (`names`, in order).
 */
export async function trainTinyRun(
  tmp: string,
  name: string,
  trackingUri?: string,
): Promise<{ runDir: string; validation: string; files: string[] }> {
  const validation = path.join(tmp, 'validation');
  const files = names.map((n) => path.join(validation, n.startsWith('cat') ? 'cats' : 'dogs', n));
  for (const [i, n] of names.entries()) {
    fs.mkdirSync(path.dirname(files[i]), { recursive: true });
    fs.copyFileSync(path.join(shared, 'validation', n.startsWith('cat') ? 'cats' : 'dogs', n), files[i]);
  }
  const file = path.join(tmp, `${name}.yaml`);
  fs.writeFileSync(
    file,
    `name: ${name}
data: {train: ${shared}/train, validation: ${validation}, image_size: [96, 96], batch_size: 8, max_per_class: 8, interpolation: bilinear}
backbone: {name: mobilenet_v2, weights: nsfwjs, cut_layer: block_2_add}
head: {pooling: avg, units: [8], dropout: 0.2}
optimizer: {name: adam, learning_rate: 0.01}
training: {epochs: 1, steps_per_epoch: 2}
`,
  );
  const run = trackingUri
    ? await xpIn(tmp, { MLFLOW_TRACKING_URI: trackingUri })(['run', file, '--quiet'])
    : await xpIn(tmp)(['run', file, '--no-track', '--quiet']);
  expect(run.exitCode, run.stderr).toBe(0);
  const [folder] = fs.readdirSync(path.join(tmp, 'runs', name));
  return { runDir: path.join(tmp, 'runs', name, folder), validation, files };
}
