// Console output as Keras prints it: `Epoch 3/20`, a progress bar with ETA and running metrics, then the
// epoch's line with val_ metrics. Without a terminal (CI, logs) only the epoch lines, as Keras verbose=2. When an
// epoch validates on part of the validation set (validation_steps), its line says on how many images.
import type { EpochLogs } from '../events.ts';
import { EXTRA_METRICS } from '../config/types.ts';

/** Validation images an epoch's val_ metrics are computed on, of the validation set's. */
export interface ValidatedImages {
  images: number;
  of: number;
}

export type OutputMode = 'bar' | 'quiet' | 'json';

export interface Progress {
  epochStart(epoch: number, epochs: number, steps: number, label?: string): void;
  step(step: number, metrics: Record<string, number>): void;
  epochEnd(epoch: number, logs: EpochLogs, label?: string, validated?: ValidatedImages): void;
  line(text: string): void;
}

export function createProgress(mode: OutputMode, stream: NodeJS.WriteStream = process.stdout): Progress {
  const tty = mode === 'bar' && Boolean(stream.isTTY);
  let steps = 0;
  let started = 0;
  let lastDraw = 0;
  return {
    epochStart(epoch, epochs, n, label) {
      steps = n;
      started = Date.now();
      if (mode !== 'json') stream.write(`${label ? `[${label}] ` : ''}Epoch ${epoch}/${epochs}\n`);
    },
    step(step, metrics) {
      if (!tty) return;
      const now = Date.now();
      if (now - lastDraw < 100 && step < steps) return; // redraw at most 10 times a second
      lastDraw = now;
      const elapsed = (now - started) / 1000;
      const eta = (elapsed / step) * (steps - step);
      stream.write(
        `\r${counter(step, steps)} ${bar(step, steps)} - ETA: ${duration(eta)}${formatMetrics(metrics)}\x1b[K`,
      );
    },
    epochEnd(epoch, logs, label, validated) {
      if (mode === 'json') {
        const images = validated ? { val_images: validated.images, validation_images: validated.of } : {};
        stream.write(
          `${JSON.stringify({ event: 'epoch', ...(label ? { trial: label } : {}), epoch, ...logs, ...images })}\n`,
        );
        return;
      }
      const { loss, accuracy, val_loss, val_accuracy } = logs;
      const perStep = steps ? (logs.epoch_seconds / steps) * 1000 : 0;
      const metrics = formatMetrics({
        loss,
        accuracy,
        ...(val_loss !== undefined && val_accuracy !== undefined ? { val_loss, val_accuracy } : {}),
        ...extraMetrics(logs),
      });
      // In a shared group, one line per trial, named; the bar belongs to the group.
      const head = label ? `  ${label}: ` : mode === 'bar' ? `${counter(steps, steps)} ${bar(steps, steps)} - ` : '';
      const part =
        validated && val_loss !== undefined && validated.images < validated.of
          ? ` (val on ${validated.images} of ${validated.of} images)`
          : '';
      stream.write(
        `${tty ? '\r' : ''}${head}${Math.round(logs.epoch_seconds)}s ${Math.round(perStep)}ms/step${metrics}${part}${tty ? '\x1b[K' : ''}\n`,
      );
    },
    line(text) {
      if (mode === 'json') stream.write(`${JSON.stringify({ event: 'log', message: text })}\n`);
      else stream.write(`${text}\n`);
    },
  };
}

/** training.metrics of the epoch, training's then validation's, as Keras prints them after accuracy. */
function extraMetrics(logs: EpochLogs): Record<string, number> {
  const out: Record<string, number> = {};
  for (const prefix of ['', 'val_'])
    for (const m of EXTRA_METRICS) {
      const value = logs[`${prefix}${m}` as keyof EpochLogs];
      if (value !== undefined) out[`${prefix}${m}`] = value;
    }
  return out;
}

function counter(step: number, steps: number): string {
  const width = String(steps).length;
  return `${String(step).padStart(width)}/${steps}`;
}

function bar(step: number, steps: number, width = 30): string {
  const done = Math.floor((step / steps) * width);
  const body = done >= width ? '='.repeat(width) : `${'='.repeat(Math.max(0, done))}>${'.'.repeat(width - done - 1)}`;
  return `[${body}]`;
}

export function formatMetrics(metrics: Record<string, number>): string {
  return Object.entries(metrics)
    .map(([k, v]) => ` - ${k}: ${v.toFixed(4)}`)
    .join('');
}

export function duration(seconds: number): string {
  if (!Number.isFinite(seconds)) return '?';
  if (seconds < 60) return `${Math.round(seconds)}s`;
  const m = Math.floor(seconds / 60);
  const s = Math.round(seconds % 60);
  return m < 60
    ? `${m}:${String(s).padStart(2, '0')}`
    : `${Math.floor(m / 60)}:${String(m % 60).padStart(2, '0')}:${String(s).padStart(2, '0')}`;
}
