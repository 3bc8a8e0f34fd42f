// Losses of a small deterministic training under the acceleration policy XP_ACCEL chooses, to 6 decimals, for
// comparing policies (or a change against its parent) to 4: MobileNetV2 (nsfwjs weights) cut at block_2_add,
// 96x96, 30 images per class, a Flatten -> Dense(64) head (large enough for the native one-pass step) trained
// with RMSprop, then with Adam, 3 epochs of 4 steps, through runGroup as `xp run` trains.
//   for a in native xla plain; do XP_ACCEL=$a npx tsx bench/policy-losses.ts > /tmp/losses-$a.txt; done
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describePolicy } from '../src/accel/index.ts';
import { loadExperiment } from '../src/config/load.ts';
import { repoRoot } from '../src/paths.ts';
import { createProgress } from '../src/train/progress.ts';
import { runGroup } from '../src/train/run.ts';

const dataset = path.resolve(repoRoot, process.env.XP_BENCH_DATA ?? '../shared/datasets/cats_and_dogs_filtered');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'xp-policy-losses-'));
const quiet = createProgress(
  'quiet',
  Object.assign(fs.createWriteStream('/dev/null'), { isTTY: false }) as unknown as NodeJS.WriteStream,
);
console.error(describePolicy());
try {
  for (const optimizer of ['rmsprop', 'adam']) {
    const file = path.join(tmp, `${optimizer}.yaml`);
    fs.writeFileSync(
      file,
      `name: ${optimizer}
data: {train: ${dataset}/train, validation: ${dataset}/validation, image_size: [96, 96], batch_size: 10, max_per_class: 30}
backbone: {name: mobilenet_v2, weights: nsfwjs, cut_layer: block_2_add}
head: {pooling: flatten, units: [64], dropout: 0.2}
augmentation: {rotation_range: 20, zoom_range: 0.1, horizontal_flip: true}
optimizer: {name: ${optimizer}, learning_rate: 0.0001}
training: {epochs: 3, steps_per_epoch: 4, validation_steps: 3, seed: 7}
tracking: {enabled: false}
`,
    );
    const { trials } = await loadExperiment(file);
    const started = performance.now();
    const { outcomes } = await runGroup(
      trials.map((t) => ({ name: t.name, experiment: t.experiment, configHash: t.configHash, callbacks: [] })),
      {
        baseDir: tmp,
        runsRoot: path.join(tmp, 'runs'),
        progress: quiet,
        shouldStop: () => false,
      },
    );
    for (const h of outcomes[0].history) {
      const figures = Object.entries(h).filter(([k]) => /loss|accuracy/.test(k));
      console.log(`${optimizer} ${figures.map(([k, v]) => `${k} ${(v as number).toFixed(6)}`).join(' ')}`);
    }
    console.error(`${optimizer}: ${((performance.now() - started) / 1000).toFixed(1)} s`);
  }
} finally {
  fs.rmSync(tmp, { recursive: true, force: true });
}
