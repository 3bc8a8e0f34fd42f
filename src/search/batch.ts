// How many trials a round of a search asks (sweep.batch), and why. auto: as many heads as fit in half the memory
// the machine has available, each head counted by its weights, one gradient of them and its optimizer's slots.
import fs from 'node:fs';
import os from 'node:os';
import type { HeadConfig, OptimizerConfig, SweepConfig } from '../config/types.ts';

/** Float32 arrays an optimizer keeps per weight besides the weight: RMSprop's mean square (and momentum), Adam's two moments. */
export function optimizerSlots(o: OptimizerConfig): number {
  const momentum = (o.momentum ?? 0) > 0 ? 1 : 0;
  if (o.name === 'adam') return 2;
  if (o.name === 'rmsprop') return 1 + momentum;
  if (o.name === 'adagrad') return 1;
  return momentum;
}

/** Parameters of a head on these features (pooling, hidden layers, one output: the classes add little). */
export function headParams(featureShape: number[], head: HeadConfig): number {
  const channels = featureShape[featureShape.length - 1];
  let inputs = head.pooling === 'flatten' ? featureShape.reduce((a, b) => a * b, 1) : channels;
  let params = 0;
  for (const units of [...head.units, 1]) {
    params += inputs * units + units;
    inputs = units;
  }
  return params;
}

/** Bytes a head holds while it trains: weights, a gradient of each and the optimizer's slots, float32. */
export const headBytes = (featureShape: number[], head: HeadConfig, optimizer: OptimizerConfig): number =>
  4 * headParams(featureShape, head) * (2 + optimizerSlots(optimizer));

/** The memory the machine can give without swapping (MemAvailable), or what Node calls free. */
export function availableBytes(): number {
  try {
    const line = fs.readFileSync('/proc/meminfo', 'utf8').match(/^MemAvailable:\s+(\d+) kB/m);
    if (line) return Number(line[1]) * 1024;
  } catch {}
  return os.freemem();
}

export interface RoundSize {
  batch: number;
  why: string;
}

/**
 * The round size: the file's, or auto's from the largest head the sweep can ask and the memory available; at most
 * `trials` (a search's sweep.trials, a listed sweep's trial count).
 */
export function roundSize(
  sweep: SweepConfig,
  perHead: number,
  trials = sweep.trials ?? 10,
  available = availableBytes(),
): RoundSize {
  if (typeof sweep.batch === 'number') {
    const batch = Math.min(sweep.batch, trials);
    return { batch, why: `sweep.batch ${sweep.batch}` };
  }
  const fit = Math.floor(available / 2 / perHead);
  const batch = Math.max(1, Math.min(trials, fit));
  return {
    batch,
    why: `auto: ${mb(perHead)} per head (weights, gradient, optimizer slots), half of ${mb(available)} available fits ${fit.toLocaleString('en-US')}${fit > trials ? `, capped at trials ${trials}` : ''}`,
  };
}

const mb = (bytes: number) =>
  bytes < 2 ** 20 ? `${(bytes / 2 ** 10).toFixed(0)} KB` : `${(bytes / 2 ** 20).toFixed(0)} MB`;
