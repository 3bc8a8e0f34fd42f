// What a run leaves in runs/<experiment>/<run-id>/: the resolved experiment, history, curves, confusion matrix.
import fs from 'node:fs';
import path from 'node:path';
import sharp from 'sharp';
import YAML from 'yaml';
import type { Experiment } from '../config/types.ts';
import { EPOCH_METRICS, savedWeightsLabel, type EpochLogs, type RunResult } from '../events.ts';
import { EXTRA_METRICS } from '../config/types.ts';
import { EXPERIMENT_FILE, experimentHeader } from './run-folder.ts';
import { freeSpaceHint, writingSync } from '../util/disk.ts';
import { writeFileAtomic } from '../util/write-atomic.ts';

/** The history's columns: the epoch, then the metrics its epochs have (training.metrics' only when asked for). */
export const historyColumns = (history: EpochLogs[]): string[] => [
  'epoch',
  ...EPOCH_METRICS.filter((m) => !OPTIONAL_METRICS.has(m) || history.some((h) => h[m] !== undefined)),
];
// Columns a run without training.metrics never has: its history.csv keeps the columns it always had.
const OPTIONAL_METRICS = new Set<string>(EXTRA_METRICS.flatMap((m) => [m, `val_${m}`]));

/**
 * A file of a run folder, written whole or not at all (a full disk leaves the previous one, or none, never a part
 * that reads as whole), and a full disk said naming the file.
 */
export function writeRunFile(file: string, data: string | NodeJS.ArrayBufferView): void {
  writingSync(file, () => writeFileAtomic(file, data), freeSpaceHint(file, 'XP_RUNS_DIR'));
}

export function writeExperiment(
  runDir: string,
  experiment: Experiment,
  meta: { sourceFile?: string; configHash: string },
): void {
  writeRunFile(
    path.join(runDir, EXPERIMENT_FILE),
    `${experimentHeader(meta.configHash, meta.sourceFile)}\n${YAML.stringify(experiment)}`,
  );
}

export function writeHistory(runDir: string, history: EpochLogs[]): void {
  const rows = history.map((h, i) => ({ epoch: i + 1, ...h }));
  const columns = historyColumns(history);
  const csv = [
    columns.join(','),
    ...rows.map((r) => columns.map((c) => (r as Record<string, unknown>)[c] ?? '').join(',')),
  ].join('\n');
  writeRunFile(path.join(runDir, 'history.csv'), `${csv}\n`);
  writeRunFile(path.join(runDir, 'history.json'), `${JSON.stringify(rows, null, 2)}\n`);
}

/** The saved model's confusion matrix on the whole validation set, with its per-class scores: JSON and an image. */
export async function writeConfusion(runDir: string, result: RunResult): Promise<void> {
  const { class_names, confusion, val_accuracy, per_class, epoch, interrupted_after_step, images } = result;
  const body = {
    class_names,
    matrix: confusion,
    accuracy: val_accuracy,
    rows: 'true class',
    columns: 'predicted class',
    per_class,
    epoch,
    interrupted_after_step,
    images,
  };
  writeRunFile(path.join(runDir, 'confusion_matrix.json'), `${JSON.stringify(body, null, 2)}\n`);
  writeRunFile(
    path.join(runDir, 'confusion_matrix.png'),
    await sharp(Buffer.from(confusionSvg(result)))
      .png()
      .toBuffer(),
  );
}

/** Counts in cells shaded by the share of their true class, as scikit-learn's ConfusionMatrixDisplay. */
function confusionSvg(result: RunResult): string {
  const { class_names: names, confusion, val_accuracy, images } = result;
  const k = names.length;
  const cell = Math.max(36, Math.min(110, Math.floor(440 / k)));
  const left = 150;
  const top = 70;
  const width = left + cell * k + 30;
  const height = top + cell * k + 70;
  const cells = confusion.flatMap((row, i) => {
    const total = row.reduce((a, b) => a + b, 0) || 1;
    return row.map((count, j) => {
      const share = count / total;
      const shade = Math.round(255 - share * 200);
      const x = left + j * cell;
      const y = top + i * cell;
      return (
        `<rect x="${x}" y="${y}" width="${cell}" height="${cell}" fill="rgb(${shade},${shade + Math.round(share * 30)},255)" stroke="white"/>` +
        `<text x="${x + cell / 2}" y="${y + cell / 2 + 5}" font-size="${cell > 60 ? 15 : 11}" text-anchor="middle" fill="${share > 0.6 ? 'white' : 'black'}">${count}</text>`
      );
    });
  });
  const rowLabels = names.map(
    (n, i) =>
      `<text x="${left - 8}" y="${top + i * cell + cell / 2 + 4}" font-size="12" text-anchor="end">${escapeXml(n)}</text>`,
  );
  const colLabels = names.map(
    (n, j) =>
      `<text x="${left + j * cell + cell / 2}" y="${top + k * cell + 18}" font-size="12" text-anchor="middle">${escapeXml(n)}</text>`,
  );
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="DejaVu Sans, Arial, sans-serif">
<rect width="100%" height="100%" fill="white"/>
<text x="${width / 2}" y="22" font-size="15" text-anchor="middle">Confusion matrix (weights of ${savedWeightsLabel(result)})</text>
<text x="${width / 2}" y="42" font-size="12" text-anchor="middle">${images} validation images, accuracy ${val_accuracy.toFixed(4)}</text>
${cells.join('')}${rowLabels.join('')}${colLabels.join('')}
<text x="${left + (k * cell) / 2}" y="${top + k * cell + 42}" font-size="12" text-anchor="middle">predicted class</text>
<text x="18" y="${top + (k * cell) / 2}" font-size="12" text-anchor="middle" transform="rotate(-90 18 ${top + (k * cell) / 2})">true class</text></svg>`;
}

/** The two plots the reference notebook draws: accuracy and loss per epoch, training and validation. */
export async function writeCurves(runDir: string, history: EpochLogs[], title: string): Promise<void> {
  const width = 960;
  const height = 400;
  const panels = [
    plot(
      'Training and validation accuracy',
      history.map((h) => h.accuracy),
      history.map((h) => h.val_accuracy ?? NaN),
      0,
      480,
      height,
    ),
    plot(
      'Training and validation loss',
      history.map((h) => h.loss),
      history.map((h) => h.val_loss ?? NaN),
      480,
      480,
      height,
    ),
  ];
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height + 30}" font-family="DejaVu Sans, Arial, sans-serif">
<rect width="100%" height="100%" fill="white"/>
<text x="${width / 2}" y="20" font-size="15" text-anchor="middle">${escapeXml(title)}</text>
<g transform="translate(0,30)">${panels.join('')}</g></svg>`;
  writeRunFile(path.join(runDir, 'curves.png'), await sharp(Buffer.from(svg)).png().toBuffer());
}

