// `npm run bench`: images/s of each stage (decode+resize, augmentation, backbone forward) and of whole epochs of
// the reference configuration, each next to the same figure for the Keras notebook run with tensorflow-cpu on this
// machine and data, so every result reads as a ratio to Keras. Figures print and go to ./bench-results/*.json of the
// current folder, as run folders go to ./runs: measurements belong to where they were made, not to the clone.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { XpError } from '../src/errors.ts';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const dataset = path.resolve(repoRoot, process.env.XP_BENCH_DATA ?? '../shared/datasets/cats_and_dogs_filtered');

/** Where the figures are written: ./bench-results of the folder `xp bench` runs in. */
export const resultsDir = (): string => path.resolve('bench-results');

export interface BenchOptions {
  quick: boolean;
  keras: boolean;
  sweep: boolean;
  /** Only the sweep figures. */
  onlySweep?: boolean;
  /** `--set key=value` overrides for the sweep's xp runs (the Keras script knows only the reference head). */
  set?: string[];
  full?: boolean;
}

interface Row {
  figure: string;
  xp: number;
  keras?: number;
  unit: string;
  higherIsBetter: boolean;
}

export async function benchCommand(opts: BenchOptions): Promise<number> {
  const benchStarted = performance.now();
  const epochs = opts.full ? 20 : opts.quick ? 1 : 2;
  const steps = opts.quick ? 20 : 100;
  const validationSteps = opts.quick ? 10 : 50;
  const rows: Row[] = [];
  const result: Record<string, unknown> = {
    date: new Date().toISOString(),
    machine: {
      cpus: os.cpus().length,
      model: os.cpus()[0]?.model,
      memory_gb: Math.round(os.totalmem() / 2 ** 30),
      load_average_start: os.loadavg(),
    },
    config: {
      epochs,
      steps_per_epoch: steps,
      validation_steps: validationSteps,
      batch_size: 20,
      image_size: [150, 150],
      backbone: 'inception_v3 cut at mixed7',
    },
  };
  const peak = peakMemory();
  if (!opts.onlySweep)
    log(
      `xp bench: ${epochs} epoch(s) of ${steps} steps (+${validationSteps} validation steps), batch 20, 150x150, on ${dataset}`,
    );

  if (!opts.onlySweep) await stageAndEpochFigures(rows, result, peak, { ...opts, epochs, steps, validationSteps });
  if (opts.sweep) result.sweep = await sweepBench(rows, { quick: opts.quick, keras: opts.keras, set: opts.set ?? [] });

  result.load_average_end = os.loadavg();
  result.rows = rows.map((r) => ({ ...r, speedup_vs_keras: speedup(r) }));
  // `xp bench --help` says how long each mode takes: this figure is where those come from.
  const minutes = (performance.now() - benchStarted) / 60_000;
  result.wall_minutes = minutes;
  printTable(rows);
  const outDir = resultsDir();
  fs.mkdirSync(outDir, { recursive: true });
  const file = path.join(outDir, `bench-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  fs.writeFileSync(file, `${JSON.stringify(result, null, 2)}\n`);
  log(
    `${result.xp ? `peak RSS ${(result.xp as { peak_rss_mb: number }).peak_rss_mb.toFixed(0)} MB; ` : ''}load average ${os
      .loadavg()
      .map((l) => l.toFixed(1))
      .join(' ')} (other work skews every figure)`,
  );
  log(`written to ${path.relative(process.cwd(), file)}; the bench took ${minutes.toFixed(1)} min`);
  return 0;
}

/** Each stage's images/s and whole epochs of the reference configuration, xp and Keras. */
async function stageAndEpochFigures(
  rows: Row[],
  result: Record<string, unknown>,
  peak: { stop(): number },
  opts: BenchOptions & { epochs: number; steps: number; validationSteps: number },
) {
  const { epochs, steps, validationSteps } = opts;
  const { benchData } = await import('./stages/data.ts');
  const data = await benchData(path.join(dataset, 'train'), { augmentBatches: opts.quick ? 20 : 100 });
  log(
    `decode+resize ${data.decode_images_per_s.toFixed(0)} images/s, augmentation ${data.augment_images_per_s.toFixed(0)} images/s`,
  );
  const { benchBackbone } = await import('./stages/backbone.ts');
  const backbone = await benchBackbone();
  log(
    `backbone forward: LayersModel ${backbone.forward_images_per_s.toFixed(1)}, BN folded ${backbone.folded_images_per_s.toFixed(1)}, compiled graph ${backbone.graph_images_per_s.toFixed(1)} images/s`,
  );

  const xp = await xpEpochs(epochs, steps, validationSteps);
  log(
    `xp training: ${xp.epochSeconds.map((s) => s.toFixed(1)).join(', ')} s per epoch, ${xp.trainImagesPerSecond.toFixed(1)} training images/s`,
  );
  result.xp = { ...data, ...backbone, ...xp, peak_rss_mb: peak.stop() };

  let keras: Awaited<ReturnType<typeof import('./keras/run.ts').runKerasBaseline>> | undefined;
  if (opts.keras) {
    const { runKerasBaseline } = await import('./keras/run.ts');
    log('Keras baseline (tensorflow-cpu in .venv-keras), same configuration ...');
    keras = await runKerasBaseline({ repoRoot, data: dataset, epochs, steps, validationSteps, onLog: () => {} });
    result.keras = keras;
  }

  rows.push(
    { figure: 'decode + resize', xp: data.decode_images_per_s, unit: 'images/s', higherIsBetter: true },
    {
      figure: 'decode + resize + augment (generator)',
      xp: harmonic(data.decode_images_per_s, data.augment_images_per_s),
      keras: keras?.micro.generator_images_per_second,
      unit: 'images/s',
      higherIsBetter: true,
    },
    { figure: 'augmentation alone', xp: data.augment_images_per_s, unit: 'images/s', higherIsBetter: true },
    {
      figure: 'backbone forward (mixed7, compiled graph)',
      xp: backbone.graph_images_per_s,
      keras: keras?.micro.backbone_forward_images_per_second,
      unit: 'images/s',
      higherIsBetter: true,
    },
    {
      figure: 'training images/s over the run',
      xp: xp.trainImagesPerSecond,
      keras: keras?.train_images_per_second,
      unit: 'images/s',
      higherIsBetter: true,
    },
    {
      figure: `wall time of ${epochs} epoch(s) (fit)`,
      xp: xp.fitSeconds,
      keras: keras?.fit_seconds,
      unit: 's',
      higherIsBetter: false,
    },
    {
      figure: 'last epoch (train + validation)',
      xp: xp.epochSeconds.at(-1) ?? Number.NaN, // every run has an epoch
      keras: keras?.epoch_seconds.at(-1),
      unit: 's',
      higherIsBetter: false,
    },
  );
}

/** The reference configuration with the bundled weights, tracking off. */
function benchYaml(epochs: number, steps: number, validationSteps: number, extra = ''): string {
  return `name: bench
data: {train: ${path.join(dataset, 'train')}, validation: ${path.join(dataset, 'validation')}, image_size: [150, 150], batch_size: 20}
backbone: {name: inception_v3, weights: nsfwjs, cut_layer: mixed7, trainable: false}
head: {pooling: flatten, units: [1024], activation: relu, dropout: 0.2}
augmentation: {rotation_range: 40, width_shift_range: 0.2, height_shift_range: 0.2, shear_range: 0.2, zoom_range: 0.2, horizontal_flip: true, fill_mode: nearest}
optimizer: {name: rmsprop, learning_rate: 0.0001}
training: {epochs: ${epochs}, steps_per_epoch: ${steps}, validation_steps: ${validationSteps}}
tracking: {enabled: false}
${extra}`;
}

/** The reference configuration through the same code as `xp run`, in this process. */
async function xpEpochs(epochs: number, steps: number, validationSteps: number) {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'xp-bench-'));
  const file = path.join(tmp, 'bench.yaml');
  fs.writeFileSync(file, benchYaml(epochs, steps, validationSteps));
  const { loadExperiment } = await import('../src/config/load.ts');
  const { runGroup } = await import('../src/train/run.ts');
  const { createProgress } = await import('../src/train/progress.ts');
  const progress = createProgress('quiet', process.stderr);
  const { trials } = await loadExperiment(file);
  const started = performance.now();
  const { outcomes } = await runGroup(
    trials.map((t) => ({ name: t.name, experiment: t.experiment, configHash: t.configHash, callbacks: [] })),
    { baseDir: tmp, runsRoot: path.join(tmp, 'runs'), progress, shouldStop: () => false },
  );
  const wallSeconds = (performance.now() - started) / 1000;
  fs.rmSync(tmp, { recursive: true, force: true });
  const h = outcomes[0].history;
  return {
    epochSeconds: h.map((e) => e.epoch_seconds),
    fitSeconds: h.reduce((a, e) => a + e.epoch_seconds, 0),
    trainImagesPerSecond: h.reduce((a, e) => a + e.images_per_second, 0) / h.length,
    wallSeconds,
    valAccuracy: h.map((e) => e.val_accuracy),
  };
}

/** Wall time of `xp run <file> --no-track` as a user runs it: a process of its own, from start to exit. */
async function xpRunProcess(yaml: string, set: string[]): Promise<number> {
  const { execa } = await import('execa');
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'xp-bench-'));
  const file = path.join(tmp, 'experiment.yaml');
  fs.writeFileSync(file, yaml);
  const started = performance.now();
  const r = await execa(
    process.execPath,
    [path.join(repoRoot, 'bin', 'xp.js'), 'run', file, '--no-track', '--quiet', ...set.flatMap((s) => ['--set', s])],
    {
      reject: false,
      stdin: 'ignore',
      env: { XP_RUNS_DIR: path.join(tmp, 'runs') },
    },
  );
  const seconds = (performance.now() - started) / 1000;
  fs.rmSync(tmp, { recursive: true, force: true });
  if (r.exitCode !== 0)
    throw new XpError(
      `xp run of the bench experiment exited with ${r.exitCode}:\n${String(r.stderr).split('\n').slice(-8).join('\n')}`,
    );
  return seconds;
}

const SWEEP_DROPOUT = [0.1, 0.2, 0.5];
const SWEEP_EPOCHS = [2, 4];

/**
 * The example sweep (dropout 3 x epochs 2 = 6 trials), each figure the wall time of whole commands as a user runs
 * them: `xp run` of the sweep (one shared backbone pass; once before and once after the separate runs), six
 * `xp run` of one trial each, and six Keras runs of the same configurations (baseline.py with that dropout and
 * epochs, the notebook's loop).
 */
async function sweepBench(rows: Row[], opts: { quick: boolean; keras: boolean; set: string[] }) {
  const steps = opts.quick ? 10 : 30;
  const validationSteps = 10;
  const trials = SWEEP_DROPOUT.flatMap((dropout) => SWEEP_EPOCHS.map((epochs) => ({ dropout, epochs })));
  log(
    `sweep: 6 trials (dropout ${SWEEP_DROPOUT.join('/')} x epochs ${SWEEP_EPOCHS.join('/')}), ${steps} steps per epoch, ${validationSteps} validation steps${opts.set.length ? `, --set ${opts.set.join(' --set ')}` : ''}`,
  );
  const sweepYaml = `sweep:\n  head.dropout: [${SWEEP_DROPOUT.join(', ')}]\n  training.epochs: [${SWEEP_EPOCHS.join(', ')}]\n`;
  // The sweep runs before and after the six separate runs, and counts as the mean of the two: this VM's speed
  // drifts by 10-20% over minutes, and a first run can pay for files not yet in the page cache.
  const sweepFile = benchYaml(Math.max(...SWEEP_EPOCHS), steps, validationSteps, sweepYaml);
  const sweeps = [await xpRunProcess(sweepFile, opts.set)];
  log(`  xp run of the sweep (one shared backbone pass): ${sweeps[0].toFixed(1)} s`);
  const separate: number[] = [];
  for (const t of trials) {
    const alone = await xpRunProcess(benchYaml(t.epochs, steps, validationSteps), [
      `head.dropout=${t.dropout}`,
      ...opts.set,
    ]);
    separate.push(alone);
    log(`  xp run of dropout=${t.dropout} epochs=${t.epochs} alone: ${alone.toFixed(1)} s`);
  }
  sweeps.push(await xpRunProcess(sweepFile, opts.set));
  const shared = (sweeps[0] + sweeps[1]) / 2;
  log(`  xp run of the sweep again: ${sweeps[1].toFixed(1)} s (mean ${shared.toFixed(1)} s)`);
  const separateTotal = separate.reduce((a, b) => a + b, 0);
  let keras: number[] | undefined;
  if (opts.keras && opts.set.length) log('  Keras runs skipped: baseline.py builds the reference head only');
  if (opts.keras && !opts.set.length) {
    const { runKerasBaseline } = await import('./keras/run.ts');
    const { ensureKerasVenv } = await import('../src/python/keras-env.ts');
    await ensureKerasVenv(); // set up before the clock starts
    keras = [];
    for (const t of trials) {
      const started = performance.now();
      await runKerasBaseline({
        repoRoot,
        data: dataset,
        epochs: t.epochs,
        steps,
        validationSteps,
        dropout: t.dropout,
        microBatches: 0,
        onLog: () => {},
      });
      const seconds = (performance.now() - started) / 1000;
      keras.push(seconds);
      log(`  Keras dropout=${t.dropout} epochs=${t.epochs}: ${seconds.toFixed(1)} s`);
    }
  }
  const kerasTotal = keras?.reduce((a, b) => a + b, 0);
  rows.push(
    {
      figure: 'sweep of 6 trials: xp run of the sweep (wall, mean of 2)',
      xp: shared,
      keras: kerasTotal,
      unit: 's',
      higherIsBetter: false,
    },
    {
      figure: 'the 6 trials as 6 separate xp runs (wall)',
      xp: separateTotal,
      keras: kerasTotal,
      unit: 's',
      higherIsBetter: false,
    },
  );
  log(
    `  the sweep is ${(separateTotal / shared).toFixed(2)}x faster than six separate xp runs${kerasTotal ? `, ${(kerasTotal / shared).toFixed(2)}x faster than six Keras runs` : ''}`,
  );
  return {
    steps,
    validation_steps: validationSteps,
    shared_seconds: shared,
    sweep_runs_seconds: sweeps,
    separate_seconds: separate,
    keras_seconds: keras,
    speedup_vs_separate: separateTotal / shared,
    speedup_vs_keras: kerasTotal && kerasTotal / shared,
  };
}

function speedup(r: Row): number | undefined {
  if (r.keras === undefined || !r.keras) return undefined;
  return r.higherIsBetter ? r.xp / r.keras : r.keras / r.xp;
}

function printTable(rows: Row[]): void {
  const w = Math.max(...rows.map((r) => r.figure.length));
  console.log(`\n${'figure'.padEnd(w)}  ${'xp'.padStart(10)}  ${'keras'.padStart(10)}  unit      xp vs keras`);
  for (const r of rows) {
    const s = speedup(r);
    console.log(
      `${r.figure.padEnd(w)}  ${r.xp.toFixed(1).padStart(10)}  ${(r.keras === undefined ? '-' : r.keras.toFixed(1)).padStart(10)}  ${r.unit.padEnd(8)}  ${s === undefined ? '-' : `${s.toFixed(2)}x faster`}`,
    );
  }
}

function harmonic(a: number, b: number): number {
  return 1 / (1 / a + 1 / b);
}

function peakMemory() {
  let max = process.memoryUsage().rss;
  const sample = () => {
    max = Math.max(max, process.memoryUsage().rss);
  };
  const timer = setInterval(sample, 200);
  timer.unref();
  return {
    stop: () => {
      clearInterval(timer);
      sample();
      return max / 2 ** 20;
    },
  };
}

function log(line: string): void {
  process.stderr.write(`${line}\n`);
}
