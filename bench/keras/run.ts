// Runs bench/keras/baseline.py (the reference notebook on tensorflow-cpu) and returns its figures.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { XpError } from '../../src/errors.ts';
import { ensureKerasVenv } from '../../src/python/keras-env.ts';

const SCRIPT = path.join(path.dirname(fileURLToPath(import.meta.url)), 'baseline.py');

export interface KerasBaselineOptions {
  repoRoot: string;
  /** Folder with train/ and validation/ class subfolders. */
  data: string;
  epochs: number;
  steps: number;
  validationSteps: number;
  dropout?: number;
  batch?: number;
  size?: number;
  /** Legacy Keras .h5 weights for the InceptionV3 backbone (no top); random init when absent. */
  weights?: string;
  seed?: number;
  /** Batches timed per micro-figure, after one warm-up batch. */
  microBatches?: number;
  /** Receives the script's progress lines (stderr); default: forwarded to this process' stderr. */
  onLog?: (line: string) => void;
}

/** What baseline.py prints, field for field (snake_case as in Keras' history). Seconds are wall time. */
export interface KerasBaselineResult {
  tensorflow: string;
  keras: string;
  config: {
    epochs: number;
    steps: number;
    validation_steps: number;
    batch: number;
    size: number;
    dropout: number;
    weights: string | null;
    seed: number;
    micro_batches: number;
  };
  epoch_seconds: number[];
  /** Training part of each epoch (until validation starts); the first includes graph tracing. */
  train_seconds: number[];
  val_seconds: number[];
  fit_seconds: number;
  /** CPU time of the script's threads during fit; fit_cpu_seconds / fit_seconds = cores it actually got. */
  fit_cpu_seconds: number;
  /** Whole process after Python start-up: imports, model build, micro-figures and fit. */
  total_seconds: number;
  /** Training images over all epochs' training parts. */
  train_images_per_second: number;
  epoch_train_images_per_second: number[];
  loss: number[];
  accuracy: number[];
  val_loss: number[];
  val_accuracy: number[];
  /** os.getloadavg() (1, 5, 15 min) when the script started and finished: other work on the machine skews the figures. */
  load_average: { start: number[]; end: number[] };
  micro: {
    /** next(train_generator): JPEG decode + resize + augmentation, batch of `batch`. */
    generator_images_per_second: number;
    /** InceptionV3 cut at mixed7, tf.function forward on an in-memory batch. */
    backbone_forward_images_per_second: number;
    /** model.train_on_batch on an in-memory batch (no generator). */
    train_step_images_per_second: number;
  };
}

export async function runKerasBaseline(opts: KerasBaselineOptions): Promise<KerasBaselineResult> {
  const python = await ensureKerasVenv();
  const args = [
    SCRIPT,
    '--data',
    opts.data,
    '--epochs',
    String(opts.epochs),
    '--steps',
    String(opts.steps),
    '--validation-steps',
    String(opts.validationSteps),
    '--batch',
    String(opts.batch ?? 20),
    '--size',
    String(opts.size ?? 150),
    '--dropout',
    String(opts.dropout ?? 0.2),
    ...(opts.weights ? ['--weights', opts.weights] : []),
    ...(opts.seed === undefined ? [] : ['--seed', String(opts.seed)]),
    ...(opts.microBatches === undefined ? [] : ['--micro-batches', String(opts.microBatches)]),
  ];
  const onLog = opts.onLog ?? ((line: string) => process.stderr.write(`${line}\n`));
  const child = execa(python, args, { reject: false, stdin: 'ignore', stdout: 'pipe', stderr: 'pipe' });
  const tail: string[] = [];
  let pending = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (chunk: string) => {
    const lines = (pending + chunk).split('\n');
    pending = lines.pop() ?? '';
    for (const line of lines) {
      if (isNoise(line)) continue;
      onLog(line);
      tail.push(line);
      if (tail.length > 20) tail.shift();
    }
  });
  const r = await child;
  if (r.exitCode !== 0) {
    throw new XpError(`The Keras baseline exited with ${r.exitCode ?? r.signal}:\n${tail.slice(-8).join('\n')}`, {
      hint: `run it by hand to see everything: ${python} ${args.join(' ')}`,
    });
  }
  const last = String(r.stdout).trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(last) as KerasBaselineResult;
  } catch (cause) {
    throw new XpError(
      `The Keras baseline printed no JSON result line; its last stdout line was: ${last.slice(0, 200)}`,
      { cause },
    );
  }
}

// TensorFlow's C++ start-up chatter (absl, oneDNN, CPU feature notes) says nothing about the run.
function isNoise(line: string): boolean {
  return (
    /^[IW]\d{4} |^WARNING: All log messages before absl|^To enable the following instructions|rebuild TensorFlow with the appropriate compiler flags/.test(
      line,
    ) || line.trim() === ''
  );
}