function plot(title: string, train: number[], validation: number[], x0: number, w: number, h: number): string {
  const left = x0 + 55;
  const right = x0 + w - 15;
  const top = 30;
  const bottom = h - 45;
  const values = [...train, ...validation].filter(Number.isFinite);
  let lo = Math.min(...values);
  let hi = Math.max(...values);
  if (!values.length) [lo, hi] = [0, 1];
  if (hi - lo < 1e-6) [lo, hi] = [lo - 0.5, hi + 0.5];
  const pad = (hi - lo) * 0.08;
  [lo, hi] = [lo - pad, hi + pad];
  const n = Math.max(train.length, 1);
  const sx = (i: number) => (n === 1 ? (left + right) / 2 : left + ((right - left) * i) / (n - 1));
  const sy = (v: number) => bottom - ((bottom - top) * (v - lo)) / (hi - lo);
  const line = (ys: number[], color: string) => {
    const pts = ys.map((v, i) => (Number.isFinite(v) ? `${sx(i).toFixed(1)},${sy(v).toFixed(1)}` : '')).filter(Boolean);
    const dots = pts
      .map((p) => `<circle cx="${p.split(',')[0]}" cy="${p.split(',')[1]}" r="2.5" fill="${color}"/>`)
      .join('');
    return `<polyline fill="none" stroke="${color}" stroke-width="2" points="${pts.join(' ')}"/>${dots}`;
  };
  const ticks = Array.from({ length: 5 }, (_, i) => lo + ((hi - lo) * i) / 4)
    .map(
      (v) =>
        `<line x1="${left}" x2="${right}" y1="${sy(v)}" y2="${sy(v)}" stroke="#e5e5e5"/><text x="${left - 6}" y="${sy(v) + 4}" font-size="11" text-anchor="end">${v.toFixed(3)}</text>`,
    )
    .join('');
  const xticks = Array.from({ length: n }, (_, i) => i)
    .filter((i) => n <= 20 || i % Math.ceil(n / 10) === 0)
    .map((i) => `<text x="${sx(i)}" y="${bottom + 16}" font-size="11" text-anchor="middle">${i + 1}</text>`)
    .join('');
  return `<text x="${(left + right) / 2}" y="18" font-size="13" text-anchor="middle">${title}</text>${ticks}${xticks}
<line x1="${left}" y1="${bottom}" x2="${right}" y2="${bottom}" stroke="#333"/><line x1="${left}" y1="${top}" x2="${left}" y2="${bottom}" stroke="#333"/>
<text x="${(left + right) / 2}" y="${bottom + 34}" font-size="11" text-anchor="middle">epoch</text>
${line(train, '#d62728')}${line(validation, '#1f77b4')}
<rect x="${right - 120}" y="${top + 2}" width="116" height="38" fill="white" stroke="#ccc"/>
<line x1="${right - 112}" x2="${right - 92}" y1="${top + 14}" y2="${top + 14}" stroke="#d62728" stroke-width="2"/><text x="${right - 86}" y="${top + 18}" font-size="11">training</text>
<line x1="${right - 112}" x2="${right - 92}" y1="${top + 30}" y2="${top + 30}" stroke="#1f77b4" stroke-width="2"/><text x="${right - 86}" y="${top + 34}" font-size="11">validation</text>`;
}

const escapeXml = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/** runs/<experiment>/<yyyymmdd-hhmmss-xxxx>: sortable by time, unique across parallel trials. */
export function newRunDir(runsRoot: string, experimentName: string): { runId: string; runDir: string } {
  const stamp = new Date().toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
  for (;;) {
    const runId = `${stamp}-${Math.random().toString(16).slice(2, 6)}`;
    const runDir = path.join(runsRoot, experimentName, runId);
    try {
      fs.mkdirSync(path.dirname(runDir), { recursive: true });
      fs.mkdirSync(runDir);
      return { runId, runDir };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
  }
}
